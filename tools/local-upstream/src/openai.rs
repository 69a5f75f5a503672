//! The model's own HTTP server behind Baseten's sync passthrough
//! (`.../{target}/sync/{path}`): an OpenAI-compatible demo server, as vLLM and
//! SGLang serve one, plus an `echo` endpoint for byte-exact passthrough tests.
//!
//! | path under `sync/` | method | answer |
//! | --- | --- | --- |
//! | `v1/chat/completions` | POST | a chat completion (JSON, or SSE with `stream: true`) |
//! | `v1/completions` | POST | a legacy text completion (same rules, `choices[].text`) |
//! | `v1/embeddings` | POST | 8-dimensional unit vectors derived from SHA-256 of each input |
//! | `v1/models` | GET | the one model of the route |
//! | `health` | GET | `{"status": "ok"}` |
//! | `echo`, `echo/{anything}` | any | what the request looked like (the body is hashed as it streams in) |
//!
//! Anything else is 404 `{"detail": "Not Found"}` and a known path with another
//! method is 405 `{"detail": "Method Not Allowed"}` (as FastAPI says them).
//! Invalid OpenAI requests are 400 in OpenAI's shape `{"error": {"message",
//! "type": "invalid_request_error", "param", "code"}}`. Every answer carries
//! `X-BASETEN-REQUEST-ID`.
//!
//! Completions are deterministic: the text is `echo: ` and the last user
//! message (the prompt for `v1/completions`), split into tokens after each
//! space. `max_tokens` (or `max_completion_tokens`) caps the token count
//! (`finish_reason: "length"` then, else `"stop"`); `prompt_tokens` counts the
//! whitespace-separated words of all messages. Streamed answers are paced by
//! [`Config::token_interval`](crate::Config::token_interval) and take the test
//! hooks `hold` and `cut_after` (see [`ServerHandle::release`](crate::ServerHandle::release)
//! and the crate README).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::new_id;
use crate::queue::Shared;
use crate::stream::{FieldError, Hooks, Script};

/// Body limit of the JSON endpoints.
const JSON_BODY_LIMIT: usize = 32 * 1024 * 1024;
/// Body limit of `echo` (counted as the body streams in; nothing is buffered).
const ECHO_BODY_LIMIT: u64 = 256 * 1024 * 1024;
/// Dimensions of a demo embedding.
pub const EMBEDDING_DIMS: usize = 8;

/// Answers `sync/{path}` of model `model_id`.
pub(crate) async fn handle(app: &Arc<Shared>, model_id: &str, path: &str, req: Request) -> Response {
    let method = req.method().clone();
    let mut resp = match (path, &method) {
        ("v1/chat/completions", &Method::POST) => chat(app, model_id, req).await,
        ("v1/completions", &Method::POST) => completions(app, model_id, req).await,
        ("v1/embeddings", &Method::POST) => embeddings(model_id, req).await,
        ("v1/models", &Method::GET) => models(model_id),
        ("health", &Method::GET) => Json(json!({"status": "ok"})).into_response(),
        ("v1/chat/completions" | "v1/completions" | "v1/embeddings", _) => method_not_allowed("POST"),
        ("v1/models" | "health", _) => method_not_allowed("GET"),
        ("echo", _) => echo(path, req).await,
        _ if path.starts_with("echo/") => echo(path, req).await,
        _ => detail(StatusCode::NOT_FOUND, "Not Found"),
    };
    resp.headers_mut()
        .insert("x-baseten-request-id", HeaderValue::from_str(&new_id()).expect("hex is a valid header value"));
    resp
}

/// FastAPI's error shape: `{"detail": message}`.
fn detail(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"detail": message.into()}))).into_response()
}

fn method_not_allowed(allow: &'static str) -> Response {
    let mut resp = detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

/// OpenAI's error shape, for a request that is not valid.
fn invalid(message: impl Into<String>, param: Option<&str>) -> Response {
    openai_error(StatusCode::BAD_REQUEST, message, param)
}

fn openai_error(status: StatusCode, message: impl Into<String>, param: Option<&str>) -> Response {
    let body = json!({"error": {
        "message": message.into(),
        "type": "invalid_request_error",
        "param": param,
        "code": null,
    }});
    (status, Json(body)).into_response()
}

/// Reads a JSON object body.
async fn json_body(req: Request) -> Result<Map<String, Value>, Response> {
    let bytes = axum::body::to_bytes(req.into_body(), JSON_BODY_LIMIT).await.map_err(|_| {
        openai_error(StatusCode::PAYLOAD_TOO_LARGE, format!("request body exceeds {} MiB", JSON_BODY_LIMIT >> 20), None)
    })?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(body)) => Ok(body),
        Ok(_) => Err(invalid("request body must be a JSON object", None)),
        Err(e) => Err(invalid(format!("request body is not valid JSON: {e}"), None)),
    }
}

