//! Calls that pass through to the upstream: sync predict / run_remote, `/sync/{path}`, queue
//! status, wake.
//!
//! The model's answer (status, content type, body, `X-BASETEN-REQUEST-ID`, caching headers)
//! comes back as the upstream sent it, streamed as it arrives, error bodies included. Request
//! bodies stream to the upstream the same way. Only a failure to get an answer at all becomes
//! a gateway error (502/504 with `code` and `message`), and a platform error gains them.

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use serde_json::Value;

use crate::engine::base::{json_response, Error, Subject, Target, Trace};
use crate::engine::config::Upstream;
use crate::engine::ports::http_client::HttpClient;
use crate::engine::surface::route::Route;
use crate::engine::{Body, Engine, Outcome, Store};

/// Upstream response headers a caller sees. Hop-by-hop and platform headers stay behind.
const PASSED_BACK: [&str; 10] = [
    "content-type",
    "content-disposition",
    "x-baseten-request-id",
    "retry-after",
    "cache-control",
    "etag",
    "last-modified",
    "expires",
    "x-baseten-error-source",
    "x-baseten-error-code",
];
/// Caller headers the upstream sees, besides its own `Authorization`. (`Content-Length` too,
/// when the caller sent one: a streamed body is then sent with its length.)
const PASSED_ON: [&str; 7] = [
    "content-type",
    "content-length",
    "accept",
    "x-baseten-request-id",
    "if-none-match",
    "if-modified-since",
    "cache-control",
];
/// What becomes of an upstream's error answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Errors {
    /// A platform error (not marked as the model's own) gains `code` and `message`.
    Platform,
    /// Every answer passes as the server sent it.
    Unchanged,
}

/// Small JSON answers from the upstream (status records, queue counts, cancel answers).
pub(crate) const SMALL_BODY_LIMIT: usize = 64 * 1024;

/// A request to `url` (see [`Upstream::url`]) carrying the upstream's own key (its value,
/// [`Config::secret`](crate::engine::Config::secret) of the upstream's `api_key`), and the
/// trace it is made for: the caller's request's, or for a job's calls the job's.
pub(crate) fn upstream_request<B>(
    api_key: &str,
    trace: Option<&Trace>,
    method: Method,
    url: String,
    body: B,
) -> Request<B> {
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = url.parse().unwrap_or_default();
    if let Ok(auth) = HeaderValue::from_str(&format!("Api-Key {api_key}")) {
        request.headers_mut().insert(header::AUTHORIZATION, auth);
    }
    if let Some(trace) = trace {
        trace.add_to(request.headers_mut());
    }
    request
}

pub(crate) fn json_request(
    api_key: &str,
    trace: Option<&Trace>,
    method: Method,
    url: String,
    body: &Value,
) -> Request<Bytes> {
    let mut request = upstream_request(api_key, trace, method, url, Bytes::from(body.to_string()));
    request.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    request
}

/// A platform error from the upstream, as the gateway's errors are: `code` and `message`
/// (from Baseten's `error_code` and `error`; every other field is kept), so a caller reads
/// every platform error the same way; `error_code` always one of Baseten's enum.
fn platform_error_body(status: StatusCode, body: &[u8]) -> Bytes {
    let mut error = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(fields)) => fields,
        _ => serde_json::Map::new(),
    };
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    let code = text(error.get("code"))
        .or_else(|| text(error.get("error_code")))
        .unwrap_or_else(|| format!("UPSTREAM_HTTP_{}", status.as_u16()));
    let message = text(error.get("message"))
        .or_else(|| text(error.get("error")))
        .or_else(|| text(error.get("detail")))
        .unwrap_or_else(|| format!("the model's platform answered {status}"));
    let baseten_code = crate::engine::base::baseten_code_for(status, text(error.get("error_code")).as_deref());
    error.entry("code").or_insert_with(|| code.into());
    error.entry("message").or_insert_with(|| message.clone().into());
    error.insert("error_code".to_owned(), baseten_code.into());
    error.entry("error").or_insert_with(|| message.into());
    Bytes::from(Value::Object(error).to_string())
}

