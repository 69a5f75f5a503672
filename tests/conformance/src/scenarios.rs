//! The scenarios, in the order they run. Each asserts what a user of the gateway observes:
//! status codes, bodies, status records, webhook deliveries.
//!
//! Isolation: the local upstream keeps one queue per deployment and runs one job at a time in
//! each, so a scenario that needs a queue uses its own `deployment/{unique id}` target; a
//! "blocker" job that sleeps keeps the jobs behind it QUEUED.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::client::{eventually, is_request_id, Body};
use crate::{keys, secrets, BoxFut, World};

mod passthrough;
use passthrough::*;

pub type Scenario = fn(Arc<World>) -> BoxFut<'static, ()>;

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        vec![$((stringify!($name), (|w| Box::pin($name(w))) as Scenario)),*]
    };
}

/// Every scenario, in run order (the hard restart last).
pub fn all() -> Vec<(&'static str, Scenario)> {
    scenarios![
        sync_predict_and_run_remote_on_every_target,
        sync_model_error_passes_through_unchanged,
        sync_platform_errors_get_code_and_message,
        sync_unreachable_upstream_is_a_gateway_error,
        sync_passthrough_get_and_post_with_query_and_status,
        regional_hosts_speak_predict_async_and_sync,
        sse_chat_reaches_the_client_before_the_upstream_sends_its_last_event,
        a_stream_cut_by_the_upstream_ends_early_at_the_client,
        a_50_mb_request_body_streams_through_in_bounded_memory,
        the_openai_sdk_works_through_the_passthrough_and_the_v1_front_door,
        websockets_reach_the_model_on_the_worker_and_are_a_clear_501_on_spin,
        async_lifecycle_by_polling_alone,
        async_chain_run_remote,
        async_model_failure_is_failed_with_errors,
        async_submit_survives_an_unreachable_upstream,
        an_upstream_answer_that_drips_holds_a_submission_no_longer_than_the_deadline,
        async_job_expires_in_queue,
        idempotency_key_submits_once,
        concurrent_submits_same_key_and_distinct,
        cancel_a_queued_job,
        cancel_an_in_progress_job,
        queue_status_and_wake,
        outbound_webhook_is_signed_both_ways,
        outbound_webhook_retried_until_delivered,
        outbound_webhook_that_never_succeeds,
        receivers_with_a_truncated_or_endless_body_cost_one_failed_attempt_each,
        a_5_mb_output_is_kept_polled_and_delivered,
        baseten_sdk_submits_and_parses_every_status_record,
        a_plain_receiver_gets_a_body_the_standard_webhooks_verifier_accepts,
        inbox_rejects_unsigned_and_forged_deliveries,
        inbox_path_that_is_not_a_request_id_is_404,
        bad_input_is_refused_and_changes_nothing,
        unauthenticated_and_oversized_requests_are_refused_before_their_body,
        cors_preflight_and_origins,
        browser_tokens_are_scoped_to_their_origins_and_jobs,
        a_token_bound_to_another_keys_job_sees_and_cancels_nothing,
        a_sync_token_cannot_walk_out_of_sync_with_dot_segments,
        long_poll_answers_when_the_job_ends,
        exactly_a_keys_quota_of_concurrent_requests_pass,
        a_callers_trace_reaches_the_model_and_each_request_is_logged,
        the_store_keeps_the_engines_contract,
        durability_across_a_hard_kill,
    ]
}

const SECOND: Duration = Duration::from_secs(1);

/// A deployment target of model `demo` no other scenario uses.
fn own_target(w: &World) -> (String, String) {
    let dep = w.unique("dep");
    (format!("deployment/{dep}"), dep)
}

/// Submits a job that sleeps `ms` on `target`: with concurrency 1, what follows stays QUEUED.
async fn blocker(w: &World, target: &str, ms: u64) -> String {
    w.api.submit(target, json!({"model_input": {"sleep_ms": ms, "role": "blocker"}})).await
}

fn in_progress_ms(record: &Value) -> u64 {
    record["usage"]["time_in_progress_ms"].as_u64().unwrap_or_default()
}

