//! The async job through the engine's public API: submit, durability, idempotency, cancel,
//! expiry and retention, the long-poll, large outputs. In-memory store, hand-advanced clock,
//! an in-memory Baseten; what is asserted is what a caller sees.

#![allow(clippy::unwrap_used)]

mod support;

use bytes::Bytes;
use edge_predict::engine::TransportError;
use serde_json::{json, Value};
use support::*;

// ---------- async submit ----------

#[test]
fn submit_writes_the_record_before_calling_the_upstream_and_answers_201() {
    let w = World::new();
    let a = w.call("POST", "/models/demo/production/async_predict", json!({"model_input": {"x": 1}, "priority": 1}));
    assert_eq!(a.status, 201);
    let id = a.json()["request_id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(a.json().as_object().unwrap().len(), 1, "Baseten's body: request_id only");

    let keys_at_submit = w.net.on_submit_store_keys.borrow();
    assert!(
        keys_at_submit[0].contains(&format!("job/{id}")),
        "record durable before the upstream call: {keys_at_submit:?}"
    );
    let up = w.upstream_job(&id);
    let inbox = up.body["webhook_endpoint"].as_str().unwrap();
    let token = inbox.strip_prefix(&format!("https://gw.example/webhooks/baseten/{id}/")).expect(inbox);
    assert_eq!(token.len(), 32, "the job's own inbox URL: {inbox}");
    assert_eq!(up.body["model_input"], json!({"x": 1}));
    assert_eq!(up.body["priority"], 1);
    assert_eq!(
        up.body["inference_retry_config"],
        json!({"max_attempts": 3, "initial_delay_ms": 1000, "max_delay_ms": 5000})
    );

    let s = w.status(&id);
    assert_eq!(s["status"], "QUEUED");
    assert_eq!(s["model_id"], "demo");
    assert_eq!(s["webhook_status"], "NO_WEBHOOK_PROVIDED");
    assert_eq!(s["errors"], json!([]));
    assert!(s.get("output").is_none());
}

#[test]
fn chains_submit_with_async_run_remote_and_report_chain_id() {
    let w = World::new();
    let a = w.call("POST", "/chains/demo-chain/environments/staging/async_run_remote", json!({"model_input": 1}));
    assert_eq!(a.status, 201);
    let id = a.json()["request_id"].as_str().unwrap().to_owned();
    assert_eq!(w.net.sent.borrow()[0].uri().path(), "/chains/demo-chain/environments/staging/async_run_remote");
    let s = w.call("GET", &format!("/chains/demo-chain/async_request/{id}"), Value::Null).json();
    assert_eq!(s["chain_id"], "demo-chain");
    assert!(s.get("model_id").is_none());
    w.call("GET", &format!("/models/demo/async_request/{id}"), Value::Null).assert_error(404, "REQUEST_NOT_FOUND");
}

#[test]
fn a_job_goes_queued_in_progress_succeeded_with_output_and_usage() {
    let w = World::new();
    let id = w.submit(json!({"model_input": {"prompt": "hi"}}));
    w.advance_ms(2_000);
    w.set_upstream_status(&id, "IN_PROGRESS");
    let s = w.status(&id);
    assert_eq!(s["status"], "IN_PROGRESS", "reconciled with the upstream on read");
    assert_eq!(s["deployment_id"], "dep-1");
    w.advance_ms(4_000);
    let a = w.complete(&id, json!({"text": "hello"}));
    assert_eq!(a.status, 200);
    let s = w.status(&id);
    assert_eq!(s["status"], "SUCCEEDED");
    assert_eq!(s["output"], json!({"text": "hello"}));
    assert_eq!(s["usage"]["time_queued_ms"], 2_000);
    assert_eq!(s["usage"]["time_in_progress_ms"], 4_000);
    assert_eq!(s["usage"]["attempts"], 1);
    assert_eq!(s["usage"]["cost_estimate"], 2.0, "4 s at 0.5 per second");
    // Later reads are served from the record: it is terminal, the upstream is not asked again.
    let sent = w.net.sent.borrow().len();
    w.advance_ms(60_000);
    assert_eq!(w.status(&id)["output"], json!({"text": "hello"}));
    assert_eq!(w.net.sent.borrow().len(), sent);
}

#[test]
fn polling_alone_follows_failures_reported_only_by_the_upstream_status() {
    let w = World::new();
    let id = w.submit(json!({"model_input": 1}));
    w.advance_ms(5_000);
    w.set_upstream_status(&id, "FAILED");
    let s = w.status(&id);
    assert_eq!(s["status"], "FAILED");
    assert_eq!(s["errors"], json!([{"code": "MODEL_PREDICT_ERROR", "message": "boom"}]));
}

#[test]
fn the_sweep_reconciles_jobs_nobody_polls() {
    let w = World::new();
    let id = w.submit(json!({"model_input": 1, "webhook_endpoint": "https://hooks.example.com/done"}));
    w.set_upstream_status(&id, "FAILED");
    w.run_until(120_000, |w| !w.net.deliveries.borrow().is_empty());
    let delivered: Value = serde_json::from_slice(w.net.deliveries.borrow()[0].body()).unwrap();
    assert_eq!(delivered["errors"][0]["code"], "MODEL_PREDICT_ERROR");
    assert_eq!(w.status(&id)["webhook_status"], "SUCCEEDED");
}

#[test]
fn an_upstream_refusal_fails_the_job_with_basetens_error_code() {
    let mut doc = config_doc();
    doc["models"]["ghost"] =
        json!({"upstream": "https://upstream.test/nowhere/ghost", "api_key_secret_name": "UPSTREAM_KEY"});
    let w = World::with_config(doc);
    // Configured on the gateway, unknown upstream: Baseten answers 404.
    let a = w.call("POST", "/models/ghost/production/async_predict", json!({"model_input": 1}));
    assert_eq!(a.status, 201, "the job is durable; its record tells its fate");
    let id = a.json()["request_id"].as_str().unwrap().to_owned();
    let s = w.status(&id);
    assert_eq!(s["status"], "FAILED");
    assert_eq!(s["errors"][0]["code"], "MODEL_DOES_NOT_EXIST");
}

// ---------- durability ----------

#[test]
fn an_upstream_outage_at_submit_loses_nothing() {
    let w = World::new();
    w.net.upstream_down.set(Some(TransportError::Connect("refused".into())));
    let id = w.submit(json!({"model_input": {"n": 7}}));
    assert_eq!(w.status(&id)["status"], "QUEUED");
    assert!(w.net.jobs.borrow().is_empty());
    w.advance_ms(10_000);
    w.net.upstream_down.set(None);
    w.run_until(120_000, |w| !w.net.jobs.borrow().is_empty());
    assert_eq!(w.upstream_job(&id).body["model_input"], json!({"n": 7}));
    w.complete(&id, json!("done"));
    let s = w.status(&id);
    assert_eq!((s["status"].as_str(), &s["output"]), (Some("SUCCEEDED"), &json!("done")));
    assert_eq!(s["usage"]["attempts"], 2);
}

#[test]
fn a_crash_after_the_upstream_accepted_still_matches_the_result() {
    let w = World::new();
    // Writes: idempotency record, index, job. The fourth (recording the upstream id) fails.
    w.store.fail_writes_after(3);
    let mut req =
        w.request("POST", "/models/demo/production/async_predict", Some(KEY), json!({"model_input": 1}).to_string());
    req.headers_mut().insert("idempotency-key", "order-1".parse().unwrap());
    let first = w.send(req.clone());
    first.assert_error(503, "STORE_UNAVAILABLE");
    w.store.heal();
    // The client retries with its key: same request id, no second submission.
    let retry = w.send(req);
    assert_eq!(retry.status, 201);
    let id = retry.json()["request_id"].as_str().unwrap().to_owned();
    assert_eq!(w.async_submissions(), 1);
    // The upstream's webhook names our id in its URL, so the result lands.
    assert_eq!(w.complete(&id, json!({"ok": true})).status, 200);
    assert_eq!(w.status(&id)["output"], json!({"ok": true}));
    assert_eq!(w.async_submissions(), 1);
}

#[test]
fn a_restart_on_the_same_store_keeps_every_accepted_job() {
    let w = World::new();
    let ids: Vec<String> = (0..3).map(|i| w.submit(json!({"model_input": i}))).collect();
    // A new engine over the same store: what a restarted Worker or Spin instance sees.
    let restarted = World {
        config: parse_config(&config_doc()),
        store: w.store.clone(),
        counts: w.counts.clone(),
        net: Default::default(),
        now: w.now.clone(),
        entropy: std::cell::Cell::new(99),
        wake_at: Default::default(),
    };
    for id in &ids {
        let a = restarted.call("GET", &format!("/async_request/{id}"), Value::Null);
        assert_eq!(a.status, 200);
        assert_eq!(a.json()["request_id"], id.as_str());
    }
}

// ---------- idempotency ----------

#[test]
fn the_same_idempotency_key_gives_the_same_request_id_and_one_submission() {
    let w = World::new();
    let body = json!({"model_input": {"q": 1}}).to_string();
    let send = |key: &str, api_key: &str, body: &str| {
        let mut req = w.request("POST", "/models/demo/production/async_predict", Some(api_key), body.to_owned());
        req.headers_mut().insert("idempotency-key", key.parse().unwrap());
        w.send(req)
    };
    let a = send("k1", KEY, &body);
    let b = send("k1", KEY, &body);
    assert_eq!((a.status.as_u16(), b.status.as_u16()), (201, 201));
    assert_eq!(a.json()["request_id"], b.json()["request_id"]);
    assert_eq!(w.async_submissions(), 1);
    // Another API key's identical key is another request.
    let c = send("k1", OTHER_KEY, &body);
    assert_ne!(c.json()["request_id"], a.json()["request_id"]);
    assert_eq!(w.async_submissions(), 2);
    // Same key, different body: refused, nothing submitted.
    send("k1", KEY, &json!({"model_input": {"q": 2}}).to_string()).assert_error(409, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(w.async_submissions(), 2);
    // Bad keys are named.
    let long = "x".repeat(256);
    send(&long, KEY, &body).assert_error(400, "INVALID_ARGUMENT");
}

#[test]
fn every_request_for_a_job_is_placed_with_the_one_id_that_names_its_place() {
    use edge_predict::engine::{Admission, Placement};
    let w = World::new();
    let place = |req: &http::Request<Bytes>, entropy: [u8; 16]| {
        let Admission::Read(admitted) = w.engine().admit(req, w.now(), [0; 16]) else {
            panic!("{} refused", req.uri())
        };
        match w.engine().placement(&admitted, req, entropy) {
            Placement::Job(id) => id,
            other => panic!("{} {} placed {other:?}", req.method(), req.uri()),
        }
    };
    let mut ids = std::collections::BTreeSet::new();
    for n in 0u16..2000 {
        let mut entropy = [0u8; 16];
        entropy[..2].copy_from_slice(&n.to_le_bytes());
        let submit = w.request("POST", "/models/demo/production/async_predict", Some(KEY), "{}");
        let id = place(&submit, entropy);
        for (method, path) in [("GET", format!("/async_request/{id}")), ("DELETE", format!("/async_request/{id}"))] {
            assert_eq!(place(&w.request(method, &path, Some(KEY), ""), [9; 16]), id);
        }
        ids.insert(id);
    }
    assert_eq!(ids.len(), 2000, "each submit's randomness is its own id");
    // An idempotent retry and the job's inbox reach the place that holds it.
    let body = json!({"model_input": {"q": 1}}).to_string();
    let mut submit = w.request("POST", "/models/demo/production/async_predict", Some(KEY), body);
    submit.headers_mut().insert("idempotency-key", "k1".parse().unwrap());
    let id = place(&submit, [1; 16]);
    assert_eq!(place(&submit, [2; 16]), id);
    let created = w.send(submit);
    assert_eq!(created.json()["request_id"], id.as_str());
    let delivery = w.inbox_delivery(&id, json!({"ok": true}), Value::Null, INBOUND_SECRET);
    assert_eq!(place(&delivery, [3; 16]), id);
}

// ---------- cancel ----------

#[test]
fn canceling_a_queued_job_stops_it_before_compute() {
    let w = World::new();
    let id = w.submit(json!({"model_input": 1, "webhook_endpoint": "https://hooks.example.com/x"}));
    w.advance_ms(1_500);
    let a = w.call("DELETE", &format!("/async_request/{id}"), Value::Null);
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["canceled"], true);
    assert_eq!(a.json()["request_id"], id.as_str());
    assert_eq!(w.upstream_job(&id).status, "CANCELED", "the upstream was told");
    let s = w.status(&id);
    assert_eq!((s["status"].as_str(), s["webhook_status"].as_str()), (Some("CANCELED"), Some("CANCELED")));
    assert_eq!(s["usage"]["time_in_progress_ms"], 0);
    assert_eq!(s["usage"]["cost_estimate"], 0.0);
    assert_eq!(s["usage"]["time_queued_ms"], 1_500);
    w.run_until(600_000, |w| w.sweep().wake_at.is_some_and(|t| t.millis() > w.now.get() + 3_600_000));
    assert!(w.net.deliveries.borrow().is_empty(), "no webhook for a canceled job");
    // Canceling again: already terminal.
    let again = w.call("POST", &format!("/async_request/{id}/cancel"), Value::Null);
    assert_eq!(again.json()["canceled"], false);
    assert_eq!(again.json()["message"], "request is already CANCELED");
}

#[test]
fn canceling_a_job_whose_submission_is_still_pending_never_sends_it() {
    let w = World::new();
    w.net.upstream_down.set(Some(TransportError::Timeout));
    let id = w.submit(json!({"model_input": 1}));
    let a = w.call("POST", &format!("/async_request/{id}/cancel"), Value::Null);
    assert_eq!(a.json()["canceled"], true);
    w.net.upstream_down.set(None);
    w.advance_ms(120_000);
    let _ = w.sweep();
    assert!(w.net.jobs.borrow().is_empty(), "never submitted");
    assert_eq!(w.status(&id)["status"], "CANCELED");
}

#[test]
fn canceling_an_in_progress_job_is_refused_and_its_compute_shows_in_usage() {
    let w = World::new();
    let id = w.submit(json!({"model_input": 1}));
    w.advance_ms(1_000);
    w.set_upstream_status(&id, "IN_PROGRESS");
    w.advance_ms(1_000);
    let a = w.call("DELETE", &format!("/async_request/{id}"), Value::Null);
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["canceled"], false);
    assert!(a.json()["message"].as_str().unwrap().contains("IN_PROGRESS"));
    let s = w.status(&id);
    assert_eq!((s["status"].as_str(), s["cancel_requested"].as_bool()), (Some("IN_PROGRESS"), Some(true)));
    w.advance_ms(3_000);
    w.complete(&id, json!("finished anyway"));
    let s = w.status(&id);
    assert_eq!(s["status"], "SUCCEEDED");
    assert_eq!(s["cancel_requested"], true);
    assert_eq!(s["usage"]["time_in_progress_ms"], 4_000);
    assert_eq!(s["usage"]["cost_estimate"], 2.0);
}

