//! Cloudflare Workers adapter (workers-rs). Compiled only for `wasm32-unknown-unknown`.
//!
//! Sharding: jobs live in a fixed set of Durable Objects, the one [`job_object`] names from
//! the request id. The engine's [`Placement`] says where a request runs: stateless routes
//! (predict, queue status, wake, preflight, every refusal) run in the Worker itself; a submit,
//! status, cancel or inbox delivery runs in the job's object, whose SQLite storage is the
//! [`Store`] of its jobs and whose alarm runs [`Engine::sweep`] at the engine's `wake_at`.
//! Idempotent submits derive their id from the key, so retries reach the same object and its
//! atomic put-if-absent.

use bytes::Bytes;
use futures_util::future::{select, Either as Race};
use http::{HeaderValue, Request, Response};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

use futures_util::StreamExt;
use http_body_util::{BodyDataStream, BodyExt, Full, Limited};
use worker::worker_sys::ext::ResponseExt as _;
use worker::{
    durable_object, event, AbortController, Context, Date, Delay, DurableObject, Env, Fetch, HttpRequest, SqlStorage,
    SqlStorageValue, State,
};

use crate::engine::config::ConfigCache;
use crate::engine::{
    job_object, Admission, Body, Config, Ctx, Engine, Error, HttpClient, Outcome, Placement, Store, StoreError, Timer,
    Timestamp, TransportError, Version, MAX_REQUEST_BODY, OUTBOUND_TIMEOUT_MS, SYNC_TIMEOUT_MS,
};

/// The configuration document's variable; secrets it names are Worker secrets (or vars).
const CONFIG_VAR: &str = "EDGE_PREDICT_CONFIG";
const JOBS_BINDING: &str = "JOBS";
/// How soon an alarm that found the configuration unusable runs again.
const CONFIG_RETRY_MS: u64 = 10_000;
/// Carries the Worker's randomness to the job's object, so both place the same request id.
const ENTROPY_HEADER: &str = "x-edge-predict-entropy";

/// An upstream's answer body as workerd has it: handed back to the caller as the runtime's own
/// stream (natively piped, never through this module), or read here when the engine needs it.
/// A body the engine reads is read within the deadline of the call that got it.
#[derive(Debug)]
struct UpstreamBody {
    stream: Option<worker::web_sys::ReadableStream>,
    deadline: Option<Deadline>,
}

/// When a call must be done (`Date.now()` milliseconds), and how to stop it then.
#[derive(Debug)]
struct Deadline {
    at_ms: f64,
    controller: AbortController,
}

fn now() -> Timestamp {
    Timestamp::from_millis(Date::now().as_millis())
}

fn entropy() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    // crypto.getRandomValues cannot fail for 16 bytes; zeros would only cost uniqueness.
    let _ = getrandom::getrandom(&mut bytes);
    bytes
}

thread_local! {
    /// An isolate serves many requests: the configuration is parsed once per document and
    /// secrets, not per request.
    static CONFIG: RefCell<ConfigCache> = RefCell::new(ConfigCache::default());
    /// The configuration last parsed, with the `env` object it came from. An isolate's bindings
    /// never change (a new variable or secret is a new deployment, so a new isolate), and
    /// workerd hands the Worker's requests the same `env` object (a V8 profile under load no
    /// longer shows the configuration at all): the same object needs no second look at its
    /// document and secrets, which copied each of them into wasm. Another object (a Durable
    /// Object's own `env`, say) is read again, and `CONFIG` still spares the parse.
    static CONFIG_OF_ENV: RefCell<Option<(Env, Rc<Config>)>> = const { RefCell::new(None) };
}

fn load_config(env: &Env) -> Result<Rc<Config>, Error> {
    let same = |(seen, config): &(Env, Rc<Config>)| {
        worker::js_sys::Object::is(seen.as_ref(), env.as_ref()).then(|| Rc::clone(config))
    };
    if let Some(config) = CONFIG_OF_ENV.with(|c| c.borrow().as_ref().and_then(same)) {
        return Ok(config);
    }
    let config = read_config(env)?;
    CONFIG_OF_ENV.with(|c| *c.borrow_mut() = Some((env.clone(), Rc::clone(&config))));
    Ok(config)
}

