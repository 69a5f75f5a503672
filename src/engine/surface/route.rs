//! Method + host + path become a [`Route`] once; handlers take validated values.

use http::Method;

use crate::engine::base::{Error, Operation, Subject, Target};

/// What the gateway's `/v1` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenAiEndpoint {
    /// `GET /v1/models`: the models the caller may use.
    Models,
    /// `POST /v1/{path}`, passed to the model the body's `model` names.
    Post(&'static str),
}

/// Every request the gateway understands, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Sync `predict` / `run_remote`.
    Predict {
        subject: Subject,
        target: Target,
    },
    /// `async_predict` / `async_run_remote`.
    AsyncPredict {
        subject: Subject,
        target: Target,
    },
    QueueStatus {
        subject: Subject,
        target: Target,
    },
    Wake {
        subject: Subject,
        target: Target,
    },
    /// `{target}/sync/{path}` (models): any method, passed to the model's server at `/{path}`.
    Sync {
        subject: Subject,
        target: Target,
        path: String,
    },
    /// `{target}/websocket`: a WebSocket to the model's (or chain's) server.
    WebSocket {
        subject: Subject,
        target: Target,
    },
    /// The gateway's own OpenAI-compatible API: `POST /v1/chat/completions`, `/v1/completions`,
    /// `/v1/embeddings` (routed by the body's `model`) and `GET /v1/models`.
    OpenAi {
        endpoint: OpenAiEndpoint,
    },
    /// `GET /async_request/{id}`; `subject` is `None` on the bare gateway path.
    Status {
        subject: Option<Subject>,
        request_id: String,
    },
    /// `DELETE /async_request/{id}` and `POST /async_request/{id}/cancel`.
    Cancel {
        subject: Option<Subject>,
        request_id: String,
    },
    /// `POST /webhooks/baseten/{request_id}/{token}`: the upstream delivers an async result
    /// to the URL it was given for the job. (`token` is `None` on a URL without one.)
    WebhookInbox {
        request_id: String,
        token: Option<String>,
    },
    /// `POST /_sweep`: run everything due (submissions, expiry, deliveries, retention) now.
    Sweep,
    /// `POST /_store_check`: put the store this request reaches through the engine's store
    /// contract, on scratch keys, and say whether it keeps it (an operator's diagnostic).
    StoreCheck,
    /// `POST /browser_tokens`: a server key mints a browser token.
    MintToken,
    /// `OPTIONS` on any path.
    Preflight,
}

impl Route {
    /// The operation a key must be scoped to, if the route needs a key at all.
    pub fn operation(&self) -> Option<Operation> {
        match self {
            Self::Predict { .. } => Some(Operation::Predict),
            Self::Sync { .. } | Self::WebSocket { .. } | Self::OpenAi { .. } => Some(Operation::Sync),
            Self::AsyncPredict { .. } => Some(Operation::AsyncPredict),
            Self::QueueStatus { .. } => Some(Operation::QueueStatus),
            Self::Wake { .. } => Some(Operation::Wake),
            Self::Status { .. } => Some(Operation::Status),
            Self::Cancel { .. } => Some(Operation::Cancel),
            // The operator's routes share the operator's operation.
            Self::Sweep | Self::StoreCheck => Some(Operation::Sweep),
            Self::MintToken => Some(Operation::MintToken),
            Self::WebhookInbox { .. } | Self::Preflight => None,
        }
    }