#[test]
fn canceling_a_job_the_upstream_already_started_reports_the_truth() {
    let w = World::new();
    let id = w.submit(json!({"model_input": 1}));
    // Our record still says QUEUED; the upstream has started it.
    w.net.jobs.borrow_mut().values_mut().for_each(|j| j.status = "IN_PROGRESS");
    let a = w.call("DELETE", &format!("/async_request/{id}"), Value::Null);
    assert_eq!(a.json()["canceled"], false);
    assert_eq!(a.json()["status"], "IN_PROGRESS");
    assert_eq!(w.status(&id)["cancel_requested"], true);
}

// ---------- expiry and retention ----------

#[test]
fn a_job_still_queued_after_its_time_in_queue_reads_as_expired_and_is_reported() {
    let w = World::new();
    let id = w.submit(
        json!({"model_input": 1, "max_time_in_queue_seconds": 10, "webhook_endpoint": "https://hooks.example.com/x"}),
    );
    w.advance_ms(9_999);
    assert_eq!(w.status(&id)["status"], "QUEUED");
    w.advance_ms(1);
    let s = w.status(&id);
    assert_eq!(s["status"], "EXPIRED");
    assert_eq!(s["errors"][0]["code"], "MODEL_PREDICT_TIMEOUT");
    assert_eq!(w.upstream_job(&id).status, "CANCELED", "the upstream will not run it later");
    let _ = w.sweep();
    let payload: Value = serde_json::from_slice(w.net.deliveries.borrow()[0].body()).unwrap();
    assert_eq!(payload["errors"][0]["code"], "MODEL_PREDICT_TIMEOUT");
    assert_eq!(payload["data"], Value::Null);
}