fn read_config(env: &Env) -> Result<Rc<Config>, Error> {
    let doc = env
        .var(CONFIG_VAR)
        .map(|v| v.to_string())
        .map_err(|_| Error::Config { field: CONFIG_VAR.to_owned(), message: "the variable is not set".to_owned() })?;
    let secret =
        |name: &str| env.secret(name).map(|s| s.to_string()).or_else(|_| env.var(name).map(|v| v.to_string())).ok();
    CONFIG.with(|cache| cache.borrow_mut().get(&doc, &secret))
}

async fn read_request(request: HttpRequest, limit: usize) -> Result<Request<Bytes>, Error> {
    let (parts, body) = request.into_parts();
    let bytes = Limited::new(body, limit).collect().await.map_err(|_| Error::PayloadTooLarge { limit })?.to_bytes();
    Ok(Request::from_parts(parts, bytes))
}

/// The alarm's absolute time. (`ScheduledTime::from(i64)` would mean an offset from now.)
fn alarm_date(at: Timestamp) -> worker::js_sys::Date {
    worker::js_sys::Date::new(&worker::wasm_bindgen::JsValue::from_f64(at.millis() as f64))
}

/// The caller's answer as a workerd Response: a body in hand, or an upstream's stream passed on
/// as it is; an upstream's WebSocket handed over with it.
fn into_response(response: Response<Body<UpstreamBody>>) -> worker::Response {
    let (mut parts, body) = response.into_parts();
    let mut builder = worker::ResponseBuilder::new()
        .with_status(parts.status.as_u16())
        .with_headers(worker::Headers::from(&parts.headers));
    if let Some(socket) = parts.extensions.remove::<worker::WebSocket>() {
        builder = builder.with_websocket(socket);
    }
    match body {
        // No body at all, not an empty one: 101, 204 and 304 may carry none.
        Body::Full(bytes) if bytes.is_empty() => builder.empty(),
        Body::Full(bytes) => builder.fixed(bytes.to_vec()),
        Body::Upstream(UpstreamBody { stream: Some(stream), .. }) => builder.stream(stream),
        Body::Upstream(UpstreamBody { stream: None, .. }) => builder.empty(),
    }
}

fn error_response(e: &Error) -> worker::Response {
    into_response(e.to_response().map(Body::Full))
}

/// Date.now and setTimeout, for held long-polls.
#[derive(Debug)]
struct WorkerTimer;

impl Timer for WorkerTimer {
    fn now(&self) -> Timestamp {
        now()
    }

    async fn sleep_until(&self, at: Timestamp) {
        Delay::from(std::time::Duration::from_millis(at.millis_since(now()))).await;
    }
}

/// Outbound HTTP through `fetch`, with a deadline and no redirect following.
#[derive(Debug)]
struct FetchClient;

/// A caller's body passed on to the upstream as it arrives (sync routes): the runtime's own
/// stream, or none; or bytes in hand.
enum WorkerStream {
    Bytes(Bytes),
    Caller { body: Option<worker::web_sys::ReadableStream>, limit: usize },
}

impl FetchClient {
    /// One fetch, no redirects followed; `None` from `body` means none. The response head
    /// must arrive within `timeout_ms`.
    async fn fetch(
        parts: &http::request::Parts,
        body: Option<worker::wasm_bindgen::JsValue>,
        timeout_ms: u64,
    ) -> Result<Response<UpstreamBody>, TransportError> {
        let mut init = worker::RequestInit::new();
        init.with_method(worker::Method::from(parts.method.as_str().to_owned()))
            .with_headers(worker::Headers::from(&parts.headers))
            .with_redirect(worker::RequestRedirect::Manual)
            .with_body(body);
        let request = worker::Request::new_with_init(&parts.uri.to_string(), &init)
            .map_err(|e| TransportError::Connect(e.to_string()))?;
        let controller = AbortController::default();
        let signal = controller.signal();
        let at_ms = Date::now().as_millis() as f64 + timeout_ms as f64;
        let fetch = Fetch::Request(request);
        let answered = {
            let sent = Box::pin(fetch.send_with_signal(&signal));
            let deadline = Delay::from(std::time::Duration::from_millis(timeout_ms));
            match select(sent, deadline).await {
                Race::Left((result, _)) => Some(result),
                Race::Right(((), _)) => None,
            }
        };
        match answered {
            Some(Ok(response)) => {
                // Its head only; the body stays workerd's stream.
                let raw: worker::web_sys::Response = response.into();
                let mut head = Response::builder()
                    .status(raw.status())
                    .body(UpstreamBody { stream: raw.body(), deadline: Some(Deadline { at_ms, controller }) })
                    .map_err(|e| TransportError::Connect(e.to_string()))?;
                *head.headers_mut() = http::HeaderMap::from(worker::Headers(raw.headers()));
                if let Some(socket) = raw.websocket() {
                    head.extensions_mut().insert(worker::WebSocket::from(socket));
                }
                Ok(head)
            }
            Some(Err(e)) => Err(TransportError::Connect(e.to_string())),
            None => {
                controller.abort();
                Err(TransportError::Timeout)
            }
        }
    }
}