/// RFC 3339 UTC for a Unix time in seconds (civil-from-days, Howard Hinnant), without a date crate.
fn rfc3339(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// A completion payload as the upstream sends it, and its valid `X-BASETEN-SIGNATURE`.
fn signed_inbox_payload(upstream_id: &str, data: Value) -> (String, String) {
    let body = json!({"request_id": upstream_id, "model_id": "demo", "deployment_id": "dep-demo-prod",
                      "type": "async_request_completed", "time": rfc3339(unix_now()), "data": data, "errors": []})
    .to_string();
    let sig = format!("v1={}", hmac_hex(secrets::BASETEN_WEBHOOK_SECRET, body.as_bytes()));
    (body, sig)
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

// ---------------------------------------------------------------- sync

async fn sync_predict_and_run_remote_on_every_target(w: Arc<World>) {
    let port = w.api.base.rsplit(':').next().unwrap().to_owned();
    // Raw output unchanged: odd spacing and key order survive because the body is not re-encoded.
    let raw = br#"{"prompt": "hi",  "z": [3, 2, 1], "a": {"nested": true}}"#;
    for target in ["production", "development", "environments/staging", "deployment/dep-conformance"] {
        let cases = [
            (format!("/models/demo/{target}/predict"), None),
            (format!("/chains/demo-chain/{target}/run_remote"), None),
            // Host form (`model-{id}.<gateway host>`): workerd passes the Host header through.
            (format!("/{target}/predict"), Some(format!("model-demo.localhost:{port}"))),
            (format!("/{target}/run_remote"), Some(format!("chain-demo-chain.localhost:{port}"))),
        ];
        for (path, host) in cases {
            let headers: Vec<(&str, &str)> = host.as_deref().map(|h| vec![("host", h)]).unwrap_or_default();
            let a = w.api.send("POST", &path, Some(keys::FULL), &headers, Body::Raw(raw.to_vec())).await;
            a.expect(200);
            let serde_back: Value = serde_json::from_slice(raw).unwrap();
            assert_eq!(a.json(), serde_back, "{host:?} {path}: output is the model's, no envelope");
            let rid = a.header("x-baseten-request-id").unwrap_or_default();
            assert!(is_request_id(rid), "{host:?} {path}: X-BASETEN-REQUEST-ID {rid:?}");
            assert!(a.header("content-type").unwrap_or_default().starts_with("application/json"), "{path}");
        }
    }
    // Bytes exactly as the model sent them (the demo model re-serializes its input compactly).
    let a = w
        .api
        .send("POST", "/models/demo/production/predict", Some(keys::FULL), &[], Body::Raw(b"[1,2]".to_vec()))
        .await;
    assert_eq!(a.expect(200).body, b"[1,2]");
    // The legacy `Api-Key` scheme works too.
    let a = w
        .api
        .send(
            "POST",
            "/models/demo/production/predict",
            None,
            &[("authorization", &format!("Api-Key {}", keys::FULL))],
            Body::Json(json!({"k": 1})),
        )
        .await;
    assert_eq!(a.expect(200).json(), json!({"k": 1}));
    // Host form for async submit and status too.
    let host = format!("model-demo.localhost:{port}");
    let headers = [("host", host.as_str())];
    let a = w
        .api
        .send("POST", "/production/async_predict", Some(keys::FULL), &headers, Body::Json(json!({"model_input": 5})))
        .await;
    let id = a.request_id();
    let a = w.api.send("GET", &format!("/async_request/{id}"), Some(keys::FULL), &headers, Body::None).await;
    assert_eq!(a.expect(200).json()["model_id"], "demo");
    let host = format!("chain-demo-chain.localhost:{port}");
    let a = w.api.send("GET", &format!("/async_request/{id}"), Some(keys::FULL), &[("host", &host)], Body::None).await;
    a.expect_error(404, "REQUEST_NOT_FOUND");
    // The narrow key may predict on `demo`.
    let a = w.api.send("POST", "/models/demo/production/predict", Some(keys::NARROW), &[], Body::Json(json!(7))).await;
    assert_eq!(a.expect(200).json(), json!(7));
}

async fn sync_model_error_passes_through_unchanged(w: Arc<World>) {
    for status in [422u16, 500, 503] {
        let a = w.api.post("/models/demo/production/predict", json!({"fail_status": status})).await;
        a.expect(status);
        assert_eq!(a.json(), json!({"error": "demo model failure"}), "the model's own body, not a gateway error");
        let a = w.api.post("/chains/demo-chain/development/run_remote", json!({"fail_status": status})).await;
        assert_eq!(a.expect(status).json(), json!({"error": "demo model failure"}));
    }
}

/// The platform's own failures (load shedding, parking timeout, replica crash, unavailable,
/// predict timeout) get `code` and `message` from Baseten's `error_code` and `error`, with
/// `Retry-After`; a model's error (above) is left as it was.
async fn sync_platform_errors_get_code_and_message(w: Arc<World>) {
    // `code` is the platform's own; `error_code` is always one of Baseten's published enum.
    let platform = [
        (429u16, "LOAD_SHEDDING", "rate_limited"),
        (500, "PARKING_TIMEOUT", "internal_baseten_error"),
        (502, "REPLICA_CRASHED", "model_unavailable"),
        (503, "MODEL_UNAVAILABLE", "model_unavailable"),
        (504, "MODEL_PREDICT_TIMEOUT", "timeout"),
    ];
    for (status, code, baseten) in platform {
        let a = w.api.post("/models/demo/production/predict", json!({"platform_status": status})).await;
        assert_eq!(a.expect_error(status, code)["error_code"], baseten);
        if matches!(status, 429 | 503) {
            assert_eq!(a.header("retry-after"), Some("1"), "{:?}", a.headers);
        }
    }
    let a = w.api.post("/models/demo/production/predict", json!({"fail_status": 500})).await;
    assert_eq!(a.header("x-baseten-error-source"), Some("04"), "{:?}", a.headers);
}

async fn sync_unreachable_upstream_is_a_gateway_error(w: Arc<World>) {
    for path in ["/models/broken/production/predict", "/models/broken/environments/staging/predict"] {
        let a = w.api.post(path, json!({"x": 1})).await;
        let code = if a.status == 504 { "UPSTREAM_TIMEOUT" } else { "UPSTREAM_UNREACHABLE" };
        let body = a.expect_error(if a.status == 504 { 504 } else { 502 }, code);
        assert_eq!(a.header("retry-after"), Some("1"), "retryable: {:?}", a.headers);
        assert!(!body.to_string().contains(&w.closed_port.to_string()), "no internals in the body: {body}");
    }
    w.api.post("/models/broken/production/wake", json!(null)).await.expect_error(502, "UPSTREAM_UNREACHABLE");
    w.api.get("/models/broken/production/async_queue_status").await.expect_error(502, "UPSTREAM_UNREACHABLE");
}

// ---------------------------------------------------------------- async

async fn async_lifecycle_by_polling_alone(w: Arc<World>) {
    let (target, dep) = own_target(&w);
    let first = blocker(&w, &target, 1500).await;
    let input = json!({"sleep_ms": 2500, "prompt": "poll me", "n": [1, 2, 3]});
    let id = w.api.submit(&target, json!({"model_input": input})).await;
    assert_ne!(id, first);

    let s = w.api.status(&id).await;
    assert_eq!(s["request_id"], id);
    assert_eq!(s["model_id"], "demo");
    assert_eq!(s["status"], "QUEUED", "{s}");
    assert_eq!(s["webhook_status"], "NO_WEBHOOK_PROVIDED");
    assert_eq!(s["errors"], json!([]));
    assert!(s.get("output").is_none(), "no output before it ran: {s}");
    assert!(s["created_at"].as_str().is_some_and(|t| t.contains('T')), "{s}");
    assert!(s["status_at"].is_string(), "{s}");

    // Poll, recording every status seen, until it ends.
    let seen = std::sync::Mutex::new(Vec::<String>::new());
    let done = eventually("the job to succeed", 30 * SECOND, || {
        let (api, id, seen) = (&w.api, &id, &seen);
        async move {
            let s = api.status(id).await;
            let status = s["status"].as_str().unwrap_or_default().to_owned();
            let mut seen = seen.lock().unwrap();
            if seen.last() != Some(&status) {
                seen.push(status.clone());
            }
            if status == "SUCCEEDED" {
                Ok(s)
            } else {
                Err(format!("{s}"))
            }
        }
    })
    .await;
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.first().map(String::as_str), Some("QUEUED"), "seen {seen:?}");
    assert!(seen.iter().any(|s| s == "IN_PROGRESS"), "IN_PROGRESS was observable: {seen:?}");
    let order = ["QUEUED", "IN_PROGRESS", "SUCCEEDED"];
    let ranks: Vec<usize> = seen.iter().map(|s| order.iter().position(|o| o == s).expect("only these")).collect();
    assert!(ranks.windows(2).all(|p| p[0] < p[1]), "never backwards: {seen:?}");

    assert_eq!(done["output"], input, "output is the demo model's echo");
    assert_eq!(done["deployment_id"], dep);
    assert_eq!(done["errors"], json!([]));
    assert!(in_progress_ms(&done) > 0, "usage: {}", done["usage"]);
    assert!(done["usage"]["time_queued_ms"].as_u64().is_some(), "usage: {}", done["usage"]);
    // The record is stable once terminal, and reachable under the model's prefix too.
    let again = w.api.get(&format!("/models/demo/async_request/{id}")).await.expect(200).json();
    assert_eq!(again, done);
    // ... but not under another subject.
    w.api.get(&format!("/chains/demo-chain/async_request/{id}")).await.expect_error(404, "REQUEST_NOT_FOUND");
}

async fn async_chain_run_remote(w: Arc<World>) {
    let dep = w.unique("chaindep");
    let a = w
        .api
        .post(&format!("/chains/demo-chain/deployment/{dep}/async_run_remote"), json!({"model_input": {"c": 1}}))
        .await;
    let id = a.request_id();
    let s = w.api.status_until(&id, 20 * SECOND, "the chain job to succeed", |s| s["status"] == "SUCCEEDED").await;
    assert_eq!(s["chain_id"], "demo-chain", "{s}");
    assert_eq!(s["output"], json!({"c": 1}));
    w.api.get(&format!("/chains/demo-chain/async_request/{id}")).await.expect(200);
}

async fn async_model_failure_is_failed_with_errors(w: Arc<World>) {
    let hook = w.unique("failed");
    let body = json!({"model_input": {"fail_status": 422}, "webhook_endpoint": w.receiver.url(&hook)});
    let id = w.api.submit("development", body).await;
    let s = w.api.status_until(&id, 20 * SECOND, "the job to fail", |s| s["status"] == "FAILED").await;
    let errors = s["errors"].as_array().cloned().unwrap_or_default();
    assert_eq!(errors.len(), 1, "{s}");
    assert_eq!(errors[0]["code"], "MODEL_PREDICT_ERROR", "{s}");
    assert!(errors[0]["message"].as_str().is_some_and(|m| m.contains("422")), "{s}");
    assert!(s.get("output").is_none(), "{s}");
    // The caller is told too: type async_request_completed, data null, the errors.
    let d = eventually("the failure webhook", 20 * SECOND, || async {
        w.receiver.deliveries(&hook).into_iter().next().ok_or_else(|| "none yet".to_owned())
    })
    .await;
    d.assert_signed(secrets::OUTBOUND_WEBHOOK_SECRET);
    let p = d.json();
    assert_eq!(p["type"], "async_request_completed", "{p}");
    assert_eq!(p["data"], Value::Null, "{p}");
    assert_eq!(p["errors"][0]["code"], "MODEL_PREDICT_ERROR", "{p}");
    w.api.status_until(&id, 10 * SECOND, "webhook SUCCEEDED", |s| s["webhook_status"] == "SUCCEEDED").await;
}

async fn async_submit_survives_an_unreachable_upstream(w: Arc<World>) {
    // The record is durable before 201, so a submit is accepted while the upstream is down;
    // the gateway keeps retrying the submission, and a cancel stops it before any compute.
    let a = w.api.post("/models/broken/production/async_predict", json!({"model_input": {"x": 1}})).await;
    let id = a.request_id();
    let s = w.api.status(&id).await;
    assert_eq!((s["status"].as_str(), s["model_id"].as_str()), (Some("QUEUED"), Some("broken")), "{s}");
    assert!(s["usage"]["attempts"].as_u64() >= Some(1), "one submission attempt was made: {s}");
    let c = w.api.send("POST", &format!("/async_request/{id}/cancel"), Some(keys::FULL), &[], Body::None).await;
    assert_eq!(c.expect(200).json()["canceled"], true);
    let s = w.api.status(&id).await;
    assert_eq!(s["status"], "CANCELED", "{s}");
    assert_eq!(in_progress_ms(&s), 0, "{s}");
}

/// An upstream that accepts a submission, then drips its answer a byte a second, forever (no
/// gap long enough for a between-bytes timeout) holds the submission no longer than the
/// outbound deadline, head and body together: the caller gets its 201 and the job waits for a
/// retry. Without that deadline the submit hangs (here, past the client's own 60 s), and on
/// Workers the claim lapses and the next sweep submits the job a second time.
async fn an_upstream_answer_that_drips_holds_a_submission_no_longer_than_the_deadline(w: Arc<World>) {
    let before = w.dripping.requests();
    let a = w.api.post("/models/dripping/production/async_predict", json!({"model_input": {"x": 1}})).await;
    let id = a.expect(201).request_id();
    let s = w.api.status(&id).await;
    assert_eq!(s["status"], "QUEUED", "{s}");
    assert_eq!(s["usage"]["attempts"], 1, "one submission attempt, ended by the deadline: {s}");
    assert_eq!(w.dripping.requests(), before + 1);
    let c = w.api.send("DELETE", &format!("/async_request/{id}"), Some(keys::FULL), &[], Body::None).await;
    assert_eq!(c.expect(200).json()["canceled"], true, "no retry left to drip");
}

/// Known gateway bug (reported): when the upstream's webhook for an expired request (data
/// null, errors [MODEL_PREDICT_TIMEOUT]) reaches the inbox before the gateway's own expiry runs,
/// the job becomes FAILED, and its usage bills the whole queue wait as compute.
async fn async_job_expires_in_queue(w: Arc<World>) {
    let (target, _) = own_target(&w);
    blocker(&w, &target, 13_000).await;
    let id = w.api.submit(&target, json!({"model_input": 1, "max_time_in_queue_seconds": 10})).await;
    let s = w.api.status_until(&id, 20 * SECOND, "the job to leave QUEUED", |s| s["status"] != "QUEUED").await;
    assert_eq!(s["status"], "EXPIRED", "{s}");
    assert_eq!(s["errors"][0]["code"], "MODEL_PREDICT_TIMEOUT", "{s}");
    assert!(s["usage"]["time_queued_ms"].as_u64() >= Some(10_000), "{s}");
    assert_eq!(in_progress_ms(&s), 0, "it never ran: {s}");
    assert!(s.get("output").is_none(), "{s}");
    let q = w.api.queue(&target).await;
    assert_eq!(q["num_queued_requests"], 0, "expired upstream too: {q}");
}

async fn idempotency_key_submits_once(w: Arc<World>) {
    let (target, _) = own_target(&w);
    blocker(&w, &target, 4000).await;
    let key = w.unique("idem");
    let body = json!({"model_input": {"idempotent": true, "sleep_ms": 200}});
    let path = format!("/models/demo/{target}/async_predict");
    let send = |api: crate::client::Api, path: String, key: String, body: Value| async move {
        api.send("POST", &path, Some(keys::FULL), &[("idempotency-key", &key)], Body::Json(body)).await
    };
    let concurrent: Vec<_> =
        (0..5).map(|_| tokio::spawn(send(w.api.clone(), path.clone(), key.clone(), body.clone()))).collect();
    let mut ids = Vec::new();
    for handle in concurrent {
        ids.push(handle.await.unwrap().request_id());
    }
    for _ in 0..2 {
        ids.push(send(w.api.clone(), path.clone(), key.clone(), body.clone()).await.request_id());
    }
    assert!(ids.iter().all(|i| *i == ids[0]), "one request_id for one key: {ids:?}");
    // The upstream saw exactly one job: behind the blocker, one is queued.
    let q = w.api.queue(&target).await;
    assert_eq!((q["num_queued_requests"].as_u64(), q["num_in_progress_requests"].as_u64()), (Some(1), Some(1)), "{q}");
    // The same key with another body is a conflict, and submits nothing.
    let other_body = json!({"model_input": {"idempotent": false}});
    send(w.api.clone(), path.clone(), key.clone(), other_body).await.expect_error(409, "IDEMPOTENCY_KEY_REUSED");
    // Idempotency keys are per API key: another key's same header is another job.
    let other =
        w.api.send("POST", &path, Some(keys::OTHER), &[("idempotency-key", &key)], Body::Json(body.clone())).await;
    assert_ne!(other.request_id(), ids[0]);
    let q = w.api.queue(&target).await;
    assert_eq!(q["num_queued_requests"].as_u64(), Some(2), "{q}");
    let s =
        w.api.status_until(&ids[0], 30 * SECOND, "the idempotent job to succeed", |s| s["status"] == "SUCCEEDED").await;
    assert_eq!(s["output"], body["model_input"]);
    assert_eq!(s["usage"]["attempts"], 1, "submitted upstream once: {s}");
}

/// Baseten's Python SDK (`tests/clients/baseten_sdk.py`, in the `.venv` that `make setup`
/// makes) submits a job and parses a status record at every stage: QUEUED before submission
/// (the upstream is unreachable), QUEUED, IN_PROGRESS, SUCCEEDED, FAILED, EXPIRED, CANCELED.
async fn baseten_sdk_submits_and_parses_every_status_record(w: Arc<World>) {
    let (target, dep) = own_target(&w);
    // Long enough that the SDK, run after every record below has been seen, still finds its own
    // submission queued behind it on a loaded machine.
    let running = blocker(&w, &target, 20_000).await;
    let expiring = w.api.submit(&target, json!({"model_input": {"x": 1}, "max_time_in_queue_seconds": 10})).await;
    let queued = w.api.submit(&target, json!({"model_input": {"q": 1}})).await;
    let canceled = w.api.submit(&target, json!({"model_input": {"c": 1}})).await;
    w.api.send("DELETE", &format!("/async_request/{canceled}"), Some(keys::FULL), &[], Body::None).await.expect(200);
    let unsent = w.api.post("/models/broken/production/async_predict", json!({"model_input": 1})).await.request_id();
    let succeeded = w.api.submit("production", json!({"model_input": {"s": 1}})).await;
    let failed = w.api.submit("production", json!({"model_input": {"fail_status": 400}})).await;
    let mut expected = Vec::new();
    for (id, status) in [
        (&running, "IN_PROGRESS"),
        (&succeeded, "SUCCEEDED"),
        (&failed, "FAILED"),
        (&expiring, "EXPIRED"),
        (&queued, "QUEUED"),
        (&canceled, "CANCELED"),
        (&unsent, "QUEUED"),
    ] {
        w.api.status_until(id, 30 * SECOND, status, |s| s["status"] == status).await;
        expected.push((id.clone(), status));
    }
    let python = crate::worker::repo_root().join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: run `make setup`", python.display());
    let out = tokio::process::Command::new(python)
        .arg(crate::worker::repo_root().join("tests/clients/baseten_sdk.py"))
        .args([w.api.base.as_str(), keys::FULL, dep.as_str()])
        .args(expected.iter().map(|(id, _)| id.as_str()))
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the Baseten SDK failed:\n{stderr}");
    let records: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), expected.len() + 1, "{records:?}");
    assert_eq!(records[0]["status"], "QUEUED", "the SDK's own submission, behind the blocker: {records:?}");
    for (record, (id, status)) in records[1..].iter().zip(&expected) {
        assert_eq!((record["request_id"].as_str(), record["status"].as_str()), (Some(id.as_str()), Some(*status)));
        assert!(record["deployment_id"].is_string(), "{record}");
    }
}

