//! Every error type of the engine ([`Error`], and what it is made from: an illegal state move,
//! a store failure, an outbound call that got no answer) and the one function that turns an
//! error into an HTTP answer.
//!
//! Every platform error body is `{"code","message","error","error_code"}`: `code`/`message`
//! are ours (`code` the precise one), `error` repeats the message and `error_code` is Baseten's
//! code for it, one of its published enum, so Baseten SDK clients and clients generated from
//! Baseten's spec parse it. A model's own error body never becomes an [`Error`]: it passes through unchanged.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

/// Where an error came from. Decides the status class and whether details may be shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The caller sent something we refuse: 4xx, message shown as is.
    Client,
    /// The upstream could not be reached or answered out of protocol: 502/503/504.
    Upstream,
    /// Our own fault (store, configuration, bug): 500, details are not shown.
    Internal,
}

/// Everything the engine can refuse or fail with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// No route matches the path.
    NotFound { what: String },
    /// The path exists but not for this method. `allow` lists the methods that do.
    MethodNotAllowed { allow: &'static str },
    /// A WebSocket route asked for without `Upgrade: websocket`.
    UpgradeRequired,
    /// The route exists, but this packaging cannot serve it (WebSockets on wasi:http 0.2).
    NotImplemented { message: String },
    /// No credentials, malformed credentials, or a key the gateway does not know.
    Unauthorized { message: String },
    /// A known key used outside its scope (model, operation or origin).
    Forbidden { message: String },
    /// A field is missing, of the wrong type or out of range. `field` names it.
    InvalidField { field: String, message: String },
    /// The body is not valid JSON (or not an object where one is required).
    MalformedJson { message: String },
    /// The body is larger than the limit for this endpoint.
    PayloadTooLarge { limit: usize },
    /// A caller is at one of its limits (`limit`, e.g. `requests_per_minute`, of `quota` per
    /// `window_seconds`; its own, or for a browser token possibly its key's) until its window
    /// ends, `retry_after_seconds` from now.
    RateLimited { limit: &'static str, quota: u64, window_seconds: u64, retry_after_seconds: u64, whose: &'static str },
    /// The model or chain is not one the gateway fronts.
    UnknownSubject { kind: &'static str, id: String },
    /// No job with this id (or it is past retention, or another model's).
    RequestNotFound { request_id: String },
    /// The same `Idempotency-Key` came back with a different body.
    IdempotencyKeyReused,
    /// Webhook inbox: the signature is missing, malformed or does not match any secret.
    BadSignature { message: String },
    /// Webhook inbox: the signed payload is older than the tolerance.
    StaleWebhook,
    /// The upstream did not accept the connection or broke it.
    UpstreamUnreachable { message: String },
    /// The upstream did not answer in time.
    UpstreamTimeout,
    /// The upstream answered something that is not Baseten's protocol.
    UpstreamProtocol { message: String },
    /// The store failed. The request had no effect or is safe to retry.
    Store(StoreError),
    /// The configuration document is invalid. `field` names the offending field.
    Config { field: String, message: String },
    /// A state-machine bug: the engine tried an illegal move.
    Transition(IllegalTransition),
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidField { field: field.into(), message: message.into() }
    }

    /// The configuration is wrong at `field` (a path in the document).
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Config { field: field.into(), message: message.into() }
    }

    pub fn source(&self) -> Source {
        match self {
            Self::NotFound { .. }
            | Self::MethodNotAllowed { .. }
            | Self::UpgradeRequired
            | Self::NotImplemented { .. }
            | Self::Unauthorized { .. }
            | Self::Forbidden { .. }
            | Self::InvalidField { .. }
            | Self::MalformedJson { .. }
            | Self::PayloadTooLarge { .. }
            | Self::RateLimited { .. }
            | Self::UnknownSubject { .. }
            | Self::RequestNotFound { .. }
            | Self::IdempotencyKeyReused
            | Self::BadSignature { .. }
            | Self::StaleWebhook => Source::Client,
            Self::UpstreamUnreachable { .. } | Self::UpstreamTimeout | Self::UpstreamProtocol { .. } => {
                Source::Upstream
            }
            Self::Store(_) | Self::Config { .. } | Self::Transition(_) => Source::Internal,
        }
    }

    /// Whether the same request may succeed if sent again unchanged.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::UpstreamUnreachable { .. } | Self::UpstreamTimeout | Self::Store(_))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound { .. } | Self::UnknownSubject { .. } | Self::RequestNotFound { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
            Self::NotImplemented { .. } => StatusCode::NOT_IMPLEMENTED,
            Self::Unauthorized { .. } | Self::BadSignature { .. } | Self::StaleWebhook => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::InvalidField { .. } | Self::MalformedJson { .. } => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::IdempotencyKeyReused => StatusCode::CONFLICT,
            Self::UpstreamUnreachable { .. } | Self::UpstreamProtocol { .. } => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Config { .. } | Self::Transition(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "NOT_FOUND",
            Self::MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            Self::UpgradeRequired => "UPGRADE_REQUIRED",
            Self::NotImplemented { .. } => "NOT_IMPLEMENTED",
            Self::Unauthorized { .. } => "UNAUTHORIZED",
            Self::Forbidden { .. } => "FORBIDDEN",
            Self::InvalidField { .. } => "INVALID_ARGUMENT",
            Self::MalformedJson { .. } => "MALFORMED_JSON",
            Self::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            Self::RateLimited { .. } => "RATE_LIMITED",
            Self::UnknownSubject { .. } => "MODEL_DOES_NOT_EXIST",
            Self::RequestNotFound { .. } => "REQUEST_NOT_FOUND",
            Self::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Self::BadSignature { .. } => "INVALID_SIGNATURE",
            Self::StaleWebhook => "STALE_WEBHOOK",
            Self::UpstreamUnreachable { .. } => "UPSTREAM_UNREACHABLE",
            Self::UpstreamTimeout => "UPSTREAM_TIMEOUT",
            Self::UpstreamProtocol { .. } => "UPSTREAM_PROTOCOL_ERROR",
            Self::Store(_) => "STORE_UNAVAILABLE",
            Self::Config { .. } => "GATEWAY_MISCONFIGURED",
            Self::Transition(_) => "INTERNAL_SERVER_ERROR",
        }
    }

    /// Baseten's `ErrorResponse.error_code` for this error: one of [`BASETEN_ERROR_CODES`],
    /// what a client generated from Baseten's spec accepts. `code` keeps the precise one.
    pub fn baseten_code(&self) -> &'static str {
        match self {
            Self::Unauthorized { .. } | Self::Forbidden { .. } | Self::BadSignature { .. } | Self::StaleWebhook => {
                "unauthorized"
            }
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::RateLimited { .. } => "rate_limited",
            Self::UnknownSubject { .. } => "model_does_not_exist",
            Self::NotFound { .. }
            | Self::MethodNotAllowed { .. }
            | Self::UpgradeRequired
            | Self::NotImplemented { .. }
            | Self::InvalidField { .. }
            | Self::MalformedJson { .. }
            | Self::RequestNotFound { .. }
            | Self::IdempotencyKeyReused => "client_error",
            Self::UpstreamUnreachable { .. } => "model_unavailable",
            Self::UpstreamTimeout => "timeout",
            Self::UpstreamProtocol { .. } | Self::Store(_) | Self::Config { .. } | Self::Transition(_) => {
                "internal_baseten_error"
            }
        }
    }

    /// The message a caller sees. Internal details stay out, except the configuration field
    /// name: bad configuration must fail loudly and say where (DESIGN §5); values are never shown.
    pub fn message(&self) -> String {
        match self {
            Self::NotFound { what } => format!("no route for {what}"),
            Self::MethodNotAllowed { allow } => format!("method not allowed here; allowed: {allow}"),
            Self::Unauthorized { message }
            | Self::Forbidden { message }
            | Self::MalformedJson { message }
            | Self::NotImplemented { message }
            | Self::BadSignature { message } => message.clone(),
            Self::UpgradeRequired => "this is a WebSocket endpoint: connect with `Upgrade: websocket`".to_owned(),
            Self::InvalidField { field, message } => format!("{field}: {message}"),
            Self::PayloadTooLarge { limit } => format!("request body exceeds the limit of {limit} bytes"),
            Self::RateLimited { limit, quota, retry_after_seconds, whose, .. } => {
                format!("this {whose} is at its {limit} of {quota}; retry in {retry_after_seconds} s")
            }
            Self::UnknownSubject { kind, id } => format!("{kind} '{id}' does not exist on this gateway"),
            Self::RequestNotFound { request_id } => format!("async request '{request_id}' not found"),
            Self::IdempotencyKeyReused => {
                "this Idempotency-Key was already used with a different request body".to_owned()
            }
            Self::StaleWebhook => "webhook timestamp is outside the accepted tolerance".to_owned(),
            Self::UpstreamUnreachable { .. } => "the model's upstream could not be reached".to_owned(),
            Self::UpstreamTimeout => "the model's upstream did not answer in time".to_owned(),
            Self::UpstreamProtocol { .. } => "the model's upstream answered with an unexpected response".to_owned(),
            Self::Store(_) => "job storage is unavailable; retry the request".to_owned(),
            // Only the top-level field: the full path names key and model ids, which are not
            // a caller's to learn (the log has it, see `Display`).
            Self::Config { field, .. } => {
                let top = field.split(['.', '[']).next().unwrap_or_default();
                format!("gateway configuration is invalid at '{top}'; the operator's log names the field")
            }
            Self::Transition(_) => "internal error".to_owned(),
        }
    }

    /// The one mapping from error to HTTP answer.
    pub fn to_response(&self) -> Response<Bytes> {
        let body = error_body(self.code(), self.baseten_code(), &self.message());
        let mut response = json_response(self.status(), &body);
        if let Self::MethodNotAllowed { allow } = self {
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if let Self::UpgradeRequired = self {
            response.headers_mut().insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        }
        if self.retryable() {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Self::RateLimited { limit, quota, window_seconds, retry_after_seconds, .. } = self {
            // RFC 9110 Retry-After, and the IETF RateLimit fields (draft-ietf-httpapi-ratelimit-headers).
            let headers = response.headers_mut();
            for (name, value) in [
                ("retry-after", retry_after_seconds.to_string()),
                ("ratelimit-policy", format!("\"{limit}\";q={quota};w={window_seconds}")),
                ("ratelimit", format!("\"{limit}\";r=0;t={retry_after_seconds}")),
            ] {
                if let Ok(value) = HeaderValue::from_str(&value) {
                    headers.insert(name, value);
                }
            }
        }
        response
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Internal variants show their details here (logs), never in `message()` (responses).
        match self {
            Self::UpstreamUnreachable { message } | Self::UpstreamProtocol { message } => {
                write!(f, "{}: {message}", self.code())
            }
            Self::Store(e) => write!(f, "{}: {e}", self.code()),
            Self::Config { field, message } => write!(f, "{}: invalid at '{field}': {message}", self.code()),
            Self::Transition(t) => write!(f, "{}: {t}", self.code()),
            _ => write!(f, "{}: {}", self.code(), self.message()),
        }
    }
}

impl std::error::Error for Error {}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<IllegalTransition> for Error {
    fn from(e: IllegalTransition) -> Self {
        Self::Transition(e)
    }
}

/// Baseten's `ErrorResponse.error_code` enum (its published inference API, 1.0.0).
pub const BASETEN_ERROR_CODES: [&str; 10] = [
    "timeout",
    "client_error",
    "model_unavailable",
    "model_not_ready",
    "model_does_not_exist",
    "rate_limited",
    "payload_too_large",
    "unauthorized",
    "application_error",
    "internal_baseten_error",
];

/// Baseten's `error_code` for a platform error the upstream answered with `status`: its own,
/// if it gave one of the enum (in any case), else the one its status means.
pub(crate) fn baseten_code_for(status: StatusCode, given: Option<&str>) -> &'static str {
    let given = given.map(str::to_ascii_lowercase);
    if let Some(known) = BASETEN_ERROR_CODES.iter().find(|c| given.as_deref() == Some(**c)) {
        return known;
    }
    match status.as_u16() {
        401 | 403 => "unauthorized",
        404 => "model_does_not_exist",
        408 | 504 => "timeout",
        413 => "payload_too_large",
        429 => "rate_limited",
        502 | 503 => "model_unavailable",
        400..=499 => "client_error",
        _ => "internal_baseten_error",
    }
}