/// Bytes as a fetch body: sent with their `Content-Length` (a streamed body goes chunked, and
/// receivers that read by length see nothing).
fn bytes_body(body: &Bytes) -> Option<worker::wasm_bindgen::JsValue> {
    (!body.is_empty()).then(|| worker::js_sys::Uint8Array::from(body.as_ref()).into())
}

impl HttpClient for FetchClient {
    type Body = UpstreamBody;
    type Stream = WorkerStream;
    // A fetch with `Upgrade: websocket` answers 101 with the upstream's socket, which the
    // Worker's response hands to the caller: workerd proxies the two.
    const WEBSOCKETS: bool = true;

    async fn send(&self, request: Request<Bytes>) -> Result<Response<UpstreamBody>, TransportError> {
        let (parts, body) = request.into_parts();
        Self::fetch(&parts, bytes_body(&body), OUTBOUND_TIMEOUT_MS).await
    }

    async fn send_stream(&self, request: Request<WorkerStream>) -> Result<Response<UpstreamBody>, TransportError> {
        let (parts, body) = request.into_parts();
        let (body, limit) = match body {
            WorkerStream::Bytes(bytes) => return Self::fetch(&parts, bytes_body(&bytes), SYNC_TIMEOUT_MS).await,
            // GET and HEAD carry no body (a fetch with one is a TypeError).
            WorkerStream::Caller { body: None, .. } => return Self::fetch(&parts, None, SYNC_TIMEOUT_MS).await,
            WorkerStream::Caller { .. } if matches!(parts.method, http::Method::GET | http::Method::HEAD) => {
                return Self::fetch(&parts, None, SYNC_TIMEOUT_MS).await;
            }
            // A length the admission checked: workerd holds the body to it, so the runtime's
            // stream goes on as it is, natively piped (never through this module or a JS
            // reader, whose chunks V8 collects late: +100 MB of heap for a 50 MB body), and
            // keeps its `Content-Length`.
            WorkerStream::Caller { body: Some(body), .. }
                if parts.headers.contains_key(http::header::CONTENT_LENGTH) =>
            {
                return Self::fetch(&parts, Some(body.into()), SYNC_TIMEOUT_MS).await;
            }
            WorkerStream::Caller { body: Some(body), limit } => (worker::Body::new(body), limit),
        };
        // The caller's chunks, counted as they pass: past the limit the stream fails, and with
        // it the fetch.
        let over = Rc::new(Cell::new(false));
        let flag = Rc::clone(&over);
        let mut seen = 0usize;
        let counted = BodyDataStream::new(body).map(move |chunk| {
            let chunk = chunk?;
            seen += chunk.len();
            if seen > limit {
                flag.set(true);
                return Err(worker::Error::RustError(format!("request body over {limit} bytes")));
            }
            Ok(Vec::from(chunk))
        });
        let stream = worker::Body::from_stream(counted)
            .map_err(|e| TransportError::Body(e.to_string()))?
            .into_inner()
            .map(worker::wasm_bindgen::JsValue::from);
        let answer = Self::fetch(&parts, stream, SYNC_TIMEOUT_MS).await;
        if over.get() {
            return Err(TransportError::TooLarge(limit));
        }
        answer
    }

    fn stream_of(bytes: Bytes) -> WorkerStream {
        WorkerStream::Bytes(bytes)
    }

    async fn read(&self, body: UpstreamBody, limit: usize) -> Result<Bytes, TransportError> {
        let Some(stream) = body.stream else { return Ok(Bytes::new()) };
        let collect = Box::pin(Limited::new(worker::Body::new(stream), limit).collect());
        let read = match body.deadline {
            // Within what is left of the call's deadline: a body that drips, a byte now and
            // then, must not hold a submission past its claim.
            Some(deadline) => {
                let left = (deadline.at_ms - Date::now().as_millis() as f64).max(0.0) as u64;
                match select(collect, Delay::from(std::time::Duration::from_millis(left))).await {
                    Race::Left((read, _)) => read,
                    Race::Right(((), _)) => {
                        deadline.controller.abort();
                        return Err(TransportError::Timeout);
                    }
                }
            }
            None => collect.await,
        };
        read.map(|c| c.to_bytes()).map_err(|e| TransportError::Body(e.to_string()))
    }
}

