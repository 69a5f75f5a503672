//! What an operator can follow: W3C trace context carried from the caller to the upstream
//! and to every webhook delivery of a job, the request's id on its answer, and one log line
//! per request with every field an operator reads and nothing secret.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use edge_predict::engine::{Admission, Ctx, Measured, Timestamp};
use serde_json::{json, Value};
use support::{World, KEY, UPSTREAM_KEY};

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")
}

fn with_trace(mut request: http::Request<bytes::Bytes>) -> http::Request<bytes::Bytes> {
    request.headers_mut().insert("traceparent", traceparent().parse().unwrap());
    request.headers_mut().insert("tracestate", "congo=t61rcWkgMzE".parse().unwrap());
    request
}

/// `(trace id, parent id)` of a request the gateway sent.
fn sent_trace(request: &http::Request<bytes::Bytes>) -> (String, String) {
    let value = request.headers()["traceparent"].to_str().unwrap();
    let fields: Vec<&str> = value.split('-').collect();
    assert_eq!((fields.len(), fields[0]), (4, "00"), "{value}");
    (fields[1].to_owned(), fields[2].to_owned())
}

#[test]
fn a_sync_call_carries_the_callers_trace_to_the_upstream_under_the_gateways_span() {
    let w = World::new();
    let a = w.send(with_trace(w.request("POST", "/models/demo/production/predict", Some(KEY), "{}")));
    assert_eq!(a.status, 200);
    let request_id = a.headers["x-request-id"].to_str().unwrap().to_owned();
    let sent = w.net.sent.borrow();
    let (trace, parent) = sent_trace(sent.last().unwrap());
    assert_eq!(trace, CALLER_TRACE, "the caller's trace");
    assert_eq!(parent, request_id, "the gateway's span is the upstream call's parent, and the request's id");
    assert_ne!(parent, CALLER_SPAN);
    assert_eq!(sent.last().unwrap().headers()["tracestate"], "congo=t61rcWkgMzE");
}

#[test]
fn a_request_without_a_trace_starts_one() {
    let w = World::new();
    let a = w.send(w.request("POST", "/models/demo/production/predict", Some(KEY), "{}"));
    let b = w.send(w.request("POST", "/models/demo/production/predict", Some(KEY), "{}"));
    let sent = w.net.sent.borrow();
    let (first, first_parent) = sent_trace(&sent[0]);
    let (second, _) = sent_trace(&sent[1]);
    assert_ne!(first, second, "each request its own trace");
    assert_eq!(first_parent, a.headers["x-request-id"].to_str().unwrap());
    assert_ne!(a.headers["x-request-id"], b.headers["x-request-id"]);
    assert!(sent[0].headers().get("tracestate").is_none());
}

/// A job keeps the trace of the request that submitted it: its submission, its later status
/// reads and its webhook delivery, each made in another call, carry it.
#[test]
fn a_jobs_upstream_calls_and_webhook_delivery_carry_the_submitting_requests_trace() {
    let w = World::new();
    let body = json!({"model_input": 1, "webhook_endpoint": "https://hooks.example.com/done"});
    let a = w.send(with_trace(w.request("POST", "/models/demo/production/async_predict", Some(KEY), body.to_string())));
    assert_eq!(a.status, 201, "{:?}", a.body);
    let id = a.json()["request_id"].as_str().unwrap().to_owned();
    let span = a.headers["x-request-id"].to_str().unwrap().to_owned();
    let submission = w.net.sent.borrow().iter().rev().find(|r| r.uri().path().ends_with("async_predict")).cloned();
    assert_eq!(sent_trace(&submission.unwrap()), (CALLER_TRACE.to_owned(), span.clone()));
    // A status read later, without any trace of its own, reconciles with the job's.
    w.set_upstream_status(&id, "IN_PROGRESS");
    w.advance_ms(120_000);
    let _ = w.send(w.request("GET", &format!("/async_request/{id}"), Some(KEY), ""));
    let read = w.net.sent.borrow().iter().rev().find(|r| r.method() == "GET").cloned();
    assert_eq!(sent_trace(&read.expect("the status was read from the upstream")).0, CALLER_TRACE);
    w.complete(&id, json!({"answer": 42}));
    let _ = w.sweep();
    let deliveries = w.net.deliveries.borrow();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(sent_trace(&deliveries[0]), (CALLER_TRACE.to_owned(), span));
    assert_eq!(deliveries[0].headers()["tracestate"], "congo=t61rcWkgMzE");
}

