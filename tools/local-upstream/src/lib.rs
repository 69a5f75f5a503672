//! `local-upstream`: a native stand-in for Baseten's model inference API.
//!
//! It serves sync `predict` / `run_remote`, the async queue (`async_predict`,
//! `async_run_remote`, status, cancel, queue status), `wake`, and delivers
//! signed webhooks, all against a built-in demo model (see [`demo`]). Behind
//! every model's sync passthrough (`.../sync/{path}`) runs an OpenAI-compatible
//! demo server (see [`openai`]).
//!
//! Start it in-process with [`start`]; the returned [`ServerHandle`] knows the
//! bound address and shuts the server down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

mod api;
pub mod config;
pub mod demo;
pub mod openai;
mod queue;
pub mod route;
mod stream;
pub mod webhook;

/// Runtime configuration of the server (everything except the listen address).
#[derive(Debug, Clone)]
pub struct Config {
    /// The only API key accepted (as `Bearer <key>` or `Api-Key <key>`).
    pub api_key: String,
    /// Webhook signing secrets, newest first; one `v1=` signature is sent per secret.
    pub webhook_secrets: Vec<String>,
    /// Known model ids (`/models/{id}/...`, `model-{id}.<host>`).
    pub models: Vec<String>,
    /// Known chain ids (`/chains/{id}/...`, `chain-{id}.<host>`).
    pub chains: Vec<String>,
    /// How many async requests each deployment runs at once.
    pub concurrency: usize,
    /// Timeout of one webhook delivery attempt.
    pub webhook_timeout: Duration,
    /// Pause between the first and the second webhook delivery attempt.
    pub webhook_retry_gap: Duration,
    /// Real length of one second of `max_time_in_queue_seconds` (1 s by
    /// default). Shrinking it lets tests observe queue expiry quickly while
    /// the API keeps Baseten's 10..=259200 validation range.
    pub queue_second: Duration,
    /// Print one line per HTTP request (and per webhook attempt) to stderr.
    pub log_requests: bool,
    /// Pause before each token of a streamed answer (OpenAI `stream: true`,
    /// streaming `predict`); zero by default.
    pub token_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            api_key: "upstream-dev-key".to_owned(),
            webhook_secrets: vec!["local-upstream-webhook-secret".to_owned()],
            models: vec!["demo".to_owned()],
            chains: vec!["demo-chain".to_owned()],
            concurrency: 1,
            webhook_timeout: Duration::from_secs(10),
            webhook_retry_gap: Duration::from_secs(1),
            queue_second: Duration::from_secs(1),
            log_requests: true,
            token_interval: Duration::ZERO,
        }
    }
}

/// A running server: its bound address and the means to stop it.
///
/// Dropping the handle also stops the server (without waiting for it).
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    shared: Arc<queue::Shared>,
    stop: DropGuard,
    task: JoinHandle<std::io::Result<()>>,
}

impl ServerHandle {
    /// The address the server is bound to (useful when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<bound addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many async requests (`async_predict`, `async_run_remote`) the deployment has
    /// accepted since the server started: what a caller was billed for.
    pub fn accepted(&self, deployment_id: &str) -> usize {
        self.shared.accepted(deployment_id)
    }

    /// The W3C `traceparent` of every request received that carried one, oldest first.
    pub fn traceparents(&self) -> Vec<String> {
        self.shared.traceparents()
    }

    /// The webhook endpoints of every async request accepted since the server started.
    pub fn webhook_endpoints(&self) -> Vec<String> {
        self.shared.webhook_endpoints()
    }

    /// Opens the hold gate `name`: streams held by a request's `"hold": "<name>"`
    /// go on, and later holds on that name do not wait (a release before the
    /// hold counts). Names are never closed again; use a fresh one per test.
    pub fn release(&self, name: &str) {
        self.shared.streams.release(name);
    }

    /// How many streams are waiting at the hold gate `name` right now (they
    /// have sent their first token and wait for [`ServerHandle::release`]).
    pub fn held(&self, name: &str) -> usize {
        self.shared.streams.held(name)
    }

    /// Stops accepting connections, waits for in-flight HTTP requests to
    /// finish and abandons queued jobs and pending webhook deliveries.
    pub async fn shutdown(self) -> std::io::Result<()> {
        drop(self.stop);
        self.task.await.map_err(|e| std::io::Error::other(format!("server task failed: {e}")))?
    }
}

/// Binds `addr` (port 0 allowed) and serves the API in the background on the
/// current tokio runtime.
pub async fn start(addr: impl ToSocketAddrs, config: Config) -> std::io::Result<ServerHandle> {
    if config.concurrency == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "concurrency must be at least 1"));
    }
    if config.webhook_secrets.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "at least one webhook secret is required"));
    }
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let token = CancellationToken::new();
    let shared = Arc::new(queue::Shared::new(config, token.clone())?);
    let app = api::router(Arc::clone(&shared));
    let shutdown = token.clone().cancelled_owned();
    let task = tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(shutdown).await });
    Ok(ServerHandle { addr, shared, stop: token.drop_guard(), task })
}

/// 32 random lowercase hex characters (request ids).
pub(crate) fn new_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random number generator is available");
    hex::encode(bytes)
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-23T05:09:12.123Z`.
pub(crate) fn rfc3339(t: time::OffsetDateTime) -> String {
    const FORMAT: &[time::format_description::FormatItem<'static>] =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    t.to_offset(time::UtcOffset::UTC).format(FORMAT).expect("a fixed format description formats every UTC date")
}
