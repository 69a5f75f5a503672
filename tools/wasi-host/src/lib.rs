//! An in-process `wasi:http` host for testing Spin components (spin-sdk 5.x, WASIp2).
//!
//! [`serve`] compiles a component that exports `wasi:http/incoming-handler@0.2.x` and serves it
//! over HTTP/1.1 on a local address, one wasmtime `Store` and instance per request (as
//! `wasmtime serve` does). The component may import:
//! - everything in `wasi:cli/imports@0.2.x` (wasmtime-wasi; stdout and stderr are inherited, real
//!   clocks and randomness, no environment, no preopened directories, no sockets);
//! - `wasi:http/outgoing-handler@0.2.x` (wasmtime-wasi-http; timeouts the guest leaves unset
//!   default to [`OUTGOING_TIMEOUT`]);
//! - `fermyon:spin/variables@2.0.0`, from [`HostConfig::variables`];
//! - `wasi:keyvalue/{store,atomics,batch}@0.2.0-draft2` and `fermyon:spin/key-value@2.0.0`, one
//!   store labelled "default", persisted to [`HostConfig::kv_path`] (see [`kv`]).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use http_body_util::BodyExt;
use hyper::server::conn::http1;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

mod host;
pub mod kv;

pub use host::{check_variable_name, DEFAULT_STORE};

/// Default for each outgoing-request timeout (connect, first byte, between bytes) that the guest
/// does not set through `wasi:http/types.request-options`. wasmtime's own default is 600 s.
pub const OUTGOING_TIMEOUT: Duration = Duration::from_secs(30);

/// How often running guests are interrupted to yield to the async runtime (epoch interruption),
/// so a guest spinning in wasm code neither hogs a worker thread nor survives `shutdown`.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// What to serve, where, and with which host state.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The component (`.wasm`) exporting `wasi:http/incoming-handler@0.2.x`.
    pub component: PathBuf,
    /// Address to listen on; port 0 picks a free port (see [`Server::local_addr`]).
    pub addr: SocketAddr,
    /// The key-value file (created on the first write; its directory is created at start).
    pub kv_path: PathBuf,
    /// Spin variables (`fermyon:spin/variables.get`); names must pass [`check_variable_name`].
    pub variables: BTreeMap<String, String>,
}

/// A running host. Dropping it stops it too, without waiting.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    cancel: CancellationToken,
    tracker: TaskTracker,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, drops every open connection and in-flight guest call (their stores and
    /// instances), and returns once all of them are gone. The key-value file keeps the state of
    /// the last completed write: writes are atomic file replacements, never interrupted halfway.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(accept) = self.accept.take() {
            let _ = accept.await;
        }
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// State shared by every request of one [`Server`].
#[derive(Debug)]
pub(crate) struct HostState {
    pub(crate) variables: BTreeMap<String, String>,
    pub(crate) kv: kv::KvStore,
}

/// The `T` of each request's `Store<T>`.
pub(crate) struct RequestState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: OutgoingHooks,
    pub(crate) table: ResourceTable,
    pub(crate) host: Arc<HostState>,
}

impl WasiView for RequestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for RequestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// wasmtime-wasi-http's default outgoing client, with [`OUTGOING_TIMEOUT`] as default timeouts.
struct OutgoingHooks;

type OutgoingFuture = Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>;

impl WasiHttpHooks for OutgoingHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: OutgoingFuture,
    ) -> Box<
        dyn std::future::Future<Output = wasmtime_wasi_http::Result<(http::Response<WasiBody>, OutgoingFuture)>> + Send,
    > {
        drop(fut);
        let options = options.unwrap_or_default();
        let options = RequestOptions {
            connect_timeout: Some(options.connect_timeout.unwrap_or(OUTGOING_TIMEOUT)),
            first_byte_timeout: Some(options.first_byte_timeout.unwrap_or(OUTGOING_TIMEOUT)),
            between_bytes_timeout: Some(options.between_bytes_timeout.unwrap_or(OUTGOING_TIMEOUT)),
        };
        Box::new(async move {
            let (response, io) = wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
            Ok((response.map(BodyExt::boxed_unsync), Box::new(io) as OutgoingFuture))
        })
    }
}

