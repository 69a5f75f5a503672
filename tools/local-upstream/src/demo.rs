//! The demo model every model and chain runs.
//!
//! Its output is its input, unchanged. If the input is an object with a
//! numeric `sleep_ms`, it first sleeps that many milliseconds; if it has a
//! numeric `fail_status` (an HTTP status 400..=599), it then answers that
//! status with the body `{"error": "demo model failure"}` instead (marked, as
//! Truss marks a model's own error, `X-BASETEN-ERROR-SOURCE: 04`); with a numeric
//! `platform_status` (429, 500, 502, 503, 504) the platform fails it instead
//! (`{"error", "error_code"}`, `Retry-After` on 429 and 503); with a
//! numeric `pad_bytes` (up to 64 MiB), the output also has a `pad` string of
//! that many bytes (a large output, like a base64 image, from a small input).

use std::time::Duration;

use serde_json::{json, Value};

/// A non-2xx answer: its HTTP status and JSON body, and whether the model produced it (Truss
/// marks those `X-BASETEN-ERROR-SOURCE: 04`) or the platform did.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub status: u16,
    pub body: Value,
    pub from_model: bool,
}

/// Runs the demo model on `input`.
pub async fn run(input: &Value) -> Result<Value, Failure> {
    if let Some(ms) = input.get("sleep_ms").and_then(Value::as_f64) {
        if ms > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(ms.min(86_400_000.0) / 1000.0)).await;
        }
    }
    if let Some(status) = input.get("fail_status").filter(|v| v.is_number()) {
        return Err(match status.as_u64().filter(|s| (400..=599).contains(s)) {
            Some(status) => Failure {
                status: u16::try_from(status).expect("checked to be within 400..=599"),
                body: json!({"error": "demo model failure"}),
                from_model: true,
            },
            None => Failure {
                status: 400,
                body: json!({"error": "fail_status must be an integer HTTP error status (400-599)"}),
                from_model: false,
            },
        });
    }
    if let Some(status) = input.get("platform_status").and_then(Value::as_u64) {
        return Err(platform_failure(status));
    }
    let mut output = input.clone();
    if let Some(n) = input.get("pad_bytes").and_then(Value::as_u64).filter(|n| *n <= MAX_PAD_BYTES) {
        output["pad"] = "a".repeat(usize::try_from(n).unwrap_or_default()).into();
    }
    Ok(output)
}

const MAX_PAD_BYTES: u64 = 64 * 1024 * 1024;

/// A failure of the platform rather than the model, in Baseten's shape `{error, error_code}`:
/// 429 load shedding, 500 parking timeout, 502 replica crash, 503 unavailable, 504 predict
/// timeout (the codes are this stand-in's).
fn platform_failure(status: u64) -> Failure {
    let (status, code, message) = match status {
        429 => (429, "LOAD_SHEDDING", "the deployment is shedding load; retry later"),
        500 => (500, "PARKING_TIMEOUT", "the request timed out waiting for a replica"),
        502 => (502, "REPLICA_CRASHED", "the replica serving the request crashed"),
        504 => (504, "MODEL_PREDICT_TIMEOUT", "the model did not answer in time"),
        _ => (503, "MODEL_UNAVAILABLE", "the model is not available"),
    };
    Failure { status, body: json!({"error": message, "error_code": code}), from_model: false }
}

/// Whether a failed attempt is retried by the async queue.
pub fn is_retryable(status: u16) -> bool {
    matches!(status, 500 | 502 | 503 | 504)
}
