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
use spin_sdk::http::{Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam};
use spin_sdk::http_component;

/// An answer: its status and JSON body.
type Answer = (u16, String);

fn answer(status: u16, body: serde_json::Value) -> Answer {
    (status, body.to_string())
}

fn failure(e: inference::Error) -> Answer {
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
async fn handle(request: IncomingRequest, out: ResponseOutparam) {
    let method = request.method();
    let path = request.path_with_query().unwrap_or_default();
    let path = path.split('?').next().unwrap_or_default().to_owned();
    let signature = request
        .headers()
        .get(&"x-baseten-signature".to_owned())
        .first()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    let body = request.into_body().await.unwrap_or_default();
    let (status, body) = route(&method, &path, &body, &signature);
    respond(out, status, body.as_bytes());
}

/// Writes the answer with its length, its first bytes before the head is handed to the host
/// (so head and body leave together; after the head, a small body waits out Nagle and the
/// caller's delayed ACK, 40 ms), the rest after.
fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::from_list(&[
        ("content-type".to_owned(), b"application/json".to_vec()),
        ("content-length".to_owned(), body.len().to_string().into_bytes()),
    ])
    .unwrap_or_else(|_| Fields::new());
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let Ok(sink) = response.body() else { return out.set(response) };
    let (first, rest) = body.split_at(body.len().min(4096));
    {
        let Ok(stream) = sink.write() else { return out.set(response) };
        let _ = stream.blocking_write_and_flush(first);
        out.set(response);
        for chunk in rest.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                return;
            }
        }
    }
    let _ = OutgoingBody::finish(sink, None);
}

fn route(method: &Method, path: &str, body: &[u8], signature: &str) -> Answer {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let input = String::from_utf8_lossy(body).into_owned();
    match (method, segments.as_slice()) {
        (Method::Post, ["predict", model]) => {
            match inference::predict(&Subject::Model((*model).to_owned()), &Target::Production, &input) {
                Ok(output) => (200, output),
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
            match inference::receive_webhook(id, token, signature, body) {
                Ok(()) => answer(200, json!({ "request_id": id })),
                Err(e) => failure(e),
            }
        }
        _ => answer(404, json!({ "code": "NOT_FOUND", "message": "try POST /predict/{model}" })),
    }
}
