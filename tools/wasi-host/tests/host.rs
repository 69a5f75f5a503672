//! wasi-host against a real Spin component (tests/guest, spin-sdk 5.2.0) over real HTTP.
//!
//! The guest is built once per test run with `cargo build --target wasm32-wasip2 --release`
//! into `<workspace target>/wasi-host-guest` (about 1.5 min the first time, seconds after).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use wasi_host::{serve, HostConfig, Server};

/// Builds tests/guest (once per process) and returns the component's path.
fn guest_wasm() -> &'static Path {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| {
        let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let target_root = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| manifest_dir.join("../../target"));
        let target_dir = target_root.join("wasi-host-guest");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
            .arg(manifest_dir.join("tests/guest/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir)
            // Flags meant for the host build must not leak into the wasm build.
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .status()
            .expect("running cargo to build tests/guest");
        assert!(status.success(), "building tests/guest failed (is `rustup target add wasm32-wasip2` done?)");
        let wasm = target_dir.join("wasm32-wasip2/release/wasi_host_test_guest.wasm");
        assert!(wasm.exists(), "{} missing after the build", wasm.display());
        wasm
    })
}

fn localhost0() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

async fn start(kv_path: &Path, variables: BTreeMap<String, String>) -> Server {
    let wasm = tokio::task::spawn_blocking(guest_wasm).await.unwrap();
    serve(HostConfig { component: wasm.to_owned(), addr: localhost0(), kv_path: kv_path.to_owned(), variables })
        .await
        .expect("serve")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap()
}

