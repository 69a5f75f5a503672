//! A world for scenario tests: the engine with an in-memory store, a hand-advanced clock, and
//! a fake network holding an in-memory Baseten (faithful to its published async API: status
//! records carry no output, results come by signed webhook) and a caller's webhook receiver.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Baseten's published schemas, as the conformance suite checks every answer against them.
#[path = "../conformance/src/baseten_schema.rs"]
pub mod baseten_schema;

use bytes::Bytes;
use edge_predict::engine::ports::kv::{Counts, KvError};
use edge_predict::engine::{
    Admission, Body, Config, Ctx, Engine, HttpClient, MemoryStore, Outcome, Store, StoreError, Timer, Timestamp,
    TransportError, Version,
};
use hmac::{Hmac, Mac};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const KEY: &str = "test-key";
pub const OTHER_KEY: &str = "other-key";
pub const NARROW_KEY: &str = "narrow-key";
pub const INBOUND_SECRET: &str = "inbound-secret";
pub const OLD_INBOUND_SECRET: &str = "old-inbound-secret";
pub const OUTBOUND_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const UPSTREAM_KEY: &str = "upstream-secret-key";
/// A key's own outbound secret (configured per test).
pub const TENANT_OUTBOUND_SECRET: &str = "whsec_dGVuYW50LWItb3V0Ym91bmQtc2VjcmV0LTAx";
pub const T0: u64 = 1_800_000_000_000;

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

pub fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

pub fn config_doc() -> Value {
    json!({
        "public_base_url": "https://gw.example",
        "keys": [
            {"id": "main", "sha256": sha256_hex(KEY), "models": ["*"], "chains": ["*"], "origins": ["https://app.example"],
             "operations": ["predict", "async_predict", "status", "cancel", "queue_status", "wake", "sync", "sweep", "mint_token"]},
            {"id": "other", "sha256": sha256_hex(OTHER_KEY), "models": ["*"], "chains": ["*"]},
            {"id": "narrow", "sha256": sha256_hex(NARROW_KEY), "models": ["demo"], "operations": ["predict", "status"]}
        ],
        "models": {
            "demo": {"upstream": "https://upstream.test/models/demo", "api_key_secret_name": "UPSTREAM_KEY", "price_per_second": 0.5}
        },
        "chains": {
            "demo-chain": {"upstream": "https://upstream.test/chains/demo-chain", "api_key_secret_name": "UPSTREAM_KEY"}
        },
        "webhooks": {
            "inbound_secret_names": ["INBOUND", "OLD_INBOUND"],
            "outbound_secret_name": "OUTBOUND",
            "delivery": {"max_attempts": 5, "initial_delay_seconds": 10, "max_delay_seconds": 600}
        },
        "browser_tokens": {"secret_name": "TOKENS", "max_ttl_seconds": 900},
        "id_secret_name": "IDS"
    })
}

/// The value of each secret the test configuration names.
pub fn secret_value(name: &str) -> Option<String> {
    let value = match name {
        "UPSTREAM_KEY" => UPSTREAM_KEY,
        "INBOUND" => INBOUND_SECRET,
        "OLD_INBOUND" => OLD_INBOUND_SECRET,
        "OUTBOUND" => OUTBOUND_SECRET,
        "TOKENS" => "browser-token-signing-secret-0123456789",
        "TENANT_OUTBOUND" => TENANT_OUTBOUND_SECRET,
        "IDS" => "request-id-secret-0123456789abcdef0123",
        _ => return None,
    };
    Some(value.to_owned())
}

pub fn parse_config(doc: &Value) -> Config {
    Config::parse(&doc.to_string(), &secret_value).unwrap()
}