impl<S: Store, H: HttpClient> Engine<'_, S, H> {
    /// Passes a sync call (`predict` / `run_remote`, or `sync/{path}` with the caller's method
    /// and query) to the upstream, its body streamed, and the answer back as it arrives.
    pub(crate) async fn pass(&self, route: &Route, request: Request<H::Stream>) -> Result<Outcome<H::Body>, Error> {
        let (upstream, method, url) = match route {
            Route::Predict { subject, target } => {
                let upstream = self.config.upstream(subject)?;
                (upstream, Method::POST, upstream.url(target, subject.sync_endpoint(), true)?)
            }
            Route::Sync { subject, target, path } => {
                let upstream = self.config.upstream(subject)?;
                (upstream, request.method().clone(), upstream.sync_url(target, path, request.uri().query())?)
            }
            _ => return Err(Error::NotFound { what: "route".to_owned() }),
        };
        // A `sync/` route's answers all pass unchanged: its server (an OpenAI-compatible one,
        // say) has its own error format, which its clients read.
        let errors = if matches!(route, Route::Sync { .. }) { Errors::Unchanged } else { Errors::Platform };
        self.relay(upstream, method, url, request, errors).await
    }

    /// Sends the caller's request on to `url` with the upstream's key and the headers that
    /// matter, and answers with the upstream's status, headers that matter and body, streamed.
    pub(crate) async fn relay(
        &self,
        upstream: &Upstream,
        method: Method,
        url: String,
        request: Request<H::Stream>,
        errors: Errors,
    ) -> Result<Outcome<H::Body>, Error> {
        let (parts, body) = request.into_parts();
        let mut outbound = upstream_request(self.config.secret(&upstream.api_key)?, self.trace, method, url, body);
        for name in PASSED_ON {
            if let Some(value) = parts.headers.get(name) {
                outbound.headers_mut().insert(HeaderName::from_static(name), value.clone());
            }
        }
        let answer = self.http.send_stream(outbound).await.map_err(Error::from)?;
        let (up, body) = answer.into_parts();
        // A model's own error (Truss marks it `X-BASETEN-ERROR-SOURCE: 04`) passes through
        // unchanged, as on Baseten; any other non-2xx of predict is the platform's, and gets
        // the gateway's error fields.
        let from_model = up.headers.get("x-baseten-error-source").is_some_and(|v| v == "04");
        let body = if up.status.is_success() || from_model || errors == Errors::Unchanged {
            Body::Upstream(body)
        } else {
            let bytes = self.http.read(body, SMALL_BODY_LIMIT).await.map_err(Error::from)?;
            Body::Full(platform_error_body(up.status, &bytes))
        };
        let mut response = Response::new(body);
        *response.status_mut() = up.status;
        for name in PASSED_BACK {
            if let Some(value) = up.headers.get(name) {
                response.headers_mut().insert(HeaderName::from_static(name), value.clone());
            }
        }
        if matches!(response.body(), Body::Full(_)) {
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        Ok(Outcome::new(response, None))
    }

    /// `GET {target}/websocket`: where the platform can ([`HttpClient::WEBSOCKETS`]), the
    /// upstream's WebSocket, opened with the upstream's key, and its `101` (the socket rides in
    /// the response's extensions) or refusal answered as it came; elsewhere a clear 501.
    pub(crate) async fn websocket(
        &self,
        subject: &Subject,
        target: &Target,
        request: Request<H::Stream>,
    ) -> Result<Outcome<H::Body>, Error> {
        if !H::WEBSOCKETS {
            return Err(Error::NotImplemented {
                message: "WebSockets are not available on this packaging (wasi:http 0.2 has no upgrade); \
                          use the Cloudflare Worker, or the sync routes"
                    .to_owned(),
            });
        }
        let upgrade = request.headers().get(header::UPGRADE).and_then(|v| v.to_str().ok());
        if !upgrade.is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
            return Err(Error::UpgradeRequired);
        }
        let upstream = self.config.upstream(subject)?;
        let url = upstream.url(target, "websocket", true)?;
        let mut outbound = upstream_request(
            self.config.secret(&upstream.api_key)?,
            self.trace,
            Method::GET,
            url,
            H::stream_of(Bytes::new()),
        );
        outbound.headers_mut().insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Some(protocols) = request.headers().get(header::SEC_WEBSOCKET_PROTOCOL) {
            outbound.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, protocols.clone());
        }
        let (up, body) = self.http.send_stream(outbound).await.map_err(Error::from)?.into_parts();
        let mut response = Response::new(Body::Upstream(body));
        *response.status_mut() = up.status;
        *response.extensions_mut() = up.extensions;
        for name in PASSED_BACK.iter().copied().chain(["sec-websocket-protocol"]) {
            if let Some(value) = up.headers.get(name) {
                response.headers_mut().insert(HeaderName::from_static(name), value.clone());
            }
        }
        Ok(Outcome::new(response, None))
    }

    /// `GET .../async_queue_status`: the upstream's counts, under the gateway's id for the subject.
    pub(crate) async fn queue_status(&self, subject: &Subject, target: &Target) -> Result<Response<Bytes>, Error> {
        let upstream = self.config.upstream(subject)?;
        let url = upstream.url(target, "async_queue_status", true)?;
        let request =
            upstream_request(self.config.secret(&upstream.api_key)?, self.trace, Method::GET, url, Bytes::new());
        let (status, body) = self.call(request).await?;
        if !status.is_success() {
            return Ok(passthrough(status, body));
        }
        let mut counts: Value = serde_json::from_slice(&body)
            .map_err(|e| Error::UpstreamProtocol { message: format!("queue status is not JSON: {e}") })?;
        let Some(obj) = counts.as_object_mut() else {
            return Err(Error::UpstreamProtocol { message: "queue status is not an object".to_owned() });
        };
        obj.remove("model_id");
        obj.remove("chain_id");
        obj.insert(subject.id_field().to_owned(), subject.id().into());
        Ok(json_response(StatusCode::OK, &counts))
    }

    /// `POST .../wake`: 202 with an empty body once the upstream accepted it.
    pub(crate) async fn wake(&self, subject: &Subject, target: &Target) -> Result<Response<Bytes>, Error> {
        let upstream = self.config.upstream(subject)?;
        let request = upstream_request(
            self.config.secret(&upstream.api_key)?,
            self.trace,
            Method::POST,
            upstream.url(target, "wake", true)?,
            Bytes::new(),
        );
        let (status, body) = self.call(request).await?;
        if !status.is_success() {
            return Ok(passthrough(status, body));
        }
        let mut response = Response::new(Bytes::new());
        *response.status_mut() = StatusCode::ACCEPTED;
        Ok(response)
    }

    /// Sends and reads a small answer whole.
    pub(crate) async fn call(&self, request: Request<Bytes>) -> Result<(StatusCode, Bytes), Error> {
        let answer = self.http.send(request).await.map_err(Error::from)?;
        let (parts, body) = answer.into_parts();
        let body = self.http.read(body, SMALL_BODY_LIMIT).await.map_err(Error::from)?;
        Ok((parts.status, body))
    }
}

/// The upstream's own refusal, unchanged (as Baseten clients would see it).
fn passthrough(status: StatusCode, body: Bytes) -> Response<Bytes> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
