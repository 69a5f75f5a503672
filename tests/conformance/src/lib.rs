//! HTTP conformance suite for edge-predict.
//!
//! The same scenarios run against every packaging of the gateway: the packaging is a
//! [`Gateway`] (a base URL, a hard restart on the same persisted state, a stop). The suite
//! starts one local Baseten-compatible upstream (`local_upstream`, in-process), one webhook
//! receiver ([`receiver::Receiver`]) and one gateway, then runs every scenario in order, each
//! reported as its own test (libtest-mimic). Nothing sleeps a fixed time: every wait polls
//! with a deadline ([`client::eventually`]).
//!
//! A packaging's test file is a `main` that calls [`run_suite`] with a function starting its
//! gateway from a [`GatewaySpec`]; `tests/worker.rs` is the Cloudflare Worker one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod baseten_schema;
pub mod client;
pub mod hostile;
pub mod receiver;
pub mod scenarios;
pub mod spin;
pub mod worker;

use std::future::Future;
use std::net::TcpListener;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// A boxed, sendable future (the [`Gateway`] trait is object-safe).
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One packaging of the gateway under test.
pub trait Gateway: Send + Sync {
    /// Which packaging this is.
    fn packaging(&self) -> Packaging;
    /// `http://127.0.0.1:<port>`, the same before and after a restart.
    fn base_url(&self) -> String;
    /// Kills the gateway at once (no graceful shutdown: SIGKILL) and starts it again on the
    /// same port and the same persisted state; returns once it answers again.
    fn restart_hard(&self) -> BoxFut<'_, Result<(), String>>;
    /// Stops the gateway and everything it started. Idempotent.
    fn stop(&self);
    /// The process group the gateway runs in (its runtime and helpers), while it runs.
    fn process_group(&self) -> Option<u32>;
    /// Everything the gateway's runtime has written so far (its log lines among it).
    fn logs(&self) -> String;
}

/// The resident memory of a process group: `(now, peak since the last reset)` in KiB, summed
/// over its processes (`VmRSS`, `VmHWM` in `/proc/{pid}/status`).
pub fn group_memory_kib(group: u32) -> (u64, u64) {
    let (mut now, mut peak) = (0, 0);
    for pid in group_pids(group) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status.lines().find_map(|l| l.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        };
        now += field("VmRSS:").unwrap_or(0);
        peak += field("VmHWM:").unwrap_or(0);
    }
    (now, peak)
}

/// Resets the peak resident memory (`VmHWM`) of every process in the group to what it uses
/// now (`echo 5 > /proc/{pid}/clear_refs`); whether every process allowed it.
pub fn reset_group_peak_memory(group: u32) -> bool {
    group_pids(group).iter().all(|pid| std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok())
}

fn group_pids(group: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // `/proc/{pid}/stat`: "pid (comm) state ppid pgrp ..."; comm may hold spaces.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            after_comm.split_whitespace().nth(2).and_then(|g| g.parse::<u32>().ok()) == Some(group)
        })
        .collect()
}

/// The packagings under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packaging {
    /// The Cloudflare Worker, in workerd (`wrangler dev`).
    Worker,
    /// The Spin component, in real Spin.
    Spin,
}

/// What a packaging needs to start its gateway.
#[derive(Debug, Clone)]
pub struct GatewaySpec {
    /// The port to listen on (127.0.0.1); `config_json`'s `public_base_url` names it.
    pub port: u16,
    /// The configuration document (src/engine/config.rs).
    pub config_json: String,
    /// Secret name → value, as the configuration document names them.
    pub secrets: Vec<(String, String)>,
}

impl GatewaySpec {
    /// Adds model `name` in front of `upstream` (with the test's upstream key).
    pub fn add_model(&mut self, name: &str, upstream: &str) {
        let mut doc: Value = serde_json::from_str(&self.config_json).expect("the test's own document");
        doc["models"][name] = json!({"upstream": upstream, "api_key_secret_name": "UPSTREAM_API_KEY"});
        self.config_json = doc.to_string();
    }