/// Where a gate parks an engine call: a store write to a key, or an outbound request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum At {
    /// Just before a write (`put`, `put_if_version`, `delete`) of a key starting with this.
    Write(String),
    /// Just before sending a request whose path ends with this.
    Send(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GateState {
    Armed,
    Parked,
    Released,
}

/// Parks engine calls at chosen points until the test releases them, so a test can run other
/// calls in between: a race, replayed deterministically. Each armed point parks the first call
/// that reaches it; several can be armed, so several calls can be parked at once.
#[derive(Debug, Default)]
pub struct Gate {
    points: RefCell<Vec<(At, GateState)>>,
}

/// One armed point of a [`Gate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point(usize);

impl Gate {
    pub fn arm(&self, at: At) -> Point {
        let mut points = self.points.borrow_mut();
        points.push((at, GateState::Armed));
        Point(points.len() - 1)
    }

    pub fn parked(&self, point: Point) -> bool {
        self.points.borrow()[point.0].1 == GateState::Parked
    }

    pub fn release(&self, point: Point) {
        self.points.borrow_mut()[point.0].1 = GateState::Released;
    }

    /// Waits here if this is an armed point that nothing has parked at yet.
    pub async fn pass(&self, here: &At) {
        let found = self.points.borrow().iter().position(|(at, state)| {
            *state == GateState::Armed
                && match (at, here) {
                    (At::Write(prefix), At::Write(key)) => key.starts_with(prefix.as_str()),
                    (At::Send(suffix), At::Send(path)) => path.ends_with(suffix.as_str()),
                    _ => false,
                }
        });
        let Some(i) = found else { return };
        self.points.borrow_mut()[i].1 = GateState::Parked;
        let point = Point(i);
        std::future::poll_fn(|_| if self.parked(point) { Poll::Pending } else { Poll::Ready(()) }).await;
    }
}

/// The in-memory store behind a [`Gate`] (clones share contents and gate).
#[derive(Debug, Clone, Default)]
pub struct GatedStore {
    pub inner: MemoryStore,
    pub gate: Rc<Gate>,
    /// Every key read, in order, for tests of what a call costs.
    pub reads: Rc<RefCell<Vec<String>>>,
}

impl std::ops::Deref for GatedStore {
    type Target = MemoryStore;
    fn deref(&self) -> &MemoryStore {
        &self.inner
    }
}

impl Store for GatedStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.reads.borrow_mut().push(key.to_owned());
        self.inner.get(key).await
    }
    async fn get_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, Version)>, StoreError> {
        self.reads.borrow_mut().push(key.to_owned());
        self.inner.get_versioned(key).await
    }
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.gate.pass(&At::Write(key.to_owned())).await;
        self.inner.put(key, value).await
    }
    async fn put_if_version(&self, key: &str, value: Vec<u8>, expected: Version) -> Result<bool, StoreError> {
        self.gate.pass(&At::Write(key.to_owned())).await;
        self.inner.put_if_version(key, value, expected).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.gate.pass(&At::Write(key.to_owned())).await;
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list(prefix).await
    }
}

/// The counters of callers' limits, in memory, behind the same [`Gate`] as the store: an
/// increment or delete of a counter is an `At::Write` of its key.
#[derive(Debug, Clone, Default)]
pub struct GatedCounts {
    pub counts: Rc<RefCell<BTreeMap<String, i64>>>,
    pub gate: Rc<Gate>,
}

impl Counts for GatedCounts {
    async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        self.gate.pass(&At::Write(key.to_owned())).await;
        let mut counts = self.counts.borrow_mut();
        let count = counts.entry(key.to_owned()).or_default();
        *count += delta;
        Ok(*count)
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.gate.pass(&At::Write(key.to_owned())).await;
        self.counts.borrow_mut().remove(key);
        Ok(())
    }
}

/// An async job as the fake Baseten holds it.
#[derive(Debug, Clone)]
pub struct UpJob {
    pub id: String,
    pub path_prefix: String,
    pub status: &'static str,
    pub body: Value,
    pub status_at: Timestamp,
}

/// What the caller's webhook receiver does with each delivery.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Receiver {
    Ok,
    FailFirst(usize),
    AlwaysStatus(u16),
    Unreachable,
}

#[derive(Default)]
pub struct Net {
    pub upstream_down: Cell<Option<TransportError>>,
    pub jobs: RefCell<BTreeMap<String, UpJob>>,
    pub next_up_id: Cell<u64>,
    /// Every request the gateway sent, in order.
    pub sent: RefCell<Vec<Request<Bytes>>>,
    pub receiver: Cell<Option<Receiver>>,
    pub deliveries: RefCell<Vec<Request<Bytes>>>,
    /// Store the gateway uses, to check what is durable at the moment of an upstream call.
    pub store: RefCell<Option<MemoryStore>>,
    pub on_submit_store_keys: RefCell<Vec<Vec<String>>>,
    pub now: Cell<u64>,
    /// The gate the world's store shares, so a race can park at an outbound request too.
    pub gate: Rc<Gate>,
}

