//! The async submit body (`async_predict` / `async_run_remote`), validated field by field
//! against Baseten's published ranges. Every refusal names its field.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::engine::base::Error;
use crate::engine::webhooks::endpoint;

/// `inference_retry_config`, with Baseten's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryConfig {
    pub max_attempts: u64,
    pub initial_delay_ms: u64,
    pub max_delay_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self { max_attempts: 3, initial_delay_ms: 1000, max_delay_ms: 5000 }
    }
}

/// A validated async request.
#[derive(Debug, Clone, PartialEq)]
pub struct AsyncRequest {
    pub model_input: Value,
    pub webhook_endpoint: Option<String>,
    pub priority: u8,
    pub max_time_in_queue_seconds: u64,
    pub retry: RetryConfig,
}

const FIELDS: [&str; 5] =
    ["model_input", "webhook_endpoint", "priority", "max_time_in_queue_seconds", "inference_retry_config"];
const RETRY_FIELDS: [&str; 3] = ["max_attempts", "initial_delay_ms", "max_delay_ms"];

impl AsyncRequest {
    /// Parses the raw body. Size limits are checked before this, by the caller.
    pub fn parse(body: &[u8], dev_mode: bool) -> Result<Self, Error> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| Error::MalformedJson { message: format!("request body is not valid JSON: {e}") })?;
        let Value::Object(obj) = value else {
            return Err(Error::MalformedJson { message: "request body must be a JSON object".to_owned() });
        };
        reject_unknown(&obj, &FIELDS, "")?;
        let model_input =
            obj.get("model_input").cloned().ok_or_else(|| Error::invalid("model_input", "is required"))?;
        let webhook_endpoint = match obj.get("webhook_endpoint") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(endpoint::validate(s, dev_mode)?.to_string()),
            Some(_) => return Err(Error::invalid("webhook_endpoint", "must be a string")),
        };
        let priority = int_in(&obj, "priority", "priority", 0, 2, 0)?;
        let max_time_in_queue_seconds =
            int_in(&obj, "max_time_in_queue_seconds", "max_time_in_queue_seconds", 10, 259_200, 600)?;
        let retry = match obj.get("inference_retry_config") {
            None | Some(Value::Null) => RetryConfig::default(),
            Some(Value::Object(r)) => {
                reject_unknown(r, &RETRY_FIELDS, "inference_retry_config.")?;
                let d = RetryConfig::default();
                let f = |name: &str| format!("inference_retry_config.{name}");
                RetryConfig {
                    max_attempts: int_in(r, "max_attempts", &f("max_attempts"), 1, 10, d.max_attempts)?,
                    initial_delay_ms: int_in(
                        r,
                        "initial_delay_ms",
                        &f("initial_delay_ms"),
                        0,
                        10_000,
                        d.initial_delay_ms,
                    )?,
                    max_delay_ms: int_in(r, "max_delay_ms", &f("max_delay_ms"), 0, 60_000, d.max_delay_ms)?,
                }
            }
            Some(_) => return Err(Error::invalid("inference_retry_config", "must be an object")),
        };
        Ok(Self {
            model_input,
            webhook_endpoint,
            priority: u8::try_from(priority).unwrap_or(0),
            max_time_in_queue_seconds,
            retry,
        })
    }
}

fn reject_unknown(obj: &Map<String, Value>, known: &[&str], prefix: &str) -> Result<(), Error> {
    match obj.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => {
            Err(Error::invalid(format!("{prefix}{k}"), format!("unknown field; expected one of {}", known.join(", "))))
        }
        None => Ok(()),
    }
}

fn int_in(obj: &Map<String, Value>, key: &str, field: &str, min: u64, max: u64, default: u64) -> Result<u64, Error> {
    let out_of_range = || Error::invalid(field, format!("must be an integer between {min} and {max}"));
    match obj.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if (min..=max).contains(&v) => Ok(v),
            _ => Err(out_of_range()),
        },
        Some(_) => Err(out_of_range()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<AsyncRequest, Error> {
        AsyncRequest::parse(v.to_string().as_bytes(), false)
    }

    fn field_of(v: Value) -> String {
        match parse(v) {
            Err(Error::InvalidField { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_basetens() {
        let r = parse(json!({"model_input": {"prompt": "hi"}})).unwrap();
        assert_eq!(r.model_input, json!({"prompt": "hi"}));
        assert_eq!((r.priority, r.max_time_in_queue_seconds), (0, 600));
        assert_eq!(r.retry, RetryConfig { max_attempts: 3, initial_delay_ms: 1000, max_delay_ms: 5000 });
        assert_eq!(r.webhook_endpoint, None);
    }

    #[test]
    fn bounds_are_inclusive() {
        let r = parse(json!({"model_input": 1, "priority": 2, "max_time_in_queue_seconds": 259200,
            "inference_retry_config": {"max_attempts": 10, "initial_delay_ms": 0, "max_delay_ms": 60000},
            "webhook_endpoint": "https://hooks.example.com/x"}))
        .unwrap();
        assert_eq!((r.priority, r.max_time_in_queue_seconds, r.retry.max_attempts), (2, 259_200, 10));
        assert_eq!(r.webhook_endpoint.as_deref(), Some("https://hooks.example.com/x"));
        assert_eq!(
            parse(json!({"model_input": 1, "max_time_in_queue_seconds": 10})).unwrap().max_time_in_queue_seconds,
            10
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        let cases = [
            (json!({}), "model_input"),
            (json!({"model_input": 1, "priority": 3}), "priority"),
            (json!({"model_input": 1, "priority": -1}), "priority"),
            (json!({"model_input": 1, "priority": 1.5}), "priority"),
            (json!({"model_input": 1, "priority": "0"}), "priority"),
            (json!({"model_input": 1, "max_time_in_queue_seconds": 9}), "max_time_in_queue_seconds"),
            (json!({"model_input": 1, "max_time_in_queue_seconds": 259201}), "max_time_in_queue_seconds"),
            (
                json!({"model_input": 1, "inference_retry_config": {"max_attempts": 0}}),
                "inference_retry_config.max_attempts",
            ),
            (
                json!({"model_input": 1, "inference_retry_config": {"max_attempts": 11}}),
                "inference_retry_config.max_attempts",
            ),
            (
                json!({"model_input": 1, "inference_retry_config": {"initial_delay_ms": 10001}}),
                "inference_retry_config.initial_delay_ms",
            ),
            (
                json!({"model_input": 1, "inference_retry_config": {"max_delay_ms": 60001}}),
                "inference_retry_config.max_delay_ms",
            ),
            (json!({"model_input": 1, "inference_retry_config": {"retries": 1}}), "inference_retry_config.retries"),
            (json!({"model_input": 1, "inference_retry_config": 3}), "inference_retry_config"),
            (json!({"model_input": 1, "webhook_endpoint": 5}), "webhook_endpoint"),
            (json!({"model_input": 1, "webhook_endpoint": "http://hooks.example.com"}), "webhook_endpoint"),
            (json!({"model_input": 1, "webhook_endpoint": "https://169.254.169.254/"}), "webhook_endpoint"),
            (json!({"model_input": 1, "webhok_endpoint": "https://x.example"}), "webhok_endpoint"),
        ];
        for (body, field) in cases {
            assert_eq!(field_of(body.clone()), field, "{body}");
        }
    }

    #[test]
    fn malformed_bodies_are_malformed_json() {
        for body in [&b"{"[..], b"", b"[1]", b"\"x\"", b"\xff"] {
            assert!(matches!(AsyncRequest::parse(body, false), Err(Error::MalformedJson { .. })), "{body:?}");
        }
    }
}