/// A plain receiver (Python's `http.server`, reading `Content-Length` bytes) checking each
/// delivery with the `standardwebhooks` reference verifier (`tests/clients/plain_receiver.py`).
async fn a_plain_receiver_gets_a_body_the_standard_webhooks_verifier_accepts(w: Arc<World>) {
    use tokio::io::AsyncBufReadExt;
    let python = crate::worker::repo_root().join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: run `make setup`", python.display());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("deliveries.jsonl");
    let mut receiver = tokio::process::Command::new(python)
        .arg(crate::worker::repo_root().join("tests/clients/plain_receiver.py"))
        .arg(secrets::OUTBOUND_WEBHOOK_SECRET)
        .arg(&log)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(receiver.stdout.take().unwrap()).lines();
    let port = lines.next_line().await.unwrap().expect("the receiver's port");
    let input = json!({"plain": "receiver", "n": [1, 2, 3]});
    let hook = format!("http://127.0.0.1:{port}/plain");
    let id = w.api.submit("production", json!({"model_input": input, "webhook_endpoint": hook})).await;
    let s = w
        .api
        .status_until(&id, 30 * SECOND, "a delivery the receiver accepts", |s| s["webhook_status"] != "PENDING")
        .await;
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(s["webhook_status"], "SUCCEEDED", "{s}\nthe receiver saw: {log}");
    let first: Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(first["verified"], true, "{first}");
    let payload: Value = serde_json::from_str(first["body"].as_str().unwrap()).unwrap();
    assert_eq!((payload["request_id"].as_str(), &payload["data"]), (Some(id.as_str()), &input));
}

/// Larger than a Durable Object row holds (2 MB): kept in chunks, read back whole.
async fn a_5_mb_output_is_kept_polled_and_delivered(w: Arc<World>) {
    let hook = w.unique("big");
    let body = json!({"model_input": {"pad_bytes": 5_000_000}, "webhook_endpoint": w.receiver.url(&hook)});
    let id = w.api.submit("production", body).await;
    let s = w
        .api
        .status_until(&id, 30 * SECOND, "the 5 MB job to succeed", |s| {
            s["status"] != "QUEUED" && s["status"] != "IN_PROGRESS"
        })
        .await;
    assert_eq!(s["status"], "SUCCEEDED", "{}", &s.to_string()[..s.to_string().len().min(600)]);
    assert_eq!(s["output"]["pad"].as_str().map(str::len), Some(5_000_000));
    let delivery = eventually("the 5 MB webhook", 30 * SECOND, || async {
        w.receiver.deliveries(&hook).into_iter().next().ok_or_else(|| "none yet".to_owned())
    })
    .await;
    assert_eq!(delivery.json()["data"]["pad"].as_str().map(str::len), Some(5_000_000));
    delivery.assert_signed(secrets::OUTBOUND_WEBHOOK_SECRET);
}

