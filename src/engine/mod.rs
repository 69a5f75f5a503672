//! The sans-IO engine: every product decision, no platform.
//!
//! An adapter hands [`Engine::handle`] an `http::Request` plus the time and 16 random bytes
//! ([`Ctx`]); the engine routes, authenticates, validates, reads and writes the [`Store`],
//! calls upstreams through the adapter's [`HttpClient`], and returns an [`Outcome`]: the
//! response, and when the adapter must call [`Engine::sweep`] next (a Durable Object alarm, a
//! cron-triggered route, or the next request). The sweep submits what is pending, expires,
//! reconciles, delivers webhooks and forgets what is past retention.
//!
//! The engine never reads a clock or a random source and never names a platform crate, so
//! a 72-hour expiry or a four-hour webhook retry schedule is a host test that advances a number.

#![forbid(unsafe_code)]

pub mod access;
pub mod base;
pub mod jobs;
pub mod ports;
pub mod surface;
pub mod webhooks;

pub mod config;
mod sync;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};

pub use base::{Error, IllegalTransition, Operation, StoreError, Subject, Target, Timestamp, TransportError};
pub use config::Config;
pub use jobs::sweep::sweep_lease_key;
pub use ports::http_client::{HttpClient, OUTBOUND_TIMEOUT_MS, SYNC_TIMEOUT_MS};
pub use ports::store::{MemoryStore, NoStore, Store, Version};
pub use surface::route::{OpenAiEndpoint, Route};

/// The largest request body an adapter should read; beyond it, answer
/// [`Error::PayloadTooLarge`]. Async submits have their own, smaller limit (256 KiB).
pub const MAX_REQUEST_BODY: usize = 32 * 1024 * 1024;

/// The largest request body of a sync route (`predict`, `run_remote`, `sync/...`), streamed to
/// the upstream and never gathered: Baseten's own edge limit.
pub const SYNC_BODY_LIMIT: usize = 100 * 1024 * 1024;

/// Where a request must run, for platforms that spread jobs over places with their own store
/// (Durable Objects on Workers, see [`job_object`]), and whether it needs a store at all: a
/// request placed [`Placement::Stateless`] runs with [`NoStore`], opens no store and runs no sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Needs no job state: run it anywhere, with [`NoStore`].
    Stateless,
    /// Touches exactly the job with this request id (a submit creates it under this id; a
    /// token minted bound to it is checked against it), in the place [`job_object`] names.
    Job(String),
    /// Needs the store of the place it runs in, but no particular job: `POST /_sweep`. (On
    /// Workers each place sweeps itself at its alarm, so there it is answered stateless.)
    Store,
}

/// How many places jobs are spread over: [`job_object`] names one of these.
pub const JOB_OBJECTS: usize = 256;

/// The place (a Durable Object's name on Workers) that holds the job with this request id:
/// one of [`JOB_OBJECTS`], from the id's first byte. It depends on the id alone, so every
/// request for a job, an idempotent retry and the inbox reach the same place forever.
///
/// Why a fixed set and not one place per job: a place's store serves many jobs (the engine's
/// sweep and due index are per store, as on Spin), and on workerd a new object per job costs
/// its own database file: one object per job took ~270–380 durable writes/s where a set of
/// 16–256 objects took 1,600–3,100/s (`make bench`, README). 256 keeps each object far below
/// the per-object request rate Cloudflare advises while spreading load across machines.
pub fn job_object(request_id: &str) -> String {
    format!("jobs-{}", request_id.get(..2).unwrap_or("00"))
}

/// What may be read of a request before it is handled, decided from its head alone
/// ([`Engine::admit`]): a request without valid credentials, or announcing a body larger than
/// its route takes, is refused before any store is touched or its body is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Read at most this many bytes of the body, then handle it ([`Engine::handle`]).
    Read { body_limit: usize },
    /// A sync route: do not read the body; stream at most this many bytes of it to the upstream
    /// ([`Engine::handle_stream`]).
    Stream { body_limit: usize },
    /// Answer with this error at once; do not read the body.
    Refuse(Error),
}

/// A status read or cancel carries no body worth reading.
const NO_BODY_LIMIT: usize = 16 * 1024;

/// What the adapter supplies with each request: the time and fresh randomness (for ids).
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub now: Timestamp,
    pub entropy: [u8; 16],
    /// When the request arrived; differs from `now` only while a long-poll is held.
    pub received_at: Timestamp,
}

impl Ctx {
    pub fn new(now: Timestamp, entropy: [u8; 16]) -> Self {
        Self { now, entropy, received_at: now }
    }
}