pub(crate) fn error_body(code: &str, baseten_code: &str, message: &str) -> serde_json::Value {
    serde_json::json!({ "code": code, "message": message, "error": message, "error_code": baseten_code })
}

/// `body` as a JSON answer. Serializing the engine's own plain data cannot fail.
pub(crate) fn json_response<T: serde::Serialize + ?Sized>(status: StatusCode, body: &T) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from(serde_json::to_vec(body).unwrap_or_default()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// An upstream call that got no usable response, as the caller's error.
impl From<TransportError> for Error {
    fn from(e: TransportError) -> Self {
        match e {
            TransportError::Timeout => Self::UpstreamTimeout,
            TransportError::Connect(message) | TransportError::Tls(message) => Self::UpstreamUnreachable { message },
            TransportError::Body(message) => Self::UpstreamProtocol { message },
            TransportError::TooLarge(limit) => Self::PayloadTooLarge { limit },
        }
    }
}

/// A refused state move, on either machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IllegalTransition {
    pub machine: &'static str,
    pub from: &'static str,
    pub to: &'static str,
}

impl std::fmt::Display for IllegalTransition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "illegal {} transition {} -> {}", self.machine, self.from, self.to)
    }
}

/// A store operation failed. The message is for logs only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl StoreError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "store: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