/// The request's head, read from the runtime's request without touching its body.
fn request_head(raw: &worker::web_sys::Request) -> Result<Request<()>, Error> {
    let mut head = Request::builder()
        .method(raw.method().as_str())
        .uri(raw.url())
        .body(())
        .map_err(|e| Error::MalformedJson { message: format!("the request line could not be read: {e}") })?;
    *head.headers_mut() = http::HeaderMap::from(worker::Headers(raw.headers()));
    Ok(head)
}

#[event(fetch)]
async fn fetch(raw: worker::web_sys::Request, env: Env, _ctx: Context) -> worker::Result<worker::Response> {
    let config = match load_config(&env) {
        Ok(c) => c,
        Err(e) => {
            // The operator's log names the whole field; the caller is told its top level only.
            worker::console_error!("{e}");
            return Ok(error_response(&e));
        }
    };
    let entropy = entropy();
    let engine = Engine::new(&config, &SqlStore::STATELESS, &FetchClient);
    let head = match request_head(&raw) {
        Ok(head) => head,
        Err(e) => return Ok(error_response(&e)),
    };
    // Credentials and announced size first: a refused request reads no body, touches no object.
    let refuse = |e: &Error| into_response(engine.refusal(&head, e, now()).map(Body::Full));
    let body_limit = match engine.admit(&head, now()) {
        Admission::Refuse(e) => {
            // Unread and unwanted: canceled, so workerd answers now instead of waiting for it.
            if let Some(body) = raw.body() {
                let _ = body.cancel();
            }
            return Ok(refuse(&e));
        }
        Admission::Stream { body_limit } => {
            // A sync route: the runtime's own body stream goes to the upstream and the answer
            // back, neither read here.
            let request = head.clone().map(|()| WorkerStream::Caller { body: raw.body(), limit: body_limit });
            let outcome = engine.handle_stream(request, Ctx::new(now(), entropy)).await;
            // A body refused before it went upstream is canceled (see above).
            if let Some(body) = raw.body().filter(|b| !b.locked()) {
                let _ = body.cancel();
            }
            return Ok(into_response(outcome.response));
        }
        Admission::Read { body_limit } => body_limit,
    };
    let request = match worker::request_from_wasm(raw) {
        Ok(request) => read_request(request, body_limit).await,
        Err(e) => Err(Error::MalformedJson { message: format!("the request could not be read: {e}") }),
    };
    let request = match request {
        Ok(r) => r,
        Err(e) => return Ok(refuse(&e)),
    };
    let placement = engine.placement(&request, now(), entropy);
    match placement {
        // Each object sweeps itself at its alarm: `/_sweep` has no store to sweep here.
        Placement::Stateless | Placement::Store => {
            let outcome = engine.handle(request, Ctx::new(now(), entropy)).await;
            Ok(into_response(outcome.response))
        }
        Placement::Job(request_id) => {
            // A forged delivery is refused here, before the job's object is touched.
            if let Err(e) = engine.verify_inbox_if_inbox(&request) {
                return Ok(refuse(&e));
            }
            match forward(&env, &request_id, request, entropy).await {
                Ok(response) => Ok(response),
                Err(e) => {
                    // Still the gateway's JSON, with CORS: the caller may retry.
                    worker::console_error!("job object {request_id}: {e}");
                    Ok(refuse(&Error::Store(StoreError::new("the job's object could not be reached"))))
                }
            }
        }
    }
}

/// Runs a job's request in its Durable Object, with the Worker's entropy (so both place the
/// same request id).
async fn forward(
    env: &Env,
    request_id: &str,
    request: Request<Bytes>,
    entropy: [u8; 16],
) -> worker::Result<worker::Response> {
    let mut request = request.map(Full::new);
    let value = HeaderValue::from_str(&hex::encode(entropy)).map_err(|e| worker::Error::RustError(e.to_string()))?;
    request.headers_mut().insert(ENTROPY_HEADER, value);
    let stub = env.durable_object(JOBS_BINDING)?.id_from_name(&job_object(request_id))?.get_stub()?;
    let response = stub.fetch_with_request(worker::Request::try_from(request)?).await?;
    Ok(response)
}