/// (status, body) of a request.
async fn call(req: reqwest::RequestBuilder) -> (u16, String) {
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variables_are_served_and_missing_ones_are_undefined() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("kv.json"), vars(&[("greeting", "hello"), ("api_base", "http://x")])).await;
    let c = client();
    let url = server.url();
    assert_eq!(call(c.get(format!("{url}/var?name=greeting"))).await, (200, "hello".into()));
    assert_eq!(call(c.get(format!("{url}/var?name=api_base"))).await, (200, "http://x".into()));
    assert_eq!(call(c.get(format!("{url}/var?name=nope"))).await, (404, "undefined: nope".into()));
    let (status, body) = call(c.get(format!("{url}/var?name=Bad_Name"))).await;
    assert_eq!(status, 500);
    assert!(body.contains("InvalidName"), "{body}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spin_trigger_headers_are_set_as_for_route_catch_all() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("kv.json"), BTreeMap::new()).await;
    let url = server.url();
    let (status, body) =
        call(client().get(format!("{url}/spin-headers?x=1")).header("spin-path-info", "/forged")).await;
    assert_eq!(status, 200);
    let lines: Vec<&str> = body.lines().collect();
    let port = server.local_addr().port();
    assert!(lines.contains(&"spin-path-info: /spin-headers"), "{body}");
    assert!(lines.contains(&format!("spin-full-url: http://127.0.0.1:{port}/spin-headers?x=1").as_str()), "{body}");
    assert!(lines.contains(&"spin-matched-route: /..."), "{body}");
    assert!(lines.contains(&"spin-base-path: /"), "{body}");
    assert!(lines.iter().any(|l| l.starts_with("spin-client-addr: 127.0.0.1:")), "{body}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_rejects_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = tokio::task::spawn_blocking(guest_wasm).await.unwrap().to_owned();
    let kv_path = dir.path().join("kv.json");
    let err = serve(HostConfig {
        component: wasm.clone(),
        addr: localhost0(),
        kv_path: kv_path.clone(),
        variables: vars(&[("UPSTREAM_URL", "x")]),
    })
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("invalid Spin variable name"), "{err:#}");
    let err = serve(HostConfig {
        component: dir.path().join("missing.wasm"),
        addr: localhost0(),
        kv_path,
        variables: BTreeMap::new(),
    })
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("missing.wasm"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_value_round_trip_through_both_apis() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("kv.json"), BTreeMap::new()).await;
    let c = client();
    let url = server.url();
    assert_eq!(call(c.get(format!("{url}/kv?key=a"))).await.0, 404);
    assert_eq!(call(c.get(format!("{url}/kv-exists?key=a"))).await, (200, "false".into()));
    assert_eq!(call(c.put(format!("{url}/kv?key=a")).body("first")).await.0, 204);
    assert_eq!(call(c.put(format!("{url}/kv?key=a")).body("second")).await.0, 204);
    assert_eq!(call(c.get(format!("{url}/kv?key=a"))).await, (200, "second".into()));
    assert_eq!(call(c.get(format!("{url}/kv-exists?key=a"))).await, (200, "true".into()));
    assert_eq!(call(c.put(format!("{url}/kv?key=b")).body("bee")).await.0, 204);
    assert_eq!(call(c.get(format!("{url}/kv-keys"))).await, (200, "a\nb".into()));
    // fermyon:spin/key-value sees (and writes) the same "default" store.
    assert_eq!(call(c.get(format!("{url}/spin-kv?key=a"))).await, (200, "second".into()));
    assert_eq!(call(c.put(format!("{url}/spin-kv?key=c")).body("sea")).await.0, 204);
    assert_eq!(call(c.get(format!("{url}/kv?key=c"))).await, (200, "sea".into()));
    assert_eq!(call(c.delete(format!("{url}/kv?key=a"))).await.0, 204);
    assert_eq!(call(c.delete(format!("{url}/kv?key=a"))).await.0, 204, "deleting an absent key is fine");
    assert_eq!(call(c.get(format!("{url}/kv?key=a"))).await.0, 404);
    assert_eq!(call(c.get(format!("{url}/kv-keys"))).await, (200, "b\nc".into()));
    // Counters: 8-byte little-endian i64, as in Spin.
    assert_eq!(call(c.post(format!("{url}/kv-incr?key=n&delta=5"))).await, (200, "5".into()));
    assert_eq!(call(c.post(format!("{url}/kv-incr?key=n&delta=-7"))).await, (200, "-2".into()));
    let raw = c.get(format!("{url}/kv?key=n")).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(raw.as_ref(), (-2i64).to_le_bytes());
    let (status, body) = call(c.post(format!("{url}/kv-incr?key=b&delta=1"))).await;
    assert_eq!(status, 500, "incrementing a non-counter fails: {body}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("kv.json"), BTreeMap::new()).await;
    let c = client();
    let url = server.url();
    assert_eq!(call(c.post(format!("{url}/kv-put-if-absent?key=job")).body("one")).await, (201, "created".into()));
    assert_eq!(call(c.post(format!("{url}/kv-put-if-absent?key=job")).body("two")).await, (409, "exists".into()));
    assert_eq!(call(c.get(format!("{url}/kv?key=job"))).await, (200, "one".into()));
    // A write between cas.new and swap makes swap fail with cas-failed and a fresh handle.
    assert_eq!(
        call(c.post(format!("{url}/kv-cas-race?key=raced")).body("mine")).await,
        (409, "cas-failed; current=changed-behind-cas".into())
    );
    assert_eq!(call(c.get(format!("{url}/kv?key=raced"))).await, (200, "changed-behind-cas".into()));

    // Many concurrent put-if-absent on one key: exactly one wins.
    let attempts: Vec<_> = (0..12)
        .map(|i| {
            let req = c.post(format!("{url}/kv-put-if-absent?key=race")).body(format!("writer-{i}"));
            tokio::spawn(call(req))
        })
        .collect();
    let mut created = 0;
    for attempt in attempts {
        let (status, body) = attempt.await.unwrap();
        match status {
            201 => created += 1,
            409 => assert!(body == "exists" || body == "cas-failed", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(created, 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_shutdown_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let kv_path = dir.path().join("state/kv.json");
    let server = start(&kv_path, BTreeMap::new()).await;
    let c = client();
    let url = server.url();
    let addr = server.local_addr();
    assert_eq!(call(c.put(format!("{url}/kv?key=kept")).body("value")).await.0, 204);
    assert_eq!(call(c.post(format!("{url}/kv-incr?key=counter&delta=3"))).await.0, 200);
    assert_eq!(call(c.post(format!("{url}/kv-put-if-absent?key=once")).body("1")).await.0, 201);
    server.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "still listening after shutdown");

    let server = start(&kv_path, BTreeMap::new()).await;
    let url = server.url();
    assert_eq!(call(c.get(format!("{url}/kv?key=kept"))).await, (200, "value".into()));
    assert_eq!(call(c.post(format!("{url}/kv-incr?key=counter&delta=1"))).await, (200, "4".into()));
    assert_eq!(call(c.post(format!("{url}/kv-put-if-absent?key=once")).body("2")).await, (409, "exists".into()));
    assert_eq!(call(c.get(format!("{url}/kv-keys"))).await, (200, "counter\nkept\nonce".into()));

    // Hard stop: a request still running in the guest is dropped; the file keeps the last
    // completed write and the next server starts from it.
    let before = std::fs::read(&kv_path).unwrap();
    let slow = tokio::spawn(c.get(format!("{url}/sleep?ms=5000")).send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped = Instant::now();
    server.shutdown().await;
    assert!(stopped.elapsed() < Duration::from_secs(3), "shutdown waited for the guest: {:?}", stopped.elapsed());
    assert!(slow.await.unwrap().is_err(), "the in-flight request should have been cut off");
    assert_eq!(std::fs::read(&kv_path).unwrap(), before);
    let server = start(&kv_path, BTreeMap::new()).await;
    assert_eq!(call(c.get(format!("{}/kv?key=kept", server.url()))).await, (200, "value".into()));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_http_reaches_a_local_server() {
    use axum::http::StatusCode;
    use axum::routing::get;

    let upstream = tokio::net::TcpListener::bind(localhost0()).await.unwrap();
    let upstream_url = format!("http://{}", upstream.local_addr().unwrap());
    let app = axum::Router::new().route("/hello", get(|| async { (StatusCode::CREATED, "from upstream") })).route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            "slow but fine"
        }),
    );
    let upstream_task = tokio::spawn(async move { axum::serve(upstream, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("kv.json"), BTreeMap::new()).await;
    let c = client();
    let url = server.url();
    let resp = c.get(format!("{url}/fetch?url={upstream_url}/hello")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(resp.headers()["x-upstream-status"], "201");
    assert_eq!(resp.text().await.unwrap(), "from upstream");
    assert_eq!(call(c.get(format!("{url}/fetch?url={upstream_url}/slow"))).await, (200, "slow but fine".into()));
    assert_eq!(call(c.get(format!("{url}/fetch?url={upstream_url}/missing"))).await.0, 404);

    // Nothing listens there any more: the guest's send fails and the handler answers 500.
    let closed = tokio::net::TcpListener::bind(localhost0()).await.unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let (status, _) = call(c.get(format!("{url}/fetch?url=http://{closed_addr}/x"))).await;
    assert_eq!(status, 500);

    server.shutdown().await;
    upstream_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_run_in_parallel_instances() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("kv.json"), BTreeMap::new()).await;
    let c = client();
    let url = server.url();
    // Warm up (first instantiation), then 8 requests that each sleep 600 ms in the guest.
    assert_eq!(call(c.get(format!("{url}/sleep?ms=0"))).await.0, 200);
    let started = Instant::now();
    let sleepers: Vec<_> = (0..8).map(|_| tokio::spawn(call(c.get(format!("{url}/sleep?ms=600"))))).collect();
    for s in sleepers {
        assert_eq!(s.await.unwrap(), (200, "slept 600".into()));
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_millis(8 * 600 / 2), "requests were serialized: {elapsed:?}");

    // Concurrent increments are atomic.
    let incrs: Vec<_> =
        (0..20).map(|_| tokio::spawn(call(c.post(format!("{url}/kv-incr?key=hits&delta=1"))))).collect();
    let mut seen: Vec<i64> = Vec::new();
    for i in incrs {
        let (status, body) = i.await.unwrap();
        assert_eq!(status, 200, "{body}");
        seen.push(body.parse().unwrap());
    }
    seen.sort();
    assert_eq!(seen, (1..=20).collect::<Vec<i64>>());
    server.shutdown().await;
}

#[test]
fn binary_prints_its_address_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasi-host"))
        .arg("--component")
        .arg(guest_wasm())
        .args(["--addr", "127.0.0.1:0", "--kv"])
        .arg(dir.path().join("kv.json"))
        .args(["--var", "greeting=hi there", "--var", "other=x=y"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    // Keep draining: the guest's println! goes to this pipe and fails if nobody reads it.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let url = line.trim().strip_prefix("wasi-host listening on ").expect(&line).to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let result = rt.block_on(async {
        let c = client();
        (call(c.get(format!("{url}/var?name=greeting"))).await, call(c.get(format!("{url}/var?name=other"))).await)
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(result, ((200, "hi there".into()), (200, "x=y".into())));

    let status = Command::new(env!("CARGO_BIN_EXE_wasi-host"))
        .arg("--component")
        .arg(guest_wasm())
        .args(["--kv", "kv.json", "--var", "Bad=1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "an invalid variable name must be refused");
}