/// A clock and a sleep, for adapters that can hold a connection open ([`Engine::handle_held`]).
#[allow(async_fn_in_trait)] // single-threaded wasm: no Send bound wanted
pub trait Timer {
    fn now(&self) -> Timestamp;
    async fn sleep_until(&self, at: Timestamp);
}

/// A response body: bytes the engine made, or the upstream's body passed through unread
/// (sync predict), which the adapter streams back as its platform allows.
#[derive(Debug)]
pub enum Body<B> {
    Full(Bytes),
    Upstream(B),
}

/// The result of one engine call.
///
/// The adapter must send `response` and, if `wake_at` is set, arrange for [`Engine::sweep`]
/// to run at or after that time (replacing any later wake-up it had). Store writes have
/// already happened when an `Outcome` exists: sending the response is the last step.
#[must_use = "the response must be sent and the wake-up scheduled"]
#[derive(Debug)]
pub struct Outcome<B> {
    pub response: Response<Body<B>>,
    pub wake_at: Option<Timestamp>,
    /// A long-poll whose answer may still change: an adapter that can hold the connection asks
    /// again at this time ([`Engine::handle_held`] does); one that cannot sends `response`.
    pub hold_until: Option<Timestamp>,
}

impl<B> Outcome<B> {
    pub(crate) fn new(response: Response<Body<B>>, wake_at: Option<Timestamp>) -> Self {
        Self { response, wake_at, hold_until: None }
    }
}

/// What a sweep did and when the next one is due.
#[must_use = "the next wake-up must be scheduled"]
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Whether this sweep held the lease and ran; `false` when another sweep was running.
    pub ran: bool,
    /// Jobs that had something due and were processed.
    pub processed: usize,
    /// Jobs whose processing failed (store or upstream trouble); they stay due.
    pub failed: usize,
    /// Records deleted at the end of retention.
    pub deleted: usize,
    /// Finished jobs moved out of the due index, to be read again only when their retention
    /// ends.
    pub parked: usize,
    /// What went wrong first, for the adapter's log (never sent to a caller).
    pub first_error: Option<String>,
    pub wake_at: Option<Timestamp>,
}

/// The engine for one request: borrowed configuration, store and HTTP client.
#[derive(Debug)]
pub struct Engine<'a, S, H> {
    pub config: &'a Config,
    pub store: &'a S,
    pub http: &'a H,
}

impl<S, H> Clone for Engine<'_, S, H> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S, H> Copy for Engine<'_, S, H> {}

/// Headers a browser page may read on cross-origin responses.
const EXPOSED_HEADERS: &str = "x-baseten-request-id, retry-after";

impl<'a, S: Store, H: HttpClient> Engine<'a, S, H> {
    pub fn new(config: &'a Config, store: &'a S, http: &'a H) -> Self {
        Self { config, store, http }
    }

    /// Where `request` must run, decided from its head (and, for a token minted bound to a
    /// job, the `request_id` in its body). A submit's request id is decided here: the same
    /// `entropy` given to [`Engine::handle`] yields the same id, and an `Idempotency-Key`
    /// always yields the same id for the same key.
    pub fn placement(&self, request: &Request<Bytes>, now: Timestamp, entropy: [u8; 16]) -> Placement {
        match self.route(request) {
            Ok(Route::AsyncPredict { .. }) => {
                Placement::Job(jobs::submit::new_request_id(self.config, request.headers(), now, entropy))
            }
            Ok(
                Route::Status { request_id, .. }
                | Route::Cancel { request_id, .. }
                | Route::WebhookInbox { request_id, .. },
            ) if base::is_request_id(&request_id) => Placement::Job(request_id),
            Ok(Route::MintToken) => {
                access::tokens::bound_request_id(request.body()).map_or(Placement::Stateless, Placement::Job)
            }
            Ok(Route::Sweep) => Placement::Store,
            _ => Placement::Stateless,
        }
    }