#[test]
fn a_72_hour_queue_limit_expires_by_the_sweep_alone() {
    let w = World::new();
    let id = w.submit(json!({"model_input": 1, "max_time_in_queue_seconds": 259_200}));
    w.run_until(73 * 3_600_000, |w| {
        serde_json::from_slice::<Value>(&w.store_get(&format!("job/{id}")).unwrap()).unwrap()["status"] == "EXPIRED"
    });
    assert!(w.now.get() - T0 >= 259_200_000);
}

#[test]
fn results_are_kept_for_the_retention_and_then_gone() {
    let mut doc = config_doc();
    doc["retention_seconds"] = json!(3600);
    let w = World::with_config(doc);
    let mut req =
        w.request("POST", "/models/demo/production/async_predict", Some(KEY), json!({"model_input": 1}).to_string());
    req.headers_mut().insert("idempotency-key", "k".parse().unwrap());
    let id = w.send(req).json()["request_id"].as_str().unwrap().to_owned();
    w.complete(&id, json!("result"));
    w.advance_ms(3_599_000);
    assert_eq!(w.status(&id)["output"], "result");
    w.advance_ms(1_000);
    w.call("GET", &format!("/async_request/{id}"), Value::Null).assert_error(404, "REQUEST_NOT_FOUND");
    let report = w.sweep();
    assert_eq!(report.deleted, 1);
    assert!(w.snapshot().is_empty(), "record, index and idempotency record are gone: {:?}", w.snapshot().keys());
}

