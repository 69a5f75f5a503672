//! A component that calls edge-predict in-process through the `inference` interface.
//! Composed with the gateway's `inference` component (`wac plug`), it is one runnable
//! wasi:http component:
//!
//! - `POST /predict/{model}` with a JSON body: the model's output;
//! - `POST /submit/{model}` with a JSON body: `{"request_id"}`;
//! - `GET /status/{request_id}`: the job's status, output and usage;
//! - `POST /webhooks/baseten/{request_id}/{token}`: the upstream's results, passed to the gateway
//!   (so this component's URL is the gateway's `public_base_url`).

mod bindings {
    wit_bindgen::generate!({ world: "inference-consumer", path: "../../wit" });
}

use bindings::edge_predict::gateway::inference::{self, RequestStatus, Subject, SubmitOptions, Target};
use serde_json::json;
use spin_sdk::http::{IntoResponse, Method, Request, Response};
use spin_sdk::http_component;

fn answer(status: u16, body: serde_json::Value) -> Response {
    Response::builder().status(status).header("content-type", "application/json").body(body.to_string()).build()
}

fn failure(e: inference::Error) -> Response {
    answer(e.http_status, json!({ "code": e.code, "message": e.message }))
}

/// Baseten's spelling of a status.
fn status_name(status: RequestStatus) -> &'static str {
    match status {
        RequestStatus::Queued => "QUEUED",
        RequestStatus::InProgress => "IN_PROGRESS",
        RequestStatus::Succeeded => "SUCCEEDED",
        RequestStatus::Failed => "FAILED",
        RequestStatus::Expired => "EXPIRED",
        RequestStatus::Canceled => "CANCELED",
        RequestStatus::WebhookFailed => "WEBHOOK_FAILED",
    }
}

#[http_component]
fn handle(request: Request) -> impl IntoResponse {
    let path = request.path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let input = String::from_utf8_lossy(request.body()).into_owned();
    match (request.method(), segments.as_slice()) {
        (Method::Post, ["predict", model]) => {
            match inference::predict(&Subject::Model((*model).to_owned()), &Target::Production, &input) {
                Ok(output) => {
                    Response::builder().status(200).header("content-type", "application/json").body(output).build()
                }
                Err(e) => failure(e),
            }
        }
        (Method::Post, ["submit", model]) => {
            let options = SubmitOptions {
                webhook_endpoint: None,
                priority: None,
                max_time_in_queue_seconds: None,
                retry: None,
                idempotency_key: None,
            };
            match inference::submit(&Subject::Model((*model).to_owned()), &Target::Production, &input, &options) {
                Ok(id) => answer(201, json!({ "request_id": id })),
                Err(e) => failure(e),
            }
        }
        (Method::Get, ["status", id]) => match inference::status(id) {
            Ok(s) => answer(
                200,
                json!({
                    "request_id": s.request_id,
                    "status": status_name(s.status),
                    "output": s.output.and_then(|o| serde_json::from_str::<serde_json::Value>(&o).ok()),
                    "time_in_progress_ms": s.usage.time_in_progress_ms,
                }),
            ),
            Err(e) => failure(e),
        },
        (Method::Post, ["webhooks", "baseten", id, token]) => {
            let signature = request.header("x-baseten-signature").and_then(|v| v.as_str()).unwrap_or_default();
            match inference::receive_webhook(id, token, signature, request.body()) {
                Ok(()) => answer(200, json!({ "request_id": id })),
                Err(e) => failure(e),
            }
        }
        _ => answer(404, json!({ "code": "NOT_FOUND", "message": "try POST /predict/{model}" })),
    }
}