/// Why a request got no HTTP response at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// Connection refused, DNS failure, reset: nothing was answered.
    Connect(String),
    /// The TLS handshake failed (certificate, protocol), where the platform tells it apart.
    Tls(String),
    /// No answer within the adapter's deadline.
    Timeout,
    /// The response started but its body broke or exceeded the limit.
    Body(String),
    /// The caller's streamed request body passed this many bytes, the route's limit.
    TooLarge(usize),
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(m) => write!(f, "connect: {m}"),
            Self::Tls(m) => write!(f, "tls: {m}"),
            Self::Timeout => f.write_str("timeout"),
            Self::Body(m) => write!(f, "body: {m}"),
            Self::TooLarge(limit) => write!(f, "request body over {limit} bytes"),
        }
    }
}

impl TransportError {
    /// What kind of failure, without the platform's text (which can describe the network
    /// behind an address): what a delivery attempt records for its caller to see.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect",
            Self::Tls(_) => "tls",
            Self::Timeout => "timeout",
            Self::Body(_) | Self::TooLarge(_) => "body",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_mirrors_code_and_message_for_baseten_clients() {
        let response = Error::invalid("priority", "must be between 0 and 2").to_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(body["code"], "INVALID_ARGUMENT");
        assert_eq!(body["error_code"], "client_error");
        assert_eq!(body["message"], "priority: must be between 0 and 2");
        assert_eq!(body["error"], body["message"]);
    }

    #[test]
    fn internal_details_never_reach_the_body() {
        let e = Error::Store(StoreError::new("disk full at /var/secret/path"));
        let body = String::from_utf8(e.to_response().body().to_vec()).unwrap();
        assert!(!body.contains("/var/secret/path"), "{body}");
        assert!(e.to_string().contains("/var/secret/path"));
        let e = Error::UpstreamUnreachable { message: "dns for 10.0.0.7 failed".into() };
        let body = String::from_utf8(e.to_response().body().to_vec()).unwrap();
        assert!(!body.contains("10.0.0.7"), "{body}");
    }
}