#[test]
fn finished_jobs_are_parked_and_a_sweep_reads_only_the_records_with_work_due() {
    let mut doc = config_doc();
    doc["retention_seconds"] = json!(3600);
    let w = World::with_config(doc);
    let finished: Vec<String> = (0..20)
        .map(|i| {
            let id = w.submit(json!({"model_input": i}));
            w.complete(&id, json!(i));
            id
        })
        .collect();
    let live = w.submit(json!({"model_input": "still queued"}));
    let first = w.sweep();
    assert_eq!(first.parked, 20, "{first:?}");

    // The live job's reconciliations read its record, and no finished one's.
    w.store.reads.borrow_mut().clear();
    w.advance_ms(first.wake_at.unwrap().millis() - w.now().millis());
    let later = w.sweep();
    assert_eq!((later.ran, later.processed, later.parked), (true, 1, 0), "{later:?}");
    let reads = w.store.reads.take();
    assert!(reads.contains(&format!("job/{live}")), "{reads:?}");
    assert!(finished.iter().all(|id| !reads.contains(&format!("job/{id}"))), "a parked record was read: {reads:?}");

    // Parked is not gone: results are there until retention ends, and then the sweep wakes
    // for them and deletes them (and everything pointing to them).
    assert_eq!(w.status(&finished[3])["output"], 3);
    w.complete(&live, json!("done"));
    w.run_until(3_700_000, |w| w.snapshot().is_empty());
    w.call("GET", &format!("/async_request/{}", finished[3]), Value::Null).assert_error(404, "REQUEST_NOT_FOUND");
}