    /// The test configuration on a free port, in front of the upstream at `upstream_url`, with
    /// model `broken` pointing at `closed_port`, and every secret the document names.
    pub fn for_upstream(upstream_url: &str, closed_port: u16) -> Self {
        let port = free_port();
        let secret = |name: &str, value: &str| (name.to_owned(), value.to_owned());
        Self {
            port,
            config_json: config_document(port, upstream_url, closed_port),
            secrets: vec![
                secret("UPSTREAM_API_KEY", secrets::UPSTREAM_API_KEY),
                secret("BASETEN_WEBHOOK_SECRET", secrets::BASETEN_WEBHOOK_SECRET),
                secret("OUTBOUND_WEBHOOK_SECRET", secrets::OUTBOUND_WEBHOOK_SECRET),
                secret("BROWSER_TOKEN_SECRET", secrets::BROWSER_TOKEN_SECRET),
                secret("ID_SECRET", secrets::ID_SECRET),
            ],
        }
    }
}

/// The gateway keys of the test configuration (their SHA-256 is in the document).
pub mod keys {
    /// Every model, chain and operation ([`super::ALL_OPERATIONS`]).
    pub const FULL: &str = "conformance-full-key";
    /// Like FULL, a different key: idempotency keys are scoped per API key.
    pub const OTHER: &str = "conformance-other-key";
    /// Only model `demo`, only `predict` and `status`.
    pub const NARROW: &str = "conformance-narrow-key";
    /// Every model and operation, at most [`super::LIMITED_PER_MINUTE`] requests a minute.
    pub const LIMITED: &str = "conformance-limited-key";
    /// Not configured at all.
    pub const UNKNOWN: &str = "conformance-unknown-key";
}

/// The `requests_per_minute` of [`keys::LIMITED`].
pub const LIMITED_PER_MINUTE: u64 = 5;

/// Every operation, the operator's `sweep` and `mint_token` included (omitted, a key has all
/// but those two).
pub const ALL_OPERATIONS: [&str; 9] =
    ["predict", "async_predict", "status", "cancel", "queue_status", "wake", "sync", "sweep", "mint_token"];

/// The one browser origin the narrow key may be used from.
pub const BROWSER_ORIGIN: &str = "https://app.conformance.example";

/// Secrets shared by the gateway, the upstream and the test's own signature checks.
pub mod secrets {
    pub const UPSTREAM_API_KEY: &str = "conformance-upstream-key";
    /// The upstream signs inbox deliveries with it (Baseten's `X-BASETEN-SIGNATURE`).
    pub const BASETEN_WEBHOOK_SECRET: &str = "conformance-inbound-webhook-secret";
    /// The gateway signs deliveries to callers with it: Baseten header over the whole
    /// string's bytes, Standard Webhooks with the base64 key after `whsec_`.
    pub const OUTBOUND_WEBHOOK_SECRET: &str = "whsec_Y29uZm9ybWFuY2Utb3V0Ym91bmQta2V5LTAxMjM0NQ==";
    /// Keys the request ids derived from idempotency keys.
    pub const ID_SECRET: &str = "conformance-request-id-secret-0123456789";
    /// Signs browser tokens.
    pub const BROWSER_TOKEN_SECRET: &str = "conformance-browser-token-secret-0123456789";
}

/// Everything a scenario can reach.
pub struct World {
    pub gateway: Box<dyn Gateway>,
    pub api: client::Api,
    pub receiver: receiver::Receiver,
    pub upstream_url: String,
    /// A loopback port nothing listens on ("an endpoint that never answers").
    pub closed_port: u16,
    /// Distinguishes this run's ids (deployments, idempotency keys, hook names).
    pub run_id: String,
    /// The local upstream, which counts what it accepted.
    pub upstream: local_upstream::ServerHandle,
    /// Model `dripping`'s upstream: it accepts, then its body drips a byte a second, forever.
    pub dripping: hostile::HostileReceiver,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World").field("gateway", &self.gateway.base_url()).field("run_id", &self.run_id).finish()
    }
}

