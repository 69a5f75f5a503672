//! Outbound HTTP through `wasi:http/outgoing-handler`, used directly rather than through
//! spin-sdk's `send`, for what that cannot do:
//!
//! - explicit deadlines: connect, first byte and between bytes from
//!   [`OUTBOUND_TIMEOUT_MS`], and the whole call, head and body, within it too (each wait
//!   polled against a monotonic-clock timer; Spin's own default is 600 s);
//! - a known `Content-Length` on every request (a body sent chunked reaches receivers that
//!   read by `Content-Length` empty);
//! - a response body left unread until asked for ([`WasiBody`]: a webhook receiver's body is
//!   never read, so one that is truncated or never ends costs nothing), then read with a byte
//!   cap and within the call's deadline; every failure an error, never a panic.
//!
//! Calls block: one instance serves one request, and the engine awaits each call in turn.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use spin_sdk::wit::wasi::http0_2_0::outgoing_handler;
use spin_sdk::wit::wasi::http0_2_0::types::{
    ErrorCode, Fields, FutureIncomingResponse, IncomingBody, IncomingResponse, Method, OutgoingBody, OutgoingRequest,
    RequestOptions, Scheme,
};
#[cfg(feature = "spin")]
use spin_sdk::wit::wasi::http0_2_0::types::{IncomingRequest, OutgoingResponse, ResponseOutparam};
use wasi::clocks::monotonic_clock;
use wasi::io::poll::{self, Pollable};
use wasi::io::streams::{InputStream, OutputStream, StreamError};

use crate::engine::{HttpClient, TransportError, MAX_REQUEST_BODY, OUTBOUND_TIMEOUT_MS, SYNC_TIMEOUT_MS};

/// How much of a response body is read at most; the engine applies each call's own, lower,
/// limit in [`HttpClient::read`].
const RESPONSE_CAP: usize = MAX_REQUEST_BODY;
/// `wasi:io` writes at most 4096 bytes per `blocking-write-and-flush`.
const WRITE_CHUNK: usize = 4096;
const READ_CHUNK: u64 = 64 * 1024;

#[derive(Debug)]
pub(crate) struct WasiHttp;

/// A response body not yet read, and the deadline of the call that got it. Dropping it unread
/// drops the connection.
pub(crate) struct WasiBody {
    // Dropped in this order: the body before the response it came from.
    body: IncomingBody,
    _response: IncomingResponse,
    deadline: Instant,
    /// The upstream's `Content-Length`: passed on with the body unchanged, it spares the
    /// caller a chunked body whose last chunk would leave alone, after a Nagle wait.
    #[cfg_attr(not(feature = "spin"), allow(dead_code))] // the library component serves no HTTP
    length: Option<u64>,
}

impl WasiBody {
    /// Reads the body whole, up to `limit` bytes and the call's deadline.
    pub(crate) fn read(self, limit: usize) -> Result<Bytes, TransportError> {
        read_body(self.body, limit.min(RESPONSE_CAP), self.deadline)
    }

    #[cfg(feature = "spin")]
    /// Answers the caller with `head` and this body, each chunk written as it arrives (tokens
    /// of a streamed completion reach the caller one by one). If the upstream's body breaks,
    /// the caller's ends early, unfinished, as on Baseten.
    pub(crate) fn respond(self, out: ResponseOutparam, head: &http::response::Parts) {
        let outgoing = OutgoingResponse::new(fields(&head.headers, self.length));
        let _ = outgoing.set_status_code(head.status.as_u16());
        let Ok(sink) = outgoing.body() else { return };
        let complete = {
            let (Ok(input), Ok(output)) = (self.body.stream(), sink.write()) else {
                // The head, and a body that breaks off (its sink is never finished).
                return ResponseOutparam::set(out, Ok(outgoing));
            };
            // The first bytes (one write's worth) go in before the head is handed over, so head
            // and body leave together: a body written after the head waits for the head's ACK
            // (Nagle), which the caller delays (delayed ACK), 40 ms per call (`make bench`).
            let first = input.blocking_read(WRITE_CHUNK as u64);
            let ahead = first.as_ref().map_or(true, |bytes| output.blocking_write_and_flush(bytes).is_ok());
            ResponseOutparam::set(out, Ok(outgoing));
            match first {
                Ok(_) => ahead && copy(&input, &output, usize::MAX).is_ok(),
                Err(StreamError::Closed) => true,
                Err(_) => false,
            }
        };
        if complete {
            let _ = OutgoingBody::finish(sink, None);
        }
    }
}

