//! HTTP handling: auth, dispatch on the parsed [`Route`], request validation,
//! JSON errors and the request log.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::queue::{RetryConfig, Shared, Submission};
use crate::route::{self, Endpoint, Kind, Owner, Route};
use crate::stream::{Hooks, Script};
use crate::{demo, new_id, openai};

/// Body limit of async submissions (Baseten's).
const ASYNC_BODY_LIMIT: usize = 256 * 1024;
/// Body limit of sync predictions (generous; Baseten's is larger than async's).
const SYNC_BODY_LIMIT: usize = 32 * 1024 * 1024;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let log = shared.config.log_requests;
    let router = Router::new().fallback(handle).with_state(shared);
    if log {
        router.layer(middleware::from_fn(log_request))
    } else {
        router
    }
}

/// One line per request on stderr.
async fn log_request(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("-").to_owned();
    let path = req.uri().path().to_owned();
    let resp = next.run(req).await;
    eprintln!(
        "local-upstream: {method} {path} (host {host}) -> {} in {} ms",
        resp.status().as_u16(),
        started.elapsed().as_millis()
    );
    resp
}

/// A JSON error: `{"code", "message", "error"}` (`error` repeats the message).
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let message = message.into();
    (status, Json(json!({"code": code, "message": message, "error": message}))).into_response()
}

fn bad_request(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
}

fn not_found(message: impl Into<String>) -> Response {
    error(StatusCode::NOT_FOUND, "NOT_FOUND", message)
}

fn authorized(api_key: &str, headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some((scheme, key)) = value.trim().split_once(' ') else {
        return false;
    };
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("api-key")) && key.trim() == api_key
}

async fn handle(State(app): State<Arc<Shared>>, req: Request) -> Response {
    if !authorized(&app.config.api_key, req.headers()) {
        return error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "missing or invalid API key; send `Authorization: Api-Key <key>` or `Authorization: Bearer <key>`",
        );
    }
    if let Some(traceparent) = req.headers().get("traceparent").and_then(|v| v.to_str().ok()) {
        app.note_traceparent(traceparent);
    }
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned);
    let Some(route) = route::parse(host.as_deref(), req.uri().path()) else {
        return not_found(format!("no route for {}", req.uri().path()));
    };
    let owner = match &route {
        Route::Target { owner, .. } | Route::AsyncRequest { owner, .. } => owner,
    };
    let known = match owner.kind {
        Kind::Model => &app.config.models,
        Kind::Chain => &app.config.chains,
    };
    if !known.contains(&owner.id) {
        let what = match owner.kind {
            Kind::Model => "model",
            Kind::Chain => "chain",
        };
        return not_found(format!("{what} '{}' not found", owner.id));
    }
    let method = req.method().clone();
    match route {
        Route::AsyncRequest { owner, request_id } => match method {
            Method::GET => match app.status(&owner, &request_id) {
                Some(record) => Json(record).into_response(),
                None => not_found(format!("async request '{request_id}' not found")),
            },
            Method::DELETE => match app.cancel(&owner, &request_id) {
                Some(outcome) => Json(json!({
                    "request_id": request_id,
                    "canceled": outcome.canceled,
                    "message": outcome.message,
                }))
                .into_response(),
                None => not_found(format!("async request '{request_id}' not found")),
            },
            _ => method_not_allowed("GET, DELETE"),
        },
        Route::Target { owner, target, endpoint } => {
            let deployment_id = owner.deployment_id(&target);
            match (endpoint, method) {
                (Endpoint::Predict, Method::POST) => predict(&app, req).await,
                (Endpoint::AsyncPredict, Method::POST) => async_predict(&app, owner, deployment_id, req).await,
                (Endpoint::QueueStatus, Method::GET) => {
                    let (queued, in_progress) = app.queue_counts(&deployment_id);
                    let mut body = Map::new();
                    body.insert(owner.id_field().into(), json!(owner.id));
                    body.insert("deployment_id".into(), json!(deployment_id));
                    body.insert("num_queued_requests".into(), json!(queued));
                    body.insert("num_in_progress_requests".into(), json!(in_progress));
                    Json(Value::Object(body)).into_response()
                }
                (Endpoint::Wake, Method::POST) => StatusCode::ACCEPTED.into_response(),
                (Endpoint::Sync(path), _) => openai::handle(&app, &owner.id, &path, req).await,
                (Endpoint::WebSocket, Method::GET) => websocket(req).await,
                (Endpoint::QueueStatus | Endpoint::WebSocket, _) => method_not_allowed("GET"),
                _ => method_not_allowed("POST"),
            }
        }
    }
}

