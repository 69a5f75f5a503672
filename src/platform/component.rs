//! The `inference` WIT export (wit/inference.wit, world `inference-provider`), for components
//! that call the gateway in-process. Compiled for `wasm32-wasip2` with the `component` feature.
//!
//! Each call becomes the HTTP request the engine already understands, authenticated with the
//! key in the `component_api_key` variable (so its scope applies as to any caller), and the
//! answer becomes the typed record. No behaviour is decided here. After each call, due work
//! runs as in the Spin adapter (there is no "after the response" for a call).

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use serde_json::{json, Value};

use super::wasi::{after_response, entropy, load_config, now, open_store, WasiHttp, WasiTimer};
use crate::engine::jobs::record::Status;
use crate::engine::jobs::view::StatusRecord;
use crate::engine::{self, Body, Ctx, Engine, MAX_REQUEST_BODY};

mod bindings {
    wit_bindgen::generate!({ world: "inference-provider", path: "wit" });
}

use bindings::exports::edge_predict::gateway::inference::{
    self as api, CancelResult, Guest, JobError, JobStatus, QueueCounts, RequestStatus, SubmitOptions, Usage,
    WebhookStatus,
};

/// The Spin variable holding the gateway API key in-process calls use.
const KEY_VARIABLE: &str = "component_api_key";

struct Gateway;
bindings::export!(Gateway with_types_in bindings);

fn error(code: &str, message: impl Into<String>, http_status: u16) -> api::Error {
    api::Error { code: code.to_owned(), message: message.into(), http_status }
}

fn subject(s: &api::Subject) -> engine::Subject {
    match s {
        api::Subject::Model(id) => engine::Subject::Model(id.clone()),
        api::Subject::Chain(id) => engine::Subject::Chain(id.clone()),
    }
}

fn target(t: &api::Target) -> engine::Target {
    match t {
        api::Target::Production => engine::Target::Production,
        api::Target::Development => engine::Target::Development,
        api::Target::Environment(env) => engine::Target::Environment(env.clone()),
        api::Target::Deployment(id) => engine::Target::Deployment(id.clone()),
    }
}

fn path(s: &api::Subject, t: &api::Target, endpoint: &str) -> String {
    let s = subject(s);
    let kind = match s {
        engine::Subject::Model(_) => "models",
        engine::Subject::Chain(_) => "chains",
    };
    format!("/{kind}/{}/{}/{endpoint}", s.id(), target(t).path())
}

/// One engine call; 2xx bodies come back, anything else becomes an `error`.
fn call(method: Method, path: &str, body: Bytes, idempotency_key: Option<&str>) -> Result<Bytes, api::Error> {
    call_with(method, path, body, &[("idempotency-key", idempotency_key)])
}

fn call_with(method: Method, path: &str, body: Bytes, extra: &[(&str, Option<&str>)]) -> Result<Bytes, api::Error> {
    let path = path.to_owned();
    let extra: Vec<(String, String)> =
        extra.iter().filter_map(|(name, v)| v.map(|v| ((*name).to_owned(), v.to_owned()))).collect();
    spin_sdk::http::run(async move {
        let internal = |e: engine::Error| error(e.code(), e.message(), e.status().as_u16());
        let config = load_config().map_err(internal)?;
        let store = open_store().map_err(|e| internal(engine::Error::Store(e)))?;
        let key = spin_sdk::variables::get(KEY_VARIABLE)
            .map_err(|e| error("GATEWAY_MISCONFIGURED", format!("variable {KEY_VARIABLE}: {e}"), 500))?;
        let mut request = Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = path.parse().map_err(|_| error("INVALID_ARGUMENT", "invalid id in path", 400))?;
        let h = request.headers_mut();
        let value = |v: &str| v.parse().map_err(|_| error("INVALID_ARGUMENT", "invalid header value", 400));
        h.insert(header::AUTHORIZATION, value(&format!("Bearer {key}"))?);
        h.insert(header::CONTENT_TYPE, value("application/json")?);
        for (name, v) in &extra {
            let name = http::HeaderName::try_from(name.as_str())
                .map_err(|_| error("INVALID_ARGUMENT", "invalid header name", 400))?;
            h.insert(name, value(v)?);
        }
        let engine = Engine::new(&config, &store, &WasiHttp);
        // The component's key's limits, counted in the same shared store as Spin's own.
        let outcome = engine.serve(request, Ctx::new(now(), entropy()), store.kv(), &WasiTimer).await;
        let (parts, body) = outcome.response.into_parts();
        let body = match body {
            Body::Full(b) => b,
            Body::Upstream(body) => body.read(MAX_REQUEST_BODY).map_err(|e| internal(engine::Error::from(e)))?,
        };
        after_response(&engine, outcome.wake_at).await;
        if parts.status.is_success() {
            return Ok(body);
        }
        Err(answer_error(parts.status, &body))
    })
}

/// A gateway error body carries `code`/`message`; anything else is the model's own error.
fn answer_error(status: StatusCode, body: &[u8]) -> api::Error {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    match (parsed["code"].as_str(), parsed["message"].as_str()) {
        (Some(code), Some(message)) => error(code, message, status.as_u16()),
        _ => error("MODEL_ERROR", String::from_utf8_lossy(body), status.as_u16()),
    }
}

