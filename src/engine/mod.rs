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
//!
//! # Calling order
//!
//! What an adapter does with each request, in this order (every packaging does, see
//! `platform/`). A request is parsed and authenticated once, by [`Engine::admit`]; every
//! later step reads the [`Admitted`] value it returns.
//!
//! 1. [`Engine::admit`] on the head alone, at the time it arrived, with its 16 random bytes. [`Admission::Refuse`]:
//!    answer [`Engine::refusal`] and stop, having read no body and opened no store.
//!    [`Admission::Stream`]: a sync route, whose body goes to [`Engine::handle_stream`] as it
//!    arrives (no store). [`Admission::Read`]: read at most [`Admitted::body_limit`] bytes
//!    (past it, [`Admitted::refusal`] with [`Error::PayloadTooLarge`]).
//!    Before reading it: [`Admitted::spend`], the counters of the caller's limits this request
//!    takes. Unless it is empty, take them where the caller's counters are (on Spin the shared
//!    store, on Workers the key's limits object; [`ports::counters::take`]) and answer a full
//!    one ([`Spend::verdict`], a 429) with [`Admitted::refusal`], having read no body and
//!    touched no job.
//! 2. [`Engine::check_body`] on the read request: a forged inbox delivery is refused before
//!    any job state is touched.
//! 3. [`Engine::placement`]: [`Placement::Stateless`] runs with [`NoStore`] anywhere;
//!    [`Placement::Job`] where that job's store is (on Workers, its Durable Object);
//!    [`Placement::Store`] where the store is.
//! 4. [`Engine::handle`] with a [`Ctx`] (the time and 16 random bytes), or
//!    [`Engine::handle_held`] where the host can hold a connection for a long-poll and has a
//!    clock ([`Timer`]).
//! 5. After the answer has gone: the [`Outcome`]'s `wake_at` is when [`Engine::sweep`] must
//!    run next: an alarm set to it, or on hosts without alarms [`Engine::note_wake`] and then
//!    [`Engine::sweep_if_due`].
//!
//! [`Engine::serve`] is steps 1, 2 and 4 for a request whose body is already in hand, in a
//! place with one store (the `inference` component).
//!
//! Time comes in three forms, one per kind of call: a [`Timestamp`] for decisions on a head
//! ([`Engine::admit`], [`Engine::refusal`]); a [`Ctx`] for one request's handling; a clock
//! (`&dyn Fn() -> Timestamp`, or a [`Timer`] that can also sleep) for work that runs long
//! enough for time to move (a sweep, a held long-poll).
//!
//! A place that receives a request from another (a job's Durable Object, from the Worker)
//! admits it again: that is the other place's own step 1, not a repeat within one place, and
//! it keeps every place safe on its own (see `platform/cloudflare`).

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
use http::{HeaderMap, Response};

pub use access::limits::Spend;
pub use base::{Error, IllegalTransition, Operation, StoreError, Subject, Target, Timestamp, Trace, TransportError};
pub use config::Config;
pub use jobs::sweep::sweep_lease_key;
pub use ports::http_client::{HttpClient, OUTBOUND_TIMEOUT_MS, SYNC_TIMEOUT_MS};
pub use ports::store::{MemoryStore, NoStore, Store, Version};
pub use surface::log::Measured;
pub use surface::route::{OpenAiEndpoint, Route, MAX_LONG_POLL_SECONDS};

/// The largest request body an adapter should read; beyond it, answer
/// [`Error::PayloadTooLarge`]. Async submits have their own, smaller limit (256 KiB).
pub const MAX_REQUEST_BODY: usize = 32 * 1024 * 1024;

/// The largest request body of a sync route (`predict`, `run_remote`, `sync/...`), streamed to
/// the upstream and never gathered: Baseten's own edge limit.
pub const SYNC_BODY_LIMIT: usize = 100 * 1024 * 1024;

/// Where a request must run, for platforms that spread jobs over places with their own store
/// (Durable Objects on Workers, each holding a fixed share of the request ids), and whether it needs a store at all: a
/// request placed [`Placement::Stateless`] runs with [`NoStore`], opens no store and runs no sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Needs no job state: run it anywhere, with [`NoStore`].
    Stateless,
    /// Touches exactly the job with this request id (a submit creates it under this id; a
    /// token minted bound to it is checked against it), in the place that holds that id. (A
    /// store check runs where a random id would be held, on keys of its own.)
    Job(String),
    /// Needs the store of the place it runs in, but no particular job: `POST /_sweep`. (On
    /// Workers each place sweeps itself at its alarm, so there it is answered stateless.)
    Store,
}

