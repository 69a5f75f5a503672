//! W3C Trace Context (`traceparent`, `tracestate`, Level 1): the trace a request belongs to,
//! continued from the caller's `traceparent` or started, and the gateway's own span in it.
//!
//! Derived, not drawn: the gateway's span id (and a new trace's id) come from the request's
//! 16 random bytes, so every place that handles one request (on Workers the front and the
//! job's object, which share them) names the same trace and span without telling each other.
//! The span id is also the request's id in logs and `X-Request-Id`.
//!
//! No crate: the candidates draw their own randomness (this engine draws none) or are
//! unmaintained, and the format is four fixed-width hex fields, checked here as the
//! specification's parsing rules say (version `ff` and all-zero ids are invalid; a future
//! version's header is read for its first four fields).

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use super::crypto::sha256;

/// One request's place in a trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    /// 32 lowercase hex: the caller's trace, or a new one.
    pub trace_id: String,
    /// 16 lowercase hex: the caller's span (its `traceparent`'s parent id), if it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// 16 lowercase hex: the gateway's span for this request.
    pub span_id: String,
    /// The trace flags (bit 0: sampled), as the caller sent them; 01 for a new trace.
    pub flags: u8,
    /// The caller's `tracestate`, passed on unchanged (at most 512 bytes, as the
    /// specification lets a propagator cut it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// The longest `tracestate` passed on.
const MAX_STATE: usize = 512;

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `(trace id, parent id, flags)` of a valid `traceparent`.
fn parse_traceparent(value: &str) -> Option<(String, String, u8)> {
    let mut fields = value.trim().split('-');
    let (version, trace_id, parent_id, flags) = (fields.next()?, fields.next()?, fields.next()?, fields.next()?);
    // Version 00 has exactly four fields; a later version may add more after them.
    if !is_hex(version, 2) || version == "ff" || (version == "00" && fields.next().is_some()) {
        return None;
    }
    if !is_hex(trace_id, 32) || !is_hex(parent_id, 16) || !is_hex(flags, 2) {
        return None;
    }
    if trace_id.bytes().all(|b| b == b'0') || parent_id.bytes().all(|b| b == b'0') {
        return None;
    }
    Some((trace_id.to_owned(), parent_id.to_owned(), u8::from_str_radix(flags, 16).ok()?))
}

impl Trace {
    /// The trace of a request with these headers and random bytes: the caller's continued
    /// (an invalid `traceparent` is ignored, and its `tracestate` with it), or a new one.
    pub fn of(headers: &HeaderMap, entropy: [u8; 16]) -> Self {
        let mut seed = b"edge-predict trace\n".to_vec();
        seed.extend_from_slice(&entropy);
        let derived = sha256(&seed);
        let span_id = hex::encode(&derived[16..24]);
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        match header("traceparent").and_then(parse_traceparent) {
            Some((trace_id, parent_id, flags)) => {
                let state = header("tracestate").map(str::trim).filter(|s| !s.is_empty() && s.len() <= MAX_STATE);
                Self { trace_id, parent_id: Some(parent_id), span_id, flags, state: state.map(str::to_owned) }
            }
            None => Self { trace_id: hex::encode(&derived[..16]), parent_id: None, span_id, flags: 1, state: None },
        }
    }

    /// The `traceparent` of a call the gateway makes for this request: this trace, the
    /// gateway's span as the parent.
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-{:02x}", self.trace_id, self.span_id, self.flags)
    }

    /// Puts this trace on a call the gateway makes: `traceparent` and the caller's
    /// `tracestate`.
    pub fn add_to(&self, headers: &mut HeaderMap) {
        if let Ok(value) = HeaderValue::from_str(&self.traceparent()) {
            headers.insert(HeaderName::from_static("traceparent"), value);
        }
        if let Some(value) = self.state.as_deref().and_then(|s| HeaderValue::from_str(s).ok()) {
            headers.insert(HeaderName::from_static("tracestate"), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap())).collect()
    }

    #[test]
    fn a_callers_trace_is_continued_under_the_gateways_span() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = Trace::of(&headers(&[("traceparent", parent), ("tracestate", "congo=t61rcWkgMzE")]), [7; 16]);
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_id.as_deref(), Some("00f067aa0ba902b7"));
        assert_eq!(t.state.as_deref(), Some("congo=t61rcWkgMzE"));
        assert_eq!(t.traceparent(), format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", t.span_id));
        assert_ne!(t.span_id, "00f067aa0ba902b7");
        assert_eq!(t, Trace::of(&headers(&[("traceparent", parent), ("tracestate", "congo=t61rcWkgMzE")]), [7; 16]));
        assert_ne!(t.span_id, Trace::of(&headers(&[("traceparent", parent)]), [8; 16]).span_id);
    }

    #[test]
    fn an_invalid_traceparent_starts_a_new_trace() {
        for bad in [
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
        ] {
            let t = Trace::of(&headers(&[("traceparent", bad), ("tracestate", "a=b")]), [1; 16]);
            assert_eq!((t.parent_id, t.state, t.flags), (None, None, 1), "{bad}");
            assert_eq!(t.trace_id.len(), 32);
        }
        // A later version is read for its first four fields.
        let t = Trace::of(
            &headers(&[("traceparent", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-x")]),
            [1; 16],
        );
        assert_eq!((t.trace_id.as_str(), t.flags), ("4bf92f3577b34da6a3ce929d0e0e4736", 0));
    }
}