/// The fields every completion request shares.
#[derive(Debug)]
struct Options {
    /// Echoed back (the route's model id when absent).
    model: String,
    stream: bool,
    include_usage: bool,
    max_tokens: Option<usize>,
    hooks: Hooks,
}

fn options(body: &Map<String, Value>, model_id: &str) -> Result<Options, FieldError> {
    let model = model_field(body, model_id)?;
    let stream = opt_bool(body, "stream", "stream")?.unwrap_or(false);
    let include_usage = match body.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(opts)) => opt_bool(opts, "include_usage", "stream_options.include_usage")?.unwrap_or(false),
        Some(v) => return Err(field_error("stream_options", format!("stream_options must be an object, got {v}"))),
    };
    let mut max_tokens = None;
    for key in ["max_tokens", "max_completion_tokens"] {
        match body.get(key) {
            None | Some(Value::Null) => {}
            Some(v) => match v.as_u64().filter(|n| *n >= 1) {
                Some(n) => max_tokens = Some(usize::try_from(n).unwrap_or(usize::MAX)),
                None => return Err(field_error(key, format!("{key} must be an integer of at least 1, got {v}"))),
            },
        }
    }
    let hooks = Hooks::parse(body)?;
    Ok(Options { model, stream, include_usage, max_tokens, hooks })
}

/// `model`: echoed back; the route's model id when absent.
fn model_field(body: &Map<String, Value>, model_id: &str) -> Result<String, FieldError> {
    match body.get("model") {
        None | Some(Value::Null) => Ok(model_id.to_owned()),
        Some(Value::String(model)) => Ok(model.clone()),
        Some(v) => Err(field_error("model", format!("model must be a string, got {v}"))),
    }
}

fn opt_bool(obj: &Map<String, Value>, key: &str, name: &'static str) -> Result<Option<bool>, FieldError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(field_error(name, format!("{name} must be a boolean, got {v}"))),
    }
}

fn field_error(field: &'static str, message: String) -> FieldError {
    FieldError { field, message }
}

/// A 400 naming the field.
fn invalid_field(e: FieldError) -> Response {
    invalid(e.message, Some(e.field))
}

/// The demo model's deterministic answer.
#[derive(Debug)]
struct Answer {
    tokens: Vec<String>,
    finish_reason: &'static str,
    prompt_tokens: usize,
}

impl Answer {
    fn new(input: &str, max_tokens: Option<usize>, prompt_tokens: usize) -> Self {
        let mut tokens = tokens(&format!("echo: {input}"));
        let finish_reason = match max_tokens {
            Some(max) if tokens.len() > max => {
                tokens.truncate(max);
                "length"
            }
            _ => "stop",
        };
        Self { tokens, finish_reason, prompt_tokens }
    }

    fn text(&self) -> String {
        self.tokens.concat()
    }

    fn usage(&self) -> Value {
        let completion = self.tokens.len();
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        })
    }
}

/// Splits `text` after each space: every token keeps its trailing space except the last.
pub fn tokens(text: &str) -> Vec<String> {
    text.split_inclusive(' ').map(str::to_owned).collect()
}

fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

/// A message's `content` as text: a string as is, the `text` of content parts
/// joined by newlines, nothing for null, any other JSON as JSON.
fn content_text(content: Option<&Value>) -> String {
    match content {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n")
        }
        Some(other) => other.to_string(),
    }
}

fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// One server-sent event carrying `value`.
fn sse(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

const DONE: &[u8] = b"data: [DONE]\n\n";

/// A streamed completion: identity of every chunk, and what follows the tokens.
#[derive(Debug)]
struct Chunks {
    id: String,
    object: &'static str,
    created: u64,
    model: String,
}

impl Chunks {
    /// A chunk with one choice (`usage: null`, as vLLM sends it).
    fn choice(&self, choice: Value) -> Bytes {
        sse(&json!({
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": null,
        }))
    }

    /// The finish chunk, the usage chunk (if asked for) and `[DONE]`.
    fn tail(&self, finish: Value, answer: &Answer, include_usage: bool) -> Vec<Bytes> {
        let mut tail = vec![self.choice(finish)];
        if include_usage {
            tail.push(sse(&json!({
                "id": self.id,
                "object": self.object,
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": answer.usage(),
            })));
        }
        tail.push(Bytes::from_static(DONE));
        tail
    }
}

fn event_stream(app: &Shared, script: Script, hooks: Hooks) -> Response {
    let headers = [(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")];
    (headers, app.streams.body(script, hooks)).into_response()
}

/// `POST v1/chat/completions`.
async fn chat(app: &Shared, model_id: &str, req: Request) -> Response {
    let body = match json_body(req).await {
        Ok(body) => body,
        Err(resp) => return resp,
    };
    let messages = match body.get("messages") {
        Some(Value::Array(messages)) if !messages.is_empty() => messages,
        _ => return invalid("messages must be a non-empty array", Some("messages")),
    };
    if let Some(i) = messages.iter().position(|m| !m.get("role").is_some_and(Value::is_string)) {
        return invalid(format!("messages[{i}] must be an object with a string role"), Some("messages"));
    }
    let opts = match options(&body, model_id) {
        Ok(opts) => opts,
        Err(e) => return invalid_field(e),
    };
    let last_user = messages.iter().rev().find(|m| m["role"] == "user").map(|m| content_text(m.get("content")));
    let prompt_tokens = messages.iter().map(|m| words(&content_text(m.get("content")))).sum();
    let answer = Answer::new(&last_user.unwrap_or_default(), opts.max_tokens, prompt_tokens);
    let chunks = Chunks {
        id: format!("chatcmpl-{}", new_id()),
        object: "chat.completion.chunk",
        created: unix_secs(),
        model: opts.model,
    };
    if !opts.stream {
        return Json(json!({
            "id": chunks.id,
            "object": "chat.completion",
            "created": chunks.created,
            "model": chunks.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": answer.text()},
                "logprobs": null,
                "finish_reason": answer.finish_reason,
            }],
            "usage": answer.usage(),
        }))
        .into_response();
    }
    let delta =
        |delta: Value, finish: Value| json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish});
    let script = Script {
        head: vec![chunks.choice(delta(json!({"role": "assistant", "content": ""}), Value::Null))],
        tokens: answer.tokens.iter().map(|t| chunks.choice(delta(json!({"content": t}), Value::Null))).collect(),
        tail: chunks.tail(delta(json!({}), json!(answer.finish_reason)), &answer, opts.include_usage),
    };
    event_stream(app, script, opts.hooks)
}

/// `POST v1/completions` (legacy).
async fn completions(app: &Shared, model_id: &str, req: Request) -> Response {
    let body = match json_body(req).await {
        Ok(body) => body,
        Err(resp) => return resp,
    };
    let Some(prompt) = body.get("prompt").and_then(Value::as_str) else {
        return invalid("prompt must be a string", Some("prompt"));
    };
    let opts = match options(&body, model_id) {
        Ok(opts) => opts,
        Err(e) => return invalid_field(e),
    };
    let answer = Answer::new(prompt, opts.max_tokens, words(prompt));
    let chunks =
        Chunks { id: format!("cmpl-{}", new_id()), object: "text_completion", created: unix_secs(), model: opts.model };
    let choice =
        |text: &str, finish: Value| json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish});
    if !opts.stream {
        return Json(json!({
            "id": chunks.id,
            "object": chunks.object,
            "created": chunks.created,
            "model": chunks.model,
            "choices": [choice(&answer.text(), json!(answer.finish_reason))],
            "usage": answer.usage(),
        }))
        .into_response();
    }
    let script = Script {
        head: Vec::new(),
        tokens: answer.tokens.iter().map(|t| chunks.choice(choice(t, Value::Null))).collect(),
        tail: chunks.tail(choice("", json!(answer.finish_reason)), &answer, opts.include_usage),
    };
    event_stream(app, script, opts.hooks)
}

/// `POST v1/embeddings`: `input` is a string or a non-empty array of strings.
async fn embeddings(model_id: &str, req: Request) -> Response {
    let body = match json_body(req).await {
        Ok(body) => body,
        Err(resp) => return resp,
    };
    let inputs: Option<Vec<&str>> = match body.get("input") {
        Some(Value::String(input)) => Some(vec![input]),
        Some(Value::Array(items)) if !items.is_empty() => items.iter().map(Value::as_str).collect(),
        _ => None,
    };
    let Some(inputs) = inputs else {
        return invalid("input must be a string or a non-empty array of strings", Some("input"));
    };
    let model = match model_field(&body, model_id) {
        Ok(model) => model,
        Err(e) => return invalid_field(e),
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| json!({"object": "embedding", "index": index, "embedding": embedding(input)}))
        .collect();
    let prompt_tokens: usize = inputs.iter().map(|input| words(input)).sum();
    Json(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }))
    .into_response()
}