impl Net {
    fn upstream(&self, req: &Request<Bytes>) -> Response<Bytes> {
        let path = req.uri().path().to_owned();
        let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
        if auth != format!("Api-Key {UPSTREAM_KEY}") {
            return resp(401, json!({"error": "invalid api key"}));
        }
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        if matches!(segs[0], "regional" | "modelapis") || segs.contains(&"sync") {
            return sync_echo(req);
        }
        let prefix = format!("/{}/{}", segs[0], segs[1]);
        if !matches!(prefix.as_str(), "/models/demo" | "/chains/demo-chain") {
            return resp(404, json!({"error": "model not found"}));
        }
        let rest = &segs[2..];
        let now = Timestamp::from_millis(self.now.get());
        match (req.method().clone(), rest) {
            (Method::POST, [.., "predict" | "run_remote"]) => {
                let input: Value = serde_json::from_slice(req.body()).unwrap_or(Value::Null);
                if let Some(code) = input["fail_status"].as_u64() {
                    // The model's own error, marked as Truss marks it.
                    let mut r = resp(code as u16, json!({"error": "demo model failure"}));
                    r.headers_mut().insert("x-baseten-error-source", "04".parse().unwrap());
                    return r;
                }
                if let Some(code) = input["platform_status"].as_u64() {
                    let mut r = resp(
                        code as u16,
                        json!({"error": "no replica", "error_code": "MODEL_UNAVAILABLE", "detail": "d"}),
                    );
                    r.headers_mut().insert("retry-after", "7".parse().unwrap());
                    return r;
                }
                let mut r = Response::new(req.body().clone());
                r.headers_mut().insert(
                    "content-type",
                    req.headers().get("content-type").cloned().unwrap_or("application/json".parse().unwrap()),
                );
                r.headers_mut().insert("x-baseten-request-id", "up-sync-1".parse().unwrap());
                r.headers_mut().insert("x-internal-trace", "do-not-forward".parse().unwrap());
                r
            }
            (Method::POST, [.., "async_predict" | "async_run_remote"]) => {
                if let Some(store) = &*self.store.borrow() {
                    self.on_submit_store_keys.borrow_mut().push(store.snapshot().keys().cloned().collect());
                }
                let n = self.next_up_id.get() + 1;
                self.next_up_id.set(n);
                let id = format!("{n:032x}");
                let body: Value = serde_json::from_slice(req.body()).unwrap();
                self.jobs.borrow_mut().insert(
                    id.clone(),
                    UpJob { id: id.clone(), path_prefix: prefix, status: "QUEUED", body, status_at: now },
                );
                resp(201, json!({"request_id": id}))
            }
            (Method::GET, ["async_request", id]) => match self.jobs.borrow().get(*id) {
                Some(j) => resp(
                    200,
                    json!({
                        "request_id": j.id, "model_id": segs[1], "deployment_id": "dep-1", "status": j.status,
                        "webhook_status": "PENDING", "created_at": now.rfc3339(), "status_at": j.status_at.rfc3339(),
                        "errors": if j.status == "FAILED" { json!([{"code": "MODEL_PREDICT_ERROR", "message": "boom"}]) } else { json!([]) }
                    }),
                ),
                None => resp(404, json!({"error": "not found"})),
            },
            (Method::DELETE, ["async_request", id]) => {
                let mut jobs = self.jobs.borrow_mut();
                match jobs.get_mut(*id) {
                    Some(j) if j.status == "QUEUED" => {
                        j.status = "CANCELED";
                        resp(200, json!({"request_id": id, "canceled": true, "message": "canceled"}))
                    }
                    Some(j) => resp(
                        200,
                        json!({"request_id": id, "canceled": false, "message": format!("request is {}", j.status)}),
                    ),
                    None => resp(404, json!({"error": "not found"})),
                }
            }
            (Method::GET, [.., "async_queue_status"]) => {
                let jobs = self.jobs.borrow();
                let count = |s| jobs.values().filter(|j| j.status == s).count();
                resp(
                    200,
                    json!({"model_id": "upstream-model-id", "deployment_id": "dep-1",
                    "num_queued_requests": count("QUEUED"), "num_in_progress_requests": count("IN_PROGRESS")}),
                )
            }
            (Method::POST, [.., "wake"]) => {
                let mut r = Response::new(Bytes::new());
                *r.status_mut() = StatusCode::ACCEPTED;
                r
            }
            _ => resp(404, json!({"error": "no such route"})),
        }
    }