fn json_of(body: &[u8]) -> Result<Value, api::Error> {
    serde_json::from_slice(body).map_err(|e| error("UPSTREAM_PROTOCOL_ERROR", e.to_string(), 502))
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// The engine's status record (one shape for HTTP and here), as the WIT record.
fn status_record(body: &[u8]) -> Result<JobStatus, api::Error> {
    let r: StatusRecord =
        serde_json::from_slice(body).map_err(|e| error("UPSTREAM_PROTOCOL_ERROR", e.to_string(), 502))?;
    let status = match r.status {
        Status::Queued => RequestStatus::Queued,
        Status::InProgress => RequestStatus::InProgress,
        Status::Succeeded => RequestStatus::Succeeded,
        Status::Failed => RequestStatus::Failed,
        Status::Expired => RequestStatus::Expired,
        Status::Canceled => RequestStatus::Canceled,
        Status::WebhookFailed => RequestStatus::WebhookFailed,
    };
    let webhook_status = match r.webhook_status {
        engine::jobs::record::WebhookStatus::Pending => WebhookStatus::Pending,
        engine::jobs::record::WebhookStatus::Succeeded => WebhookStatus::Succeeded,
        engine::jobs::record::WebhookStatus::Failed => WebhookStatus::Failed,
        engine::jobs::record::WebhookStatus::Canceled => WebhookStatus::Canceled,
        engine::jobs::record::WebhookStatus::NoWebhookProvided => WebhookStatus::NoWebhookProvided,
    };
    let subject = match (r.model_id, r.chain_id) {
        (_, Some(id)) => api::Subject::Chain(id),
        (id, None) => api::Subject::Model(id.unwrap_or_default()),
    };
    Ok(JobStatus {
        request_id: r.request_id,
        subject,
        // Empty until the upstream has said which deployment runs it.
        deployment_id: Some(r.deployment_id).filter(|d| !d.is_empty()),
        status,
        webhook_status,
        created_at: r.created_at,
        status_at: r.status_at,
        errors: r.errors.into_iter().map(|e| JobError { code: e.code, message: e.message }).collect(),
        output: r.output.as_ref().map(Value::to_string),
        usage: Usage {
            time_queued_ms: r.usage.time_queued_ms,
            time_in_progress_ms: r.usage.time_in_progress_ms,
            attempts: r.usage.attempts,
            cost_estimate: r.usage.cost_estimate,
        },
        cancel_requested: r.cancel_requested,
    })
}

impl Guest for Gateway {
    fn predict(subject: api::Subject, target: api::Target, input: String) -> Result<String, api::Error> {
        let endpoint = self::subject(&subject).sync_endpoint();
        let body = call(Method::POST, &path(&subject, &target, endpoint), Bytes::from(input), None)?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    fn submit(
        subject: api::Subject,
        target: api::Target,
        input: String,
        options: SubmitOptions,
    ) -> Result<String, api::Error> {
        let model_input: Value =
            serde_json::from_str(&input).map_err(|e| error("MALFORMED_JSON", format!("input: {e}"), 400))?;
        let mut body = json!({ "model_input": model_input });
        if let Some(w) = options.webhook_endpoint {
            body["webhook_endpoint"] = w.into();
        }
        if let Some(p) = options.priority {
            body["priority"] = p.into();
        }
        if let Some(t) = options.max_time_in_queue_seconds {
            body["max_time_in_queue_seconds"] = t.into();
        }
        if let Some(r) = options.retry {
            body["inference_retry_config"] = json!({
                "max_attempts": r.max_attempts, "initial_delay_ms": r.initial_delay_ms, "max_delay_ms": r.max_delay_ms,
            });
        }
        let endpoint = self::subject(&subject).async_endpoint();
        let answer = call(
            Method::POST,
            &path(&subject, &target, endpoint),
            Bytes::from(body.to_string()),
            options.idempotency_key.as_deref(),
        )?;
        Ok(text(&json_of(&answer)?["request_id"]))
    }

    fn status(request_id: String) -> Result<JobStatus, api::Error> {
        let body = call(Method::GET, &format!("/async_request/{request_id}"), Bytes::new(), None)?;
        status_record(&body)
    }

    fn cancel(request_id: String) -> Result<CancelResult, api::Error> {
        let body = call(Method::DELETE, &format!("/async_request/{request_id}"), Bytes::new(), None)?;
        let v = json_of(&body)?;
        Ok(CancelResult {
            request_id: text(&v["request_id"]),
            canceled: v["canceled"].as_bool().unwrap_or(false),
            message: text(&v["message"]),
        })
    }

    fn wake(subject: api::Subject, target: api::Target) -> Result<(), api::Error> {
        call(Method::POST, &path(&subject, &target, "wake"), Bytes::new(), None).map(drop)
    }

    fn receive_webhook(
        request_id: String,
        token: String,
        baseten_signature: String,
        body: Vec<u8>,
    ) -> Result<(), api::Error> {
        let path = format!("/webhooks/baseten/{request_id}/{token}");
        call_with(Method::POST, &path, Bytes::from(body), &[("x-baseten-signature", Some(&baseten_signature))])
            .map(drop)
    }

    fn queue_status(subject: api::Subject, target: api::Target) -> Result<QueueCounts, api::Error> {
        let v = json_of(&call(Method::GET, &path(&subject, &target, "async_queue_status"), Bytes::new(), None)?)?;
        let count = |k: &str| u32::try_from(v[k].as_u64().unwrap_or(0)).unwrap_or(u32::MAX);
        Ok(QueueCounts {
            deployment_id: v["deployment_id"].as_str().map(str::to_owned),
            num_queued_requests: count("num_queued_requests"),
            num_in_progress_requests: count("num_in_progress_requests"),
        })
    }
}