/// The demo embedding of `input`: SHA-256 of it read as 8 big-endian `u32`s,
/// mapped to `[-1, 1]` and scaled to unit length.
pub fn embedding(input: &str) -> [f64; EMBEDDING_DIMS] {
    let digest = Sha256::digest(input.as_bytes());
    let mut vector = [0.0; EMBEDDING_DIMS];
    for (v, word) in vector.iter_mut().zip(digest.chunks_exact(4)) {
        let word = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        *v = f64::from(word) / f64::from(u32::MAX) * 2.0 - 1.0;
    }
    let norm = vector.iter().map(|v| v * v).sum::<f64>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|v| *v /= norm);
    }
    vector
}

/// `GET v1/models`: the route's model.
fn models(model_id: &str) -> Response {
    Json(json!({
        "object": "list",
        "data": [{"id": model_id, "object": "model", "created": unix_secs(), "owned_by": "local-upstream"}],
    }))
    .into_response()
}

/// `echo`: describes the request, reading its body chunk by chunk.
async fn echo(path: &str, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let status = match echo_status(parts.uri.query()) {
        Ok(status) => status,
        Err(message) => return detail(StatusCode::BAD_REQUEST, message),
    };
    let mut hasher = Sha256::new();
    let mut body_bytes: u64 = 0;
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => return detail(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}")),
        };
        body_bytes += chunk.len() as u64;
        if body_bytes > ECHO_BODY_LIMIT {
            return detail(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body exceeds {} MiB", ECHO_BODY_LIMIT >> 20),
            );
        }
        hasher.update(&chunk);
    }
    let sha = hex::encode(hasher.finalize());
    let header = |name: HeaderName| parts.headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let body = json!({
        "method": parts.method.as_str(),
        "path": path,
        "query": parts.uri.query(),
        "content_type": header(header::CONTENT_TYPE),
        "content_length": header(header::CONTENT_LENGTH),
        "transfer_encoding": header(header::TRANSFER_ENCODING),
        "body_bytes": body_bytes,
        "body_sha256": sha,
    });
    let etag = HeaderValue::from_str(&format!("\"{}\"", &sha[..16])).expect("hex is a valid header value");
    let mut resp = (status, Json(body)).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
    resp.headers_mut().insert(header::ETAG, etag);
    resp
}

/// `?status=N` (200..=599) of `echo`; 200 without it.
fn echo_status(query: Option<&str>) -> Result<StatusCode, String> {
    let Some(value) = query.into_iter().flat_map(|q| q.split('&')).find_map(|pair| pair.strip_prefix("status=")) else {
        return Ok(StatusCode::OK);
    };
    value
        .parse::<u16>()
        .ok()
        .filter(|s| (200..=599).contains(s))
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| format!("status must be an HTTP status between 200 and 599, got {value:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_keep_their_trailing_space() {
        assert_eq!(tokens("echo: hello big world"), ["echo: ", "hello ", "big ", "world"]);
        assert_eq!(tokens("echo: "), ["echo: "]);
        assert_eq!(tokens("a  b"), ["a ", " ", "b"]);
    }

    #[test]
    fn max_tokens_truncates_with_length() {
        let answer = Answer::new("one two three", Some(2), 3);
        assert_eq!(answer.text(), "echo: one ");
        assert_eq!(answer.finish_reason, "length");
        assert_eq!(answer.usage(), json!({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}));
        let answer = Answer::new("one two three", Some(4), 3);
        assert_eq!(answer.text(), "echo: one two three");
        assert_eq!(answer.finish_reason, "stop");
    }

    #[test]
    fn content_parts_are_joined() {
        let parts = json!([{"type": "text", "text": "a b"}, {"type": "image_url"}, {"type": "text", "text": "c"}]);
        assert_eq!(content_text(Some(&parts)), "a b\nc");
        assert_eq!(content_text(Some(&json!("x"))), "x");
        assert_eq!(content_text(None), "");
    }

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = embedding("hello");
        assert_eq!(a, embedding("hello"));
        assert_ne!(a, embedding("hello!"));
        let norm = a.iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-9, "{norm}");
    }

    #[test]
    fn echo_status_is_200_to_599() {
        assert_eq!(echo_status(None), Ok(StatusCode::OK));
        assert_eq!(echo_status(Some("a=1&status=418")), Ok(StatusCode::IM_A_TEAPOT));
        assert_eq!(echo_status(Some("status=599")).map(|s| s.as_u16()), Ok(599));
        for bad in ["status=101", "status=600", "status=abc", "status="] {
            assert!(echo_status(Some(bad)).is_err(), "{bad}");
        }
    }
}
