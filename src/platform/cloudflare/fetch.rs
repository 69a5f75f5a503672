//! Outbound HTTP through workerd's `fetch`: a deadline over head and body, no redirects
//! followed, bodies left as the runtime's own streams wherever the engine need not read them.

use std::cell::Cell;
use std::rc::Rc;

use bytes::Bytes;
use futures_util::future::{select, Either as Race};
use futures_util::StreamExt;
use http::{Request, Response};
use http_body_util::{BodyDataStream, BodyExt, Limited};
use worker::worker_sys::ext::ResponseExt as _;
use worker::{AbortController, Date, Delay, Fetch};

use crate::engine::{HttpClient, TransportError, OUTBOUND_TIMEOUT_MS, SYNC_TIMEOUT_MS};

/// An upstream's answer body as workerd has it: handed back to the caller as the runtime's own
/// stream (natively piped, never through this module), or read here when the engine needs it.
/// A body the engine reads is read within the deadline of the call that got it.
#[derive(Debug)]
pub(super) struct UpstreamBody {
    pub(super) stream: Option<worker::web_sys::ReadableStream>,
    deadline: Option<Deadline>,
}

/// When a call must be done (`Date.now()` milliseconds), and how to stop it then.
#[derive(Debug)]
pub(super) struct Deadline {
    at_ms: f64,
    controller: AbortController,
}

/// Outbound HTTP through `fetch`, with a deadline and no redirect following.
#[derive(Debug)]
pub(super) struct FetchClient;

/// A caller's body passed on to the upstream as it arrives (sync routes): the runtime's own
/// stream, or none; or bytes in hand.
pub(super) enum WorkerStream {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::cloudflare::runtime::js_body;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn upstream_body(chunks: &[&[u8]]) -> UpstreamBody {
        UpstreamBody { stream: js_body(chunks).into_inner(), deadline: None }
    }

    #[wasm_bindgen_test]
    async fn upstream_bodies_are_read_with_a_limit() {
        let client = FetchClient;
        assert_eq!(client.read(upstream_body(&[b"ok"]), 2).await.unwrap().as_ref(), b"ok");
        assert!(matches!(client.read(upstream_body(&[b"too long"]), 2).await, Err(TransportError::Body(_))));
        assert_eq!(client.read(UpstreamBody { stream: None, deadline: None }, 2).await.unwrap().as_ref(), b"");
    }
}