/// Compiled components, keyed by path, size and modification time, with the engine they were
/// compiled for: a restarted server (or a second one) on the same file skips compilation. The
/// lock is held while compiling, so concurrent `serve` calls compile a component only once.
type CompileCache = tokio::sync::Mutex<HashMap<(PathBuf, u64, SystemTime), (Engine, Component)>>;

fn compile_cache() -> &'static CompileCache {
    static CACHE: OnceLock<CompileCache> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

fn new_engine() -> anyhow::Result<Engine> {
    let mut config = Config::new();
    // Async host functions are always available in wasmtime 48 (`Config::async_support` is a
    // deprecated no-op there); the component model is on by default but say so.
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    // A test host: compile fast rather than generate fast code (matters most when wasmtime itself
    // is built without optimizations, as in `cargo test`).
    config.cranelift_opt_level(wasmtime::OptLevel::None);
    Engine::new(&config).map_err(anyhow::Error::from)
}

/// Compiles `path` (or takes it from the cache). Runs on a blocking thread: it is CPU-bound.
async fn load_component(path: &Path) -> anyhow::Result<(Engine, Component)> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading component {}", path.display()))?;
    let key = (std::fs::canonicalize(path)?, meta.len(), meta.modified()?);
    let mut cache = compile_cache().lock().await;
    if let Some(hit) = cache.get(&key) {
        return Ok(hit.clone());
    }
    let file = key.0.clone();
    let compiled = tokio::task::spawn_blocking(move || -> anyhow::Result<(Engine, Component)> {
        let started = Instant::now();
        let engine = new_engine()?;
        let component = Component::from_file(&engine, &file)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("compiling component {}", file.display()))?;
        eprintln!("wasi-host: compiled {} in {:.1?}", file.display(), started.elapsed());
        Ok((engine, component))
    })
    .await??;
    cache.insert(key, compiled.clone());
    Ok(compiled)
}

fn link(engine: &Engine, component: &Component) -> anyhow::Result<ProxyPre<RequestState>> {
    let mut linker = Linker::<RequestState>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    host::bindings::SpinHost::add_to_linker::<_, HasSelf<RequestState>>(&mut linker, |state| state)?;
    let pre =
        linker.instantiate_pre(component).map_err(anyhow::Error::from).context("linking the component's imports")?;
    ProxyPre::new(pre)
        .map_err(anyhow::Error::from)
        .context("the component does not export wasi:http/incoming-handler@0.2.x")
}

/// Compiles and links the component, opens the key-value file, binds `config.addr` and serves
/// in background tasks on the current tokio runtime (which must be multi-threaded or keep
/// running while the server is used).
pub async fn serve(config: HostConfig) -> anyhow::Result<Server> {
    for name in config.variables.keys() {
        if let Err(msg) = check_variable_name(name) {
            bail!("{msg}");
        }
    }
    let kv = kv::KvStore::open(&config.kv_path)?;
    let (engine, component) = load_component(&config.component).await?;
    let pre = link(&engine, &component)?;
    let listener = TcpListener::bind(config.addr).await.with_context(|| format!("binding {}", config.addr))?;
    let local_addr = listener.local_addr()?;

    let host = Arc::new(HostState { variables: config.variables, kv });
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();

    tracker.spawn(tick_epochs(engine, cancel.clone()));
    let ctx = ServeCtx { local_addr, pre, host, cancel: cancel.clone(), tracker: tracker.clone() };
    let accept = tokio::spawn(accept_loop(listener, ctx));
    Ok(Server { local_addr, cancel, tracker, accept: Some(accept) })
}

async fn tick_epochs(engine: Engine, cancel: CancellationToken) {
    let mut interval = tokio::time::interval(EPOCH_TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = interval.tick() => engine.increment_epoch(),
        }
    }
}

