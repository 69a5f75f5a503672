//! What an operator sees of each request: one JSON line, and the `Server-Timing` its answer
//! carries. The engine knows the route, the caller, the model and target, the job and the
//! error; the adapter measures the rest (durations, bytes, the upstream's status: see
//! [`Timed`](crate::engine::ports::http_client::Timed)) and prints the line (Workers: the
//! console, read by Workers Logs; Spin: standard output).
//!
//! Never a key, a secret, a token or a body: a caller is named by its key's id (a browser
//! token by `{key id}~{token id}`), and nothing of a request or answer but its size is kept.

use http::{HeaderMap, HeaderValue, Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::engine::base::Timestamp;
use crate::engine::{Admitted, Body, Note};

/// What the adapter measured of one request.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Measured {
    /// When the request arrived.
    pub received_at: Timestamp,
    /// From its arrival until its answer's head was ready, in milliseconds.
    pub duration_ms: f64,
    /// Of that, how long the gateway waited on upstream answers, if it called one.
    pub upstream_ms: Option<f64>,
    /// The last upstream answer's status, if it got one.
    pub upstream_status: Option<u16>,
    /// The request's body, as read or as announced (`None`: streamed without a length).
    pub bytes_in: Option<u64>,
    /// The answer's body, as sent or as announced (`None`: streamed without a length).
    pub bytes_out: Option<u64>,
}

/// A body's size as a log line counts it: as held, or as its `Content-Length` announces it
/// (`None`: streamed without one).
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(http::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// The size of an answer's body (see [`content_length`]).
pub fn body_size<B>(response: &Response<Body<B>>) -> Option<u64> {
    match response.body() {
        Body::Full(bytes) => Some(bytes.len() as u64),
        Body::Upstream(_) => content_length(response.headers()),
    }
}

fn round(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

impl Measured {
    /// The gateway's own time: all of it but what it waited on the upstream.
    pub fn gateway_ms(&self) -> f64 {
        (self.duration_ms - self.upstream_ms.unwrap_or(0.0)).max(0.0)
    }

    /// `Server-Timing: gateway;dur=…, upstream;dur=…` (milliseconds): the gateway's own
    /// overhead, and the upstream's part if it was called.
    pub fn server_timing(&self) -> HeaderValue {
        let mut value = format!("gateway;dur={}", round(self.gateway_ms()));
        if let Some(upstream) = self.upstream_ms {
            value.push_str(&format!(", upstream;dur={}", round(upstream)));
        }
        HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("gateway"))
    }

    /// The upstream's part as a `Server-Timing` this gateway wrote says it (what a job's
    /// Durable Object measured, read by the Worker in front of it).
    pub fn upstream_ms_of(headers: &HeaderMap) -> Option<f64> {
        let timing = headers.get("server-timing")?.to_str().ok()?;
        timing.split(',').find_map(|metric| metric.trim().strip_prefix("upstream;dur=")?.parse().ok())
    }

    fn fields(&self, status: StatusCode) -> Map<String, Value> {
        let mut fields = Map::new();
        fields.insert("time".into(), self.received_at.rfc3339().into());
        fields.insert("status".into(), status.as_u16().into());
        fields.insert("duration_ms".into(), round(self.duration_ms).into());
        fields.insert("upstream_ms".into(), self.upstream_ms.map(round).into());
        fields.insert("upstream_status".into(), self.upstream_status.into());
        fields.insert("bytes_in".into(), self.bytes_in.into());
        fields.insert("bytes_out".into(), self.bytes_out.into());
        fields
    }
}

impl Admitted {
    /// The log line of this request, answered with `status` (the engine's `note` of it, or
    /// for a refusal after admission the error's code).
    pub fn log_line(&self, status: StatusCode, note: &Note, measured: &Measured) -> String {
        let mut fields = measured.fields(status);
        fields.insert("request_id".into(), self.trace.span_id.as_str().into());
        fields.insert("trace_id".into(), self.trace.trace_id.as_str().into());
        fields.insert("route".into(), self.route.name().into());
        fields.insert("key_id".into(), self.caller.as_ref().map(|c| c.id.as_str()).into());
        if let Some(subject) = self.route.subject() {
            fields.insert(subject.kind().into(), subject.id().into());
        }
        fields.insert("target".into(), self.route.target().map(|t| t.path()).into());
        fields.insert("error_code".into(), note.error_code.into());
        let job = note.job_id.as_deref().or(self.route.request_id());
        fields.insert("job_id".into(), job.into());
        Value::Object(fields).to_string()
    }
}

/// The log line of a request refused before it was admitted (no route or caller known).
pub fn refusal_line(status: StatusCode, error_code: &str, measured: &Measured) -> String {
    let mut fields = measured.fields(status);
    fields.insert("route".into(), Value::Null);
    fields.insert("error_code".into(), json!(error_code));
    Value::Object(fields).to_string()
}

#[cfg(test)]
mod tests {
    use super::Measured;

    #[test]
    fn server_timing_names_the_gateways_part_and_the_upstreams() {
        let m = Measured { duration_ms: 12.5, upstream_ms: Some(12.0), ..Measured::default() };
        assert_eq!(m.server_timing(), "gateway;dur=0.5, upstream;dur=12");
        let mut headers = http::HeaderMap::new();
        headers.insert("server-timing", m.server_timing());
        assert_eq!(Measured::upstream_ms_of(&headers), Some(12.0));
        assert_eq!(Measured { duration_ms: 0.25, ..Measured::default() }.server_timing(), "gateway;dur=0.25");
    }
}