/// One job's Durable Object: its SQLite storage is the job's store, its alarm the sweep.
#[allow(missing_debug_implementations)] // State and Env have no Debug
#[durable_object]
pub struct JobObject {
    state: State,
    env: Env,
    /// Whether this object's table exists (see [`SqlStore`]).
    table: Rc<Cell<bool>>,
}

impl JobObject {
    fn store(&self) -> SqlStore {
        SqlStore { sql: Some(self.state.storage().sql()), table: Some(Rc::clone(&self.table)) }
    }

    /// Moves the alarm to `wake_at` if that is earlier than the one set (or none is).
    async fn schedule(&self, wake_at: Option<Timestamp>) -> worker::Result<()> {
        let Some(at) = wake_at else { return Ok(()) };
        let storage = self.state.storage();
        let current = storage.get_alarm().await?;
        let at_ms = i64::try_from(at.millis()).unwrap_or(i64::MAX);
        if current.is_none_or(|c| c > at_ms) {
            storage.set_alarm(worker::ScheduledTime::new(alarm_date(at))).await?;
        }
        Ok(())
    }
}

impl DurableObject for JobObject {
    fn new(state: State, env: Env) -> Self {
        Self { state, env, table: Rc::default() }
    }

    async fn fetch(&self, request: worker::Request) -> worker::Result<worker::Response> {
        let config = match load_config(&self.env) {
            Ok(c) => c,
            Err(e) => return Ok(error_response(&e)),
        };
        let request = match http::Request::try_from(request) {
            Ok(r) => r,
            Err(e) => return Ok(error_response(&Error::Store(StoreError::new(e.to_string())))),
        };
        let store = self.store();
        let engine = Engine::new(&config, &store, &FetchClient);
        // Every answer from here on is the engine's: JSON, with CORS for the caller's origin.
        let (parts, body) = request.into_parts();
        let head = Request::from_parts(parts.clone(), ());
        let refuse = |e: &Error| Ok(into_response(engine.refusal(&head, e, now()).map(Body::Full)));
        let entropy = parts
            .headers
            .get(ENTROPY_HEADER)
            .and_then(|v| hex::decode(v.as_bytes()).ok())
            .and_then(|v| <[u8; 16]>::try_from(v).ok())
            .unwrap_or_else(entropy);
        let mut request = match read_request(HttpRequest::from_parts(parts, body), MAX_REQUEST_BODY).await {
            Ok(r) => r,
            Err(e) => return refuse(&e),
        };
        request.headers_mut().remove(ENTROPY_HEADER);
        // Long-polls are held here, in the job's object: timers keep it alive, not busy.
        let Outcome { response, wake_at, .. } = engine.handle_held(request, entropy, &WorkerTimer).await;
        if let Err(e) = self.schedule(wake_at).await {
            // The job's schedule is its alarm: without it, say so (503, retry) rather than 200.
            worker::console_error!("alarm not set: {e}");
            return refuse(&Error::Store(StoreError::new("the job's alarm could not be set")));
        }
        Ok(into_response(response))
    }

    async fn alarm(&self) -> worker::Result<worker::Response> {
        let config = match load_config(&self.env) {
            Ok(c) => c,
            Err(e) => {
                // The job's schedule must survive a bad deploy: answering an error would end
                // this alarm for good (and the platform's own retries give up after a few).
                // Come back until the configuration is fixed.
                worker::console_error!("alarm: {e}; trying again in {} s", CONFIG_RETRY_MS / 1000);
                self.schedule(Some(now().plus_millis(CONFIG_RETRY_MS))).await?;
                return worker::Response::empty();
            }
        };
        let store = self.store();
        let report = Engine::new(&config, &store, &FetchClient).sweep(&now).await;
        if report.failed > 0 {
            let first = report.first_error.as_deref().unwrap_or_default();
            worker::console_error!("sweep: {} job(s) failed and stay due; first: {first}", report.failed);
        }
        self.schedule(report.wake_at).await?;
        worker::Response::empty()
    }
}