/// Answers the caller with `head` and a body in hand, sent with its `Content-Length`. The first
/// bytes (one write's worth, all of a status record or an error) go in before the head is
/// handed over, as [`WasiBody::respond`] does: written after it, they waited out Nagle and the
/// caller's delayed ACK, up to 40 ms on a third of status reads (`wrk --latency`, p75 19 ms).
/// A 1xx, 204 or 304 answer has no body and no `Content-Length` (RFC 9110, 8.6).
#[cfg(feature = "spin")]
pub(crate) fn respond_bytes(out: ResponseOutparam, head: &http::response::Parts, body: &[u8]) {
    let bodiless = head.status.is_informational() || matches!(head.status.as_u16(), 204 | 304);
    let outgoing = OutgoingResponse::new(fields(&head.headers, (!bodiless).then_some(body.len() as u64)));
    let _ = outgoing.set_status_code(head.status.as_u16());
    let Ok(sink) = outgoing.body() else { return ResponseOutparam::set(out, Ok(outgoing)) };
    let Ok(stream) = sink.write() else { return ResponseOutparam::set(out, Ok(outgoing)) };
    let mut chunks = body.chunks(WRITE_CHUNK);
    let ahead = chunks.next().is_none_or(|first| stream.blocking_write_and_flush(first).is_ok());
    ResponseOutparam::set(out, Ok(outgoing));
    let complete = ahead && chunks.all(|chunk| stream.blocking_write_and_flush(chunk).is_ok());
    drop(stream);
    if complete {
        let _ = OutgoingBody::finish(sink, None);
    }
}

/// A caller's request body as it arrives (sync routes), or bytes in hand.
pub(crate) enum WasiStream {
    Bytes(Bytes),
    #[cfg_attr(not(feature = "spin"), allow(dead_code))] // the library component serves no HTTP
    Caller {
        body: IncomingBody,
        limit: usize,
    },
}

#[cfg(feature = "spin")]
impl WasiStream {
    /// The body of the caller's request, to be passed on up to `limit` bytes.
    pub(crate) fn of_caller(request: &IncomingRequest, limit: usize) -> Option<Self> {
        request.consume().ok().map(|body| Self::Caller { body, limit })
    }
}

impl HttpClient for WasiHttp {
    type Body = WasiBody;
    type Stream = WasiStream;

    async fn send(&self, request: Request<Bytes>) -> Result<Response<WasiBody>, TransportError> {
        send(request.map(WasiStream::Bytes), OUTBOUND_TIMEOUT_MS)
    }

    async fn send_stream(&self, request: Request<WasiStream>) -> Result<Response<WasiBody>, TransportError> {
        send(request, SYNC_TIMEOUT_MS)
    }

    fn stream_of(bytes: Bytes) -> WasiStream {
        WasiStream::Bytes(bytes)
    }

    async fn read(&self, body: WasiBody, limit: usize) -> Result<Bytes, TransportError> {
        body.read(limit)
    }
}

/// wasi:http header fields from a header map, without framing headers; `length`, if any, as
/// `Content-Length`.
fn fields(headers: &http::HeaderMap, length: Option<u64>) -> Fields {
    let mut entries: Vec<(String, Vec<u8>)> = headers
        .iter()
        .filter(|(name, _)| *name != http::header::CONTENT_LENGTH && *name != http::header::TRANSFER_ENCODING)
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect();
    if let Some(length) = length {
        entries.push(("content-length".to_owned(), length.to_string().into_bytes()));
    }
    Fields::from_list(&entries).unwrap_or_else(|_| Fields::new())
}