    /// The admission of a request, from its head alone. Every route but the preflight needs
    /// valid credentials: a gateway key scoped to the route's operation, its model or chain
    /// and the request's origin, or for the inbox its job's URL and a signature header. A
    /// `Content-Length` must be within the route's limit: async submits
    /// `async_body_limit_bytes`, the OpenAI front door and the inbox [`MAX_REQUEST_BODY`], sync
    /// routes [`SYNC_BODY_LIMIT`] (streamed), routes that take no body a small bound, and a
    /// preflight none. Adapters check this before reading the body or touching a store, and
    /// read at most `body_limit` bytes; so every refusal reads no body and touches no store.
    /// (The inbox's signature itself needs the body: adapters verify it before touching job
    /// state, with [`Engine::verify_inbox_if_inbox`].)
    pub fn admit<B>(&self, request: &Request<B>, now: Timestamp) -> Admission {
        let length =
            header_str(request.headers(), header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<usize>().ok());
        let route = match self.route(request) {
            Ok(route) => route,
            Err(e) => return Admission::Refuse(e),
        };
        let refused = match &route {
            Route::Preflight => None,
            Route::WebhookInbox { request_id, token } => {
                webhooks::inbox::check_inbox_url(self.config, request_id, token.as_deref()).err().or_else(|| {
                    let signed = header_str(request.headers(), "x-baseten-signature").is_some();
                    (!signed).then(|| Error::BadSignature { message: "missing X-BASETEN-SIGNATURE header".to_owned() })
                })
            }
            route => self.admit_caller(route, request.headers(), now).err(),
        };
        if let Some(e) = refused {
            return Admission::Refuse(e);
        }
        let limit = match route {
            Route::Predict { .. } | Route::Sync { .. } | Route::WebSocket { .. } => {
                return match length {
                    Some(n) if n > SYNC_BODY_LIMIT => {
                        Admission::Refuse(Error::PayloadTooLarge { limit: SYNC_BODY_LIMIT })
                    }
                    _ => Admission::Stream { body_limit: SYNC_BODY_LIMIT },
                };
            }
            Route::AsyncPredict { .. } => self.config.async_body_limit,
            Route::OpenAi { .. } | Route::WebhookInbox { .. } => MAX_REQUEST_BODY,
            Route::Status { .. }
            | Route::Cancel { .. }
            | Route::QueueStatus { .. }
            | Route::Wake { .. }
            | Route::MintToken
            | Route::Sweep => NO_BODY_LIMIT,
            Route::Preflight => 0,
        };
        match length {
            Some(n) if n > limit => Admission::Refuse(Error::PayloadTooLarge { limit }),
            _ => Admission::Read { body_limit: limit },
        }
    }

    /// The caller of a route that needs a key, scoped to the route's operation, the model or
    /// chain its path names and the request's origin.
    fn admit_caller(&self, route: &Route, headers: &HeaderMap, now: Timestamp) -> Result<config::ApiKey, Error> {
        let key = access::keys::authenticate(self.config, headers, now)?;
        let origin = header_str(headers, header::ORIGIN.as_str());
        let op = route.operation().ok_or(Error::NotFound { what: "route".to_owned() })?;
        match route.subject() {
            Some(subject) => access::keys::authorize(&key, op, subject, origin)?,
            None => access::keys::authorize_operation(&key, op, origin)?,
        }
        Ok(key)
    }

    /// For an inbox delivery whose body has been read (any other request passes): its
    /// signature, checked without any store, so a forged delivery never reaches the job's state.
    pub fn verify_inbox_if_inbox(&self, request: &Request<Bytes>) -> Result<(), Error> {
        match self.route(request) {
            Ok(Route::WebhookInbox { .. }) => webhooks::inbox::verify_signature(self.config, request),
            _ => Ok(()),
        }
    }

    /// What a request addresses, from its method, `Host` (or URI authority) and path.
    fn route<B>(&self, request: &Request<B>) -> Result<Route, Error> {
        let host = header_str(request.headers(), header::HOST.as_str()).or(request.uri().host());
        Route::parse_with(request.method(), host, request.uri().path(), &|s| self.config.upstream(s).is_ok())
    }

    /// The answer to a refused request: its error as JSON, with CORS as for any answer.
    pub fn refusal<B>(&self, request: &Request<B>, error: &Error, now: Timestamp) -> Response<Bytes> {
        let mut response = error.to_response();
        if let Some(origin) = header_str(request.headers(), header::ORIGIN.as_str()) {
            let allowed = self.cors_allowed(request, origin, now);
            add_cors(response.headers_mut(), origin, allowed);
        }
        response
    }

    /// Handles one gateway request. Never panics on any input; every refusal is a 4xx with
    /// `code` and `message`, and a refused request changes nothing in the store.
    ///
    /// Its time is `ctx.now` throughout; a host that has a clock gives it with
    /// [`Engine::handle_held`], so that a sweep (`POST /_sweep`) claims work at the time it
    /// reaches it.
    pub async fn handle(&self, request: Request<Bytes>, ctx: Ctx) -> Outcome<H::Body> {
        self.handle_timed(request, ctx, &|| ctx.now).await
    }