    /// The route's name in logs: its operation's, or the inbox's and the preflight's.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Predict { .. } => "predict",
            Self::Sync { .. } => "sync",
            Self::WebSocket { .. } => "websocket",
            Self::OpenAi { .. } => "openai",
            Self::AsyncPredict { .. } => "async_predict",
            Self::QueueStatus { .. } => "queue_status",
            Self::Wake { .. } => "wake",
            Self::Status { .. } => "status",
            Self::Cancel { .. } => "cancel",
            Self::Sweep => "sweep",
            Self::StoreCheck => "store_check",
            Self::MintToken => "mint_token",
            Self::WebhookInbox { .. } => "webhook_inbox",
            Self::Preflight => "preflight",
        }
    }

    /// The deployment target the path names, if any.
    pub fn target(&self) -> Option<&Target> {
        match self {
            Self::Predict { target, .. }
            | Self::AsyncPredict { target, .. }
            | Self::QueueStatus { target, .. }
            | Self::Wake { target, .. }
            | Self::Sync { target, .. }
            | Self::WebSocket { target, .. } => Some(target),
            _ => None,
        }
    }

    /// The job the path names, if any.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Self::Status { request_id, .. }
            | Self::Cancel { request_id, .. }
            | Self::WebhookInbox { request_id, .. } => Some(request_id),
            _ => None,
        }
    }

    /// The model or chain the path names, if any.
    pub fn subject(&self) -> Option<&Subject> {
        match self {
            Self::Predict { subject, .. }
            | Self::AsyncPredict { subject, .. }
            | Self::QueueStatus { subject, .. }
            | Self::Wake { subject, .. }
            | Self::Sync { subject, .. }
            | Self::WebSocket { subject, .. } => Some(subject),
            Self::Status { subject, .. } | Self::Cancel { subject, .. } => subject.as_ref(),
            Self::OpenAi { .. }
            | Self::WebhookInbox { .. }
            | Self::Sweep
            | Self::StoreCheck
            | Self::MintToken
            | Self::Preflight => None,
        }
    }

    /// Parses a request line. `host` is the `Host` header (or URI authority), if any.
    pub fn parse(method: &Method, host: Option<&str>, path: &str) -> Result<Self, Error> {
        Self::parse_with(method, host, path, &|_| false)
    }

    /// [`Route::parse`], where `known` says which subjects the gateway serves: a host
    /// `model-{a}-{b}.…` names model `a-b` if it is known, else model `a` in the regional
    /// environment `b`.
    pub fn parse_with(
        method: &Method,
        host: Option<&str>,
        path: &str,
        known: &dyn Fn(&Subject) -> bool,
    ) -> Result<Self, Error> {
        if method == Method::OPTIONS {
            return Ok(Self::Preflight);
        }
        let not_found = || Error::NotFound { what: format!("{method} {path}") };
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        if segments.iter().any(|s| s.is_empty()) && path != "/" {
            return Err(not_found());
        }

        // Host form first (`model-{id}.gateway.example`), then path form (`/models/{id}/...`).
        let (subject, rest) = match host.and_then(|h| subject_from_host(h, known)) {
            Some((subject, Some(env))) if segments.first() != Some(&"async_request") => {
                return Self::regional(method, subject, env, &segments, not_found)
            }
            Some((subject, _)) => (Some(subject), &segments[..]),
            None => match segments.as_slice() {
                ["models", id, rest @ ..] if !rest.is_empty() => (Some(Subject::Model(valid_id(id)?)), rest),
                ["chains", id, rest @ ..] if !rest.is_empty() => (Some(Subject::Chain(valid_id(id)?)), rest),
                ["browser_tokens"] => {
                    require(method, &Method::POST, "POST, OPTIONS")?;
                    return Ok(Self::MintToken);
                }
                ["_sweep"] => {
                    require(method, &Method::POST, "POST, OPTIONS")?;
                    return Ok(Self::Sweep);
                }
                ["_store_check"] => {
                    require(method, &Method::POST, "POST, OPTIONS")?;
                    return Ok(Self::StoreCheck);
                }
                ["v1", "models"] => {
                    require(method, &Method::GET, "GET, OPTIONS")?;
                    return Ok(Self::OpenAi { endpoint: OpenAiEndpoint::Models });
                }
                ["v1", rest @ ..] => {
                    let path = match rest {
                        ["chat", "completions"] => "chat/completions",
                        ["completions"] => "completions",
                        ["embeddings"] => "embeddings",
                        _ => return Err(not_found()),
                    };
                    require(method, &Method::POST, "POST, OPTIONS")?;
                    return Ok(Self::OpenAi { endpoint: OpenAiEndpoint::Post(path) });
                }
                ["webhooks", "baseten", request_id, token @ ..] if token.len() <= 1 => {
                    require(method, &Method::POST, "POST")?;
                    let (request_id, token) = ((*request_id).to_owned(), token.first().map(|t| (*t).to_owned()));
                    return Ok(Self::WebhookInbox { request_id, token });
                }
                _ => (None, &segments[..]),
            },
        };

        // `/async_request/{id}` works with or without a subject prefix.
        match rest {
            ["async_request", request_id] => {
                let request_id = (*request_id).to_owned();
                return match *method {
                    Method::GET => Ok(Self::Status { subject, request_id }),
                    Method::DELETE => Ok(Self::Cancel { subject, request_id }),
                    _ => Err(Error::MethodNotAllowed { allow: "GET, DELETE, OPTIONS" }),
                };
            }
            ["async_request", request_id, "cancel"] => {
                require(method, &Method::POST, "POST, OPTIONS")?;
                return Ok(Self::Cancel { subject, request_id: (*request_id).to_owned() });
            }
            _ => {}
        }

        let subject = subject.ok_or_else(not_found)?;
        let (target, rest) = match rest {
            ["production", rest @ ..] => (Target::Production, rest),
            ["development", rest @ ..] => (Target::Development, rest),
            ["environments", env, rest @ ..] => (Target::Environment(valid_id(env)?), rest),
            ["deployment", id, rest @ ..] => (Target::Deployment(valid_id(id)?), rest),
            _ => return Err(not_found()),
        };
        Self::endpoint(method, subject, target, rest, not_found)
    }

    /// A regional environment's host (`model-{id}-{env}.<host>`): the target is the host's
    /// environment, and paths are bare (`/predict`, `/sync/...`); a path-form target there is
    /// not a route, as on Baseten. (`/async_request/{id}` is as on the model's own host.)
    fn regional(
        method: &Method,
        subject: Subject,
        env: String,
        segments: &[&str],
        not_found: impl Fn() -> Error,
    ) -> Result<Self, Error> {
        Self::endpoint(method, subject, Target::Environment(env), segments, not_found)
    }

    /// What follows the target: one endpoint, or `sync/{path}`.
    fn endpoint(
        method: &Method,
        subject: Subject,
        target: Target,
        rest: &[&str],
        not_found: impl Fn() -> Error,
    ) -> Result<Self, Error> {
        if let (Subject::Model(_), ["sync", path @ ..]) = (&subject, rest) {
            if !matches!(*method, Method::GET | Method::POST | Method::PUT | Method::PATCH | Method::DELETE) {
                return Err(Error::MethodNotAllowed { allow: "GET, POST, PUT, PATCH, DELETE, OPTIONS" });
            }
            if let Some(bad) = path.iter().find(|segment| !is_plain_segment(segment)) {
                return Err(Error::invalid(
                    "path",
                    format!(
                        "sync/ routes may not contain '.' or '..' segments or encoded separators ('{}')",
                        bad.escape_default()
                    ),
                ));
            }
            return Ok(Self::Sync { subject, target, path: path.join("/") });
        }
        let [endpoint] = rest else { return Err(not_found()) };
        let endpoint = *endpoint;
        let (route, allow) = match (&subject, endpoint) {
            (Subject::Model(_), "predict") | (Subject::Chain(_), "run_remote") => {
                (Self::Predict { subject, target }, Method::POST)
            }
            (Subject::Model(_), "async_predict") | (Subject::Chain(_), "async_run_remote") => {
                (Self::AsyncPredict { subject, target }, Method::POST)
            }
            (_, "async_queue_status") => (Self::QueueStatus { subject, target }, Method::GET),
            (_, "wake") => (Self::Wake { subject, target }, Method::POST),
            (_, "websocket") => (Self::WebSocket { subject, target }, Method::GET),
            _ => return Err(not_found()),
        };
        let allow_header = if allow == Method::GET { "GET, OPTIONS" } else { "POST, OPTIONS" };
        require(method, &allow, allow_header)?;
        Ok(route)
    }
}