    fn receive(&self, req: &Request<Bytes>) -> Result<Response<Bytes>, TransportError> {
        self.deliveries.borrow_mut().push(req.clone());
        let n = self.deliveries.borrow().len();
        match self.receiver.get().unwrap_or(Receiver::Ok) {
            Receiver::Ok => Ok(resp(200, json!({}))),
            Receiver::FailFirst(k) if n <= k => Ok(resp(500, json!({}))),
            Receiver::FailFirst(_) => Ok(resp(204, json!({}))),
            Receiver::AlwaysStatus(code) => Ok(resp(code, json!({}))),
            Receiver::Unreachable => Err(TransportError::Timeout),
        }
    }
}

pub fn resp(status: u16, body: Value) -> Response<Bytes> {
    let mut r = Response::new(Bytes::from(body.to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r.headers_mut().insert("content-type", "application/json".parse().unwrap());
    r
}

impl HttpClient for Net {
    type Body = Bytes;
    type Stream = Bytes;

    async fn send_stream(&self, request: Request<Bytes>) -> Result<Response<Bytes>, TransportError> {
        self.send(request).await
    }

    fn stream_of(bytes: Bytes) -> Bytes {
        bytes
    }

    async fn send(&self, request: Request<Bytes>) -> Result<Response<Bytes>, TransportError> {
        self.gate.pass(&At::Send(request.uri().path().to_owned())).await;
        self.sent.borrow_mut().push(request.clone());
        match request.uri().host() {
            Some("upstream.test") => match self.upstream_down.take() {
                Some(e) => {
                    self.upstream_down.set(Some(e.clone()));
                    Err(e)
                }
                None => Ok(self.upstream(&request)),
            },
            Some("hooks.example.com") => self.receive(&request),
            other => Err(TransportError::Connect(format!("no route to {other:?}"))),
        }
    }

    async fn read(&self, body: Bytes, limit: usize) -> Result<Bytes, TransportError> {
        if body.len() > limit {
            return Err(TransportError::Body("too large".into()));
        }
        Ok(body)
    }
}

/// A model server's own route (or any route of a regional upstream): what it was asked, with
/// the status `?status=N` asks for and the headers a server sets.
fn sync_echo(req: &Request<Bytes>) -> Response<Bytes> {
    let query = req.uri().query().unwrap_or_default();
    let status = query.split('&').find_map(|kv| kv.strip_prefix("status=")).and_then(|s| s.parse().ok());
    let mut r = resp(
        status.unwrap_or(200),
        json!({
            "method": req.method().as_str(), "path": req.uri().path(), "query": req.uri().query(),
            "body": String::from_utf8_lossy(req.body()), "accept": req.headers().get("accept").and_then(|v| v.to_str().ok()),
        }),
    );
    r.headers_mut().insert("etag", "\"v1\"".parse().unwrap());
    r.headers_mut().insert("cache-control", "max-age=60".parse().unwrap());
    r.headers_mut().insert("x-internal-trace", "do-not-forward".parse().unwrap());
    r
}

/// One call's answer, as a client sees it.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// A platform error: 4xx/5xx with `code` and `message` (and Baseten's mirrors).
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{:?}", self.body);
        let b = self.json();
        assert_eq!(b["code"], code, "{b}");
        baseten_schema::error_response(&b).unwrap();
        assert!(b["error_code"].is_string(), "{b}");
        assert!(b["message"].as_str().is_some_and(|m| !m.is_empty()), "{b}");
        assert_eq!(b["error"], b["message"]);
    }
}

/// The world's hand clock as a host's timer: sleeping advances it.
pub struct WorldClock<'w>(pub &'w World);

impl edge_predict::engine::Timer for WorldClock<'_> {
    fn now(&self) -> Timestamp {
        self.0.now()
    }

    async fn sleep_until(&self, at: Timestamp) {
        self.0.advance_ms(at.millis_since(self.0.now()));
    }
}

pub struct World {
    pub config: Config,
    pub store: GatedStore,
    /// Where the counters of callers' limits are (sharing the store's gate).
    pub counts: GatedCounts,
    pub net: Net,
    pub now: Cell<u64>,
    pub entropy: Cell<u128>,
    pub wake_at: Cell<Option<Timestamp>>,
}

