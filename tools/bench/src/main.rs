//! `make bench`: what the gateway costs, measured on the runtimes as deployed, in one run on one
//! machine, as ratios to the direct call and to each runtime's own floor.
//!
//! It starts the local upstream (release build) as the model, then one at a time:
//! - **workerd** itself (the binary wrangler installs, with a generated config; no `wrangler
//!   dev` proxy) serving the gateway's Worker (release build, Durable Objects on local disk)
//!   and, as the runtime's floor, a trivial pass-through JavaScript Worker
//!   (`tools/bench/floor/worker.js`), beside the same pass-through as a wasm Worker on the
//!   gateway's workers-rs (`tools/bench/floor/worker-rs`);
//! - **Portkey's AI gateway** (`@portkey-ai/gateway`, pinned in `tools/bench/portkey`) on the
//!   Node 22 that `make setup` installs: a Node gateway in front of the same upstream, through
//!   its pass-through route (`/v1/proxy/…` with `x-portkey-custom-host`);
//! - **real Spin** (`spin up`) serving the gateway's component, the composed component
//!   (`examples/consumer` plugged with the `inference` component) and, as the floor, a minimal
//!   pass-through component on the same spin-sdk (`tools/bench/floor/spin`).
//!
//! Sync predict load comes from `wrk` (latency percentiles and throughput at concurrency 1,
//! 16 and 32); durable async submits, status reads, streamed time to first byte and cold
//! starts from this program. Results: `target/bench/results.json` and `results.md` (also
//! printed). No result is asserted: this measures, `make test` checks behaviour.

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The gateway key of the benchmark configuration.
const KEY: &str = "bench-key";
/// A key with limits far above what a run spends: what counting them costs, nothing refused.
const LIMITED_KEY: &str = "bench-limited-key";
/// The local upstream's default key.
const UPSTREAM_KEY: &str = "upstream-dev-key";
/// The sync predict body (the demo model echoes it).
const PREDICT_BODY: &str = r#"{"prompt": "hello from make bench", "max_tokens": 16}"#;
/// The async submit body.
const ASYNC_BODY: &str = r#"{"model_input": {"prompt": "hi"}}"#;
/// Seconds of load per measurement (after a warm-up of one second).
const LOAD_SECONDS: u32 = 4;
/// Concurrencies of the sync predict load.
const CONCURRENCY: [u32; 3] = [1, 16, 32];
/// Concurrency of the async submit load.
const SUBMITTERS: usize = 20;
const SECRETS: [(&str, &str); 5] = [
    ("UPSTREAM_API_KEY", UPSTREAM_KEY),
    ("BASETEN_WEBHOOK_SECRET", "local-upstream-webhook-secret"),
    ("OUTBOUND_WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
    ("BROWSER_TOKEN_SECRET", "dev-browser-token-secret-0123456789abcdef"),
    ("ID_SECRET", "dev-request-id-secret-0123456789abcdef"),
];

type Result<T> = std::result::Result<T, String>;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    if let Err(e) = runtime.block_on(run()) {
        eprintln!("make bench: {e}");
        std::process::exit(1);
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the repository root")
}

/// A child process in its own process group, killed with its group when dropped.
struct Proc {
    name: &'static str,
    child: Child,
}

impl Proc {
    fn spawn(name: &'static str, mut command: Command) -> Result<Self> {
        use std::os::unix::process::CommandExt;
        command.process_group(0).stdin(Stdio::null());
        let child = command.spawn().map_err(|e| format!("{name}: cannot start: {e}"))?;
        Ok(Self { name, child })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Waits until something accepts connections on `port`; how long that took.
fn wait_port(proc: &mut Proc, port: u16, limit: Duration) -> Result<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(start.elapsed());
        }
        if let Ok(Some(status)) = proc.child.try_wait() {
            return Err(format!("{} exited ({status}) before listening on {port}", proc.name));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(format!("{} did not listen on {port} within {limit:?}", proc.name))
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// The gateway's configuration for this run: one key, model `demo` on the local upstream.
fn config(public_base_url: &str, upstream: &str) -> String {
    json!({
        "public_base_url": public_base_url,
        "dev_mode": true,
        "keys": [{"id": "bench", "sha256": sha256_hex(KEY), "models": ["*"], "chains": ["*"]},
                 {"id": "bench-limited", "sha256": sha256_hex(LIMITED_KEY), "models": ["*"], "chains": ["*"],
                  "limits": {"requests_per_minute": 1_000_000_000u64, "submits_per_minute": 1_000_000_000u64}}],
        "models": {"demo": {"upstream": format!("{upstream}/models/demo"), "api_key_secret_name": "UPSTREAM_API_KEY",
                            "price_per_second": 0.000538, "openai_model": "demo"}},
        "webhooks": {"inbound_secret_names": ["BASETEN_WEBHOOK_SECRET"], "outbound_secret_name": "OUTBOUND_WEBHOOK_SECRET"},
        "browser_tokens": {"secret_name": "BROWSER_TOKEN_SECRET"},
        "id_secret_name": "ID_SECRET"
    })
    .to_string()
}

// ------------------------------------------------------------------ wrk

/// One load measurement.
#[derive(Debug, Clone)]
struct Load {
    concurrency: u32,
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
    /// Non-2xx answers and socket errors: a measurement with any is marked.
    errors: u64,
}

impl Load {
    fn json(&self) -> Value {
        json!({"concurrency": self.concurrency, "requests_per_second": round(self.requests_per_second, 1),
               "p50_ms": round(self.p50_ms, 3), "p99_ms": round(self.p99_ms, 3), "requests": self.requests,
               "errors": self.errors})
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// A request for wrk: method, headers and body (a Lua script).
#[derive(Debug, Clone)]
struct Call {
    method: &'static str,
    url: String,
    authorization: Option<String>,
    /// Other headers (a gateway's routing headers).
    headers: Vec<(&'static str, String)>,
    body: Option<String>,
}

impl Call {
    fn predict(url: String, authorization: Option<String>) -> Self {
        Self { method: "POST", url, authorization, headers: Vec::new(), body: Some(PREDICT_BODY.to_owned()) }
    }

    fn with_headers(self, headers: Vec<(&'static str, String)>) -> Self {
        Self { headers, ..self }
    }

    fn lua(&self) -> String {
        let quote = |s: &str| format!("{s:?}"); // a Rust debug string is a valid Lua string here
        let mut lua = format!("wrk.method = {}\n", quote(self.method));
        if let Some(auth) = &self.authorization {
            let _ = writeln!(lua, "wrk.headers[\"Authorization\"] = {}", quote(auth));
        }
        for (name, value) in &self.headers {
            let _ = writeln!(lua, "wrk.headers[{}] = {}", quote(name), quote(value));
        }
        if let Some(body) = &self.body {
            let _ = writeln!(lua, "wrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = {}", quote(body));
        }
        lua
    }
}

fn wrk(call: &Call, concurrency: u32, seconds: u32, scratch: &Path) -> Result<Load> {
    let script = scratch.join("call.lua");
    std::fs::write(&script, call.lua()).map_err(|e| e.to_string())?;
    let threads = concurrency.min(2);
    let output = Command::new("wrk")
        .args(["-t", &threads.to_string(), "-c", &concurrency.to_string(), "-d", &format!("{seconds}s")])
        .args(["--latency", "--timeout", "10s", "-s"])
        .arg(&script)
        .arg(&call.url)
        .output()
        .map_err(|e| format!("wrk: {e} (make bench installs it)"))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    parse_wrk(&text, concurrency).ok_or_else(|| format!("wrk's output could not be read:\n{text}"))
}

/// Reads wrk's `--latency` report.
fn parse_wrk(text: &str, concurrency: u32) -> Option<Load> {
    let duration_ms = |s: &str| -> Option<f64> {
        let (number, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
        let n: f64 = number.parse().ok()?;
        Some(match unit {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            "m" => n * 60_000.0,
            _ => return None,
        })
    };
    let mut load = Load { concurrency, requests_per_second: 0.0, p50_ms: 0.0, p99_ms: 0.0, requests: 0, errors: 0 };
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => load.p50_ms = duration_ms(v)?,
            ["99%", v] => load.p99_ms = duration_ms(v)?,
            ["Requests/sec:", v] => load.requests_per_second = v.parse().ok()?,
            [n, "requests", "in", ..] => load.requests = n.parse().ok()?,
            ["Non-2xx", "or", "3xx", "responses:", n] => load.errors += n.parse::<u64>().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                load.errors += rest.iter().filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok()).sum::<u64>();
            }
            _ => {}
        }
    }
    (load.requests > 0).then_some(load)
}

/// A warm-up, then the load at every concurrency.
fn sync_loads(call: &Call, scratch: &Path) -> Result<Vec<Load>> {
    wrk(call, 4, 1, scratch)?;
    CONCURRENCY.iter().map(|&c| wrk(call, c, LOAD_SECONDS, scratch)).collect()
}

// ------------------------------------------------------------------ async, streams, cold starts

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().pool_max_idle_per_host(64).build().expect("an HTTP client")
}

/// Durable submits for `LOAD_SECONDS` at `SUBMITTERS` concurrency (each 201 only once its
/// record is durable), then every record read back.
async fn submits(submit_url: &str, body: &str, status_url: impl Fn(&str) -> String, key: Option<&str>) -> Value {
    let http = client();
    let ids = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let until = start + Duration::from_secs(u64::from(LOAD_SECONDS));
    let mut tasks = Vec::new();
    for _ in 0..SUBMITTERS {
        let (http, ids, failures) = (http.clone(), Arc::clone(&ids), Arc::clone(&failures));
        let (url, body, key) = (submit_url.to_owned(), body.to_owned(), key.map(str::to_owned));
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                let mut request = http.post(&url).header("content-type", "application/json").body(body.clone());
                if let Some(key) = &key {
                    request = request.bearer_auth(key);
                }
                let answer = match request.send().await {
                    Ok(a) if a.status().as_u16() == 201 => a.json::<Value>().await.ok(),
                    _ => None,
                };
                match answer.as_ref().and_then(|v| v["request_id"].as_str()) {
                    Some(id) => ids.lock().await.push(id.to_owned()),
                    None => drop(failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ids = ids.lock().await.clone();
    let mut found = 0usize;
    for chunk in ids.chunks(SUBMITTERS) {
        let mut reads = tokio::task::JoinSet::new();
        for id in chunk {
            let mut request = http.get(status_url(id));
            if let Some(key) = key {
                request = request.bearer_auth(key);
            }
            reads.spawn(async move { request.send().await.is_ok_and(|a| a.status().is_success()) });
        }
        found += reads.join_all().await.into_iter().filter(|ok| *ok).count();
    }
    json!({"submits_per_second": round(ids.len() as f64 / elapsed, 1), "accepted": ids.len(), "found": found,
           "failed": failures.load(std::sync::atomic::Ordering::Relaxed), "concurrency": SUBMITTERS,
           "first_request_id": ids.first()})
}

/// Median time to the first byte of a streamed chat completion's body, over 20 calls.
async fn streamed_ttfb(url: &str, authorization: &str, headers: &[(&str, String)]) -> Result<f64> {
    let http = client();
    let body = json!({"model": "demo", "stream": true,
                      "messages": [{"role": "user", "content": "one two three four five six seven eight"}]})
    .to_string();
    let mut samples = Vec::new();
    for _ in 0..21 {
        let start = Instant::now();
        let mut request = http.post(url).header("authorization", authorization);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let mut answer = request
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !answer.status().is_success() {
            return Err(format!("{url}: {}", answer.status()));
        }
        answer.chunk().await.map_err(|e| e.to_string())?;
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
        while answer.chunk().await.map_err(|e| e.to_string())?.is_some() {}
    }
    samples.remove(0); // the first call opens the connection
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

/// A Spin start: the time until it listened, then its first request (which instantiates the
/// component), timed.
async fn cold_start(listening: Duration, call: &Call) -> Result<Value> {
    let first = timed(call).await?;
    Ok(json!({"listening_ms": ms(listening), "first_response_ms": round(first, 3)}))
}

/// One request, timed.
async fn timed(call: &Call) -> Result<f64> {
    let http = client();
    let start = Instant::now();
    let mut request = http.request(call.method.parse().unwrap(), &call.url);
    if let Some(auth) = &call.authorization {
        request = request.header("authorization", auth);
    }
    for (name, value) in &call.headers {
        request = request.header(*name, value);
    }
    if let Some(body) = &call.body {
        request = request.header("content-type", "application/json").body(body.clone());
    }
    let answer = request.send().await.map_err(|e| e.to_string())?;
    let status = answer.status();
    answer.bytes().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{} answered {status}", call.url));
    }
    Ok(start.elapsed().as_secs_f64() * 1000.0)
}

// ------------------------------------------------------------------ the runtimes

fn upstream(root: &Path) -> Result<(Proc, String)> {
    let port = free_port();
    let mut command = Command::new(root.join("target/release/local-upstream"));
    command.args(["--addr", &format!("127.0.0.1:{port}"), "--quiet", "--concurrency", "64"]).stdout(Stdio::null());
    let mut proc = Proc::spawn("local-upstream", command)?;
    wait_port(&mut proc, port, Duration::from_secs(10))?;
    Ok((proc, format!("http://127.0.0.1:{port}")))
}

/// Portkey's gateway (`tools/bench/portkey`, installed by `make bench`) on Node 22.
fn portkey(root: &Path) -> Result<(Proc, String)> {
    let port = free_port();
    let dir = root.join("tools/bench/portkey");
    let mut command = Command::new(root.join("node_modules/.bin/node"));
    command
        .current_dir(&dir)
        .env("NODE_ENV", "production")
        .arg("node_modules/@portkey-ai/gateway/build/start-server.js")
        // Only the `--port=N` form is read; `--headless`: no web console.
        .args([format!("--port={port}"), "--headless".to_owned()])
        .stdout(Stdio::null());
    let mut proc = Proc::spawn("portkey", command)?;
    wait_port(&mut proc, port, Duration::from_secs(30))?;
    Ok((proc, format!("http://127.0.0.1:{port}")))
}

/// `redis-server` on a free port, its append-only file fsynced on every write, and a Spin
/// runtime configuration putting the `default` store on it.
fn redis(scratch: &Path) -> Result<(Proc, PathBuf)> {
    let port = free_port();
    let dir = scratch.join("redis");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut command = Command::new("redis-server");
    command
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--dir"])
        .arg(&dir)
        .args(["--appendonly", "yes", "--appendfsync", "always"])
        .stdout(Stdio::null());
    let mut proc = Proc::spawn("redis-server", command)?;
    wait_port(&mut proc, port, Duration::from_secs(10))?;
    let file = dir.join("runtime-config.toml");
    let toml = format!("[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{port}\"\n");
    std::fs::write(&file, toml).map_err(|e| e.to_string())?;
    Ok((proc, file))
}

/// A Cap'n Proto string literal.
fn capnp_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"))
}

/// One workerd process and the base URLs of what it serves.
struct Workerd {
    _proc: Proc,
    /// The gateway's Worker.
    gateway: String,
    /// The pass-through JavaScript Worker.
    floor: String,
    /// The same pass-through in Rust on workers-rs (`floor/worker-rs`).
    wasm_floor: String,
    /// The bare durable-write Worker (`floor/objects.js`).
    objects: String,
}

/// workerd serving the gateway's Worker, the floor Worker and the bare durable-write Worker,
/// each on its own port, their Durable Objects' SQLite files under `scratch`.
fn workerd(root: &Path, upstream: &str, scratch: &Path) -> Result<Workerd> {
    let (gateway_port, floor_port, objects_port, wasm_floor_port) =
        (free_port(), free_port(), free_port(), free_port());
    let gateway = format!("http://127.0.0.1:{gateway_port}");
    let objects = format!("http://127.0.0.1:{objects_port}");
    let dir = scratch.join("workerd");
    std::fs::create_dir_all(dir.join("state")).map_err(|e| e.to_string())?;
    for (from, to) in [
        ("build/index.js", "index.js"),
        ("build/index_bg.wasm", "index_bg.wasm"),
        ("tools/bench/floor/worker.js", "floor.js"),
        ("tools/bench/floor/objects.js", "objects.js"),
        ("tools/bench/floor/worker-rs/build/index.js", "wasm_floor.js"),
        ("tools/bench/floor/worker-rs/build/index_bg.wasm", "wasm_floor_bg.wasm"),
    ] {
        std::fs::copy(root.join(from), dir.join(to)).map_err(|e| format!("{from}: {e} (make build-worker)"))?;
    }
    let mut bindings =
        vec![format!("(name = \"EDGE_PREDICT_CONFIG\", text = {})", capnp_string(&config(&gateway, upstream)))];
    bindings.extend(SECRETS.iter().map(|(name, value)| format!("(name = \"{name}\", text = {})", capnp_string(value))));
    bindings.push("(name = \"JOBS\", durableObjectNamespace = \"JobObject\")".to_owned());
    bindings.push("(name = \"LIMITS\", durableObjectNamespace = \"LimitObject\")".to_owned());
    let capnp = format!(
        r#"using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "gateway", worker = .gateway),
    (name = "floor", worker = .floor),
    (name = "objects", worker = .objects),
    (name = "wasm_floor", worker = .wasmFloor),
    (name = "net", network = (allow = ["public", "private", "local"])),
    (name = "state", disk = (path = {state}, writable = true)),
  ],
  sockets = [
    (name = "gateway", address = "127.0.0.1:{gateway_port}", http = (), service = "gateway"),
    (name = "floor", address = "127.0.0.1:{floor_port}", http = (), service = "floor"),
    (name = "objects", address = "127.0.0.1:{objects_port}", http = (), service = "objects"),
    (name = "wasm_floor", address = "127.0.0.1:{wasm_floor_port}", http = (), service = "wasm_floor"),
  ],
);
const gateway :Workerd.Worker = (
  modules = [(name = "index.js", esModule = embed "index.js"), (name = "index_bg.wasm", wasm = embed "index_bg.wasm")],
  compatibilityDate = "2026-11-01",
  bindings = [{bindings}],
  durableObjectNamespaces = [
    (className = "JobObject", uniqueKey = "edge-predict-JobObject", enableSql = true),
    (className = "LimitObject", uniqueKey = "edge-predict-LimitObject", enableSql = true),
  ],
  durableObjectStorage = (localDisk = "state"),
  globalOutbound = "net",
);
const floor :Workerd.Worker = (
  modules = [(name = "floor.js", esModule = embed "floor.js")],
  compatibilityDate = "2026-11-01",
  bindings = [(name = "UPSTREAM", text = {upstream})],
  globalOutbound = "net",
);
const wasmFloor :Workerd.Worker = (
  modules = [(name = "index.js", esModule = embed "wasm_floor.js"), (name = "index_bg.wasm", wasm = embed "wasm_floor_bg.wasm")],
  compatibilityDate = "2026-11-01",
  bindings = [(name = "UPSTREAM", text = {upstream})],
  globalOutbound = "net",
);
const objects :Workerd.Worker = (
  modules = [(name = "objects.js", esModule = embed "objects.js")],
  compatibilityDate = "2026-11-01",
  bindings = [(name = "RECORDS", durableObjectNamespace = "Records"), (name = "UPSTREAM", text = {upstream}),
              (name = "UPSTREAM_KEY", text = {upstream_key}), (name = "SELF", text = {objects})],
  durableObjectNamespaces = [(className = "Records", uniqueKey = "bench-Records", enableSql = true)],
  durableObjectStorage = (localDisk = "state"),
  globalOutbound = "net",
);
"#,
        state = capnp_string(&dir.join("state").display().to_string()),
        bindings = bindings.join(", "),
        upstream = capnp_string(upstream),
        upstream_key = capnp_string(UPSTREAM_KEY),
        objects = capnp_string(&objects),
    );
    std::fs::write(dir.join("config.capnp"), capnp).map_err(|e| e.to_string())?;
    let mut command = Command::new(root.join("node_modules/.bin/workerd"));
    command.current_dir(&dir).args(["serve", "config.capnp", "--experimental"]).stdout(Stdio::null());
    let mut proc = Proc::spawn("workerd", command)?;
    for port in [gateway_port, floor_port, objects_port, wasm_floor_port] {
        wait_port(&mut proc, port, Duration::from_secs(30))?;
    }
    let floor = format!("http://127.0.0.1:{floor_port}");
    let wasm_floor = format!("http://127.0.0.1:{wasm_floor_port}");
    Ok(Workerd { _proc: proc, gateway, floor, objects, wasm_floor })
}

/// `spin up` of `manifest` with `variables`; the base URL and the time until it listened.
fn spin(
    manifest: &Path,
    variables: &[(&str, String)],
    runtime_config: Option<&Path>,
    scratch: &Path,
    name: &str,
) -> Result<(Proc, String, Duration)> {
    let port = free_port();
    let state = scratch.join(format!("spin-{name}"));
    std::fs::create_dir_all(&state).map_err(|e| e.to_string())?;
    let spin = std::env::var("SPIN").unwrap_or_else(|_| "spin".to_owned());
    let mut command = Command::new(spin);
    command
        .args(["up", "-f"])
        .arg(manifest)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--state-dir"])
        .arg(&state)
        .arg("--log-dir")
        .arg(&state)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(file) = runtime_config {
        command.arg("--runtime-config-file").arg(file);
    }
    for (name, value) in variables {
        command.env(format!("SPIN_VARIABLE_{}", name.to_uppercase()), value);
    }
    let mut proc = Proc::spawn("spin", command)?;
    let startup = wait_port(&mut proc, port, Duration::from_secs(60))?;
    Ok((proc, format!("http://127.0.0.1:{port}"), startup))
}

// ------------------------------------------------------------------ the run

/// A measured path and its sync loads.
struct Row {
    name: &'static str,
    runtime: &'static str,
    loads: Vec<Load>,
}

async fn run() -> Result<()> {
    let root = root();
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir).map_err(|e| e.to_string())?;
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let scratch = scratch.path();
    let bearer = format!("Bearer {KEY}");
    let upstream_auth = format!("Api-Key {UPSTREAM_KEY}");
    let predict = "/models/demo/production/predict";
    let chat = "/models/demo/production/sync/v1/chat/completions";

    let (_upstream, up) = upstream(&root)?;
    eprintln!("bench: upstream {up}");
    let mut rows = Vec::new();
    let mut extra = serde_json::Map::new();

    // Direct: the limit.
    let direct = Call::predict(format!("{up}{predict}"), Some(upstream_auth.clone()));
    rows.push(Row { name: "direct to the upstream", runtime: "direct", loads: sync_loads(&direct, scratch)? });
    let direct_ttfb = streamed_ttfb(&format!("{up}{chat}"), &upstream_auth, &[]).await?;

    // A Node gateway: Portkey's, forwarding to the same upstream (its pass-through route for
    // predict, its OpenAI route for the streamed chat).
    {
        let (_portkey, base) = portkey(&root)?;
        eprintln!("bench: portkey {base}");
        let routing = |host: String| vec![("x-portkey-provider", "openai".to_owned()), ("x-portkey-custom-host", host)];
        let call = Call::predict(format!("{base}/v1/proxy{predict}"), Some(upstream_auth.clone()))
            .with_headers(routing(up.clone()));
        rows.push(Row { name: "Portkey gateway 1.15.2, Node 22", runtime: "node", loads: sync_loads(&call, scratch)? });
        // Its OpenAI provider sends the caller's bearer token on.
        let ttfb = streamed_ttfb(
            &format!("{base}/v1/chat/completions"),
            &format!("Bearer {UPSTREAM_KEY}"),
            &routing(format!("{up}/models/demo/production/sync/v1")),
        )
        .await?;
        extra.insert("portkey".to_owned(), json!({"streamed_ttfb_ms": round(ttfb, 3)}));
    }

    // workerd: the floor and the gateway's Worker, one process.
    {
        let Workerd { gateway, floor, objects, wasm_floor, .. } = &workerd(&root, &up, scratch)?;
        eprintln!("bench: workerd gateway {gateway}, floor {floor}");
        let floor_call = Call::predict(format!("{floor}{predict}"), Some(upstream_auth.clone()));
        rows.push(Row {
            name: "pass-through JS Worker, workerd (floor)",
            runtime: "workerd",
            loads: sync_loads(&floor_call, scratch)?,
        });
        // The same pass-through as a wasm Worker on the gateway's workers-rs: what being wasm
        // costs on workerd before the gateway does anything.
        let wasm_floor_call = Call::predict(format!("{wasm_floor}{predict}"), Some(upstream_auth.clone()));
        rows.push(Row {
            name: "pass-through Rust Worker (workers-rs), workerd (wasm floor)",
            runtime: "workerd",
            loads: sync_loads(&wasm_floor_call, scratch)?,
        });
        let call = Call::predict(format!("{gateway}{predict}"), Some(bearer.clone()));
        rows.push(Row {
            name: "**edge-predict Worker, workerd**",
            runtime: "workerd",
            loads: sync_loads(&call, scratch)?,
        });
        let limited = Call::predict(format!("{gateway}{predict}"), Some(format!("Bearer {LIMITED_KEY}")));
        rows.push(Row {
            name: "edge-predict Worker, workerd, a key with limits",
            runtime: "workerd",
            loads: sync_loads(&limited, scratch)?,
        });
        let limited_submits = gateway_submits(gateway, LIMITED_KEY).await;
        let (submitted, status) = gateway_async(gateway, &bearer, scratch).await?;
        // The floor of durable writes on this workerd: a bare Worker, one record per object
        // (the gateway's layout before) or in a fixed set of 256 (its layout now); and the
        // same bare Worker doing an async submit's protocol (record, upstream submit, its id
        // recorded; the upstream's webhook written back), nothing else.
        let mut bare = serde_json::Map::new();
        for (name, query) in [
            ("object_per_record", "objects=0"),
            ("fixed_256_objects", "objects=256"),
            ("submit_protocol", "objects=256&job=1"),
        ] {
            let submit = format!("{objects}/?{query}");
            let read = |id: &str| format!("{objects}/?{query}&k={id}");
            bare.insert(name.to_owned(), submits(&submit, ASYNC_BODY, read, None).await);
        }
        extra.insert(
            "workerd".to_owned(),
            json!({"async": submitted, "status_reads": status, "bare_durable_writes": bare, "limited_async": limited_submits,
                   "streamed_ttfb_ms": {"direct": round(direct_ttfb, 3),
                                        "floor": round(streamed_ttfb(&format!("{floor}{chat}"), &upstream_auth, &[]).await?, 3),
                                        "gateway": round(streamed_ttfb(&format!("{gateway}{chat}"), &bearer, &[]).await?, 3)}}),
        );
    }

    // What bounds durable submits on workerd here: the same, its objects' SQLite files on a
    // tmpfs (not durable across a reboot; a diagnostic, never a deployment).
    if let Ok(tmpfs) = tempfile::tempdir_in("/dev/shm") {
        let Workerd { gateway, .. } = &workerd(&root, &up, tmpfs.path())?;
        let submit = format!("{gateway}/models/demo/production/async_predict");
        let status = |id: &str| format!("{gateway}/async_request/{id}");
        let submitted = submits(&submit, ASYNC_BODY, status, Some(KEY)).await;
        extra.insert("workerd_in_memory".to_owned(), json!({"async": submitted}));
    }

    // Spin: the floor component, the gateway's component, the composed component.
    let mut spin_extra = serde_json::Map::new();
    {
        let manifest = root.join("tools/bench/floor/spin/spin.toml");
        let (_spin, base, startup) = spin(&manifest, &[("upstream", up.clone())], None, scratch, "floor")?;
        let call = Call::predict(format!("{base}{predict}"), Some(upstream_auth.clone()));
        spin_extra.insert("floor_cold".to_owned(), cold_start(startup, &call).await?);
        rows.push(Row {
            name: "pass-through component, Spin (floor)",
            runtime: "spin",
            loads: sync_loads(&call, scratch)?,
        });
    }
    {
        let variables = [("edge_predict_config", config("http://127.0.0.1:3000", &up))];
        let (_spin, base, startup) = spin(&root.join("spin.toml"), &variables, None, scratch, "gateway")?;
        let call = Call::predict(format!("{base}{predict}"), Some(bearer.clone()));
        spin_extra.insert("gateway_cold".to_owned(), cold_start(startup, &call).await?);
        rows.push(Row {
            name: "**edge-predict component, Spin**",
            runtime: "spin",
            loads: sync_loads(&call, scratch)?,
        });
        let limited = Call::predict(format!("{base}{predict}"), Some(format!("Bearer {LIMITED_KEY}")));
        rows.push(Row {
            name: "edge-predict component, Spin, a key with limits",
            runtime: "spin",
            loads: sync_loads(&limited, scratch)?,
        });
        spin_extra.insert("limited_async".to_owned(), gateway_submits(&base, LIMITED_KEY).await);
        let (submitted, status) = gateway_async(&base, &bearer, scratch).await?;
        spin_extra.insert("status_reads".to_owned(), status);
        spin_extra.insert("async".to_owned(), submitted);
        spin_extra.insert(
            "streamed_ttfb_ms".to_owned(),
            json!({"direct": round(direct_ttfb, 3), "gateway": round(streamed_ttfb(&format!("{base}{chat}"), &bearer, &[]).await?, 3)}),
        );
    }
    {
        // The same component with its `default` store on Redis (runtime-config/redis.toml's
        // shape), fsyncing every write (`appendfsync always`): as durable as the SQLite file.
        let (_redis, redis_config) = redis(scratch)?;
        let variables = [("edge_predict_config", config("http://127.0.0.1:3000", &up))];
        let (_spin, base, _) = spin(&root.join("spin.toml"), &variables, Some(&redis_config), scratch, "redis")?;
        let (submitted, status) = gateway_async(&base, &bearer, scratch).await?;
        spin_extra.insert("redis_async".to_owned(), submitted);
        spin_extra.insert("redis_status_reads".to_owned(), status);
    }
    {
        let variables =
            [("edge_predict_config", config("http://127.0.0.1:3000", &up)), ("component_api_key", KEY.to_owned())];
        let manifest = root.join("examples/consumer/spin.toml");
        let (_spin, base, startup) = spin(&manifest, &variables, None, scratch, "composed")?;
        let call = Call::predict(format!("{base}/predict/demo"), None);
        spin_extra.insert("composed_cold".to_owned(), cold_start(startup, &call).await?);
        rows.push(Row { name: "composed component, Spin", runtime: "spin", loads: sync_loads(&call, scratch)? });
        let submitted =
            submits(&format!("{base}/submit/demo"), r#"{"prompt": "hi"}"#, |id| format!("{base}/status/{id}"), None)
                .await;
        spin_extra.insert("composed_async".to_owned(), submitted);
    }
    extra.insert("spin".to_owned(), Value::Object(spin_extra));
    extra.insert("sizes".to_owned(), sizes(&root));

    let results = json!({
        "machine": machine(),
        "load_seconds": LOAD_SECONDS,
        "sync_predict": rows.iter().map(|r| json!({"path": r.name.trim_matches('*'), "runtime": r.runtime,
            "loads": r.loads.iter().map(Load::json).collect::<Vec<_>>()})).collect::<Vec<_>>(),
        "details": Value::Object(extra),
    });
    let markdown = markdown(&rows, &results);
    std::fs::write(out_dir.join("results.json"), serde_json::to_string_pretty(&results).unwrap())
        .map_err(|e| e.to_string())?;
    std::fs::write(out_dir.join("results.md"), &markdown).map_err(|e| e.to_string())?;
    println!("{markdown}");
    eprintln!("bench: wrote {} and results.md", out_dir.join("results.json").display());
    Ok(())
}

fn ms(d: Duration) -> f64 {
    round(d.as_secs_f64() * 1000.0, 1)
}

/// Durable submits to the gateway at `base` with `key`.
async fn gateway_submits(base: &str, key: &str) -> Value {
    let submit = format!("{base}/models/demo/production/async_predict");
    let status = |id: &str| format!("{base}/async_request/{id}");
    submits(&submit, ASYNC_BODY, status, Some(key)).await
}

/// Durable submits to the gateway at `base`, then status reads of one of those jobs.
async fn gateway_async(base: &str, bearer: &str, scratch: &Path) -> Result<(Value, Value)> {
    let submitted = gateway_submits(base, KEY).await;
    let reads = status_loads(base, &submitted, bearer, scratch)?;
    Ok((submitted, reads))
}

/// Status reads of one existing job at concurrency 1 and 16.
fn status_loads(base: &str, submitted: &Value, bearer: &str, scratch: &Path) -> Result<Value> {
    let Some(id) = submitted["first_request_id"].as_str() else { return Ok(Value::Null) };
    let call = Call {
        method: "GET",
        url: format!("{base}/async_request/{id}"),
        authorization: Some(bearer.to_owned()),
        headers: Vec::new(),
        body: None,
    };
    wrk(&call, 4, 1, scratch)?;
    let loads: Result<Vec<Value>> =
        [1, 16].iter().map(|&c| wrk(&call, c, LOAD_SECONDS, scratch).map(|l| l.json())).collect();
    Ok(Value::Array(loads?))
}

fn gzip_size(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let mut encoder = flate2::read::GzEncoder::new(&bytes[..], flate2::Compression::best());
    let mut out = Vec::new();
    encoder.read_to_end(&mut out).ok()?;
    Some(out.len() as u64)
}

/// Artifact sizes, uncompressed and gzip -9.
fn sizes(root: &Path) -> Value {
    let mut sizes = serde_json::Map::new();
    for path in [
        "build/index_bg.wasm",
        "build/index.js",
        "build/wasip2/spin.wasm",
        "build/wasip2/composed.wasm",
        "target/wasm32-wasip2/release/bench_floor.wasm",
    ] {
        let full = root.join(path);
        if let Ok(meta) = std::fs::metadata(&full) {
            sizes.insert(path.to_owned(), json!({"bytes": meta.len(), "gzip_bytes": gzip_size(&full)}));
        }
    }
    Value::Object(sizes)
}

/// What the numbers were measured on.
fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines().find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned()))
    });
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let version = |cmd: &str, arg: &str| {
        Command::new(cmd)
            .arg(arg)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_owned())
    };
    let spin = std::env::var("SPIN").unwrap_or_else(|_| "spin".to_owned());
    json!({"cpu": cpu, "cores": cores, "workerd": version(&root().join("node_modules/.bin/workerd").display().to_string(), "--version"),
           "spin": version(&spin, "--version"), "wrk": Command::new("wrk").arg("-v").output().ok()
               .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_owned())})
}

