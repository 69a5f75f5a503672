//! CORS: which origins may read an answer (a key's listed origins, or a browser token's), the
//! preflight, and the headers every answer carries.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};

use crate::engine::config::ApiKey;
use crate::engine::{access, Engine, Error, HttpClient, Outcome, Store, Timestamp};
use crate::engine::{full, header_str};

/// Headers a browser page may read on cross-origin responses.
const EXPOSED_HEADERS: &str =
    "x-baseten-request-id, x-request-id, server-timing, retry-after, ratelimit, ratelimit-policy";

impl<S: Store, H: HttpClient> Engine<'_, S, H> {
    /// Whether `origin` may read the answer to a request refused before its admission: as
    /// [`Engine::origin_allowed`], with the browser token the request carries, if valid.
    pub(crate) fn cors_allowed<B>(&self, request: &Request<B>, origin: &str, now: Timestamp) -> bool {
        let preflight = request.method() == http::Method::OPTIONS;
        let bearer = header_str(request.headers(), header::AUTHORIZATION.as_str())
            .and_then(|v| v.split_once(' '))
            .map(|(_, token)| token.trim())
            .filter(|token| token.starts_with(access::tokens::TOKEN_PREFIX));
        let token = bearer.and_then(|token| access::tokens::verify(self.config, token, now).ok());
        self.origin_allowed(origin, preflight, token.as_ref())
    }

    /// Whether `origin` may read the answer: a configured key allows it, or the caller does
    /// (a browser token's origins). A preflight carries no credentials, so with browser
    /// tokens enabled it is answered for any origin; the real request is then checked
    /// against its token.
    pub(crate) fn origin_allowed(&self, origin: &str, preflight: bool, caller: Option<&ApiKey>) -> bool {
        self.config.keys.iter().any(|k| k.origins.allows(origin))
            || (preflight && self.config.browser_tokens.is_some())
            || caller.is_some_and(|k| k.origins.allows(origin))
    }
}

/// CORS preflight, answered from configuration (see `cors_allowed`).
pub(crate) fn preflight(allowed: bool) -> Response<Bytes> {
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
pub(crate) fn with_cors<B>(result: Result<Outcome<B>, Error>, origin: Option<&str>, allowed: bool) -> Outcome<B> {
    let mut outcome = result.unwrap_or_else(|e| {
        let mut outcome = Outcome::new(full(e.to_response()), None);
        outcome.note.error_code = Some(e.code());
        outcome
    });
    if let Some(origin) = origin {
        add_cors(outcome.response.headers_mut(), origin, allowed);
    }
    outcome
}

pub(crate) fn add_cors(headers: &mut HeaderMap, origin: &str, allowed: bool) {
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if !allowed {
        return;
    }
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSED_HEADERS));
    }
}