#[derive(Clone)]
struct ServeCtx {
    local_addr: SocketAddr,
    pre: ProxyPre<RequestState>,
    host: Arc<HostState>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

async fn accept_loop(listener: TcpListener, ctx: ServeCtx) {
    loop {
        let (stream, client_addr) = tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    eprintln!("wasi-host: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let conn_ctx = ctx.clone();
        ctx.tracker.spawn(async move {
            let cancel = conn_ctx.cancel.clone();
            let service = hyper::service::service_fn(move |req| {
                let ctx = conn_ctx.clone();
                async move { Ok::<_, std::convert::Infallible>(handle_request(ctx, client_addr, req).await) }
            });
            let conn = http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = cancel.cancelled() => {}
                result = conn => {
                    if let Err(e) = result {
                        if !e.is_incomplete_message() {
                            eprintln!("wasi-host: connection error: {e}");
                        }
                    }
                }
            }
        });
    }
}

/// The headers Spin's HTTP trigger adds for a component mounted at `route = "/..."` (spin-sdk's
/// `Router::suffix()` routes on `spin-path-info`). Incoming values of these names are replaced.
fn add_spin_headers<B>(req: &mut hyper::Request<B>, local_addr: SocketAddr, client_addr: SocketAddr) {
    let host = req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned);
    let host = host.unwrap_or_else(|| local_addr.to_string());
    let path_and_query = req.uri().path_and_query().map_or("/", |pq| pq.as_str()).to_owned();
    let path = req.uri().path().to_owned();
    let values = [
        ("spin-full-url", format!("http://{host}{path_and_query}")),
        ("spin-path-info", path),
        ("spin-matched-route", "/...".to_owned()),
        ("spin-base-path", "/".to_owned()),
        ("spin-raw-component-route", "/...".to_owned()),
        ("spin-component-route", String::new()),
        ("spin-client-addr", client_addr.to_string()),
    ];
    for (name, value) in values {
        if let Ok(value) = http::HeaderValue::from_str(&value) {
            req.headers_mut().insert(http::HeaderName::from_static(name), value);
        }
    }
}

/// Runs one request in a fresh store and instance. Host-side failures (instantiation, traps
/// before the response was set, `response-outparam.set` with an error) become a 500 whose body
/// names the error; the error is also printed to stderr.
async fn handle_request(
    ctx: ServeCtx,
    client_addr: SocketAddr,
    mut req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<HyperOutgoingBody> {
    add_spin_headers(&mut req, ctx.local_addr, client_addr);
    match run_guest(ctx, req).await {
        Ok(response) => response,
        Err(e) => {
            eprintln!("wasi-host: request failed: {e:?}");
            let body = http_body_util::Full::new(hyper::body::Bytes::from(format!("wasi-host: {e:#}\n")))
                .map_err(|never| match never {})
                .boxed_unsync();
            let mut response = hyper::Response::new(body);
            *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            response
        }
    }
}

async fn run_guest(
    ctx: ServeCtx,
    req: hyper::Request<hyper::body::Incoming>,
) -> anyhow::Result<hyper::Response<HyperOutgoingBody>> {
    let state = RequestState {
        wasi: WasiCtx::builder().inherit_stdout().inherit_stderr().build(),
        http: WasiHttpCtx::new(),
        hooks: OutgoingHooks,
        table: ResourceTable::new(),
        host: ctx.host.clone(),
    };
    let mut store = Store::new(ctx.pre.engine(), state);
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(1);

    let (sender, receiver) = tokio::sync::oneshot::channel();
    let req = store.data_mut().http().new_incoming_request(Scheme::Http, req)?;
    let out = store.data_mut().http().new_response_outparam(sender)?;
    let pre = ctx.pre.clone();
    let cancel = ctx.cancel.clone();

    // The guest runs in its own task so it can keep streaming the body after `set`.
    let task = ctx.tracker.spawn(async move {
        let call = async {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy.wasi_http_incoming_handler().call_handle(&mut store, req, out).await
        };
        tokio::select! {
            _ = cancel.cancelled() => Ok(()),
            result = call => {
                if let Err(e) = &result {
                    eprintln!("wasi-host: guest failed: {e:?}");
                }
                result.map_err(anyhow::Error::from)
            }
        }
    });

    match receiver.await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(code)) => bail!("guest set an error response: {code:?}"),
        Err(_) => match task.await {
            Ok(Ok(())) => bail!("guest never invoked `response-outparam::set`"),
            Ok(Err(e)) => Err(e.context("guest failed before setting a response")),
            Err(e) => Err(anyhow::Error::from(e).context("guest task")),
        },
    }
}
