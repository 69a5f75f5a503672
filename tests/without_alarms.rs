//! Platforms without alarms (Spin): noted wake-ups run the sweep on a later request or the
//! sweep route.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{json, Value};
use support::*;

// ---------- platforms without alarms (Spin) ----------

#[test]
fn without_alarms_noted_wake_ups_run_the_sweep_on_a_later_request_or_the_sweep_route() {
    let w = World::new();
    let engine = w.engine();
    assert_eq!(pollster::block_on(engine.sweep_if_due(&|| w.now())), None, "nothing noted, nothing run");
    let id = w.submit(json!({"model_input": 1, "webhook_endpoint": "https://hooks.example.com/done"}));
    w.complete(&id, json!("out"));
    // The adapter notes what the engine asked for, then checks after its next response.
    pollster::block_on(engine.note_wake(w.wake_at.get()));
    let report = pollster::block_on(engine.sweep_if_due(&|| w.now())).expect("a delivery was due");
    assert_eq!(report.processed, 1);
    assert_eq!(w.net.deliveries.borrow().len(), 1);
    assert_eq!(pollster::block_on(engine.sweep_if_due(&|| w.now())), None, "next one is a reconcile or retention away");

    // A scheduler can always ask: POST /_sweep with a gateway key.
    w.net.receiver.set(Some(Receiver::AlwaysStatus(500)));
    let id2 = w.submit(json!({"model_input": 2, "webhook_endpoint": "https://hooks.example.com/done"}));
    w.complete(&id2, json!("out2"));
    let a = w.call("POST", "/_sweep", Value::Null);
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["processed"], 1);
    assert!(a.json()["next_sweep_at"].is_string(), "the failed delivery is retried later");
    w.send(w.request("POST", "/_sweep", None, "")).assert_error(401, "UNAUTHORIZED");
    w.send(w.request("POST", "/_sweep", Some(NARROW_KEY), "")).assert_error(403, "FORBIDDEN");
}

#[test]
fn the_upstreams_expiry_arriving_before_ours_reads_as_expired_without_compute() {
    let w = World::new();
    let id = w.submit(json!({"model_input": 1, "max_time_in_queue_seconds": 10}));
    w.advance_ms(10_030);
    let timeout = json!([{"code": "MODEL_PREDICT_TIMEOUT", "message": "expired in queue"}]);
    assert_eq!(w.send(w.inbox_delivery(&id, Value::Null, timeout, INBOUND_SECRET)).status, 200);
    let s = w.status(&id);
    assert_eq!(s["status"], "EXPIRED");
    assert_eq!(s["usage"]["time_in_progress_ms"], 0);
    assert_eq!(s["usage"]["cost_estimate"], 0.0);
}

#[test]
fn a_signed_delivery_for_an_id_the_gateway_never_issues_is_404_not_a_retry() {
    let w = World::new();
    let id = w.submit(json!({"model_input": 1}));
    let mut d = w.inbox_delivery(&id, json!("x"), json!([]), INBOUND_SECRET);
    *d.uri_mut() = "https://gw.example/webhooks/baseten/not-a-request-id".parse().unwrap();
    let before = w.snapshot();
    let a = w.send(d);
    a.assert_error(404, "REQUEST_NOT_FOUND");
    assert!(a.headers.get("retry-after").is_none());
    assert_eq!(w.snapshot(), before);
}

#[test]
fn one_sweep_at_a_time_and_a_dead_holders_lease_runs_out() {
    use edge_predict::engine::{sweep_lease_key, Store};
    let w = World::new();
    let id = w.submit(json!({"model_input": 1, "webhook_endpoint": "https://hooks.example.com/done"}));
    w.complete(&id, json!("out"));
    // Another instance is sweeping (it holds this window's lease): this sweep does nothing.
    assert!(pollster::block_on(w.store.put_if_absent(&sweep_lease_key(w.now()), Vec::new())).unwrap());
    let report = w.sweep();
    assert!(!report.ran);
    assert_eq!((report.processed, w.net.deliveries.borrow().len()), (0, 0));
    assert!(report.wake_at.is_some_and(|t| t <= w.now().plus_millis(1_000)), "retried soon");
    // The holder died: in the next window the lease is free again, and the sweep delivers once.
    w.advance_ms(60_000);
    let report = w.sweep();
    assert!(report.ran);
    assert_eq!(report.processed, 1);
    assert_eq!(w.net.deliveries.borrow().len(), 1);
    assert_eq!(w.store_get(&sweep_lease_key(w.now())), None, "released after the sweep");
    // Released: a second sweep in the same window runs too (and has nothing left to do).
    let report = w.sweep();
    assert!(report.ran);
    assert_eq!(w.net.deliveries.borrow().len(), 1);
}