// ---------- long-poll ----------

/// Sleeping advances the world's clock; at `fail_at` the upstream reports the job FAILED.
struct HandClock<'w> {
    world: &'w World,
    job: String,
    fail_at: u64,
    sleeps: std::cell::Cell<u32>,
}

impl edge_predict::engine::Timer for HandClock<'_> {
    fn now(&self) -> edge_predict::engine::Timestamp {
        self.world.now()
    }

    async fn sleep_until(&self, at: edge_predict::engine::Timestamp) {
        self.sleeps.set(self.sleeps.get() + 1);
        self.world.advance_ms(at.millis_since(self.world.now()));
        if self.world.now.get() >= self.fail_at && self.world.upstream_job(&self.job).status != "FAILED" {
            self.world.set_upstream_status(&self.job, "FAILED");
        }
    }
}

fn held(w: &World, clock: &HandClock<'_>, path: &str) -> support::Answer {
    let outcome = pollster::block_on(w.held(w.request("GET", path, Some(KEY), ""), [7; 16], clock));
    assert_eq!(outcome.hold_until, None, "a held answer is final");
    let (parts, body) = outcome.response.into_parts();
    let body = match body {
        edge_predict::engine::Body::Full(b) | edge_predict::engine::Body::Upstream(b) => b,
    };
    support::Answer { status: parts.status, headers: parts.headers, body }
}