/// [`Store`] on the object's SQLite database, one row per key with a version column.
/// Statements run synchronously inside the object, so each conditional write is one atomic
/// statement: `INSERT … ON CONFLICT DO NOTHING` for an absent key, `UPDATE … WHERE version = ?`
/// for an existing one. The object interleaves requests while one awaits a fetch; the version
/// check is what keeps one request's stale copy from overwriting another's write.
///
/// The table is created by the first write only: a read for an id that names no job (a
/// probe, a typo) must not leave a persisted object behind.
///
/// Once the table exists it stays (nothing drops it), so the object remembers that in
/// `table` and asks SQLite only until then: one statement fewer per store call.
///
/// The stateless front has no object: [`SqlStore::STATELESS`] refuses every call, as the
/// engine's `NoStore` would. One store type keeps one copy of the engine in the Worker's wasm
/// (a second `Engine<NoStore, _>` cost ~60 KB).
struct SqlStore {
    sql: Option<SqlStorage>,
    table: Option<Rc<Cell<bool>>>,
}

impl SqlStore {
    const STATELESS: SqlStore = SqlStore { sql: None, table: None };

    fn sql(&self) -> Result<&SqlStorage, StoreError> {
        self.sql.as_ref().ok_or_else(|| StoreError::new("no store for a stateless request"))
    }

    fn table_known(&self) -> bool {
        self.table.as_ref().is_some_and(|t| t.get())
    }

    fn note_table(&self) {
        if let Some(t) = &self.table {
            t.set(true);
        }
    }

    fn has_table(&self) -> Result<bool, StoreError> {
        if self.table_known() {
            return Ok(true);
        }
        let rows: Vec<Row> = self
            .sql()?
            .exec("SELECT name AS key FROM sqlite_master WHERE type = 'table' AND name = 'entries'", None)
            .and_then(|c| c.to_array())
            .map_err(store_error)?;
        if !rows.is_empty() {
            self.note_table();
        }
        Ok(!rows.is_empty())
    }

    fn create_table(&self) -> Result<(), StoreError> {
        if self.table_known() {
            return Ok(());
        }
        self.sql()?
            .exec("CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, value TEXT NOT NULL, version INTEGER NOT NULL)", None)
            .map(drop)
            .map_err(store_error)?;
        self.note_table();
        Ok(())
    }
}

#[derive(serde::Deserialize)]
struct Row {
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    version: i64,
}

fn store_error(e: worker::Error) -> StoreError {
    StoreError::new(e.to_string())
}

fn text(bytes: Vec<u8>) -> Result<SqlStorageValue, StoreError> {
    String::from_utf8(bytes).map(SqlStorageValue::String).map_err(|_| StoreError::new("value is not UTF-8"))
}