fn require(method: &Method, expected: &Method, allow: &'static str) -> Result<(), Error> {
    if method == expected {
        Ok(())
    } else {
        Err(Error::MethodNotAllowed { allow })
    }
}

/// A segment of a path passed on to an upstream that stays one segment there, whatever the
/// server behind it decodes: not `.` or `..` in any encoding or case (`%2e`, `.%2E`), and no
/// separator, raw or encoded (`\`, `%2f`, `%5c`), which a server could split at.
fn is_plain_segment(segment: &str) -> bool {
    let decoded = percent_encoding::percent_decode_str(segment).collect::<Vec<u8>>();
    !(matches!(decoded.as_slice(), b"." | b"..") || decoded.iter().any(|b| matches!(b, b'/' | b'\\')))
}

/// Ids are opaque but path-safe: letters, digits, `-`, `_`, `.`, never only dots; at most 128
/// bytes.
fn valid_id(id: &str) -> Result<String, Error> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id.bytes().any(|b| b != b'.')
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(id.to_owned())
    } else {
        Err(Error::NotFound { what: format!("id '{}'", id.escape_default()) })
    }
}

/// `model-abc.gw.example[:port]` → `Model("abc")`, and a regional environment's host
/// `model-abc-produs.gw.example` → `Model("abc")` in `produs` (unless `abc-produs` is a
/// `known` model: Baseten's ids have no `-`, the gateway's may); anything else → `None`.
fn subject_from_host(host: &str, known: &dyn Fn(&Subject) -> bool) -> Option<(Subject, Option<String>)> {
    let label = host.split('.').next()?;
    if !host.contains('.') {
        return None;
    }
    let (make, rest): (fn(String) -> Subject, &str) = if let Some(rest) = label.strip_prefix("model-") {
        (Subject::Model, rest)
    } else {
        (Subject::Chain, label.strip_prefix("chain-")?)
    };
    let whole = make(valid_id(rest).ok()?);
    match rest.split_once('-') {
        Some((id, env)) if !known(&whole) => Some((make(valid_id(id).ok()?), Some(valid_id(env).ok()?))),
        _ => Some((whole, None)),
    }
}