#[test]
fn a_long_poll_answers_when_the_job_ends_or_when_the_wait_runs_out() {
    let w = World::new();
    let id = w.submit(json!({"model_input": 1}));
    let start = w.now.get();
    let clock = HandClock { world: &w, job: id.clone(), fail_at: start + 3_000, sleeps: Default::default() };
    let a = held(&w, &clock, &format!("/async_request/{id}?wait=20"));
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["status"], "FAILED", "answered as soon as the job ended");
    assert!(clock.sleeps.get() > 1);
    assert!(w.now.get() - start < 20_000, "not held to the end of the wait");

    // Nothing happens: the answer comes when the wait is over, still QUEUED.
    let other = w.submit(json!({"model_input": 2}));
    let start = w.now.get();
    let clock = HandClock { world: &w, job: other.clone(), fail_at: u64::MAX, sleeps: Default::default() };
    let a = held(&w, &clock, &format!("/async_request/{other}?wait=5"));
    assert_eq!(a.json()["status"], "QUEUED");
    assert_eq!(w.now.get() - start, 5_000);

    // Without `wait`, or on any other route, the answer is immediate.
    let clock = HandClock { world: &w, job: other.clone(), fail_at: u64::MAX, sleeps: Default::default() };
    assert_eq!(held(&w, &clock, &format!("/async_request/{other}")).json()["status"], "QUEUED");
    assert_eq!(clock.sleeps.get(), 0);
    for bad in ["31", "-1", "soon"] {
        w.call("GET", &format!("/async_request/{other}?wait={bad}"), Value::Null).assert_error(400, "INVALID_ARGUMENT");
    }
}

// ---------- large outputs ----------

fn keys_with_prefix(w: &World, prefix: &str) -> usize {
    w.snapshot().keys().filter(|k| k.starts_with(prefix)).count()
}

#[test]
fn a_5_mb_output_is_kept_in_chunks_polled_and_delivered_whole_then_deleted_with_its_record() {
    let w = World::new();
    let id = w.submit(json!({"model_input": 1, "webhook_endpoint": "https://hooks.example.com/big"}));
    let output = json!({"image": "é".repeat(2_500_000), "n": 5});
    let stored = w.complete(&id, output.clone());
    assert_eq!(stored.status, 200, "{:?}", stored.body);
    assert!(keys_with_prefix(&w, &format!("out/{id}/")) >= 10, "kept beside the record, in chunks");
    let record = w.store_get(&format!("job/{id}")).unwrap();
    assert!(record.len() < 64 * 1024, "the record itself stays small: {} bytes", record.len());
    let s = w.status(&id);
    assert_eq!((s["status"].as_str(), &s["output"]), (Some("SUCCEEDED"), &output));
    w.run_until(60_000, |w| !w.net.deliveries.borrow().is_empty());
    let delivered: Value = serde_json::from_slice(w.net.deliveries.borrow()[0].body()).unwrap();
    assert_eq!(delivered["data"], output);
    // A second delivery of the same result is answered 200 and leaves nothing behind.
    let again = w.send(w.inbox_delivery(&id, output.clone(), json!([]), INBOUND_SECRET));
    assert_eq!(again.status, 200);
    assert_eq!(keys_with_prefix(&w, "out/"), keys_with_prefix(&w, &format!("out/{id}/")));
    w.run_until(8 * 24 * 3_600_000, |w| w.store_get(&format!("job/{id}")).is_none());
    assert_eq!(keys_with_prefix(&w, "out/"), 0, "deleted with the record");
}

#[test]
fn an_output_one_byte_past_the_limit_fails_the_job_with_a_clear_error_and_no_retry() {
    let mut doc = config_doc();
    doc["output_limit_bytes"] = json!(1000);
    let w = World::with_config(doc);
    let at_limit = w.submit(json!({"model_input": 1}));
    let past = w.submit(json!({"model_input": 2}));
    // A JSON string of n characters encodes to n + 2 bytes.
    assert_eq!(w.complete(&at_limit, json!("x".repeat(998))).status, 200);
    let answer = w.complete(&past, json!("x".repeat(999)));
    assert_eq!(answer.status, 200, "answered 200: the upstream must not retry what can never be kept");
    let s = w.status(&at_limit);
    assert_eq!(s["status"], "SUCCEEDED", "{s}");
    let s = w.status(&past);
    assert_eq!(
        (s["status"].as_str(), s["errors"][0]["code"].as_str(), s["errors"][0]["gateway_code"].as_str()),
        (Some("FAILED"), Some("INTERNAL_SERVER_ERROR"), Some("OUTPUT_TOO_LARGE")),
        "{s}"
    );
    assert!(s["errors"][0]["message"].as_str().unwrap().contains("1001 bytes"), "{s}");
    assert!(s.get("output").is_none(), "{s}");
    assert_eq!(keys_with_prefix(&w, "out/"), 0);
}
