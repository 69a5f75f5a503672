//! Every job ends. A job whose end the gateway cannot learn (the upstream says it finished and
//! its result never comes, the upstream forgot it, it gave no id, its model left the
//! configuration) is asked again at the reconcile interval, never in a loop, and ends FAILED
//! with an error that says why once the grace has passed. Clock scenarios: the world's clock
//! is advanced, nothing sleeps.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use edge_predict::engine::jobs::record::{Job, RECONCILE_EVERY_MS, STALL_GRACE_MS};
use serde_json::{json, Value};
use support::*;

const HOOK: &str = "https://hooks.example.com/done";

/// Runs sweeps to each wake-up for `ms`, asserting the sweep never asks to run again at once
/// (on Workers a wake-up in the past is an alarm that fires in a loop).
fn sweep_for(w: &World, ms: u64) {
    let end = w.now().millis() + ms;
    while w.now().millis() < end {
        let report = w.sweep();
        let next = report.wake_at.expect("a live job keeps the sweep scheduled").millis();
        assert!(next > w.now().millis(), "the sweep is due again at once: a hot loop");
        w.advance_ms(next.min(end) - w.now().millis());
    }
}

fn error_of(s: &Value) -> (Option<&str>, Option<&str>, Option<&str>) {
    (s["status"].as_str(), s["errors"][0]["code"].as_str(), s["errors"][0]["gateway_code"].as_str())
}

/// Rewrites the stored record as a crash or an odd upstream could have left it.
fn edit_record(w: &World, id: &str, edit: impl FnOnce(&mut Value)) {
    let key = format!("job/{id}");
    let mut record: Value = serde_json::from_slice(&w.store_get(&key).unwrap()).unwrap();
    edit(&mut record);
    pollster::block_on(edge_predict::engine::Store::put(&w.store, &key, record.to_string().into_bytes())).unwrap();
}

#[test]
fn a_job_the_upstream_finished_whose_result_never_arrives_fails_after_the_grace_and_says_so() {
    for upstream_status in ["SUCCEEDED", "WEBHOOK_FAILED"] {
        let w = World::new();
        let id = w.submit(json!({"model_input": 1, "webhook_endpoint": HOOK}));
        w.set_upstream_status(&id, upstream_status);
        sweep_for(&w, RECONCILE_EVERY_MS);
        assert_eq!(w.status(&id)["status"], "IN_PROGRESS", "{upstream_status}: a delivery may still be in flight");
        sweep_for(&w, STALL_GRACE_MS - RECONCILE_EVERY_MS);
        assert_eq!(w.status(&id)["status"], "IN_PROGRESS", "{upstream_status}: within the grace");
        sweep_for(&w, 2 * RECONCILE_EVERY_MS);
        let s = w.status(&id);
        assert_eq!(error_of(&s), (Some("FAILED"), Some("INTERNAL_SERVER_ERROR"), Some("RESULT_LOST")), "{s}");
        assert!(s["errors"][0]["message"].as_str().unwrap().contains("never reached the gateway"), "{s}");
        let deliveries = w.net.deliveries.borrow();
        let told: Value = serde_json::from_slice(deliveries.last().expect("the caller's webhook").body()).unwrap();
        assert_eq!(told["errors"][0]["code"], "INTERNAL_SERVER_ERROR", "{told}");
    }
}

#[test]
fn a_result_arriving_within_the_grace_is_kept() {
    let w = World::new();
    let id = w.submit(json!({"model_input": 1}));
    w.set_upstream_status(&id, "SUCCEEDED");
    sweep_for(&w, STALL_GRACE_MS - RECONCILE_EVERY_MS);
    assert_eq!(w.complete(&id, json!({"late": true})).status, 200);
    sweep_for(&w, 2 * STALL_GRACE_MS);
    let s = w.status(&id);
    assert_eq!((s["status"].as_str(), &s["output"]), (Some("SUCCEEDED"), &json!({"late": true})), "{s}");
}

#[test]
fn a_job_the_upstream_forgot_fails_after_the_grace() {
    let w = World::new();
    let id = w.submit(json!({"model_input": 1}));
    let up = w.upstream_job(&id);
    w.net.jobs.borrow_mut().remove(&up.id);
    sweep_for(&w, STALL_GRACE_MS - RECONCILE_EVERY_MS);
    assert_eq!(w.status(&id)["status"], "QUEUED");
    sweep_for(&w, 2 * RECONCILE_EVERY_MS);
    let s = w.status(&id);
    assert_eq!(error_of(&s), (Some("FAILED"), Some("INTERNAL_SERVER_ERROR"), Some("UPSTREAM_REQUEST_GONE")), "{s}");
}