/// What may be read of a request before it is handled, decided from its head alone
/// ([`Engine::admit`]): a request without valid credentials, or announcing a body larger than
/// its route takes, is refused before any store is touched or its body is read.
#[derive(Debug, Clone)]
pub enum Admission {
    /// Read at most [`Admitted::body_limit`] bytes of the body, then handle it
    /// ([`Engine::check_body`], [`Engine::placement`], [`Engine::handle`]).
    Read(Admitted),
    /// A sync route: do not read the body; stream at most [`Admitted::body_limit`] bytes of it
    /// to the upstream ([`Engine::handle_stream`]).
    Stream(Admitted),
    /// Answer with this error at once ([`Engine::refusal`]); do not read the body.
    Refuse(Error),
}

/// A request admitted from its head: what it addresses, who asks (the key or browser token
/// found once, already checked against the route's operation, subject and origin), whether
/// its origin may read the answer, and how much body it may carry. Only [`Engine::admit`]
/// makes one; every later step reads it, so a request is parsed and authenticated once in
/// each place it runs.
#[derive(Debug, Clone)]
pub struct Admitted {
    route: Route,
    /// `None` for the preflight and the inbox, which carry no key.
    caller: Option<config::ApiKey>,
    origin: Option<String>,
    cors: bool,
    body_limit: usize,
    /// Whether [`Engine::check_body`] passed (else [`Engine::handle`] checks it).
    body_checked: bool,
    /// The request's place in its trace (and its id, the gateway's span).
    trace: Trace,
}

impl Admitted {
    /// The most body bytes to read (or stream) for this request.
    pub fn body_limit(&self) -> usize {
        self.body_limit
    }

    /// What the request addresses.
    pub fn route(&self) -> &Route {
        &self.route
    }

    /// What this request spends of its caller's limits, at `now` (its arrival).
    pub fn spend(&self, now: Timestamp) -> Spend {
        match &self.caller {
            Some(caller) => access::limits::spend(caller, &self.route, now),
            None => Spend::default(),
        }
    }

    /// The answer to an admitted request refused later (its body too large, a forged inbox
    /// delivery, a store out of reach): the error as JSON, with the CORS the admission decided.
    pub fn refusal(&self, error: &Error) -> Response<Bytes> {
        let mut response = error.to_response();
        if let Some(origin) = &self.origin {
            surface::cors::add_cors(response.headers_mut(), origin, self.cors);
        }
        surface::pipeline::add_request_id(response.headers_mut(), &self.trace);
        response
    }

    /// The request's trace: the caller's continued, or one started at admission.
    pub fn trace(&self) -> &Trace {
        &self.trace
    }
}

/// A status read or cancel carries no body worth reading.
pub(crate) const NO_BODY_LIMIT: usize = 16 * 1024;

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
    /// What the request's log line says of it ([`Admitted::log_line`]).
    pub note: Note,
}

impl<B> Outcome<B> {
    pub(crate) fn new(response: Response<Body<B>>, wake_at: Option<Timestamp>) -> Self {
        Self { response, wake_at, hold_until: None, note: Note::default() }
    }
}

/// What the engine knows of how a request went, for its log line: the gateway's error code
/// if it ended in one, the job it made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Note {
    pub error_code: Option<&'static str>,
    pub job_id: Option<String>,
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

/// The engine for one request: borrowed configuration, store and HTTP client, and while it
/// handles a request, that request's trace (what its upstream calls carry).
#[derive(Debug)]
pub struct Engine<'a, S, H> {
    pub config: &'a Config,
    pub store: &'a S,
    pub http: &'a H,
    pub(crate) trace: Option<&'a Trace>,
    /// Where a job's transitions and webhook attempts are logged, one JSON line each.
    pub(crate) log: Option<LogSink<'a>>,
}

/// Where the engine writes the log lines of what happens to jobs (the adapter's standard
/// output or console).
#[derive(Clone, Copy)]
pub struct LogSink<'a>(pub &'a dyn Fn(&str));

impl std::fmt::Debug for LogSink<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogSink")
    }
}

impl<S, H> Clone for Engine<'_, S, H> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S, H> Copy for Engine<'_, S, H> {}

impl<'a, S: Store, H: HttpClient> Engine<'a, S, H> {
    pub fn new(config: &'a Config, store: &'a S, http: &'a H) -> Self {
        Self { config, store, http, trace: None, log: None }
    }

    /// This engine, writing a line to `log` for each job transition and webhook attempt.
    pub fn with_log(self, log: &'a dyn Fn(&str)) -> Self {
        Self { log: Some(LogSink(log)), ..self }
    }

    /// This engine handling a request of `trace`.
    pub(crate) fn traced<'b>(&self, trace: &'b Trace) -> Engine<'b, S, H>
    where
        'a: 'b,
    {
        Engine { config: self.config, store: self.store, http: self.http, trace: Some(trace), log: self.log }
    }
}

pub(crate) fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub(crate) fn full<B>(response: Response<Bytes>) -> Response<Body<B>> {
    response.map(Body::Full)
}