/// The longest a long-poll may be held.
pub const MAX_LONG_POLL_SECONDS: u64 = 30;

/// `?wait=N` on a status read: hold up to N seconds for the job to end (0 = answer at once).
pub(crate) fn long_poll_wait(query: Option<&str>) -> Result<u64, Error> {
    let Some(query) = query else { return Ok(0) };
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if name == "wait" {
            return value.parse::<u64>().ok().filter(|w| *w <= MAX_LONG_POLL_SECONDS).map(|w| w * 1000).ok_or_else(
                || Error::invalid("wait", format!("must be a whole number of seconds, 0 to {MAX_LONG_POLL_SECONDS}")),
            );
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(method: &str, host: Option<&str>, path: &str) -> Result<Route, Error> {
        Route::parse(&method.parse().unwrap(), host, path)
    }

    fn model(id: &str) -> Subject {
        Subject::Model(id.into())
    }

    #[test]
    fn websocket_endpoints_for_models_and_chains_in_every_form() {
        let staging = || Target::Environment("staging".into());
        let ws = |subject, target| Ok(Route::WebSocket { subject, target });
        assert_eq!(parse("GET", None, "/models/m1/production/websocket"), ws(model("m1"), Target::Production));
        assert_eq!(
            parse("GET", None, "/chains/c1/environments/staging/websocket"),
            ws(Subject::Chain("c1".into()), staging())
        );
        assert_eq!(
            parse("GET", Some("model-m1.gw.example"), "/development/websocket"),
            ws(model("m1"), Target::Development)
        );
        assert_eq!(parse("GET", Some("model-m1-staging.gw.example"), "/websocket"), ws(model("m1"), staging()));
        assert!(matches!(parse("POST", None, "/models/m1/production/websocket"), Err(Error::MethodNotAllowed { .. })));
        assert_eq!(Route::WebSocket { subject: model("m1"), target: staging() }.operation(), Some(Operation::Sync));
    }

    #[test]
    fn every_model_endpoint_on_every_target_in_both_forms() {
        let targets = [
            ("production", Target::Production),
            ("development", Target::Development),
            ("environments/staging", Target::Environment("staging".into())),
            ("deployment/dep-42", Target::Deployment("dep-42".into())),
        ];
        for (path, target) in targets {
            let cases = [
                ("POST", "predict", Route::Predict { subject: model("m1"), target: target.clone() }),
                ("POST", "async_predict", Route::AsyncPredict { subject: model("m1"), target: target.clone() }),
                ("GET", "async_queue_status", Route::QueueStatus { subject: model("m1"), target: target.clone() }),
                ("POST", "wake", Route::Wake { subject: model("m1"), target: target.clone() }),
            ];
            for (method, endpoint, expected) in cases {
                let path_form = parse(method, Some("gw.example"), &format!("/models/m1/{path}/{endpoint}"));
                assert_eq!(path_form.unwrap(), expected, "{method} {path}/{endpoint}");
                let host_form = parse(method, Some("model-m1.gw.example:8787"), &format!("/{path}/{endpoint}"));
                assert_eq!(host_form.unwrap(), expected, "host form {method} {path}/{endpoint}");
            }
        }
    }

    #[test]
    fn chains_use_run_remote() {
        let chain = Subject::Chain("c1".into());
        assert_eq!(
            parse("POST", None, "/chains/c1/production/run_remote").unwrap(),
            Route::Predict { subject: chain.clone(), target: Target::Production }
        );
        assert_eq!(
            parse("POST", Some("chain-c1.gw.example"), "/environments/prod/async_run_remote").unwrap(),
            Route::AsyncPredict { subject: chain.clone(), target: Target::Environment("prod".into()) }
        );
        assert!(matches!(parse("POST", None, "/chains/c1/production/predict"), Err(Error::NotFound { .. })));
        assert!(matches!(parse("POST", None, "/models/m/production/run_remote"), Err(Error::NotFound { .. })));
    }

    #[test]
    fn async_request_status_and_cancel_forms() {
        let rid = "0123456789abcdef0123456789abcdef".to_owned();
        assert_eq!(
            parse("GET", None, &format!("/async_request/{rid}")).unwrap(),
            Route::Status { subject: None, request_id: rid.clone() }
        );
        assert_eq!(
            parse("GET", None, &format!("/models/m1/async_request/{rid}")).unwrap(),
            Route::Status { subject: Some(model("m1")), request_id: rid.clone() }
        );
        assert_eq!(
            parse("DELETE", Some("model-m1.gw.example"), &format!("/async_request/{rid}")).unwrap(),
            Route::Cancel { subject: Some(model("m1")), request_id: rid.clone() }
        );
        assert_eq!(
            parse("POST", None, &format!("/async_request/{rid}/cancel")).unwrap(),
            Route::Cancel { subject: None, request_id: rid.clone() }
        );
        assert_eq!(
            parse("POST", None, &format!("/webhooks/baseten/{rid}/t0k")).unwrap(),
            Route::WebhookInbox { request_id: rid.clone(), token: Some("t0k".to_owned()) }
        );
        assert_eq!(
            parse("POST", None, &format!("/webhooks/baseten/{rid}")).unwrap(),
            Route::WebhookInbox { request_id: rid.clone(), token: None }
        );
        assert!(parse("POST", None, &format!("/webhooks/baseten/{rid}/t0k/more")).is_err());
    }

    #[test]
    fn unknown_paths_are_404_and_wrong_methods_405() {
        for path in [
            "/",
            "/models",
            "/models/m1",
            "/models/m1/production",
            "/models/m1/staging/predict",
            "/models/m1/production/nope",
            "/models/m1//predict",
            "/v1/chat",
            "/models/bad%20id/production/predict",
        ] {
            let err = parse("POST", None, path).unwrap_err();
            assert!(matches!(err, Error::NotFound { .. }), "{path}: {err:?}");
        }
        let err = parse("GET", None, "/models/m1/production/predict").unwrap_err();
        assert_eq!(err, Error::MethodNotAllowed { allow: "POST, OPTIONS" });
        let err = parse("POST", None, "/models/m1/production/async_queue_status").unwrap_err();
        assert_eq!(err, Error::MethodNotAllowed { allow: "GET, OPTIONS" });
        assert!(matches!(parse("PUT", None, "/async_request/abc"), Err(Error::MethodNotAllowed { .. })));
        assert!(matches!(parse("GET", None, "/webhooks/baseten/abc"), Err(Error::MethodNotAllowed { .. })));
        assert_eq!(parse("OPTIONS", None, "/anything").unwrap(), Route::Preflight);
        assert_eq!(parse("POST", None, "/_sweep").unwrap(), Route::Sweep);
        assert_eq!(parse("POST", None, "/_store_check").unwrap(), Route::StoreCheck);
        assert!(matches!(parse("GET", None, "/_sweep"), Err(Error::MethodNotAllowed { .. })));
    }
}