fn markdown(rows: &[Row], results: &Value) -> String {
    let mut md = String::new();
    let m = &results["machine"];
    let _ = writeln!(
        md,
        "Measured by `make bench` on {} ({} cores), {}, {}; {} s of `wrk` load per cell.\n",
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        m["workerd"].as_str().unwrap_or("workerd ?"),
        m["spin"].as_str().unwrap_or("spin ?"),
        LOAD_SECONDS
    );
    let _ = writeln!(md, "Sync predict (req/s, p50 / p99 ms; ×direct and ×floor are throughput ratios in this run):\n");
    let mut head = "| path |".to_owned();
    let mut rule = "| --- |".to_owned();
    for c in CONCURRENCY {
        let _ = write!(head, " c={c} req/s | c={c} p50 / p99 |");
        rule.push_str(" --- | --- |");
    }
    head.push_str(" ×direct c=32 | ×floor c=32 | +p50 vs floor c=1 | ×Portkey c=1 / 16 / 32 |");
    rule.push_str(" --- | --- | --- | --- |");
    let _ = writeln!(md, "{head}\n{rule}");
    let direct = &rows[0];
    let floor_of = |runtime: &str| rows.iter().find(|r| r.runtime == runtime && r.name.contains("floor"));
    let portkey = rows.iter().find(|r| r.runtime == "node");
    for row in rows {
        let mut line = format!("| {} |", row.name);
        for load in &row.loads {
            let mark = if load.errors > 0 { format!(" ({} errors)", load.errors) } else { String::new() };
            let _ = write!(line, " {:.0}{mark} | {:.2} / {:.2} |", load.requests_per_second, load.p50_ms, load.p99_ms);
        }
        let last = |r: &Row| r.loads.last().map_or(0.0, |l| l.requests_per_second);
        let ratio = |a: f64, b: f64| if b > 0.0 { format!("{:.2}", a / b) } else { "–".to_owned() };
        let vs_floor = floor_of(row.runtime).filter(|f| !std::ptr::eq(*f, row));
        let added =
            vs_floor.map_or("–".to_owned(), |f| format!("{:+.2} ms", row.loads[0].p50_ms - f.loads[0].p50_ms));
        let vs_portkey =
            portkey.filter(|p| !std::ptr::eq(*p, row) && row.runtime != "direct").map_or("–".to_owned(), |p| {
                let each = row.loads.iter().zip(&p.loads);
                each.map(|(a, b)| ratio(a.requests_per_second, b.requests_per_second)).collect::<Vec<_>>().join(" / ")
            });
        let _ = writeln!(
            line,
            " {} | {} | {} | {} |",
            ratio(last(row), last(direct)),
            vs_floor.map_or("–".to_owned(), |f| ratio(last(row), last(f))),
            added,
            vs_portkey
        );
        md.push_str(&line);
    }
    let d = &results["details"];
    let _ = writeln!(md, "\nDurable async submits ({SUBMITTERS} at once, each 201 once its record is durable, every record then read back) and status reads of one job:\n");
    let _ = writeln!(md, "| runtime | submits/s | accepted / found | status reads c=1 req/s | status reads c=16 req/s |\n| --- | --- | --- | --- | --- |");
    let bare = &d["workerd"]["bare_durable_writes"];
    for (name, a, s) in [
        ("bare JS Worker, workerd, a new object per record (floor)", &bare["object_per_record"], &Value::Null),
        ("bare JS Worker, workerd, 256 fixed objects (floor)", &bare["fixed_256_objects"], &Value::Null),
        (
            "bare JS Worker, workerd, 256 objects, a submit's protocol: record, upstream submit, its id, webhook (floor)",
            &bare["submit_protocol"],
            &Value::Null,
        ),
        ("edge-predict Worker, workerd", &d["workerd"]["async"], &d["workerd"]["status_reads"]),
        ("edge-predict Worker, workerd, a key with limits", &d["workerd"]["limited_async"], &Value::Null),
        (
            "edge-predict Worker, workerd, objects' files on tmpfs (diagnostic)",
            &d["workerd_in_memory"]["async"],
            &Value::Null,
        ),
        ("edge-predict component, Spin", &d["spin"]["async"], &d["spin"]["status_reads"]),
        ("edge-predict component, Spin, a key with limits", &d["spin"]["limited_async"], &Value::Null),
        ("edge-predict component, Spin, store on Redis", &d["spin"]["redis_async"], &d["spin"]["redis_status_reads"]),
        ("composed component, Spin", &d["spin"]["composed_async"], &Value::Null),
    ] {
        let reads = |i: usize| s[i]["requests_per_second"].as_f64().map_or("–".to_owned(), |r| format!("{r:.0}"));
        let _ = writeln!(
            md,
            "| {name} | {} | {} / {} | {} | {} |",
            a["submits_per_second"],
            a["accepted"],
            a["found"],
            reads(0),
            reads(1)
        );
    }
    let _ = writeln!(md, "\nStreamed chat completion, time to first byte (median of 20, ms):\n");
    let _ = writeln!(md, "| direct | Portkey, Node | JS Worker floor, workerd | edge-predict Worker, workerd | edge-predict component, Spin |\n| --- | --- | --- | --- | --- |");
    let t = &d["workerd"]["streamed_ttfb_ms"];
    let _ = writeln!(
        md,
        "| {} | {} | {} | {} | {} |",
        t["direct"],
        d["portkey"]["streamed_ttfb_ms"],
        t["floor"],
        t["gateway"],
        d["spin"]["streamed_ttfb_ms"]["gateway"]
    );
    let _ = writeln!(
        md,
        "\nSpin cold start (spawn → listening; then the first request, which instantiates the component):\n"
    );
    let _ = writeln!(md, "| component | listening ms | first response ms |\n| --- | --- | --- |");
    for (name, key) in [("floor", "floor_cold"), ("edge-predict", "gateway_cold"), ("composed", "composed_cold")] {
        let c = &d["spin"][key];
        let _ = writeln!(md, "| {name} | {} | {} |", c["listening_ms"], c["first_response_ms"]);
    }
    let _ = writeln!(md, "\nArtifacts:\n\n| file | bytes | gzip -9 |\n| --- | --- | --- |");
    if let Some(sizes) = d["sizes"].as_object() {
        for (path, s) in sizes {
            let _ = writeln!(md, "| `{path}` | {} | {} |", s["bytes"], s["gzip_bytes"]);
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_wrk_report() {
        let report = "Running 4s test @ http://127.0.0.1:1/x\n  1 threads and 1 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency    97.05us   20.00us   1.20ms   90.00%\n  Latency Distribution\n     50%   92.00us\n     75%  100.00us\n     90%  110.00us\n     99%    1.05ms\n  41000 requests in 4.00s, 5.00MB read\n  Non-2xx or 3xx responses: 3\n  Socket errors: connect 0, read 2, write 0, timeout 1\nRequests/sec:  10250.12\nTransfer/sec:      1.25MB\n";
        let load = parse_wrk(report, 1).unwrap();
        assert_eq!(load.requests, 41000);
        assert!((load.p50_ms - 0.092).abs() < 1e-9 && (load.p99_ms - 1.05).abs() < 1e-9);
        assert!((load.requests_per_second - 10250.12).abs() < 1e-9);
        assert_eq!(load.errors, 6);
        assert!(parse_wrk("unable to connect", 1).is_none());
    }

    #[test]
    fn lua_strings_are_quoted() {
        let call = Call::predict("http://x/".into(), Some("Bearer k".into()));
        assert!(call.lua().contains(r#"wrk.body = "{\"prompt\": \"hello from make bench\", \"max_tokens\": 16}""#));
    }
}