/// Copies `input` to `output` as it arrives; past `limit` bytes, `TooLarge`.
fn copy(input: &InputStream, output: &OutputStream, limit: usize) -> Result<(), TransportError> {
    let mut copied = 0usize;
    loop {
        match input.blocking_read(READ_CHUNK) {
            Ok(chunk) => {
                copied += chunk.len();
                if copied > limit {
                    return Err(TransportError::TooLarge(limit));
                }
                for piece in chunk.chunks(WRITE_CHUNK) {
                    output.blocking_write_and_flush(piece).map_err(|e| stream_error(&e))?;
                }
            }
            Err(StreamError::Closed) => return Ok(()),
            Err(e) => return Err(stream_error(&e)),
        }
    }
}

/// Sends a request; `timeout_ms` bounds connecting, the first byte and the gap between bytes,
/// and the whole call for a body the engine reads.
fn send(request: Request<WasiStream>, timeout_ms: u64) -> Result<Response<WasiBody>, TransportError> {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let (parts, body) = request.into_parts();
    // A known length goes with the request: the body's own, or the one the caller announced.
    let announced = parts.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
    let length = match &body {
        WasiStream::Bytes(bytes) if !bytes.is_empty() || parts.method != http::Method::GET => Some(bytes.len() as u64),
        WasiStream::Bytes(_) => None,
        WasiStream::Caller { .. } => announced,
    };
    let outgoing = OutgoingRequest::new(fields(&parts.headers, length));
    let uri = &parts.uri;
    let scheme = match uri.scheme_str() {
        Some("https") => Scheme::Https,
        Some("http") => Scheme::Http,
        other => return Err(refused(format!("unsupported scheme {other:?}"))),
    };
    let path = uri.path_and_query().map_or("/", http::uri::PathAndQuery::as_str);
    let set = [
        outgoing.set_method(&method(&parts.method)),
        outgoing.set_scheme(Some(&scheme)),
        outgoing.set_authority(uri.authority().map(http::uri::Authority::as_str)),
        outgoing.set_path_with_query(Some(path)),
    ];
    if set.iter().any(Result::is_err) {
        return Err(refused(format!("cannot address {uri}")));
    }
    let body_sink = outgoing.body().map_err(|()| refused("no request body".to_owned()))?;
    let options = RequestOptions::new();
    let timeout = Some(timeout_ms * 1_000_000);
    // A host that does not support an option keeps its own; the total deadline below still holds.
    let _ = (options.set_connect_timeout(timeout), options.set_first_byte_timeout(timeout));
    let _ = options.set_between_bytes_timeout(timeout);
    // A body that fits one write goes into the request before the host gets it, so the head
    // and the body leave together: a body written after the head waits for the head's ACK
    // (Nagle), which the server delays (delayed ACK), 40 ms per call (measured by `make bench`).
    let small = match &body {
        WasiStream::Bytes(bytes) => bytes.len() <= WRITE_CHUNK,
        WasiStream::Caller { .. } => announced.is_some_and(|n| n <= WRITE_CHUNK as u64),
    };
    if small {
        write_body(&body_sink, &body)?;
        OutgoingBody::finish(body_sink, None).map_err(transport)?;
        let future = outgoing_handler::handle(outgoing, Some(options)).map_err(transport)?;
        return receive(&future, deadline);
    }
    let future = outgoing_handler::handle(outgoing, Some(options)).map_err(transport)?;
    write_body(&body_sink, &body)?;
    OutgoingBody::finish(body_sink, None).map_err(transport)?;
    receive(&future, deadline)
}

