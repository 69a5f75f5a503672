//! Outbound HTTP through `wasi:http/outgoing-handler`, used directly rather than through
//! spin-sdk's `send`, for what that cannot do:
//!
//! - explicit deadlines: connect, first byte and between bytes from
//!   [`OUTBOUND_TIMEOUT_MS`], and the whole body within it too (Spin's own default is 600 s);
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
    ErrorCode, Fields, IncomingBody, IncomingResponse, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use wasi::io::streams::StreamError;

use crate::engine::{HttpClient, TransportError, MAX_REQUEST_BODY, OUTBOUND_TIMEOUT_MS};

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
}

impl WasiBody {
    /// Reads the body whole, up to `limit` bytes and the call's deadline.
    pub(crate) fn read(self, limit: usize) -> Result<Bytes, TransportError> {
        read_body(self.body, limit.min(RESPONSE_CAP), self.deadline)
    }
}

impl HttpClient for WasiHttp {
    type Body = WasiBody;

    async fn send(&self, request: Request<Bytes>) -> Result<Response<WasiBody>, TransportError> {
        send(request)
    }

    async fn read(&self, body: WasiBody, limit: usize) -> Result<Bytes, TransportError> {
        body.read(limit)
    }
}

fn send(request: Request<Bytes>) -> Result<Response<WasiBody>, TransportError> {
    let deadline = Instant::now() + Duration::from_millis(OUTBOUND_TIMEOUT_MS);
    let (parts, body) = request.into_parts();
    let mut entries: Vec<(String, Vec<u8>)> = parts
        .headers
        .iter()
        .filter(|(name, _)| *name != http::header::CONTENT_LENGTH && *name != http::header::TRANSFER_ENCODING)
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect();
    if !body.is_empty() || parts.method != http::Method::GET {
        entries.push(("content-length".to_owned(), body.len().to_string().into_bytes()));
    }
    let headers = Fields::from_list(&entries).map_err(|e| refused(format!("headers: {e:?}")))?;
    let outgoing = OutgoingRequest::new(headers);
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
    let timeout = Some(OUTBOUND_TIMEOUT_MS * 1_000_000);
    // A host that does not support an option keeps its own; the total deadline below still holds.
    let _ = (options.set_connect_timeout(timeout), options.set_first_byte_timeout(timeout));
    let _ = options.set_between_bytes_timeout(timeout);
    let future = outgoing_handler::handle(outgoing, Some(options)).map_err(transport)?;

    {
        let stream = body_sink.write().map_err(|()| refused("request body not writable".to_owned()))?;
        for chunk in body.chunks(WRITE_CHUNK) {
            stream.blocking_write_and_flush(chunk).map_err(|e| stream_error(&e))?;
        }
    }
    OutgoingBody::finish(body_sink, None).map_err(transport)?;

    future.subscribe().block();
    let incoming = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(transport(code)),
        Some(Err(())) | None => return Err(TransportError::Connect("no response".to_owned())),
    };
    let mut response = Response::builder().status(incoming.status());
    for (name, value) in incoming.headers().entries() {
        response = response.header(name, value);
    }
    let body = incoming.consume().map_err(|()| TransportError::Body("not readable".to_owned()))?;
    response
        .body(WasiBody { body, _response: incoming, deadline })
        .map_err(|e| TransportError::Body(format!("bad response head: {e}")))
}

/// Reads a response body whole, up to `cap` bytes and `deadline`.
fn read_body(body: IncomingBody, cap: usize, deadline: Instant) -> Result<Bytes, TransportError> {
    let mut bytes = Vec::new();
    {
        let stream = body.stream().map_err(|()| TransportError::Body("not readable".to_owned()))?;
        loop {
            match stream.blocking_read(READ_CHUNK) {
                Ok(chunk) => {
                    if bytes.len() + chunk.len() > cap {
                        return Err(TransportError::Body(format!("body exceeds {cap} bytes")));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Err(StreamError::Closed) => break,
                Err(e) => return Err(stream_error(&e)),
            }
            if Instant::now() > deadline {
                return Err(TransportError::Timeout);
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