/// The log line of a request: every field an operator reads, and no key, secret, token or
/// body.
#[test]
fn a_requests_log_line_has_every_field_and_nothing_secret() {
    let w = World::new();
    let engine = w.engine();
    let body = json!({"model_input": {"prompt": "a secret prompt"}}).to_string();
    let request = with_trace(w.request("POST", "/models/demo/production/async_predict", Some(KEY), body.clone()));
    let Admission::Read(admitted) = engine.admit(&request, w.now(), [9; 16]) else { panic!("refused") };
    let outcome = pollster::block_on(engine.handle(&admitted, request, Ctx::new(w.now(), [9; 16])));
    let status = outcome.response.status();
    let measured = Measured {
        received_at: Timestamp::from_millis(support::T0),
        duration_ms: 12.5,
        upstream_ms: Some(11.25),
        upstream_status: Some(200),
        bytes_in: Some(body.len() as u64),
        bytes_out: Some(50),
    };
    let line = admitted.log_line(status, &outcome.note, &measured);
    assert!(!line.contains('\n'), "one line");
    let fields: Value = serde_json::from_str(&line).unwrap();
    let trace = admitted.trace();
    let expected = json!({
        "time": Timestamp::from_millis(support::T0).rfc3339(),
        "request_id": trace.span_id, "trace_id": CALLER_TRACE,
        "route": "async_predict", "key_id": "main", "model": "demo", "target": "production",
        "status": 201, "error_code": null, "upstream_status": 200,
        "duration_ms": 12.5, "upstream_ms": 11.25, "bytes_in": body.len(), "bytes_out": 50,
        "job_id": outcome.note.job_id.as_deref().unwrap(),
    });
    assert_eq!(fields, expected);
    for secret in [KEY, UPSTREAM_KEY, "a secret prompt", &support::sha256_hex(KEY)] {
        assert!(!line.contains(secret), "{secret} in {line}");
    }
    // An error is named by its code.
    let request = w.request("GET", "/async_request/00000000000000000000000000000000", Some(KEY), "");
    let Admission::Read(admitted) = engine.admit(&request, w.now(), [10; 16]) else { panic!("refused") };
    let outcome = pollster::block_on(engine.handle(&admitted, request, Ctx::new(w.now(), [10; 16])));
    let fields: Value =
        serde_json::from_str(&admitted.log_line(outcome.response.status(), &outcome.note, &measured)).unwrap();
    assert_eq!((fields["status"].clone(), fields["error_code"].clone()), (json!(404), json!("REQUEST_NOT_FOUND")));
    assert_eq!(fields["job_id"], "00000000000000000000000000000000");
}

/// Each job transition and each webhook attempt is a log line of its own (what the job's
/// place writes when it changes the record), with the job's trace; never its input, output or
/// webhook endpoint.
#[test]
fn a_jobs_transitions_and_webhook_attempts_are_logged() {
    let w = World::new();
    let lines = std::cell::RefCell::new(Vec::<String>::new());
    let sink = |line: &str| lines.borrow_mut().push(line.to_owned());
    let engine = edge_predict::engine::Engine::new(&w.config, &w.store, &w.net).with_log(&sink);
    let serve = |request, entropy: u8| {
        let ctx = Ctx::new(w.now(), [entropy; 16]);
        pollster::block_on(engine.serve(request, ctx, &w.counts, &support::WorldClock(&w)))
    };
    let endpoint = "https://hooks.example.com/done?token=receiver-secret";
    let body = json!({"model_input": {"prompt": "a secret prompt"}, "webhook_endpoint": endpoint});
    let submitted =
        serve(with_trace(w.request("POST", "/models/demo/production/async_predict", Some(KEY), body.to_string())), 1);
    assert_eq!(submitted.response.status(), 201);
    let id = submitted.note.job_id.clone().unwrap();
    w.set_upstream_status(&id, "SUCCEEDED");
    let delivered =
        serve(w.inbox_delivery(&id, json!({"answer": "a secret output"}), json!([]), support::INBOUND_SECRET), 2);
    assert_eq!(delivered.response.status(), 200);
    let _ = pollster::block_on(engine.sweep(&|| w.now()));
    let events: Vec<Value> = lines.borrow().iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let of = |event: &str| events.iter().filter(|e| e["event"] == event).cloned().collect::<Vec<_>>();
    let moves: Vec<(Value, Value)> = of("job_status").iter().map(|e| (e["from"].clone(), e["to"].clone())).collect();
    assert_eq!(moves, [(Value::Null, json!("QUEUED")), (json!("QUEUED"), json!("SUCCEEDED"))], "{events:?}");
    let attempts = of("webhook_attempt");
    assert_eq!(attempts.len(), 1, "{events:?}");
    assert_eq!((attempts[0]["attempt"].clone(), attempts[0]["status_code"].clone()), (json!(1), json!(200)));
    assert_eq!(attempts[0]["webhook_status"], "SUCCEEDED");
    for event in &events {
        assert_eq!((event["job_id"].as_str(), event["key_id"].as_str()), (Some(id.as_str()), Some("main")));
        assert_eq!(event["trace_id"], CALLER_TRACE);
    }
    let all = lines.borrow().join("\n");
    for secret in ["a secret prompt", "a secret output", "receiver-secret", "hooks.example.com", KEY, UPSTREAM_KEY] {
        assert!(!all.contains(secret), "{secret} in {all}");
    }
}