/// 50 concurrent submits with one `Idempotency-Key`: one request id, one upstream submission.
/// Then 200 concurrent distinct submits: every one ends SUCCEEDED with its own output.
async fn concurrent_submits_same_key_and_distinct(w: Arc<World>) {
    let (target, dep) = own_target(&w);
    let key = w.unique("idem-50");
    let path = format!("/models/demo/{target}/async_predict");
    let same: Vec<_> = (0..50)
        .map(|_| {
            let (api, path, key) = (w.api.clone(), path.clone(), key.clone());
            tokio::spawn(async move {
                let body = Body::Json(json!({"model_input": {"same": "key"}}));
                api.send("POST", &path, Some(keys::FULL), &[("idempotency-key", &key)], body).await.request_id()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for call in same {
        ids.push(call.await.unwrap());
    }
    assert!(ids.iter().all(|i| *i == ids[0]), "one request_id for one key: {ids:?}");
    assert_eq!(w.upstream.accepted(&dep), 1, "one upstream submission for 50 same-key submits");

    let (target, dep) = own_target(&w);
    let distinct: Vec<_> = (0..200)
        .map(|n| {
            let (api, target) = (w.api.clone(), target.clone());
            tokio::spawn(async move { (n, api.submit(&target, json!({"model_input": {"n": n}})).await) })
        })
        .collect();
    let mut jobs = Vec::new();
    for call in distinct {
        jobs.push(call.await.unwrap());
    }
    for (n, id) in &jobs {
        let s = w.api.status_until(id, 60 * SECOND, "every job to succeed", |s| s["status"] == "SUCCEEDED").await;
        assert_eq!(s["output"], json!({"n": n}), "{s}");
    }
    assert_eq!(w.upstream.accepted(&dep), 200);
}

/// Submits announcing a 20 MB body are refused from their head alone: the gateway answers
/// before a byte of the body is sent (the client here sends none, waiting for the answer as a
/// client sending `Expect: 100-continue` would). Unauthenticated: 401. Authenticated but over
/// the async limit, from a page: 413, with CORS so the page can read why; so is a chunked body
/// that grows past the limit as it is read.
async fn unauthenticated_and_oversized_requests_are_refused_before_their_body(w: Arc<World>) {
    let page = crate::BROWSER_ORIGIN;
    // A page submits with a browser token minted for it (a server key lists no origins, so a
    // page using one is refused 403 before any size check).
    let minted = json!({"models": ["demo"], "operations": ["async_predict"], "origins": [page], "ttl_seconds": 120});
    let a = w.api.send("POST", "/browser_tokens", Some(keys::FULL), &[], Body::Json(minted)).await;
    let token = a.expect(201).json()["token"].as_str().unwrap().to_owned();
    let auth = format!("Authorization: Bearer {token}\r\nOrigin: {page}\r\n");
    for (extra, status, code) in [("", 401, "UNAUTHORIZED"), (auth.as_str(), 413, "PAYLOAD_TOO_LARGE")] {
        let head = format!(
            "POST /models/demo/production/async_predict HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            20 * 1024 * 1024
        );
        let answer = tokio::time::timeout(20 * SECOND, crate::client::raw_exchange(&w.api.base, head.as_bytes()))
            .await
            .expect("an answer without the body being sent");
        assert!(answer.starts_with(&format!("HTTP/1.1 {status}")), "{answer}");
        assert!(answer.contains(code), "{answer}");
        if status == 413 {
            assert!(answer.to_ascii_lowercase().contains(&format!("access-control-allow-origin: {page}")), "{answer}");
        }
    }
    // Every refusal is decided from the head: a route that needs no body, or does not exist,
    // or is not the caller's, answers at once, without waiting for the 20 MiB it announced.
    let other = format!("Authorization: Bearer {}\r\n", keys::NARROW);
    let full = format!("Authorization: Bearer {}\r\n", keys::FULL);
    for (method, path, extra, status, code) in [
        ("POST", "/nope", "", 404, "NOT_FOUND"),
        ("GET", "/models/demo/production/predict", "", 405, "METHOD_NOT_ALLOWED"),
        ("OPTIONS", "/models/demo/production/predict", "", 413, "PAYLOAD_TOO_LARGE"),
        ("POST", "/_sweep", "", 401, "UNAUTHORIZED"),
        ("POST", "/browser_tokens", "", 401, "UNAUTHORIZED"),
        ("POST", "/v1/chat/completions", "", 401, "UNAUTHORIZED"),
        ("POST", "/models/demo/production/wake", "", 401, "UNAUTHORIZED"),
        ("POST", "/_sweep", other.as_str(), 403, "FORBIDDEN"),
        ("POST", "/v1/chat/completions", other.as_str(), 403, "FORBIDDEN"),
        ("POST", "/models/demo/production/async_predict", other.as_str(), 403, "FORBIDDEN"),
        ("POST", "/browser_tokens", full.as_str(), 413, "PAYLOAD_TOO_LARGE"),
    ] {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Content-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            20 * 1024 * 1024
        );
        let answer = tokio::time::timeout(20 * SECOND, crate::client::raw_exchange(&w.api.base, head.as_bytes()))
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no answer without the body being sent"));
        assert!(answer.starts_with(&format!("HTTP/1.1 {status}")), "{method} {path}: {answer}");
        assert!(answer.contains(code), "{method} {path}: {answer}");
    }
    // No length announced: the body is read up to the route's limit, and the 413 that ends
    // the reading is the gateway's JSON with CORS too.
    let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "x".repeat(64 * 1024));
    let request = format!(
        "POST /models/demo/production/async_predict HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{}0\r\n\r\n",
        chunk.repeat(5)
    );
    let answer = tokio::time::timeout(20 * SECOND, crate::client::raw_exchange(&w.api.base, request.as_bytes()))
        .await
        .expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("PAYLOAD_TOO_LARGE"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains(&format!("access-control-allow-origin: {page}")), "{answer}");
}

async fn cancel_a_queued_job(w: Arc<World>) {
    let (target, _) = own_target(&w);
    let block = blocker(&w, &target, 3000).await;
    let hook = w.unique("canceled");
    let a = w.api.submit(&target, json!({"model_input": {"a": 1}, "webhook_endpoint": w.receiver.url(&hook)})).await;
    let b = w.api.submit(&target, json!({"model_input": {"b": 1}})).await;
    assert_eq!(w.api.queue(&target).await["num_queued_requests"], 2);

    let answer = w.api.send("DELETE", &format!("/async_request/{a}"), Some(keys::FULL), &[], Body::None).await;
    let answer = answer.expect(200).json();
    assert_eq!(
        (answer["request_id"].as_str(), answer["canceled"].as_bool()),
        (Some(a.as_str()), Some(true)),
        "{answer}"
    );
    assert!(answer["message"].is_string(), "{answer}");
    let answer = w.api.send("POST", &format!("/async_request/{b}/cancel"), Some(keys::FULL), &[], Body::None).await;
    assert_eq!(answer.expect(200).json()["canceled"], true);

    for id in [&a, &b] {
        let s = w.api.status(id).await;
        assert_eq!(s["status"], "CANCELED", "{s}");
        assert!(s.get("output").is_none(), "{s}");
    }
    assert_eq!(w.api.status(&a).await["webhook_status"], "CANCELED");
    // Stopped before compute: the upstream's queue no longer holds them.
    let q = w.api.queue(&target).await;
    assert_eq!((q["num_queued_requests"].as_u64(), q["num_in_progress_requests"].as_u64()), (Some(0), Some(1)), "{q}");
    // Canceling again changes nothing.
    let again = w.api.send("DELETE", &format!("/async_request/{a}"), Some(keys::FULL), &[], Body::None).await;
    assert_eq!(again.expect(200).json()["canceled"], false);

    // Once the blocker is done, nothing ran after it and both stay CANCELED without output.
    w.api.status_until(&block, 30 * SECOND, "the blocker to end", |s| s["status"] == "SUCCEEDED").await;
    let q = w.api.queue(&target).await;
    assert_eq!((q["num_queued_requests"].as_u64(), q["num_in_progress_requests"].as_u64()), (Some(0), Some(0)), "{q}");
    for id in [&a, &b] {
        let s = w.api.status(id).await;
        assert_eq!(s["status"], "CANCELED", "{s}");
        assert!(s.get("output").is_none(), "{s}");
        assert_eq!(in_progress_ms(&s), 0, "no compute: {s}");
    }
    assert!(w.receiver.deliveries(&hook).is_empty(), "a canceled job sends no webhook");
}

async fn cancel_an_in_progress_job(w: Arc<World>) {
    let (target, _) = own_target(&w);
    let input = json!({"sleep_ms": 2500, "running": true});
    let id = w.api.submit(&target, json!({"model_input": input})).await;
    w.api.status_until(&id, 20 * SECOND, "the job to be IN_PROGRESS", |s| s["status"] == "IN_PROGRESS").await;
    let answer = w.api.send("DELETE", &format!("/async_request/{id}"), Some(keys::FULL), &[], Body::None).await;
    let answer = answer.expect(200).json();
    assert_eq!(answer["canceled"], false, "{answer}");
    assert!(answer["message"].as_str().is_some_and(|m| m.contains("IN_PROGRESS")), "the reason: {answer}");
    let s = w.api.status(&id).await;
    assert_eq!(s["cancel_requested"], true, "{s}");
    let done = w.api.status_until(&id, 30 * SECOND, "the job's real end", |s| s["status"] == "SUCCEEDED").await;
    assert_eq!(done["output"], input);
    assert_eq!(done["cancel_requested"], true);
    assert!(in_progress_ms(&done) > 0, "billed compute shows in usage: {}", done["usage"]);
}

async fn queue_status_and_wake(w: Arc<World>) {
    let (target, dep) = own_target(&w);
    blocker(&w, &target, 2000).await;
    w.api.submit(&target, json!({"model_input": {"q": 1}})).await;
    w.api.submit(&target, json!({"model_input": {"q": 2}})).await;
    let q = w.api.queue(&target).await;
    assert_eq!(q["model_id"], "demo", "the gateway's id for the model: {q}");
    assert_eq!(q["deployment_id"], dep, "{q}");
    assert!(q["num_queued_requests"].as_u64() >= Some(1), "{q}");
    assert_eq!(q["num_queued_requests"], 2, "{q}");
    assert_eq!(q["num_in_progress_requests"], 1, "{q}");
    let q = w.api.get("/chains/demo-chain/production/async_queue_status").await.expect(200).json();
    assert_eq!(q["chain_id"], "demo-chain", "{q}");
    for path in
        ["/models/demo/production/wake", &format!("/models/demo/{target}/wake"), "/chains/demo-chain/development/wake"]
    {
        let a = w.api.send("POST", path, Some(keys::FULL), &[], Body::None).await;
        a.expect(202);
        assert!(a.body.is_empty(), "{path}: empty body, got {:?}", a.text());
    }
}

// ---------------------------------------------------------------- outbound webhooks

async fn outbound_webhook_is_signed_both_ways(w: Arc<World>) {
    let hook = w.unique("signed");
    let input = json!({"deliver": "me", "list": [1, 2]});
    let id = w.api.submit("production", json!({"model_input": input, "webhook_endpoint": w.receiver.url(&hook)})).await;
    let d = eventually("the delivery", 30 * SECOND, || async {
        w.receiver.deliveries(&hook).into_iter().next().ok_or_else(|| "no delivery yet".to_owned())
    })
    .await;
    d.assert_signed(secrets::OUTBOUND_WEBHOOK_SECRET);
    assert_eq!(d.header("x-baseten-request-id"), id);
    assert!(d.header("content-type").starts_with("application/json"));
    // A known length, not chunked: receivers that read `Content-Length` bytes get the body.
    assert_eq!(d.header("content-length"), d.body.len().to_string(), "{:?}", d.headers);
    assert_eq!(d.header("transfer-encoding"), "", "{:?}", d.headers);
    let p = d.json();
    assert_eq!(p["request_id"], id, "{p}");
    assert_eq!(p["model_id"], "demo", "{p}");
    assert_eq!(p["deployment_id"], "dep-demo-prod", "{p}");
    assert_eq!(p["type"], "async_request_completed", "{p}");
    assert!(p["time"].as_str().is_some_and(|t| t.contains('T')), "{p}");
    assert_eq!(p["data"], input, "{p}");
    assert_eq!(p["errors"], json!([]), "{p}");
    let ts: u64 = d.header("webhook-timestamp").parse().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(ts.abs_diff(now) < 120, "webhook-timestamp {ts} is now ({now})");
    let s =
        w.api.status_until(&id, 10 * SECOND, "webhook_status SUCCEEDED", |s| s["webhook_status"] == "SUCCEEDED").await;
    assert_eq!(s["status"], "SUCCEEDED");
    assert_eq!(s["output"], input);
    let attempts = s["webhook"]["attempts"].as_array().cloned().unwrap_or_default();
    assert_eq!(attempts.len(), 1, "{s}");
    assert_eq!(attempts[0]["status_code"], 200, "{s}");
    assert_eq!(w.receiver.deliveries(&hook).len(), 1, "delivered once");
}

async fn outbound_webhook_retried_until_delivered(w: Arc<World>) {
    let hook = w.unique("flaky");
    w.receiver.fail_first(&hook, 2);
    let input = json!({"retry": "me"});
    let id = w.api.submit("production", json!({"model_input": input, "webhook_endpoint": w.receiver.url(&hook)})).await;
    let s =
        w.api.status_until(&id, 30 * SECOND, "the third attempt to land", |s| s["webhook_status"] == "SUCCEEDED").await;
    assert_eq!(s["status"], "SUCCEEDED", "{s}");
    let codes: Vec<Value> =
        s["webhook"]["attempts"].as_array().unwrap().iter().map(|a| a["status_code"].clone()).collect();
    assert_eq!(codes, [json!(500), json!(500), json!(200)], "{s}");
    let ds = w.receiver.deliveries(&hook);
    assert_eq!(ds.iter().map(|d| d.answered).collect::<Vec<_>>(), [500, 500, 200]);
    for d in &ds {
        d.assert_signed(secrets::OUTBOUND_WEBHOOK_SECRET);
        assert_eq!(d.header("webhook-id"), ds[0].header("webhook-id"), "webhook-id unchanged across attempts");
        assert_eq!(d.json()["data"], input);
    }
    assert!(ds[1].at > ds[0].at && ds[2].at > ds[1].at);
}

async fn outbound_webhook_that_never_succeeds(w: Arc<World>) {
    let hook = w.unique("down");
    w.receiver.always(&hook, 503);
    let refused = format!("http://127.0.0.1:{}/hook/nobody", w.closed_port);
    let input = json!({"lost": "webhook"});
    let to_503 =
        w.api.submit("production", json!({"model_input": input, "webhook_endpoint": w.receiver.url(&hook)})).await;
    let to_closed = w.api.submit("development", json!({"model_input": input, "webhook_endpoint": refused})).await;
    for (id, what) in [(&to_503, "always 503"), (&to_closed, "connection refused")] {
        let s = w.api.status_until(id, 40 * SECOND, what, |s| s["webhook_status"] == "FAILED").await;
        assert_eq!(s["status"], "WEBHOOK_FAILED", "{what}: {s}");
        assert_eq!(s["output"], input, "{what}: the output is still pollable: {s}");
        let attempts = s["webhook"]["attempts"].as_array().cloned().unwrap_or_default();
        assert_eq!(attempts.len(), 4, "{what}: max_attempts 4: {s}");
        if id == &to_closed {
            assert!(attempts.iter().all(|a| a["status_code"].is_null() && a["error"].is_string()), "{s}");
        } else {
            assert!(attempts.iter().all(|a| a["status_code"] == 503), "{s}");
        }
    }
    assert_eq!(w.receiver.deliveries(&hook).len(), 4);
}

/// A receiver whose answer breaks after its status (a body cut short, a body that never ends)
/// costs one attempt, recorded with the status it sent, and holds up nothing: the next job's
/// webhook is delivered as usual.
async fn receivers_with_a_truncated_or_endless_body_cost_one_failed_attempt_each(w: Arc<World>) {
    use crate::hostile::{HostileReceiver, Misbehavior};
    let truncated = HostileReceiver::start(Misbehavior::TruncatedBody).await;
    let endless = HostileReceiver::start(Misbehavior::EndlessBody).await;
    let mut hostile = Vec::new();
    for (receiver, status) in [(&truncated, 500), (&endless, 503)] {
        let input = json!({"to": receiver.url()});
        let id = w.api.submit("production", json!({"model_input": input, "webhook_endpoint": receiver.url()})).await;
        hostile.push((id, receiver, status, input));
    }
    for (id, receiver, status, input) in &hostile {
        let s = w
            .api
            .status_until(id, 30 * SECOND, "a recorded delivery attempt", |s| {
                s["webhook"]["attempts"].as_array().is_some_and(|a| !a.is_empty())
            })
            .await;
        let attempt = &s["webhook"]["attempts"][0];
        assert_eq!(attempt["status_code"], *status, "the status it sent, its body unread: {s}");
        assert_ne!(s["webhook_status"], "SUCCEEDED", "{s}");
        assert_eq!((&s["status"], &s["output"]), (&json!("SUCCEEDED"), input), "the output is still pollable: {s}");
        assert!(receiver.requests() >= 1);
    }
    let hook = w.unique("after-hostile");
    let input = json!({"after": "the hostile receivers"});
    let id = w.api.submit("production", json!({"model_input": input, "webhook_endpoint": w.receiver.url(&hook)})).await;
    w.api.status_until(&id, 20 * SECOND, "the next webhook delivered", |s| s["webhook_status"] == "SUCCEEDED").await;
    let deliveries = w.receiver.deliveries(&hook);
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].json()["data"], input);
}