/// `{target}/websocket`: the demo server answers each text message `echo: <text>` and each
/// binary message with itself, until the client closes.
async fn websocket(req: Request) -> Response {
    use axum::extract::ws::{Message, WebSocketUpgrade};
    use axum::extract::FromRequest;
    let upgrade = match WebSocketUpgrade::from_request(req, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    upgrade.on_upgrade(|mut socket| async move {
        while let Some(Ok(message)) = socket.recv().await {
            let answer = match message {
                Message::Text(text) => Message::Text(format!("echo: {}", text.as_str()).into()),
                Message::Binary(bytes) => Message::Binary(bytes),
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) => continue,
            };
            if socket.send(answer).await.is_err() {
                break;
            }
        }
    })
}

fn method_not_allowed(allow: &'static str) -> Response {
    let mut resp =
        error(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", format!("method not allowed; use {allow}"));
    resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

/// Reads a body of at most `limit` bytes; a larger one is a 413.
async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, Response> {
    let too_large = || {
        error(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", format!("request body exceeds {} KiB", limit / 1024))
    };
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    // Beyond a bad Content-Length, the only way reading fails is the limit
    // (or a vanished client, which never sees the answer).
    axum::body::to_bytes(body, limit).await.map_err(|_| too_large())
}

/// Sync `predict` / `run_remote`: runs the demo model now.
async fn predict(app: &Shared, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match read_body(body, &parts.headers, SYNC_BODY_LIMIT).await {
        Ok(bytes) => bytes,
        Err(resp) => return resp,
    };
    let input: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => return bad_request(format!("request body is not valid JSON: {e}")),
    };
    let streaming = match streaming_predict(&input) {
        Ok(streaming) => streaming,
        Err(message) => return bad_request(message),
    };
    let (status, body, failure) = match demo::run(&input).await {
        Ok(output) => match streaming {
            Some((chunks, hooks)) => return with_request_id(stream_chunks(app, chunks, hooks)),
            None => (StatusCode::OK, output, None),
        },
        Err(f) => {
            (StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), f.body.clone(), Some(f))
        }
    };
    let mut resp = (status, Json(body)).into_response();
    match failure {
        Some(f) if f.from_model => {
            resp.headers_mut().insert("x-baseten-error-source", HeaderValue::from_static("04"));
            resp.headers_mut().insert("x-baseten-error-code", HeaderValue::from_static("700"));
        }
        Some(f) if matches!(f.status, 429 | 503) => {
            resp.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
        }
        _ => {}
    }
    with_request_id(resp)
}

fn with_request_id(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert("x-baseten-request-id", HeaderValue::from_str(&new_id()).expect("hex is a valid header value"));
    resp
}

/// Most lines a streaming predict sends.
const MAX_STREAM_CHUNKS: u64 = 1_000_000;

/// A Truss-style streaming predict (`"stream": true`): how many lines
/// (`"chunks"`, default 5) and the test hooks. `None` for a plain predict.
fn streaming_predict(input: &Value) -> Result<Option<(u64, Hooks)>, String> {
    let Some(input) = input.as_object().filter(|i| i.get("stream") == Some(&Value::Bool(true))) else {
        return Ok(None);
    };
    let chunks = match input.get("chunks") {
        None | Some(Value::Null) => 5,
        Some(v) => v
            .as_u64()
            .filter(|n| *n <= MAX_STREAM_CHUNKS)
            .ok_or_else(|| format!("chunks must be an integer between 0 and {MAX_STREAM_CHUNKS}, got {v}"))?,
    };
    let hooks = Hooks::parse(input).map_err(|e| e.message)?;
    Ok(Some((chunks, hooks)))
}

/// A chunked `text/plain` body of lines `chunk {i}\n`, `i` from 0, one token each.
fn stream_chunks(app: &Shared, chunks: u64, hooks: Hooks) -> Response {
    let tokens = (0..chunks).map(|i| Bytes::from(format!("chunk {i}\n"))).collect();
    let body = app.streams.body(Script { tokens, ..Script::default() }, hooks);
    ([(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

/// `async_predict` / `async_run_remote`: validates and queues.
async fn async_predict(app: &Arc<Shared>, owner: Owner, deployment_id: String, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match read_body(body, &parts.headers, ASYNC_BODY_LIMIT).await {
        Ok(bytes) => bytes,
        Err(resp) => return resp,
    };
    let submission = match parse_submission(&bytes) {
        Ok(s) => s,
        Err(message) => return bad_request(message),
    };
    let request_id = app.submit(owner, deployment_id, submission);
    (StatusCode::CREATED, Json(json!({"request_id": request_id}))).into_response()
}

/// Validates an async submission; errors name the offending field.
fn parse_submission(bytes: &[u8]) -> Result<Submission, String> {
    let body: Value = serde_json::from_slice(bytes).map_err(|e| format!("request body is not valid JSON: {e}"))?;
    let Value::Object(body) = body else {
        return Err("request body must be a JSON object".to_owned());
    };
    let model_input = match body.get("model_input") {
        None | Some(Value::Null) => return Err("model_input is required".to_owned()),
        Some(v) => v.clone(),
    };
    let webhook_endpoint = match body.get("webhook_endpoint") {
        None | Some(Value::Null) => None,
        Some(Value::String(url)) => {
            let parsed = reqwest::Url::parse(url).map_err(|e| format!("webhook_endpoint is not a valid URL: {e}"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err("webhook_endpoint must be an http or https URL".to_owned());
            }
            Some(url.clone())
        }
        Some(_) => return Err("webhook_endpoint must be a string".to_owned()),
    };
    let priority = int_field(&body, "priority", "priority", 0, 2, 0)?;
    let max_time_in_queue_seconds =
        int_field(&body, "max_time_in_queue_seconds", "max_time_in_queue_seconds", 10, 259_200, 600)?;
    let empty = Map::new();
    let retry = match body.get("inference_retry_config") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(retry)) => retry,
        Some(_) => return Err("inference_retry_config must be an object".to_owned()),
    };
    let field = |name: &str, lo, hi, default| {
        int_field(retry, name, &format!("inference_retry_config.{name}"), lo, hi, default)
    };
    let max_attempts = field("max_attempts", 1, 10, 3)?;
    let initial_delay_ms = field("initial_delay_ms", 0, 10_000, 1000)?;
    let max_delay_ms = field("max_delay_ms", 0, 60_000, 5000)?;
    Ok(Submission {
        model_input,
        webhook_endpoint,
        priority: u8::try_from(priority).expect("validated to be within 0..=2"),
        max_time_in_queue_seconds,
        retry: RetryConfig {
            max_attempts: u32::try_from(max_attempts).expect("validated to be within 1..=10"),
            initial_delay_ms,
            max_delay_ms,
        },
    })
}

/// An optional integer field within `lo..=hi`.
fn int_field(obj: &Map<String, Value>, key: &str, name: &str, lo: u64, hi: u64, default: u64) -> Result<u64, String> {
    let value = match obj.get(key) {
        None | Some(Value::Null) => return Ok(default),
        Some(v) => v,
    };
    let range = format!("{name} must be an integer between {lo} and {hi}");
    if !(value.is_i64() || value.is_u64()) {
        return Err(format!("{range}, got {value}"));
    }
    match value.as_u64().filter(|v| (lo..=hi).contains(v)) {
        Some(v) => Ok(v),
        None => Err(format!("{range}, got {value}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let s = parse_submission(br#"{"model_input": 1}"#).expect("valid");
        assert_eq!(s.priority, 0);
        assert_eq!(s.max_time_in_queue_seconds, 600);
        assert_eq!(s.retry.max_attempts, 3);
        assert_eq!(s.retry.initial_delay_ms, 1000);
        assert_eq!(s.retry.max_delay_ms, 5000);
        assert_eq!(s.webhook_endpoint, None);
    }

    #[test]
    fn errors_name_the_field() {
        for (body, field) in [
            (r#"{}"#, "model_input"),
            (r#"{"model_input":1,"priority":3}"#, "priority"),
            (r#"{"model_input":1,"priority":1.5}"#, "priority"),
            (r#"{"model_input":1,"priority":-1}"#, "priority"),
            (r#"{"model_input":1,"max_time_in_queue_seconds":5}"#, "max_time_in_queue_seconds"),
            (
                r#"{"model_input":1,"inference_retry_config":{"max_attempts":11}}"#,
                "inference_retry_config.max_attempts",
            ),
            (r#"{"model_input":1,"webhook_endpoint":5}"#, "webhook_endpoint"),
            (r#"{"model_input":1,"webhook_endpoint":"ftp://x"}"#, "webhook_endpoint"),
            (r#"[1]"#, "JSON object"),
        ] {
            let err = parse_submission(body.as_bytes()).expect_err(body);
            assert!(err.contains(field), "{body}: {err}");
        }
    }
}