impl Store for SqlStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.get_versioned(key).await?.map(|(value, _)| value))
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, Version)>, StoreError> {
        if !self.has_table()? {
            return Ok(None);
        }
        let rows: Vec<Row> = self
            .sql()?
            .exec(
                "SELECT key, value, version FROM entries WHERE key = ?",
                vec![SqlStorageValue::String(key.to_owned())],
            )
            .and_then(|c| c.to_array())
            .map_err(store_error)?;
        Ok(rows.into_iter().next().map(|r| (r.value.into_bytes(), Version::try_from(r.version).unwrap_or_default())))
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.create_table()?;
        self.sql()?
            .exec(
                "INSERT INTO entries (key, value, version) VALUES (?, ?, 1) \
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value, version = entries.version + 1",
                vec![SqlStorageValue::String(key.to_owned()), text(value)?],
            )
            .map(drop)
            .map_err(store_error)
    }

    async fn put_if_version(&self, key: &str, value: Vec<u8>, expected: Version) -> Result<bool, StoreError> {
        self.create_table()?;
        let key = SqlStorageValue::String(key.to_owned());
        let written: Vec<Row> = if expected == 0 {
            self.sql()?.exec(
                "INSERT INTO entries (key, value, version) VALUES (?, ?, 1) ON CONFLICT(key) DO NOTHING RETURNING key",
                vec![key, text(value)?],
            )
        } else {
            let expected = i64::try_from(expected).map_err(|_| StoreError::new("version out of range"))?;
            self.sql()?.exec(
                "UPDATE entries SET value = ?, version = version + 1 WHERE key = ? AND version = ? RETURNING key",
                vec![text(value)?, key, SqlStorageValue::Integer(expected)],
            )
        }
        .and_then(|c| c.to_array())
        .map_err(store_error)?;
        Ok(!written.is_empty())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        if !self.has_table()? {
            return Ok(());
        }
        self.sql()?
            .exec("DELETE FROM entries WHERE key = ?", vec![SqlStorageValue::String(key.to_owned())])
            .map(drop)
            .map_err(store_error)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        if !self.has_table()? {
            return Ok(Vec::new());
        }
        let rows: Vec<Row> = self
            .sql()?
            // A range on the primary key, so a sweep's listing reads its index, not the table.
            // Keys are ASCII: every key with the prefix sorts below the prefix and U+10FFFF.
            .exec(
                "SELECT key FROM entries WHERE key >= ?1 AND key < ?2",
                vec![
                    SqlStorageValue::String(prefix.to_owned()),
                    SqlStorageValue::String(format!("{prefix}\u{10FFFF}")),
                ],
            )
            .and_then(|c| c.to_array())
            .map_err(store_error)?;
        Ok(rows.into_iter().map(|r| r.key).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;
    use worker::wasm_bindgen::{JsCast, JsValue};

    fn js_body(chunks: &[&[u8]]) -> worker::Body {
        let stream =
            futures_util::stream::iter(chunks.iter().map(|c| Ok::<Vec<u8>, String>(c.to_vec())).collect::<Vec<_>>());
        worker::Body::from_stream(stream).unwrap()
    }

    fn upstream_body(chunks: &[&[u8]]) -> UpstreamBody {
        UpstreamBody { stream: js_body(chunks).into_inner(), deadline: None }
    }

    fn env(vars: &[(&str, &str)]) -> Env {
        let object = worker::js_sys::Object::new();
        for (k, v) in vars {
            worker::js_sys::Reflect::set(&object, &JsValue::from_str(k), &JsValue::from_str(v)).unwrap();
        }
        object.unchecked_into()
    }

    #[wasm_bindgen_test]
    fn alarm_dates_are_absolute_epoch_milliseconds() {
        let at = Timestamp::from_millis(1_800_000_123_456);
        assert_eq!(alarm_date(at).get_time(), 1_800_000_123_456.0);
    }

    #[wasm_bindgen_test]
    fn entropy_comes_from_crypto_random() {
        let (a, b) = (entropy(), entropy());
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 16]);
    }

    #[wasm_bindgen_test]
    async fn request_bodies_from_js_streams_are_read_whole_and_capped() {
        let request = http::Request::new(js_body(&[b"{\"model_input\":", b" 1}"]));
        let read = read_request(request, 64).await.unwrap();
        assert_eq!(read.body().as_ref(), b"{\"model_input\": 1}");

        let request = http::Request::new(js_body(&[&[b'a'; 40], &[b'b'; 40]]));
        let err = read_request(request, 64).await.unwrap_err();
        assert_eq!(err, Error::PayloadTooLarge { limit: 64 });
        assert_eq!(err.to_response().status(), 413);
    }

    #[wasm_bindgen_test]
    async fn upstream_bodies_are_read_with_a_limit() {
        let client = FetchClient;
        assert_eq!(client.read(upstream_body(&[b"ok"]), 2).await.unwrap().as_ref(), b"ok");
        assert!(matches!(client.read(upstream_body(&[b"too long"]), 2).await, Err(TransportError::Body(_))));
        assert_eq!(client.read(UpstreamBody { stream: None, deadline: None }, 2).await.unwrap().as_ref(), b"");
    }

    #[wasm_bindgen_test]
    fn configuration_comes_from_vars_and_names_secrets() {
        let doc = r#"{"public_base_url": "https://gw.example", "keys": [], "id_secret_name": "IDS",
            "models": {"m": {"upstream": "https://u.example", "api_key_secret_name": "UP_KEY"}}}"#;
        let ids = ("IDS", "request-id-secret-0123456789abcdef0123");
        let config = load_config(&env(&[(CONFIG_VAR, doc), ("UP_KEY", "s3cret"), ids])).unwrap();
        assert_eq!(config.models["m"].api_key, "s3cret");

        let missing_secret = load_config(&env(&[(CONFIG_VAR, doc), ids])).unwrap_err();
        assert!(matches!(&missing_secret, Error::Config { field, .. } if field == "models.m.api_key_secret_name"));
        let missing_doc = load_config(&env(&[])).unwrap_err();
        assert!(matches!(&missing_doc, Error::Config { field, .. } if field == CONFIG_VAR));
        assert_eq!(missing_doc.to_response().status(), 500);
    }
}