impl World {
    pub fn new() -> Self {
        Self::with_config(config_doc())
    }

    pub fn with_config(doc: Value) -> Self {
        Self::with_parsed(parse_config(&doc))
    }

    /// A world whose configuration reads each secret when first needed, as on Spin
    /// ([`Config::parse_lazy`]); the names read, in order, are recorded in the returned list.
    pub fn with_lazy_config() -> (Self, Rc<RefCell<Vec<String>>>) {
        let reads = Rc::new(RefCell::new(Vec::new()));
        let seen = Rc::clone(&reads);
        let source = Rc::new(move |name: &str| {
            seen.borrow_mut().push(name.to_owned());
            secret_value(name)
        });
        (Self::with_parsed(Config::parse_lazy(&config_doc().to_string(), source).unwrap()), reads)
    }

    fn with_parsed(config: Config) -> Self {
        let store = GatedStore::default();
        let net = Net { gate: Rc::clone(&store.gate), ..Net::default() };
        let counts = GatedCounts { gate: Rc::clone(&store.gate), ..GatedCounts::default() };
        let world = Self {
            config,
            store,
            counts,
            net,
            now: Cell::new(T0),
            entropy: Cell::new(0x1000),
            wake_at: Cell::new(None),
        };
        world.net.now.set(T0);
        *world.net.store.borrow_mut() = Some(world.store.inner.clone());
        world
    }