impl World {
    /// A name unique to this run and call: `{prefix}-{run}-{n}`.
    pub fn unique(&self, prefix: &str) -> String {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{prefix}-{}-{n}", self.run_id)
    }

    /// The path of job `id`'s inbox, as the gateway gave it to the upstream (once the job has
    /// been submitted there).
    pub async fn inbox_path(&self, id: &str) -> String {
        let marker = format!("/webhooks/baseten/{id}/");
        client::eventually("the upstream has the job's inbox URL", std::time::Duration::from_secs(20), || async {
            let urls = self.upstream.webhook_endpoints();
            match urls.iter().find_map(|u| u.find(&marker).map(|at| u[at..].to_owned())) {
                Some(path) => Ok(path),
                None => Err(format!("{} webhook endpoints, none for {id}", urls.len())),
            }
        })
        .await
    }
}

/// SIGKILL to a child's whole process group (wrangler and workerd, spin and its trigger,
/// redis-server), then waits until the group is empty, so no stray process keeps a port.
pub fn kill_group(mut child: std::process::Child) {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    let Ok(pid) = i32::try_from(child.id()) else { return };
    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    let _ = child.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    while killpg(Pid::from_raw(pid), None).is_ok() && Instant::now() < deadline {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `ready` until it holds, while the server process lives and `deadline` has not passed.
/// On failure: why, for the caller's message ("exited with …" or "did not answer within …").
pub async fn wait_until_ready<F, Fut>(
    child: &std::sync::Mutex<Option<std::process::Child>>,
    deadline: Duration,
    mut ready: F,
) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let began = Instant::now();
    loop {
        if ready().await {
            return Ok(());
        }
        let exited = child.lock().unwrap().as_mut().and_then(|c| c.try_wait().ok().flatten());
        if let Some(status) = exited {
            return Err(format!("exited with {status}"));
        }
        if began.elapsed() > deadline {
            return Err(format!("did not answer within {} s", deadline.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Binds 127.0.0.1:0, reads the port and releases it.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// The test configuration document: models `demo` (the upstream) and `broken` (a closed
/// port), chain `demo-chain`, three keys, webhook secrets and a fast delivery policy.
pub fn config_document(gateway_port: u16, upstream_url: &str, closed_port: u16) -> String {
    let upstream = |path: &str| {
        json!({"upstream": format!("{upstream_url}{path}"), "api_key_secret_name": "UPSTREAM_API_KEY",
               "price_per_second": 0.001})
    };
    json!({
        "public_base_url": format!("http://127.0.0.1:{gateway_port}"),
        "dev_mode": true,
        "retention_seconds": 3600,
        "keys": [
            {"id": "full", "sha256": sha256_hex(keys::FULL), "models": ["*"], "chains": ["*"], "operations": ALL_OPERATIONS},
            {"id": "other", "sha256": sha256_hex(keys::OTHER), "models": ["*"], "chains": ["*"], "operations": ALL_OPERATIONS},
            {"id": "narrow", "sha256": sha256_hex(keys::NARROW), "models": ["demo"],
             "operations": ["predict", "status"], "origins": [BROWSER_ORIGIN]},
            {"id": "limited", "sha256": sha256_hex(keys::LIMITED), "models": ["*"], "origins": [BROWSER_ORIGIN],
             "limits": {"requests_per_minute": LIMITED_PER_MINUTE}}
        ],
        "models": {
            "demo": {"upstream": format!("{upstream_url}/models/demo"), "api_key_secret_name": "UPSTREAM_API_KEY",
                     "price_per_second": 0.001, "openai_model": "demo-llm"},
            // A regional upstream: the local upstream's `/_host/{label}` is `Host: {label}.local`.
            "regional": {"upstream": format!("{upstream_url}/_host/model-demo-{{env}}"),
                         "api_key_secret_name": "UPSTREAM_API_KEY"},
            "broken": {"upstream": format!("http://127.0.0.1:{closed_port}/models/demo"),
                       "api_key_secret_name": "UPSTREAM_API_KEY"}
        },
        "chains": {"demo-chain": upstream("/chains/demo-chain")},
        "webhooks": {
            "inbound_secret_names": ["BASETEN_WEBHOOK_SECRET"],
            "outbound_secret_name": "OUTBOUND_WEBHOOK_SECRET",
            "delivery": {"max_attempts": 4, "initial_delay_seconds": 1, "max_delay_seconds": 2}
        },
        "browser_tokens": {"secret_name": "BROWSER_TOKEN_SECRET", "max_ttl_seconds": 600},
        "id_secret_name": "ID_SECRET"
    })
    .to_string()
}

/// Starts a packaging's gateway from a spec.
pub type StartGateway = Box<dyn FnOnce(GatewaySpec) -> BoxFut<'static, Result<Box<dyn Gateway>, String>>>;

/// Runs every scenario against the gateway `start` makes; exits the process with the result.
pub fn run_suite(packaging: &str, start: StartGateway) -> ! {
    let mut args = libtest_mimic::Arguments::from_args();
    // One shared gateway: scenarios run one after another, in the order listed.
    args.test_threads = Some(1);
    let list_only = args.list;
    let runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().expect("a tokio runtime"),
    );
    let world = if list_only {
        None
    } else {
        let began = Instant::now();
        match runtime.block_on(start_world(start)) {
            Ok(world) => {
                eprintln!(
                    "conformance[{packaging}]: gateway {} up in {:.1} s",
                    world.gateway.base_url(),
                    began.elapsed().as_secs_f64()
                );
                Some(Arc::new(world))
            }
            Err(e) => {
                eprintln!("conformance[{packaging}]: could not start the suite: {e}");
                std::process::exit(101);
            }
        }
    };
    let timings: Arc<std::sync::Mutex<Vec<(String, f64)>>> = Arc::default();
    let trials = scenarios::all()
        .into_iter()
        .map(|(name, scenario)| {
            let world = world.clone();
            let runtime = Arc::clone(&runtime);
            let timings = Arc::clone(&timings);
            libtest_mimic::Trial::test(format!("{packaging}::{name}"), move || {
                let world = world.ok_or("no world")?;
                let began = Instant::now();
                runtime.block_on(scenario(world));
                timings.lock().unwrap().push((name.to_owned(), began.elapsed().as_secs_f64()));
                Ok(())
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    for (name, secs) in timings.lock().unwrap().iter() {
        eprintln!("conformance[{packaging}]: {secs:>5.1} s  {name}");
    }
    if let Some(world) = &world {
        world.gateway.stop();
    }
    drop(world);
    conclusion.exit()
}

async fn start_world(start: StartGateway) -> Result<World, String> {
    let receiver = receiver::Receiver::start().await?;
    let upstream_config = local_upstream::Config {
        api_key: secrets::UPSTREAM_API_KEY.to_owned(),
        webhook_secrets: vec![secrets::BASETEN_WEBHOOK_SECRET.to_owned()],
        concurrency: 1,
        // Baseten makes two attempts; a long gap lets the second land after a gateway restart.
        webhook_retry_gap: Duration::from_secs(20),
        log_requests: std::env::var_os("CONFORMANCE_UPSTREAM_LOG").is_some(),
        ..local_upstream::Config::default()
    };
    let upstream = local_upstream::start("127.0.0.1:0", upstream_config).await.map_err(|e| e.to_string())?;
    let closed_port = free_port();
    let dripping = hostile::HostileReceiver::start(hostile::Misbehavior::DrippingBody).await;
    let mut spec = GatewaySpec::for_upstream(&upstream.url(), closed_port);
    spec.add_model("dripping", &format!("{}/models/dripping", dripping.origin()));
    let gateway = start(spec).await?;
    let api = client::Api::new(gateway.base_url());
    let run_id =
        format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis());
    Ok(World { gateway, api, receiver, upstream_url: upstream.url(), closed_port, run_id, upstream, dripping })
}
