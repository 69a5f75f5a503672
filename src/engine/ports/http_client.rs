//! The outbound HTTP the engine needs (upstream calls and webhook deliveries), as a trait the
//! adapter implements with its platform's client. The engine builds `http::Request`s; the
//! adapter sends them and hands back the response, whose body the engine either passes through
//! untouched (sync predict, possibly streamed) or reads with a limit. A sync route's request
//! body goes the other way as a stream too ([`HttpClient::send_stream`]).

use bytes::Bytes;
use http::{Request, Response};

/// The deadline every adapter puts on an outbound request (upstream calls and webhook
/// deliveries), reported as [`TransportError::Timeout`]. Claims on outbound work outlast it
/// ([`CLAIM_LEASE_MS`](crate::engine::jobs::record::CLAIM_LEASE_MS)).
pub const OUTBOUND_TIMEOUT_MS: u64 = 30_000;

/// A sync call's (predict, `sync/...`) deadline for the upstream's answer to start, and for
/// each gap in its body: a model may think for minutes, and a stream may last longer still.
pub const SYNC_TIMEOUT_MS: u64 = 600_000;

pub use crate::engine::base::TransportError;

/// An HTTP client. Implementations must not follow redirects (a webhook answered with a 3xx
/// counts as a failed delivery) and should apply a deadline, reported as `Timeout`.
#[allow(async_fn_in_trait)] // single-threaded wasm: no Send bound wanted
pub trait HttpClient {
    /// A response body as the platform has it, so sync predict can stream it back unread.
    type Body;

    /// Whether [`HttpClient::send_stream`] can open a WebSocket: given `Upgrade: websocket`, it
    /// answers the upstream's `101 Switching Protocols` with the runtime's socket pair in the
    /// response's extensions, which the platform's response carries back to the caller.
    const WEBSOCKETS: bool = false;

    /// A caller's request body as the platform has it, passed on to the upstream as it arrives
    /// (sync routes), never gathered whole.
    type Stream;

    async fn send(&self, request: Request<Bytes>) -> Result<Response<Self::Body>, TransportError>;

    /// Sends a request whose body is a caller's stream. The adapter enforces the limit it was
    /// given at admission while the body streams: past it, `TooLarge`.
    async fn send_stream(&self, request: Request<Self::Stream>) -> Result<Response<Self::Body>, TransportError>;

    /// A body already in hand, as a stream.
    fn stream_of(bytes: Bytes) -> Self::Stream;

    /// Reads a body whole, failing with `Body` beyond `limit` bytes.
    async fn read(&self, body: Self::Body, limit: usize) -> Result<Bytes, TransportError>;
}

/// An [`HttpClient`] that notes what the calls made through it waited: the time until each
/// answer's head (and for a body read whole, until its end) on the adapter's `clock`
/// (milliseconds, fractional), and the last answer's status: what a request's log line and
/// `Server-Timing` report as the upstream's part.
pub struct Timed<'c, H> {
    inner: H,
    clock: &'c dyn Fn() -> f64,
    waited_ms: std::cell::Cell<Option<f64>>,
    status: std::cell::Cell<Option<u16>>,
}

impl<H: std::fmt::Debug> std::fmt::Debug for Timed<'_, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timed").field("inner", &self.inner).field("waited_ms", &self.waited_ms.get()).finish()
    }
}

impl<'c, H: HttpClient> Timed<'c, H> {
    pub fn new(inner: H, clock: &'c dyn Fn() -> f64) -> Self {
        Self { inner, clock, waited_ms: std::cell::Cell::new(None), status: std::cell::Cell::new(None) }
    }

    /// How long the calls so far waited on their answers, if any call was made.
    pub fn waited_ms(&self) -> Option<f64> {
        self.waited_ms.get()
    }

    /// The status of the last answer (none if no call got one).
    pub fn status(&self) -> Option<u16> {
        self.status.get()
    }

    fn wait(&self, began: f64) {
        let waited = ((self.clock)() - began).max(0.0);
        self.waited_ms.set(Some(self.waited_ms.get().unwrap_or(0.0) + waited));
    }

    fn note<T>(&self, began: f64, answer: &Result<Response<T>, TransportError>) {
        self.wait(began);
        if let Ok(response) = answer {
            self.status.set(Some(response.status().as_u16()));
        }
    }
}

impl<H: HttpClient> HttpClient for Timed<'_, H> {
    type Body = H::Body;
    type Stream = H::Stream;
    const WEBSOCKETS: bool = H::WEBSOCKETS;

    async fn send(&self, request: Request<Bytes>) -> Result<Response<Self::Body>, TransportError> {
        let began = (self.clock)();
        let answer = self.inner.send(request).await;
        self.note(began, &answer);
        answer
    }

    async fn send_stream(&self, request: Request<Self::Stream>) -> Result<Response<Self::Body>, TransportError> {
        let began = (self.clock)();
        let answer = self.inner.send_stream(request).await;
        self.note(began, &answer);
        answer
    }

    fn stream_of(bytes: Bytes) -> Self::Stream {
        H::stream_of(bytes)
    }

    async fn read(&self, body: Self::Body, limit: usize) -> Result<Bytes, TransportError> {
        let began = (self.clock)();
        let read = self.inner.read(body, limit).await;
        self.wait(began);
        read
    }
}