    async fn handle_timed(&self, request: Request<Bytes>, ctx: Ctx, clock: &dyn Fn() -> Timestamp) -> Outcome<H::Body> {
        let origin = header_str(request.headers(), header::ORIGIN.as_str()).map(str::to_owned);
        let cors = origin.as_deref().is_some_and(|o| self.cors_allowed(&request, o, ctx.now));
        with_cors(self.dispatch(request, ctx, cors, clock).await, origin.as_deref(), cors)
    }

    /// Handles a sync route ([`Admission::Stream`]) whose body streams to the upstream as it
    /// arrives. Same guarantees as [`Engine::handle`].
    pub async fn handle_stream(&self, request: Request<H::Stream>, ctx: Ctx) -> Outcome<H::Body> {
        let origin = header_str(request.headers(), header::ORIGIN.as_str()).map(str::to_owned);
        let cors = origin.as_deref().is_some_and(|o| self.cors_allowed(&request, o, ctx.now));
        with_cors(self.dispatch_stream(request, ctx).await, origin.as_deref(), cors)
    }

    async fn dispatch_stream(&self, request: Request<H::Stream>, ctx: Ctx) -> Result<Outcome<H::Body>, Error> {
        let route = self.route(&request)?;
        let key = access::keys::authenticate(self.config, request.headers(), ctx.now)?;
        let origin = header_str(request.headers(), header::ORIGIN.as_str());
        match (&route, route.operation()) {
            (
                Route::Predict { subject, .. } | Route::Sync { subject, .. } | Route::WebSocket { subject, .. },
                Some(op),
            ) => {
                access::keys::authorize(&key, op, subject, origin)?;
            }
            _ => return Err(Error::NotFound { what: "a sync route".to_owned() }),
        }
        match &route {
            Route::WebSocket { subject, target } => self.websocket(subject, target, request).await,
            _ => self.pass(&route, request).await,
        }
    }

    async fn dispatch(
        &self,
        request: Request<Bytes>,
        ctx: Ctx,
        cors: bool,
        clock: &dyn Fn() -> Timestamp,
    ) -> Result<Outcome<H::Body>, Error> {
        let route = self.route(&request)?;
        let done = |response: Response<Bytes>| Ok(Outcome::new(full(response), None));
        match route {
            Route::Preflight => done(preflight(cors)),
            Route::WebhookInbox { request_id, token } => self.inbox(&request_id, token.as_deref(), &request, ctx).await,
            route => {
                let key = access::keys::authenticate(self.config, request.headers(), ctx.now)?;
                let key = &key;
                let origin = header_str(request.headers(), header::ORIGIN.as_str());
                let op = route.operation().ok_or(Error::NotFound { what: "route".to_owned() })?;
                match route {
                    Route::Predict { ref subject, .. } | Route::Sync { ref subject, .. } => {
                        access::keys::authorize(key, op, subject, origin)?;
                        self.pass(&route, request.map(H::stream_of)).await
                    }
                    Route::WebSocket { ref subject, ref target } => {
                        access::keys::authorize(key, op, subject, origin)?;
                        self.websocket(subject, target, request.map(H::stream_of)).await
                    }
                    Route::OpenAi { endpoint } => {
                        access::keys::authorize_operation(key, op, origin)?;
                        let origin = origin.map(str::to_owned);
                        self.openai(key, origin.as_deref(), endpoint, request).await
                    }
                    Route::QueueStatus { subject, target } => {
                        access::keys::authorize(key, op, &subject, origin)?;
                        done(self.queue_status(&subject, &target).await?)
                    }
                    Route::Wake { subject, target } => {
                        access::keys::authorize(key, op, &subject, origin)?;
                        done(self.wake(&subject, &target).await?)
                    }
                    Route::AsyncPredict { subject, target } => {
                        access::keys::authorize(key, op, &subject, origin)?;
                        self.submit(key, subject, target, &request, ctx, clock).await
                    }
                    Route::Status { subject, request_id } => {
                        let wait_ms = long_poll_wait(request.uri().query())?;
                        self.status(key, origin, subject.as_ref(), &request_id, ctx, wait_ms).await
                    }
                    Route::Cancel { subject, request_id } => {
                        self.cancel(key, origin, subject.as_ref(), &request_id, ctx.now).await
                    }
                    Route::MintToken => {
                        access::keys::authorize_operation(key, op, origin)?;
                        done(self.mint_token(key, &request, ctx.now, ctx.entropy).await?)
                    }
                    Route::Sweep => {
                        access::keys::authorize_operation(key, op, origin)?;
                        // The host's clock, not the request's: a long sweep claims each job's
                        // work at the time it reaches it.
                        let report = self.sweep(clock).await;
                        self.note_wake(report.wake_at).await;
                        let body = serde_json::json!({
                            "ran": report.ran, "processed": report.processed, "failed": report.failed, "deleted": report.deleted,
                            "parked": report.parked,
                            "next_sweep_at": report.wake_at.map(Timestamp::rfc3339),
                        });
                        done(base::json_response(StatusCode::OK, &body))
                    }
                    Route::Preflight | Route::WebhookInbox { .. } => Err(Error::NotFound { what: "route".to_owned() }),
                }
            }
        }
    }