// ---------------------------------------------------------------- inbox

async fn inbox_rejects_unsigned_and_forged_deliveries(w: Arc<World>) {
    let (target, dep) = own_target(&w);
    let input = json!({"sleep_ms": 2000, "genuine": true});
    let id = w.api.submit(&target, json!({"model_input": input})).await;
    let before = w.api.status(&id).await;
    let now = unix_now();
    let payload = |data: Value, time: String| {
        json!({"request_id": "0123456789abcdef0123456789abcdef", "model_id": "demo", "deployment_id": dep,
               "type": "async_request_completed", "time": time, "data": data, "errors": []})
        .to_string()
    };
    let forged = payload(json!({"forged": true}), rfc3339(now));
    let genuine_sig = format!("v1={}", hmac_hex(secrets::BASETEN_WEBHOOK_SECRET, forged.as_bytes()));
    let replayed_body = payload(json!({"forged": "changed"}), rfc3339(now));
    let stale = payload(json!({"forged": "old"}), rfc3339(now - 3600));
    let stale_sig = format!("v1={}", hmac_hex(secrets::BASETEN_WEBHOOK_SECRET, stale.as_bytes()));
    let wrong_sig = format!("v1={}", hmac_hex("not-the-secret", forged.as_bytes()));
    let cases: Vec<(&str, Option<String>, String, &str)> = vec![
        ("unsigned", None, forged.clone(), "INVALID_SIGNATURE"),
        ("wrong secret", Some(wrong_sig), forged.clone(), "INVALID_SIGNATURE"),
        ("garbage header", Some("v1=zz,nonsense".to_owned()), forged.clone(), "INVALID_SIGNATURE"),
        ("replayed with a changed body", Some(genuine_sig.clone()), replayed_body, "INVALID_SIGNATURE"),
        ("correctly signed but an hour old", Some(stale_sig), stale, "STALE_WEBHOOK"),
    ];
    let inbox = w.inbox_path(&id).await;
    for (what, sig, body, code) in cases {
        let headers: Vec<(&str, &str)> = sig.as_deref().map(|s| vec![("x-baseten-signature", s)]).unwrap_or_default();
        let a = w.api.send("POST", &inbox, None, &headers, Body::Raw(body.into_bytes())).await;
        let b = a.expect_error(401, code);
        assert!(b["message"].is_string(), "{what}");
        assert!(a.header("retry-after").is_none(), "{what}: a refusal is final");
    }
    // A genuine signature at a URL that is not the one the gateway gave for the job (no token,
    // another job's, a made-up one): refused before any job is touched or created.
    let (body, sig) = signed_inbox_payload("0123456789abcdef0123456789abcdef", json!({"x": 1}));
    let headers = [("x-baseten-signature", sig.as_str())];
    let ghost = "fedcba9876543210fedcba9876543210";
    let token = inbox.rsplit('/').next().unwrap();
    for path in [
        format!("/webhooks/baseten/{id}"),
        format!("/webhooks/baseten/{id}/{}", "0".repeat(32)),
        format!("/webhooks/baseten/{ghost}/{token}"),
    ] {
        let a = w.api.send("POST", &path, None, &headers, Body::Raw(body.clone().into_bytes())).await;
        a.expect_error(401, "INVALID_SIGNATURE");
    }
    w.api.get(&format!("/async_request/{ghost}")).await.expect_error(404, "REQUEST_NOT_FOUND");

    // Nothing was stored: the record reads as before, and the job ends with its real output.
    let after = w.api.status(&id).await;
    for field in ["status", "status_at", "errors", "webhook_status", "created_at"] {
        if after["status"] == before["status"] {
            assert_eq!(after[field], before[field], "{field}: {before} vs {after}");
        }
    }
    assert!(after.get("output").is_none(), "{after}");
    let done = w.api.status_until(&id, 30 * SECOND, "the genuine result", |s| s["status"] == "SUCCEEDED").await;
    assert_eq!(done["output"], input, "the forged data never landed: {done}");
}