/// Writes a request body to the host: bytes in hand, or the caller's stream as it arrives.
fn write_body(sink: &OutgoingBody, body: &WasiStream) -> Result<(), TransportError> {
    let stream = sink.write().map_err(|()| refused("request body not writable".to_owned()))?;
    match body {
        WasiStream::Bytes(bytes) => {
            for chunk in bytes.chunks(WRITE_CHUNK) {
                stream.blocking_write_and_flush(chunk).map_err(|e| stream_error(&e))?;
            }
            Ok(())
        }
        WasiStream::Caller { body, limit } => {
            let input = body.stream().map_err(|()| TransportError::Body("caller's body not readable".to_owned()))?;
            copy(&input, &stream, *limit)
        }
    }
}

/// The response of a request handed to the host, its body unread.
fn receive(future: &FutureIncomingResponse, deadline: Instant) -> Result<Response<WasiBody>, TransportError> {
    // The host's connect and first-byte timeouts each allow the whole deadline; together they
    // must not, so the head is awaited against the call's deadline too.
    wait_until(&future.subscribe(), deadline);
    let incoming = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(transport(code)),
        Some(Err(())) => return Err(TransportError::Connect("no response".to_owned())),
        None => return Err(TransportError::Timeout),
    };
    let mut response = Response::builder().status(incoming.status());
    let mut length = None;
    for (name, value) in incoming.headers().entries() {
        if name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(&value).ok().and_then(|v| v.trim().parse().ok());
        }
        response = response.header(name, value);
    }
    let body = incoming.consume().map_err(|()| TransportError::Body("not readable".to_owned()))?;
    response
        .body(WasiBody { body, _response: incoming, deadline, length })
        .map_err(|e| TransportError::Body(format!("bad response head: {e}")))
}

/// Blocks until `ready` is, or `deadline` has passed, whichever comes first.
fn wait_until(ready: &Pollable, deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    let timer = monotonic_clock::subscribe_duration(u64::try_from(left.as_nanos()).unwrap_or(u64::MAX));
    poll::poll(&[ready, &timer]);
}

/// Reads a response body whole, up to `cap` bytes and `deadline`.
fn read_body(body: IncomingBody, cap: usize, deadline: Instant) -> Result<Bytes, TransportError> {
    let mut bytes = Vec::new();
    {
        let stream = body.stream().map_err(|()| TransportError::Body("not readable".to_owned()))?;
        loop {
            wait_until(&stream.subscribe(), deadline);
            if Instant::now() > deadline {
                return Err(TransportError::Timeout);
            }
            // Ready, or closed: what is there (possibly nothing yet, then poll again).
            match stream.read(READ_CHUNK) {
                Ok(chunk) => {
                    if bytes.len() + chunk.len() > cap {
                        return Err(TransportError::Body(format!("body exceeds {cap} bytes")));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Err(StreamError::Closed) => break,
                Err(e) => return Err(stream_error(&e)),
            }
        }
    }
    // Trailers and the body's own error, if any, are read here; neither matters to us.
    let _ = IncomingBody::finish(body);
    Ok(Bytes::from(bytes))
}

fn method(method: &http::Method) -> Method {
    match *method {
        http::Method::GET => Method::Get,
        http::Method::POST => Method::Post,
        http::Method::PUT => Method::Put,
        http::Method::DELETE => Method::Delete,
        http::Method::PATCH => Method::Patch,
        http::Method::HEAD => Method::Head,
        http::Method::OPTIONS => Method::Options,
        ref other => Method::Other(other.as_str().to_owned()),
    }
}

/// A request the host would not even start.
fn refused(message: String) -> TransportError {
    TransportError::Connect(message)
}

fn stream_error(e: &StreamError) -> TransportError {
    match e {
        StreamError::Closed => TransportError::Body("stream closed early".to_owned()),
        StreamError::LastOperationFailed(e) => TransportError::Body(e.to_debug_string()),
    }
}

fn transport(code: ErrorCode) -> TransportError {
    match code {
        ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout
        | ErrorCode::HttpResponseTimeout => TransportError::Timeout,
        ErrorCode::TlsProtocolError | ErrorCode::TlsCertificateError | ErrorCode::TlsAlertReceived(_) => {
            TransportError::Tls(format!("{code:?}"))
        }
        other => TransportError::Connect(format!("{other:?}")),
    }
}