    /// [`Engine::handle`], holding a long-poll (`GET /async_request/{id}?wait=N`, N up to 30
    /// seconds) open until the job ends or the wait runs out, asking again at the engine's
    /// `hold_until` and sleeping with `timer` in between. For adapters that can hold a
    /// connection; every other request is answered at once.
    pub async fn handle_held<T: Timer>(
        &self,
        request: Request<Bytes>,
        entropy: [u8; 16],
        timer: &T,
    ) -> Outcome<H::Body> {
        let received_at = timer.now();
        let (parts, body) = request.into_parts();
        let mut wake_at: Option<Timestamp> = None;
        loop {
            let mut again = Request::new(body.clone());
            *again.method_mut() = parts.method.clone();
            *again.uri_mut() = parts.uri.clone();
            *again.headers_mut() = parts.headers.clone();
            let ctx = Ctx { now: timer.now(), entropy, received_at };
            let outcome = self.handle_timed(again, ctx, &|| timer.now()).await;
            // Every wake-up asked for on the way is kept, not only the last one.
            wake_at = match (wake_at, outcome.wake_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match outcome.hold_until {
                Some(at) => timer.sleep_until(at).await,
                None => return Outcome { wake_at, ..outcome },
            }
        }
    }

    /// Whether `origin` may read the answer: a configured key allows it, or the request's
    /// browser token does. A preflight carries no credentials, so with browser tokens enabled
    /// it is answered for any origin; the real request is then checked against its token.
    fn cors_allowed<B>(&self, request: &Request<B>, origin: &str, now: Timestamp) -> bool {
        if self.config.keys.iter().any(|k| k.origins.allows(origin)) {
            return true;
        }
        if request.method() == http::Method::OPTIONS {
            return self.config.browser_tokens.is_some();
        }
        let bearer = header_str(request.headers(), header::AUTHORIZATION.as_str())
            .and_then(|v| v.split_once(' '))
            .map(|(_, token)| token.trim())
            .filter(|token| token.starts_with(access::tokens::TOKEN_PREFIX));
        bearer.is_some_and(|token| {
            access::tokens::verify(self.config, token, now).is_ok_and(|k| k.origins.allows(origin))
        })
    }
}

/// The longest a long-poll may be held.
pub const MAX_LONG_POLL_SECONDS: u64 = 30;

/// `?wait=N` on a status read: hold up to N seconds for the job to end (0 = answer at once).
fn long_poll_wait(query: Option<&str>) -> Result<u64, Error> {
    let Some(query) = query else { return Ok(0) };
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if name == "wait" {
            return value.parse::<u64>().ok().filter(|w| *w <= MAX_LONG_POLL_SECONDS).map(|w| w * 1000).ok_or_else(
                || Error::invalid("wait", format!("must be a whole number of seconds, 0 to {MAX_LONG_POLL_SECONDS}")),
            );
        }
    }
    Ok(0)
}

/// CORS preflight, answered from configuration (see `cors_allowed`).
fn preflight(allowed: bool) -> Response<Bytes> {
    let mut response = Response::new(Bytes::new());
    *response.status_mut() = StatusCode::NO_CONTENT;
    if allowed {
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, DELETE, OPTIONS"));
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type, idempotency-key"),
        );
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    }
    response
}

/// Echoes an allowed origin (never `*`: requests carry credentials) and exposes the headers a
/// page needs. A disallowed origin gets no CORS headers, so the browser refuses the answer.
/// An answer (or the error that ends the request, as JSON), with CORS for `origin`.
fn with_cors<B>(result: Result<Outcome<B>, Error>, origin: Option<&str>, allowed: bool) -> Outcome<B> {
    let mut outcome = result.unwrap_or_else(|e| Outcome::new(full(e.to_response()), None));
    if let Some(origin) = origin {
        add_cors(outcome.response.headers_mut(), origin, allowed);
    }
    outcome
}

fn add_cors(headers: &mut HeaderMap, origin: &str, allowed: bool) {
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if !allowed {
        return;
    }
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSED_HEADERS));
    }
}

pub(crate) fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub(crate) fn full<B>(response: Response<Bytes>) -> Response<Body<B>> {
    response.map(Body::Full)
}