    pub fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.now.get())
    }

    pub fn advance_ms(&self, ms: u64) {
        self.now.set(self.now.get() + ms);
        self.net.now.set(self.now.get());
    }

    pub fn engine(&self) -> Engine<'_, GatedStore, Net> {
        Engine::new(&self.config, &self.store, &self.net)
    }

    pub fn request(&self, method: &str, path: &str, key: Option<&str>, body: impl Into<Bytes>) -> Request<Bytes> {
        let mut b = Request::builder().method(method).uri(path).header("host", "gw.example");
        if let Some(key) = key {
            b = b.header("authorization", format!("Bearer {key}"));
        }
        b.body(body.into()).unwrap()
    }

    pub fn send(&self, request: Request<Bytes>) -> Answer {
        pollster::block_on(self.handle(request))
    }

    /// One engine call, as a future the test can drive (see [`World::race`]).
    pub fn handle(&self, request: Request<Bytes>) -> impl Future<Output = Answer> + '_ {
        let e = self.entropy.get() + 1;
        self.entropy.set(e);
        let ctx = Ctx::new(self.now(), e.to_be_bytes());
        async move {
            let outcome = self.engine().serve(request, ctx, &self.counts, &WorldClock(self)).await;
            if let Some(at) = outcome.wake_at {
                self.wake_at.set(Some(self.wake_at.get().map_or(at, |w| w.min(at))));
            }
            let (parts, body) = outcome.response.into_parts();
            let body = match body {
                Body::Full(b) | Body::Upstream(b) => b,
            };
            Answer { status: parts.status, headers: parts.headers, body }
        }
    }

    /// A request handled as on a host with a clock ([`Engine::handle_held`]), once admitted;
    /// as a future the test can drive.
    pub async fn held<T: Timer>(&self, request: Request<Bytes>, entropy: [u8; 16], timer: &T) -> Outcome<Bytes> {
        let engine = self.engine();
        let admitted = match engine.admit(&request, timer.now(), entropy) {
            Admission::Read(admitted) | Admission::Stream(admitted) => admitted,
            Admission::Refuse(e) => panic!("{} {} refused: {e}", request.method(), request.uri()),
        };
        engine.handle_held(&admitted, request, entropy, timer).await
    }

    /// Replays a race: runs `first` until it parks at `at`, then `meanwhile` to completion,
    /// then lets `first` finish. Panics if `first` never reaches `at`.
    pub fn race<T>(&self, at: At, first: impl Future<Output = T>, meanwhile: impl FnOnce()) -> T {
        let mut first = pin!(first);
        let point = self.park(first.as_mut(), at);
        meanwhile();
        self.resume(first.as_mut(), point).expect("the first call finished once released")
    }

    /// Runs `call` until it parks at `at` (it must), and returns the point it waits at.
    pub fn park<T>(&self, call: Pin<&mut impl Future<Output = T>>, at: At) -> Point {
        let point = self.store.gate.arm(at.clone());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(call.poll(&mut cx).is_pending(), "the call finished without reaching {at:?}");
        assert!(self.store.gate.parked(point), "the call is waiting, but not at {at:?}");
        point
    }

    /// Releases a call parked at `point` and runs it on: its answer, or `None` if it parked
    /// again (at another point armed meanwhile).
    pub fn resume<T>(&self, call: Pin<&mut impl Future<Output = T>>, point: Point) -> Option<T> {
        self.store.gate.release(point);
        match call.poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        }
    }

    /// A sweep as a future the test can drive.
    pub async fn sweep_call(&self) -> edge_predict::engine::SweepReport {
        self.engine().sweep(&|| self.now()).await
    }

    pub fn call(&self, method: &str, path: &str, body: Value) -> Answer {
        let body = if body.is_null() { Bytes::new() } else { Bytes::from(body.to_string()) };
        self.send(self.request(method, path, Some(KEY), body))
    }

    /// Submits to `demo` production and returns the request id.
    pub fn submit(&self, body: Value) -> String {
        let a = self.call("POST", "/models/demo/production/async_predict", body);
        assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
        a.json()["request_id"].as_str().unwrap().to_owned()
    }

    pub fn status(&self, id: &str) -> Value {
        let a = self.call("GET", &format!("/async_request/{id}"), Value::Null);
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
        let record = a.json();
        baseten_schema::status_record(&record).unwrap();
        record
    }

    pub fn sweep(&self) -> edge_predict::engine::SweepReport {
        pollster::block_on(self.engine().sweep(&|| self.now()))
    }

    /// Runs sweeps, advancing the clock to each wake-up, until `done` or `max_ms` pass.
    pub fn run_until(&self, max_ms: u64, done: impl Fn(&World) -> bool) {
        let end = self.now.get() + max_ms;
        loop {
            let report = self.sweep();
            if done(self) {
                return;
            }
            let next = report.wake_at.map_or(end, |w| w.millis().max(self.now.get() + 1));
            assert!(next <= end && self.now.get() < end, "not done within {max_ms} ms (wake at {:?})", report.wake_at);
            self.advance_ms(next - self.now.get());
        }
    }

    /// The upstream's job for our job `id` (found through the inbox URL it was given).
    pub fn upstream_job(&self, id: &str) -> UpJob {
        let inbox = format!("https://gw.example/webhooks/baseten/{id}/");
        self.net
            .jobs
            .borrow()
            .values()
            .find(|j| j.body["webhook_endpoint"].as_str().is_some_and(|u| u.starts_with(&inbox)))
            .cloned()
            .expect("no upstream job")
    }

    pub fn set_upstream_status(&self, id: &str, status: &'static str) {
        let up = self.upstream_job(id);
        let mut jobs = self.net.jobs.borrow_mut();
        let j = jobs.get_mut(&up.id).unwrap();
        j.status = status;
        j.status_at = self.now();
    }

    /// The upstream's webhook delivery to our inbox, signed with `secret`.
    pub fn inbox_delivery(&self, id: &str, data: Value, errors: Value, secret: &str) -> Request<Bytes> {
        let up = self.upstream_job(id);
        let payload = json!({
            "request_id": up.id, "model_id": "upstream-model", "deployment_id": "dep-1",
            "type": "async_request_completed", "time": self.now().rfc3339(), "data": data, "errors": errors,
        });
        let body = payload.to_string();
        Request::builder()
            .method("POST")
            .uri(up.body["webhook_endpoint"].as_str().unwrap())
            .header("content-type", "application/json")
            .header("x-baseten-request-id", up.id.as_str())
            .header("x-baseten-signature", format!("v1={}", hmac_hex(secret, body.as_bytes())))
            .body(Bytes::from(body))
            .unwrap()
    }

    /// The upstream runs the job and delivers its result to the inbox.
    pub fn complete(&self, id: &str, output: Value) -> Answer {
        self.set_upstream_status(id, "SUCCEEDED");
        self.send(self.inbox_delivery(id, output, json!([]), INBOUND_SECRET))
    }

    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.store.snapshot()
    }

    pub fn async_submissions(&self) -> usize {
        self.net.sent.borrow().iter().filter(|r| r.uri().path().ends_with("async_predict")).count()
    }

    pub fn store_get(&self, key: &str) -> Option<Vec<u8>> {
        pollster::block_on(self.store.get(key)).unwrap()
    }
}
