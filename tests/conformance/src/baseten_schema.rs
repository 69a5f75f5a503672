//! What Baseten's published inference API ("Baseten inference API" 1.0.0, OpenAPI 3.1) says of
//! the bodies a client parses: the enums of `ErrorResponse.error_code`, of the status record's
//! `status` and `webhook_status`, and of `AsyncRequestError.code`, and the record's required
//! fields. A client generated from that spec rejects any other value. Written out here, apart
//! from the gateway's own lists, so the check does not agree with the code it checks by
//! construction. Used by the conformance client on every answer and by the engine's suite.

use serde_json::Value;

pub const ERROR_CODES: [&str; 10] = [
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

pub const JOB_ERROR_CODES: [&str; 8] = [
    "MODEL_PREDICT_ERROR",
    "MODEL_PREDICT_TIMEOUT",
    "MODEL_NOT_READY",
    "MODEL_DOES_NOT_EXIST",
    "MODEL_UNAVAILABLE",
    "MODEL_INVALID_INPUT",
    "ASYNC_REQUEST_NOT_SUPPORTED",
    "INTERNAL_SERVER_ERROR",
];

pub const STATUSES: [&str; 7] =
    ["QUEUED", "IN_PROGRESS", "SUCCEEDED", "FAILED", "EXPIRED", "CANCELED", "WEBHOOK_FAILED"];

pub const WEBHOOK_STATUSES: [&str; 5] = ["PENDING", "SUCCEEDED", "FAILED", "CANCELED", "NO_WEBHOOK_PROVIDED"];

const STATUS_REQUIRED: [&str; 7] =
    ["request_id", "deployment_id", "status", "webhook_status", "created_at", "status_at", "errors"];

fn one_of(v: &Value, field: &str, allowed: &[&str]) -> Result<(), String> {
    match v.get(field) {
        None => Ok(()),
        Some(Value::String(s)) if allowed.contains(&s.as_str()) => Ok(()),
        Some(other) => Err(format!("{field} {other} is not one of Baseten's {allowed:?}")),
    }
}

fn string_if_present(v: &Value, field: &str) -> Result<(), String> {
    match v.get(field) {
        None | Some(Value::String(_)) => Ok(()),
        Some(other) => Err(format!("{field} {other} is not a string")),
    }
}

/// `ErrorResponse`: `error` and `detail` strings, `error_code` one of the enum, where present.
pub fn error_response(body: &Value) -> Result<(), String> {
    if !body.is_object() {
        return Err(format!("an error body is an object: {body}"));
    }
    string_if_present(body, "error")?;
    string_if_present(body, "detail")?;
    one_of(body, "error_code", &ERROR_CODES)
}

/// `AsyncRequestStatusResponse`, with each of its `errors` an `AsyncRequestError`.
pub fn status_record(record: &Value) -> Result<(), String> {
    for field in STATUS_REQUIRED {
        if record.get(field).is_none() {
            return Err(format!("status record without {field}: {record}"));
        }
    }
    for field in ["request_id", "deployment_id", "created_at", "status_at"] {
        string_if_present(record, field)?;
    }
    one_of(record, "status", &STATUSES)?;
    one_of(record, "webhook_status", &WEBHOOK_STATUSES)?;
    let errors = record["errors"].as_array().ok_or_else(|| format!("errors is an array: {record}"))?;
    for error in errors {
        if !error["message"].is_string() {
            return Err(format!("an error's message is a string: {error}"));
        }
        if !error["code"].as_str().is_some_and(|c| JOB_ERROR_CODES.contains(&c)) {
            return Err(format!("error code {} is not one of Baseten's {JOB_ERROR_CODES:?}", error["code"]));
        }
    }
    Ok(())
}