/// Known gateway bug (reported): a correctly signed delivery to an inbox path whose id is not
/// a request id is routed as stateless (no store) and answered 503 STORE_UNAVAILABLE with
/// `Retry-After: 1`, inviting the upstream to retry a delivery that can never succeed.
async fn inbox_path_that_is_not_a_request_id_is_404(w: Arc<World>) {
    let (body, sig) = signed_inbox_payload("0123456789abcdef0123456789abcdef", json!({"x": 1}));
    let headers = [("x-baseten-signature", sig.as_str())];
    let a =
        w.api.send("POST", "/webhooks/baseten/not-a-request-id", None, &headers, Body::Raw(body.into_bytes())).await;
    a.expect_error(404, "REQUEST_NOT_FOUND");
}

// ---------------------------------------------------------------- bad input

/// One row of the bad-input table: what, method, path, key, extra headers, body, the expected
/// status and `code`, and a word the message must contain (the field it names).
type Refusal<'a> =
    (&'a str, &'a str, String, Option<&'a str>, Vec<(&'a str, &'a str)>, Body, u16, &'a str, Option<&'a str>);

async fn bad_input_is_refused_and_changes_nothing(w: Arc<World>) {
    // A finished job, to compare before and after.
    let done_id = w.api.submit("environments/conformance", json!({"model_input": {"keep": "me"}})).await;
    let done = w.api.status_until(&done_id, 20 * SECOND, "the reference job", |s| s["status"] == "SUCCEEDED").await;
    // A blocker on our own deployment: any submit that slipped through would show as queued.
    let (target, _) = own_target(&w);
    blocker(&w, &target, 4000).await;
    let submit = format!("/models/demo/{target}/async_predict");
    let big = {
        let mut body = br#"{"model_input": ""#.to_vec();
        body.resize(256 * 1024 + 1 - 2, b'a');
        body.extend_from_slice(br#""}"#);
        assert_eq!(body.len(), 256 * 1024 + 1);
        body
    };
    let raw = |s: &str| Body::Raw(s.as_bytes().to_vec());
    let j = Body::Json;
    let status_path = format!("/async_request/{done_id}");
    #[rustfmt::skip]
    let table: Vec<Refusal> = vec![
        ("malformed JSON", "POST", submit.clone(), Some(keys::FULL), vec![], raw(r#"{"model_input": "#), 400, "MALFORMED_JSON", None),
        ("not an object", "POST", submit.clone(), Some(keys::FULL), vec![], raw("[1]"), 400, "MALFORMED_JSON", None),
        ("missing model_input", "POST", submit.clone(), Some(keys::FULL), vec![], j(json!({"priority": 1})), 400, "INVALID_ARGUMENT", Some("model_input")),
        ("priority 3", "POST", submit.clone(), Some(keys::FULL), vec![], j(json!({"model_input": 1, "priority": 3})), 400, "INVALID_ARGUMENT", Some("priority")),
        ("max_time_in_queue_seconds 5", "POST", submit.clone(), Some(keys::FULL), vec![], j(json!({"model_input": 1, "max_time_in_queue_seconds": 5})), 400, "INVALID_ARGUMENT", Some("max_time_in_queue_seconds")),
        ("max_attempts 11", "POST", submit.clone(), Some(keys::FULL), vec![], j(json!({"model_input": 1, "inference_retry_config": {"max_attempts": 11}})), 400, "INVALID_ARGUMENT", Some("inference_retry_config.max_attempts")),
        ("unknown field", "POST", submit.clone(), Some(keys::FULL), vec![], j(json!({"model_input": 1, "webhok_endpoint": "https://x.example"})), 400, "INVALID_ARGUMENT", Some("webhok_endpoint")),
        ("http webhook to a public host", "POST", submit.clone(), Some(keys::FULL), vec![], j(json!({"model_input": 1, "webhook_endpoint": "http://hooks.example.com/x"})), 400, "INVALID_ARGUMENT", Some("webhook_endpoint")),
        ("metadata webhook", "POST", submit.clone(), Some(keys::FULL), vec![], j(json!({"model_input": 1, "webhook_endpoint": "https://169.254.169.254/x"})), 400, "INVALID_ARGUMENT", Some("webhook_endpoint")),
        ("bad Idempotency-Key", "POST", submit.clone(), Some(keys::FULL), vec![("idempotency-key", "has space")], j(json!({"model_input": 1})), 400, "INVALID_ARGUMENT", Some("Idempotency-Key")),
        ("256 KiB + 1 body", "POST", submit.clone(), Some(keys::FULL), vec![], Body::Raw(big), 413, "PAYLOAD_TOO_LARGE", None),
        ("unknown model, async", "POST", "/models/nope/production/async_predict".into(), Some(keys::FULL), vec![], j(json!({"model_input": 1})), 404, "MODEL_DOES_NOT_EXIST", Some("nope")),
        ("unknown model, sync", "POST", "/models/nope/production/predict".into(), Some(keys::FULL), vec![], j(json!({})), 404, "MODEL_DOES_NOT_EXIST", None),
        ("unknown chain", "POST", "/chains/nope/production/run_remote".into(), Some(keys::FULL), vec![], j(json!({})), 404, "MODEL_DOES_NOT_EXIST", None),
        ("bad endpoint", "POST", "/models/demo/production/nope".into(), Some(keys::FULL), vec![], j(json!({})), 404, "NOT_FOUND", None),
        ("bad target", "POST", "/models/demo/staging/predict".into(), Some(keys::FULL), vec![], j(json!({})), 404, "NOT_FOUND", None),
        ("chain endpoint on a model", "POST", "/models/demo/production/run_remote".into(), Some(keys::FULL), vec![], j(json!({})), 404, "NOT_FOUND", None),
        ("no route", "GET", "/nothing/here".into(), Some(keys::FULL), vec![], Body::None, 404, "NOT_FOUND", None),
        ("unknown request id", "GET", "/async_request/0123456789abcdef0123456789abcdef".into(), Some(keys::FULL), vec![], Body::None, 404, "REQUEST_NOT_FOUND", None),
        ("not a request id", "GET", "/async_request/not-an-id".into(), Some(keys::FULL), vec![], Body::None, 404, "REQUEST_NOT_FOUND", None),
        ("GET on predict", "GET", "/models/demo/production/predict".into(), Some(keys::FULL), vec![], Body::None, 405, "METHOD_NOT_ALLOWED", None),
        ("PUT on a request", "PUT", status_path.clone(), Some(keys::FULL), vec![], Body::None, 405, "METHOD_NOT_ALLOWED", None),
        ("POST on queue status", "POST", format!("/models/demo/{target}/async_queue_status"), Some(keys::FULL), vec![], Body::None, 405, "METHOD_NOT_ALLOWED", None),
        ("missing key", "POST", submit.clone(), None, vec![], j(json!({"model_input": 1})), 401, "UNAUTHORIZED", None),
        ("wrong key", "POST", submit.clone(), Some(keys::UNKNOWN), vec![], j(json!({"model_input": 1})), 401, "UNAUTHORIZED", None),
        ("Basic scheme", "GET", status_path.clone(), None, vec![("authorization", "Basic Zm9vOmJhcg==")], Body::None, 401, "UNAUTHORIZED", None),
        ("missing key, sync", "POST", "/models/demo/production/predict".into(), None, vec![], j(json!({})), 401, "UNAUTHORIZED", None),
        ("out-of-scope operation", "POST", submit.clone(), Some(keys::NARROW), vec![], j(json!({"model_input": 1})), 403, "FORBIDDEN", None),
        ("out-of-scope chain", "POST", "/chains/demo-chain/production/run_remote".into(), Some(keys::NARROW), vec![], j(json!({})), 403, "FORBIDDEN", None),
        ("out-of-scope cancel", "DELETE", status_path.clone(), Some(keys::NARROW), vec![], Body::None, 403, "FORBIDDEN", None),
        ("out-of-scope wake", "POST", "/models/demo/production/wake".into(), Some(keys::NARROW), vec![], Body::None, 403, "FORBIDDEN", None),
        ("out-of-scope queue status", "GET", format!("/models/demo/{target}/async_queue_status"), Some(keys::NARROW), vec![], Body::None, 403, "FORBIDDEN", None),
    ];
    let mut failures = Vec::new();
    for (what, method, path, key, headers, body, status, code, mentions) in table {
        let a = w.api.send(method, &path, key, &headers, body).await;
        let ok = a.status == status && {
            let b: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
            b["code"] == code
                && b["error_code"].as_str().is_some_and(|c| crate::baseten_schema::ERROR_CODES.contains(&c))
                && b["message"].as_str().is_some_and(|m| !m.is_empty() && mentions.is_none_or(|f| m.contains(f)))
                && b["error"] == b["message"]
        };
        if !ok {
            failures.push(format!("{what}: {method} {path} -> {} {} (want {status} {code})", a.status, a.text()));
        }
        if status == 405 && a.status == 405 && a.header("allow").is_none() {
            failures.push(format!("{what}: 405 without an Allow header"));
        }
    }
    assert!(failures.is_empty(), "refusals that were wrong:\n{}", failures.join("\n"));

    // Nothing changed: no job slipped into the queue, the finished job reads the same.
    let q = w.api.queue(&target).await;
    assert_eq!((q["num_queued_requests"].as_u64(), q["num_in_progress_requests"].as_u64()), (Some(0), Some(1)), "{q}");
    assert_eq!(w.api.status(&done_id).await, done);
    // The narrow key may read statuses, but only of its own jobs: another key's is not there.
    let a = w.api.send("GET", &status_path, Some(keys::NARROW), &[], Body::None).await;
    a.expect_error(404, "REQUEST_NOT_FOUND");
}

async fn cors_preflight_and_origins(w: Arc<World>) {
    let origin = crate::BROWSER_ORIGIN;
    let path = "/models/demo/production/predict";
    let pre = w
        .api
        .send("OPTIONS", path, None, &[("origin", origin), ("access-control-request-method", "POST")], Body::None)
        .await;
    pre.expect(204);
    // No body, so no framing either (RFC 9110: never a Content-Length on a 204).
    assert_eq!(pre.header("content-length"), None, "{:?}", pre.headers);
    assert!(pre.header("access-control-allow-methods").is_some_and(|m| m.contains("POST")), "{:?}", pre.headers);
    assert!(
        pre.header("access-control-allow-headers").is_some_and(|h| h.contains("authorization")),
        "{:?}",
        pre.headers
    );
    // A preflight carries no credentials: with browser tokens enabled it is answered for any
    // origin (a token's origins are only known from the real request, checked below).
    let any = w.api.send("OPTIONS", path, None, &[("origin", "https://evil.example")], Body::None).await;
    any.expect(204);
    // The real request: the allowed origin is echoed (never `*`), the request id is exposed.
    let a = w.api.send("POST", path, Some(keys::NARROW), &[("origin", origin)], Body::Json(json!({"cors": 1}))).await;
    assert_eq!(a.expect(200).json(), json!({"cors": 1}));
    assert_eq!(a.header("access-control-allow-origin"), Some(origin), "{:?}", a.headers);
    assert!(a.header("access-control-expose-headers").is_some_and(|h| h.contains("x-baseten-request-id")));
    // A key without origins may not be used from a browser; another origin is refused.
    let a = w.api.send("POST", path, Some(keys::FULL), &[("origin", origin)], Body::Json(json!({}))).await;
    a.expect_error(403, "FORBIDDEN");
    let a = w
        .api
        .send("POST", path, Some(keys::NARROW), &[("origin", "https://evil.example")], Body::Json(json!({})))
        .await;
    a.expect_error(403, "FORBIDDEN");
    assert!(a.header("access-control-allow-origin").is_none());
}

// ---------------------------------------------------------------- durability

async fn browser_tokens_are_scoped_to_their_origins_and_jobs(w: Arc<World>) {
    let page = "https://page.conformance.example";
    let mint = |origin: &'static str| {
        let api = w.api.clone();
        async move {
            let body = json!({"models": ["demo"], "operations": ["async_predict", "status", "cancel"], "origins": [origin],
                "ttl_seconds": 120});
            let a = api.send("POST", "/browser_tokens", Some(keys::FULL), &[], Body::Json(body)).await;
            a.expect(201).json()["token"].as_str().unwrap().to_owned()
        }
    };
    let (alice, bob) = (mint(page).await, mint(page).await);
    let (target, _) = own_target(&w);
    let path = format!("/models/demo/{target}/async_predict");
    let a = w
        .api
        .send("POST", &path, Some(&alice), &[("origin", page)], Body::Json(json!({"model_input": {"t": 1}})))
        .await;
    let id = a.request_id();
    assert_eq!(a.header("access-control-allow-origin"), Some(page), "{:?}", a.headers);
    let status = format!("/async_request/{id}");
    w.api.send("GET", &status, Some(&alice), &[("origin", page)], Body::None).await.expect(200);
    // Another token's job, and another key's, are answered as jobs that do not exist.
    for (key, origin) in [(bob.as_str(), Some(page)), (keys::OTHER, None)] {
        let headers: Vec<(&str, &str)> = origin.map(|o| ("origin", o)).into_iter().collect();
        for method in ["GET", "DELETE"] {
            w.api.send(method, &status, Some(key), &headers, Body::None).await.expect_error(404, "REQUEST_NOT_FOUND");
        }
    }
    let evil = w.api.send("GET", &status, Some(&alice), &[("origin", "https://evil.example")], Body::None).await;
    evil.expect_error(403, "FORBIDDEN");
    assert!(evil.header("access-control-allow-origin").is_none());
    // Out of the token's scope: another operation, a token minting, a forged token.
    let wake = format!("/models/demo/{target}/wake");
    w.api.send("POST", &wake, Some(&alice), &[("origin", page)], Body::None).await.expect_error(403, "FORBIDDEN");
    w.api
        .send("POST", "/browser_tokens", Some(&alice), &[], Body::Json(json!({})))
        .await
        .expect_error(403, "FORBIDDEN");
    let forged = format!("{}A", alice);
    w.api.send("GET", &status, Some(&forged), &[("origin", page)], Body::None).await.expect_error(401, "UNAUTHORIZED");
    let s = w.api.status_until(&id, 30 * SECOND, "the token's job to succeed", |s| s["status"] == "SUCCEEDED").await;
    assert_eq!(s["output"], json!({"t": 1}));
}

/// Key OTHER binds a browser token to key FULL's job. The mint is refused (the job is at hand
/// where the mint runs); a token with that binding, signed as a mint would sign it, reads and
/// cancels nothing: both answer as for a job that does not exist, and the job runs on.
async fn a_token_bound_to_another_keys_job_sees_and_cancels_nothing(w: Arc<World>) {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine as _;
    let page = "https://page.conformance.example";
    let (target, _) = own_target(&w);
    let _blocker = blocker(&w, &target, 3000).await;
    let theirs = w.api.submit(&target, json!({"model_input": {"private": true}})).await;
    let bound =
        json!({"models": ["demo"], "operations": ["status", "cancel"], "origins": [page], "request_id": theirs});
    let a = w.api.send("POST", "/browser_tokens", Some(keys::OTHER), &[], Body::Json(bound.clone())).await;
    a.expect_error(404, "REQUEST_NOT_FOUND");
    let exp = (unix_now() + 300) * 1000;
    let claims = json!({"kid": "other", "jti": "0123456789abcdef0123456789abcdef", "exp": exp, "models": ["demo"],
        "chains": [], "ops": ["status", "cancel"], "origins": [page], "rid": theirs});
    let signed = format!("ept_{}", B64.encode(claims.to_string()));
    let mut mac = Hmac::<Sha256>::new_from_slice(secrets::BROWSER_TOKEN_SECRET.as_bytes()).unwrap();
    mac.update(signed.as_bytes());
    let token = format!("{signed}.{}", B64.encode(mac.finalize().into_bytes()));
    let status = format!("/async_request/{theirs}");
    for method in ["GET", "DELETE"] {
        let a = w.api.send(method, &status, Some(&token), &[("origin", page)], Body::None).await;
        a.expect_error(404, "REQUEST_NOT_FOUND");
    }
    let s = w.api.status(&theirs).await;
    assert_eq!(s["cancel_requested"], false, "{s}");
    // Its own key may bind a token to it.
    let a = w.api.send("POST", "/browser_tokens", Some(keys::FULL), &[], Body::Json(bound)).await;
    let own = a.expect(201).json()["token"].as_str().unwrap().to_owned();
    w.api.send("GET", &status, Some(&own), &[("origin", page)], Body::None).await.expect(200);
    let s = w.api.status_until(&theirs, 30 * SECOND, "the job to run on", |s| s["status"] == "SUCCEEDED").await;
    assert_eq!(s["output"], json!({"private": true}));
}

/// A chat page's token (operation `sync` only) sends raw dot-segments and encoded separators
/// after `sync/`, as no URL-normalizing client would: none reaches the upstream's
/// `async_predict` or another target. The Spin component sees the raw path and refuses it
/// (400); where the runtime resolves it first (workerd), it is the async route, which the
/// token may not use (403). Either way nothing is submitted.
async fn a_sync_token_cannot_walk_out_of_sync_with_dot_segments(w: Arc<World>) {
    let page = "https://chat.conformance.example";
    let body = json!({"models": ["demo"], "operations": ["sync"], "origins": [page]});
    let a = w.api.send("POST", "/browser_tokens", Some(keys::FULL), &[], Body::Json(body)).await;
    let token = a.expect(201).json()["token"].as_str().unwrap().to_owned();
    let marker = w.unique("escape");
    let input = json!({"model_input": {"x": 1}, "webhook_endpoint": format!("https://attacker.example/{marker}")});
    let input = input.to_string();
    for route in [
        "../async_predict",
        "./../async_predict",
        "%2e%2e/async_predict",
        "%2E%2E/async_predict",
        ".%2e/async_predict",
        "..%2fasync_predict",
        "..%5Casync_predict",
        "..\\async_predict",
        "v1/../../../development/predict",
    ] {
        let request = format!(
            "POST /models/demo/production/sync/{route} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
             Origin: {page}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{input}",
            input.len()
        );
        let answer = tokio::time::timeout(20 * SECOND, crate::client::raw_exchange(&w.api.base, request.as_bytes()))
            .await
            .expect("an answer");
        let status: u16 = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_default();
        assert!(matches!(status, 400 | 403 | 404), "sync/{route}: {answer}");
    }
    let escaped = w.upstream.webhook_endpoints().into_iter().filter(|u| u.contains(&marker)).count();
    assert_eq!(escaped, 0, "no async job reached the upstream past the gateway");
}

async fn long_poll_answers_when_the_job_ends(w: Arc<World>) {
    let (target, _) = own_target(&w);
    let id = w.api.submit(&target, json!({"model_input": {"sleep_ms": 1500, "held": true}})).await;
    // One request, held until the job ended: the answer already has the output.
    let a = w.api.send("GET", &format!("/async_request/{id}?wait=25"), Some(keys::FULL), &[], Body::None).await;
    let s = a.expect(200).json();
    assert_eq!(s["status"], "SUCCEEDED", "{s}");
    assert_eq!(s["output"], json!({"sleep_ms": 1500, "held": true}));
    let bad = w.api.send("GET", &format!("/async_request/{id}?wait=31"), Some(keys::FULL), &[], Body::None).await;
    bad.expect_error(400, "INVALID_ARGUMENT");
}

/// The store the runtime gives the gateway (the Worker's Durable Object SQLite, Spin's
/// key-value store) passes the engine's store contract, as the in-memory store does on the
/// host: several times, so checks land in several places, and at once, so they interleave.
/// A key's `requests_per_minute` is exact across the runtime's isolates or instances: of many
/// concurrent requests, exactly the quota pass; the rest are 429 `rate_limited` with
/// `Retry-After` and the `RateLimit` fields, readable by the key's browser origin, and reach no
/// upstream. (A burst that straddles two windows of the clock is run again: each window has
/// its own quota.)
async fn exactly_a_keys_quota_of_concurrent_requests_pass(w: Arc<World>) {
    let minute = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 60;
    let (target, dep) = own_target(&w);
    let path = format!("/models/demo/{target}/predict");
    for _ in 0..3 {
        let began = minute();
        let calls: Vec<_> = (0..20)
            .map(|n| {
                let (api, path) = (w.api.clone(), path.clone());
                tokio::spawn(async move {
                    let headers = [("origin", crate::BROWSER_ORIGIN)];
                    api.send("POST", &path, Some(keys::LIMITED), &headers, Body::Json(json!({"n": n}))).await
                })
            })
            .collect();
        let mut answers = Vec::new();
        for call in calls {
            answers.push(call.await.unwrap());
        }
        // Over the quota, a submit writes no job and reaches no upstream.
        let submit = format!("/models/demo/{target}/async_predict");
        let refused_submit =
            w.api.send("POST", &submit, Some(keys::LIMITED), &[], Body::Json(json!({"model_input": {}}))).await;
        if minute() != began {
            continue;
        }
        refused_submit.expect_error(429, "RATE_LIMITED");
        assert_eq!(w.upstream.accepted(&dep), 0, "a refused submit reaches no upstream");
        let passed = answers.iter().filter(|a| a.status == 200).count();
        assert_eq!(
            passed as u64,
            crate::LIMITED_PER_MINUTE,
            "{:?}",
            answers.iter().map(|a| a.status).collect::<Vec<_>>()
        );
        for refused in answers.iter().filter(|a| a.status != 200) {
            refused.expect_error(429, "RATE_LIMITED");
            assert_eq!(refused.json()["error_code"], "rate_limited");
            let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
            assert!((1..=60).contains(&retry), "{retry}");
            let policy = format!("\"requests_per_minute\";q={};w=60", crate::LIMITED_PER_MINUTE);
            assert_eq!(refused.header("ratelimit-policy"), Some(policy.as_str()));
            assert_eq!(refused.header("ratelimit"), Some(format!("\"requests_per_minute\";r=0;t={retry}").as_str()));
            assert_eq!(refused.header("access-control-allow-origin"), Some(crate::BROWSER_ORIGIN));
            assert!(refused.header("x-request-id").is_some(), "a refusal names its request too");
            let exposed = refused.header("access-control-expose-headers").unwrap_or_default();
            assert!(exposed.contains("ratelimit") && exposed.contains("retry-after"), "{exposed}");
        }
        return;
    }
    panic!("three bursts in a row each straddled a minute");
}

/// The JSON log line of the request the gateway named `request_id`, once its runtime wrote it.
async fn logged_request(w: &World, request_id: &str) -> serde_json::Value {
    crate::client::eventually("the request's log line", 20 * SECOND, || async {
        let logs = w.gateway.logs();
        logs.lines()
            .filter_map(|l| l.find('{').map(|i| &l[i..]))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
            .find(|l| l["request_id"] == request_id)
            .ok_or_else(|| format!("no line with request_id {request_id}"))
    })
    .await
}

/// A caller's W3C `traceparent` reaches the model (its trace id, the gateway's span as the
/// parent); the answer names the request (`X-Request-Id`) and the gateway's part in it
/// (`Server-Timing`); and the runtime's output has the request's one JSON log line, with every
/// field an operator reads and no key, secret or body. Through a job too: its submission
/// carries the submitting request's trace.
async fn a_callers_trace_reaches_the_model_and_each_request_is_logged(w: Arc<World>) {
    let trace_id = crate::sha256_hex(&w.unique("trace"))[..32].to_owned();
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let marker = w.unique("a-body-no-log-may-hold");
    let headers = [("traceparent", traceparent.as_str()), ("tracestate", "congo=t61rcWkgMzE")];
    let a = w
        .api
        .send("POST", "/models/demo/production/predict", Some(keys::FULL), &headers, Body::Json(json!({"m": marker})))
        .await;
    a.expect(200);
    let request_id = a.header("x-request-id").expect("X-Request-Id").to_owned();
    let timing = a.header("server-timing").expect("Server-Timing").to_owned();
    assert!(timing.starts_with("gateway;dur=") && timing.contains("upstream;dur="), "{timing}");
    let reached = w.upstream.traceparents();
    let sent = reached.iter().find(|t| t.contains(&trace_id)).expect("the model got the caller's trace");
    assert_eq!(sent, &format!("00-{trace_id}-{request_id}-01"), "the gateway's span is the parent");

    // An async submit: the job's submission carries the trace of the request that made it.
    let (target, _) = own_target(&w);
    let submit = format!("/models/demo/{target}/async_predict");
    let job_trace = crate::sha256_hex(&w.unique("job-trace"))[..32].to_owned();
    let job_parent = format!("00-{job_trace}-00f067aa0ba902b7-01");
    let answer = w
        .api
        .send(
            "POST",
            &submit,
            Some(keys::FULL),
            &[("traceparent", &job_parent)],
            Body::Json(json!({"model_input": {}})),
        )
        .await;
    let job_id = answer.request_id();
    let submit_span = answer.header("x-request-id").unwrap().to_owned();
    let submitted = w.upstream.traceparents();
    assert!(submitted.contains(&format!("00-{job_trace}-{submit_span}-01")), "{submitted:?}");

    let line = logged_request(&w, &request_id).await;
    for (field, value) in [
        ("route", json!("predict")),
        ("key_id", json!("full")),
        ("model", json!("demo")),
        ("target", json!("production")),
        ("status", json!(200)),
        ("upstream_status", json!(200)),
        ("trace_id", json!(trace_id)),
        ("error_code", json!(null)),
    ] {
        assert_eq!(line[field], value, "{field} in {line}");
    }
    for field in ["time", "duration_ms", "upstream_ms", "bytes_in", "bytes_out", "job_id"] {
        assert!(line.get(field).is_some(), "{field} in {line}");
    }
    assert!(line["duration_ms"].as_f64().unwrap() >= line["upstream_ms"].as_f64().unwrap(), "{line}");
    let job_line = logged_request(&w, &submit_span).await;
    assert_eq!((job_line["route"].clone(), job_line["job_id"].clone()), (json!("async_predict"), json!(job_id)));
    let logs = w.gateway.logs();
    for secret in [keys::FULL, crate::secrets::UPSTREAM_API_KEY, marker.as_str()] {
        assert!(!logs.contains(secret), "the gateway's output holds {secret}");
    }
}

async fn the_store_keeps_the_engines_contract(w: Arc<World>) {
    store_keeps_its_contract(&w.api).await;
}

/// `POST /_store_check` answers that the store keeps its contract; only for the operator.
pub async fn store_keeps_its_contract(api: &crate::client::Api) {
    let check = || api.post("/_store_check", Value::Null);
    let (a, b, c, d) = tokio::join!(check(), check(), check(), check());
    for a in [a, b, c, d] {
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(a.json(), json!({"kept": true}));
    }
    let narrow = api.send("POST", "/_store_check", Some(keys::NARROW), &[], Body::None).await;
    assert_eq!(narrow.status, 403, "{}", narrow.text());
}

async fn durability_across_a_hard_kill(w: Arc<World>) {
    // Jobs on their own deployments, so they run at once. Some end while the gateway is down
    // (the upstream's first inbox delivery fails; its second, 20 s later, must land), some
    // after it is back; one also has a caller webhook to deliver after the restart.
    let hook = w.unique("after-restart");
    let mut jobs = Vec::new();
    for (i, sleep_ms) in [500u64, 1500, 6000, 8000].into_iter().enumerate() {
        let (target, _) = own_target(&w);
        let input = json!({"sleep_ms": sleep_ms, "job": i});
        let mut body = json!({"model_input": input});
        if i == 2 {
            body["webhook_endpoint"] = w.receiver.url(&hook).into();
        }
        jobs.push((w.api.submit(&target, body).await, input));
    }
    w.gateway.restart_hard().await.expect("the gateway restarts on its persisted state");
    for (id, _) in &jobs {
        let s = w.api.status(id).await;
        assert!(["QUEUED", "IN_PROGRESS", "SUCCEEDED"].contains(&s["status"].as_str().unwrap_or_default()), "{s}");
    }
    for (id, input) in &jobs {
        let s =
            w.api.status_until(id, 60 * SECOND, "every accepted job to succeed", |s| s["status"] == "SUCCEEDED").await;
        assert_eq!(&s["output"], input, "{s}");
    }
    let d = eventually("the caller's webhook after the restart", 30 * SECOND, || async {
        w.receiver.deliveries(&hook).into_iter().next().ok_or_else(|| "none yet".to_owned())
    })
    .await;
    d.assert_signed(secrets::OUTBOUND_WEBHOOK_SECRET);
    assert_eq!(d.json()["data"], jobs[2].1);
}