/// The operator removes a model while its jobs are queued and running: they are asked about
/// at the reconcile interval (no alarm loop, no sweep on every request), a queued one is not
/// expired on a guess, and both end FAILED `MODEL_DOES_NOT_EXIST` once the grace has passed.
#[test]
fn jobs_of_a_model_removed_from_the_configuration_end_failed() {
    let mut w = World::new();
    let queued = w.submit(json!({"model_input": 1, "max_time_in_queue_seconds": 60}));
    let running = w.submit(json!({"model_input": 2}));
    w.set_upstream_status(&running, "IN_PROGRESS");
    sweep_for(&w, RECONCILE_EVERY_MS);
    assert_eq!(w.status(&running)["status"], "IN_PROGRESS");
    let mut doc = config_doc();
    doc["models"] =
        json!({"other": {"upstream": "https://upstream.test/models/other", "api_key_secret_name": "UPSTREAM_KEY"}});
    w.config = parse_config(&doc);
    sweep_for(&w, STALL_GRACE_MS + 2 * RECONCILE_EVERY_MS);
    for id in [&queued, &running] {
        // Its model gone, no key may read it over HTTP any more: read the record itself.
        let s: Job = serde_json::from_slice(&w.store_get(&format!("job/{id}")).unwrap()).unwrap();
        assert_eq!(
            (s.status.as_str(), s.errors[0].code.as_str(), s.errors[0].gateway_code.as_deref()),
            ("FAILED", "MODEL_DOES_NOT_EXIST", Some("MODEL_NOT_CONFIGURED")),
            "{s:?}"
        );
    }
    let report = w.sweep();
    assert!(report.wake_at.is_none_or(|t| t.millis() > w.now().millis() + 3_600_000), "only retention left");
}

/// An upstream that accepts a job without a request id cannot be asked about it: only the
/// inbox delivery can end it. It is not polled in a loop, and without a delivery it ends
/// FAILED once its queue deadline and the grace have both passed.
#[test]
fn a_job_accepted_without_an_upstream_id_ends_when_its_stall_does() {
    let w = World::new();
    let id = w.submit(json!({"model_input": 1, "max_time_in_queue_seconds": 900}));
    edit_record(&w, &id, |r| r["upstream"]["upstream_id"] = Value::Null);
    sweep_for(&w, 900_000 - 1_000);
    assert_eq!(w.status(&id)["status"], "QUEUED", "before its queue deadline");
    sweep_for(&w, 2 * RECONCILE_EVERY_MS);
    let s = w.status(&id);
    assert_eq!(
        error_of(&s),
        (Some("FAILED"), Some("INTERNAL_SERVER_ERROR"), Some("UPSTREAM_REQUEST_UNTRACKED")),
        "{s}"
    );
}

/// An upstream that reports error codes outside Baseten's enum: the job's errors carry
/// Baseten's `INTERNAL_SERVER_ERROR`, the upstream's own code kept beside it.
#[test]
fn upstream_error_codes_outside_basetens_enum_become_internal_server_error() {
    let w = World::new();
    let id = w.submit(json!({"model_input": 1}));
    let errors = json!([{"code": "GPU_ON_FIRE", "message": "no"}, {"code": "MODEL_PREDICT_ERROR", "message": "boom"}]);
    assert_eq!(w.send(w.inbox_delivery(&id, Value::Null, errors, INBOUND_SECRET)).status, 200);
    let s = w.status(&id);
    assert_eq!(error_of(&s), (Some("FAILED"), Some("INTERNAL_SERVER_ERROR"), Some("GPU_ON_FIRE")), "{s}");
    assert_eq!(
        (s["errors"][1]["code"].as_str(), s["errors"][1].get("gateway_code")),
        (Some("MODEL_PREDICT_ERROR"), None)
    );
}

/// A model whose exception text is huge (it echoes its input, say) must not grow the job's
/// record past what a store row holds (2 MB on Workers), or every later write of it fails and
/// the job never ends: at most 16 errors are kept, each message cut to 8 KiB.
#[test]
fn upstream_error_text_is_kept_bounded() {
    let w = World::new();
    let id = w.submit(json!({"model_input": 1}));
    let huge = "é".repeat(100_000);
    let errors: Vec<Value> = (0..40).map(|_| json!({"code": "MODEL_PREDICT_ERROR", "message": huge})).collect();
    assert_eq!(w.send(w.inbox_delivery(&id, Value::Null, json!(errors), INBOUND_SECRET)).status, 200);
    let s = w.status(&id);
    let kept = s["errors"].as_array().unwrap();
    assert_eq!((s["status"].as_str(), kept.len()), (Some("FAILED"), 16), "{}", &s.to_string()[..200]);
    assert!(kept.iter().all(|e| e["message"].as_str().unwrap().len() <= 8 * 1024 + 64));
    assert!(w.store_get(&format!("job/{id}")).unwrap().len() < 200 * 1024);
}
