//! What workerd gives every handler: its clock and randomness, its request and response
//! types turned into `http`'s and back, and a timer for held long-polls.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Limited};
use worker::{Date, Delay, HttpRequest};

use super::fetch::{FetchClient, UpstreamBody};
use crate::engine::ports::http_client::Timed;
use crate::engine::surface::log::{body_size, refusal_line};
use crate::engine::{Admitted, Body, Error, Measured, Note, Timer, Timestamp};

pub(super) fn now() -> Timestamp {
    Timestamp::from_millis(Date::now().as_millis())
}

/// The clock in milliseconds, for what a request measures. (workerd's clock moves with I/O,
/// not while a request computes: a request's own compute shows as no time.)
pub(super) fn clock_ms() -> f64 {
    worker::js_sys::Date::now()
}

/// One request's clock and what it measured: the `Server-Timing` of its answer and its log
/// line (on the console, which Workers Logs keeps).
pub(super) struct Meter<'c> {
    pub(super) received_at: Timestamp,
    pub(super) began_ms: f64,
    pub(super) http: &'c Timed<'c, FetchClient>,
    pub(super) bytes_in: Option<u64>,
}

impl Meter<'_> {
    /// The answer with its `Server-Timing`, after its log line.
    pub(super) fn answer(
        &self,
        mut response: Response<Body<UpstreamBody>>,
        line: impl FnOnce(&Measured) -> String,
    ) -> worker::Response {
        let bytes_out = body_size(&response);
        let measured = Measured {
            received_at: self.received_at,
            duration_ms: clock_ms() - self.began_ms,
            upstream_ms: self.http.waited_ms(),
            upstream_status: self.http.status(),
            bytes_in: self.bytes_in,
            bytes_out,
        };
        response.headers_mut().insert("server-timing", measured.server_timing());
        worker::console_log!("{}", line(&measured));
        into_response(response)
    }

    /// The answer `response` to a request refused with `e` before it was admitted.
    pub(super) fn refused(&self, e: &Error, response: Response<Bytes>) -> worker::Response {
        let status = response.status();
        self.answer(response.map(Body::Full), |m| refusal_line(status, e.code(), m))
    }

    /// The answer to an admitted request refused with `e`.
    pub(super) fn refuse(&self, admitted: &Admitted, e: &Error) -> worker::Response {
        let note = Note { error_code: Some(e.code()), ..Note::default() };
        let response = admitted.refusal(e).map(Body::Full);
        let status = response.status();
        self.answer(response, |m| admitted.log_line(status, &note, m))
    }
}

pub(super) fn entropy() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    // crypto.getRandomValues cannot fail for 16 bytes; zeros would only cost uniqueness.
    let _ = getrandom::getrandom(&mut bytes);
    bytes
}

/// The body, read whole up to `limit` bytes.
pub(super) async fn read_request(request: HttpRequest, limit: usize) -> Result<Request<Bytes>, Error> {
    let (parts, body) = request.into_parts();
    let bytes = Limited::new(body, limit).collect().await.map_err(|_| Error::PayloadTooLarge { limit })?.to_bytes();
    Ok(Request::from_parts(parts, bytes))
}

/// The alarm's absolute time. (`ScheduledTime::from(i64)` would mean an offset from now.)
pub(super) fn alarm_date(at: Timestamp) -> worker::js_sys::Date {
    worker::js_sys::Date::new(&worker::wasm_bindgen::JsValue::from_f64(at.millis() as f64))
}

/// The caller's answer as a workerd Response: a body in hand, or an upstream's stream passed on
/// as it is; an upstream's WebSocket handed over with it.
pub(super) fn into_response(response: Response<Body<UpstreamBody>>) -> worker::Response {
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

/// The request's head, read from the runtime's request without touching its body.
pub(super) fn request_head(raw: &worker::web_sys::Request) -> Result<Request<()>, Error> {
    let mut head = Request::builder()
        .method(raw.method().as_str())
        .uri(raw.url())
        .body(())
        .map_err(|e| Error::MalformedJson { message: format!("the request line could not be read: {e}") })?;
    *head.headers_mut() = http::HeaderMap::from(worker::Headers(raw.headers()));
    Ok(head)
}

/// Date.now and setTimeout, for held long-polls.
#[derive(Debug)]
pub(super) struct WorkerTimer;

impl Timer for WorkerTimer {
    fn now(&self) -> Timestamp {
        now()
    }

    async fn sleep_until(&self, at: Timestamp) {
        Delay::from(std::time::Duration::from_millis(at.millis_since(now()))).await;
    }
}

#[cfg(test)]
pub(super) fn js_body(chunks: &[&[u8]]) -> worker::Body {
    let stream =
        futures_util::stream::iter(chunks.iter().map(|c| Ok::<Vec<u8>, String>(c.to_vec())).collect::<Vec<_>>());
    worker::Body::from_stream(stream).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

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
}
