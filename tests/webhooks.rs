//! Webhooks in (the inbox that keeps the upstream's results) and out (signed, retried
//! deliveries to callers), through the engine's public API.

#![allow(clippy::unwrap_used)]

mod support;

use base64::Engine as _;
use bytes::Bytes;
use edge_predict::engine::TransportError;
use serde_json::{json, Value};
use support::*;

// ---------- webhook inbox ----------

#[test]
fn the_inbox_accepts_rotated_secrets_and_duplicate_deliveries_change_nothing() {
    let w = World::new();
    let id = w.submit(json!({"model_input": 1}));
    let delivery = w.inbox_delivery(&id, json!("first"), json!([]), OLD_INBOUND_SECRET);
    assert_eq!(w.send(delivery.clone()).status, 200);
    let before = w.snapshot();
    assert_eq!(w.send(delivery).status, 200, "duplicates are acknowledged");
    let later = w.inbox_delivery(&id, json!("second"), json!([]), INBOUND_SECRET);
    assert_eq!(w.send(later).status, 200);
    assert_eq!(w.snapshot(), before, "the first result wins");
    assert_eq!(w.status(&id)["output"], "first");
}

#[test]
fn the_inbox_rejects_unsigned_wrongly_signed_tampered_and_stale_deliveries_and_stores_nothing() {
    let w = World::new();
    let id = w.submit(json!({"model_input": 1}));
    let good = w.inbox_delivery(&id, json!("out"), json!([]), INBOUND_SECRET);
    let before = w.snapshot();

    let mut unsigned = good.clone();
    unsigned.headers_mut().remove("x-baseten-signature");
    w.send(unsigned).assert_error(401, "INVALID_SIGNATURE");

    let wrong = w.inbox_delivery(&id, json!("out"), json!([]), "not-the-secret");
    w.send(wrong).assert_error(401, "INVALID_SIGNATURE");

    let mut tampered = good.clone();
    *tampered.body_mut() = Bytes::from(String::from_utf8_lossy(good.body()).replace("\"out\"", "\"evil\""));
    w.send(tampered).assert_error(401, "INVALID_SIGNATURE");

    let mut garbage = good.clone();
    garbage.headers_mut().insert("x-baseten-signature", "v1=zz,sha256=abc".parse().unwrap());
    w.send(garbage).assert_error(401, "INVALID_SIGNATURE");

    w.advance_ms(301_000);
    w.send(good.clone()).assert_error(401, "STALE_WEBHOOK");
    assert_eq!(w.snapshot(), before);

    // At another job's URL, with that job's token: signed by the upstream, but not that job's
    // request.
    let other = w.submit(json!({"model_input": 2}));
    let before = w.snapshot();
    let mut misdirected = w.inbox_delivery(&id, json!("x"), json!([]), INBOUND_SECRET);
    *misdirected.uri_mut() = w.upstream_job(&other).body["webhook_endpoint"].as_str().unwrap().parse().unwrap();
    w.send(misdirected).assert_error(400, "INVALID_ARGUMENT");
    assert_eq!(w.snapshot(), before);
}

#[test]
fn a_signed_result_replayed_to_another_jobs_inbox_is_refused_even_before_that_job_has_an_upstream_id() {
    let w = World::new();
    let x = w.submit(json!({"model_input": 1}));
    // Y's submission never reached the upstream: it has no upstream id to compare against.
    w.net.upstream_down.set(Some(TransportError::Connect("refused".into())));
    let y = w.submit(json!({"model_input": 2}));
    assert_eq!(w.status(&y)["status"], "QUEUED");
    let before = w.snapshot();
    let delivery = w.inbox_delivery(&x, json!("x's output"), json!([]), INBOUND_SECRET);
    let x_url = delivery.uri().to_string();
    let token = x_url.rsplit('/').next().unwrap();
    for url in [
        format!("https://gw.example/webhooks/baseten/{y}"),
        format!("https://gw.example/webhooks/baseten/{y}/{token}"),
        format!("https://gw.example/webhooks/baseten/{y}/{}", "0".repeat(32)),
    ] {
        let mut replayed = delivery.clone();
        *replayed.uri_mut() = url.parse().unwrap();
        let a = w.send(replayed);
        a.assert_error(401, "INVALID_SIGNATURE");
        assert!(a.json()["message"].as_str().unwrap().contains("inbox URL"), "{url}: {}", a.json());
        // Refused from the request's head: before its body is read or any store is touched.
        let head =
            http::Request::post(url.as_str()).header("x-baseten-signature", "v1=00").header("content-length", "100");
        let admission = w.engine().admit(&head.body(()).unwrap(), w.now(), [0; 16]);
        assert!(matches!(admission, edge_predict::engine::Admission::Refuse(_)), "{url}");
    }
    assert_eq!(w.snapshot(), before, "Y is untouched");
    assert_eq!(w.status(&y)["status"], "QUEUED");
    assert_eq!(w.send(delivery).status, 200, "at its own URL the result lands");
    assert_eq!(w.status(&x)["output"], "x's output");
}

#[test]
fn an_upstream_failure_delivered_to_the_inbox_fails_the_job() {
    let w = World::new();
    let id = w.submit(json!({"model_input": 1}));
    let d =
        w.inbox_delivery(&id, Value::Null, json!([{"code": "MODEL_PREDICT_ERROR", "message": "OOM"}]), INBOUND_SECRET);
    assert_eq!(w.send(d).status, 200);
    let s = w.status(&id);
    assert_eq!(s["status"], "FAILED");
    assert_eq!(s["errors"], json!([{"code": "MODEL_PREDICT_ERROR", "message": "OOM"}]));
    assert!(s.get("output").is_none());
}

// ---------- outbound webhooks ----------

fn verify_delivery(req: &http::Request<Bytes>, id: &str) -> Value {
    let h = req.headers();
    let body = req.body();
    assert_eq!(h["x-baseten-request-id"], id);
    assert_eq!(h["x-baseten-signature"], format!("v1={}", hmac_hex(OUTBOUND_SECRET, body)));
    // Standard Webhooks: HMAC over "{id}.{timestamp}.{body}" with the base64 key after whsec_.
    let key = base64::engine::general_purpose::STANDARD.decode(&OUTBOUND_SECRET[6..]).unwrap();
    let msg_id = h["webhook-id"].to_str().unwrap();
    let ts = h["webhook-timestamp"].to_str().unwrap();
    use hmac::Mac;
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    m.update(format!("{msg_id}.{ts}.").as_bytes());
    m.update(body);
    let expected = base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes());
    assert_eq!(h["webhook-signature"], format!("v1,{expected}"));
    serde_json::from_slice(body).unwrap()
}

#[test]
fn a_result_is_delivered_signed_both_ways_in_basetens_payload() {
    let w = World::new();
    let id = w.submit(json!({"model_input": 1, "webhook_endpoint": "https://hooks.example.com/done"}));
    w.complete(&id, json!({"answer": 42}));
    assert!(w.wake_at.get().is_some_and(|t| t <= w.now()), "delivery is due at once");
    let _ = w.sweep();
    let deliveries = w.net.deliveries.borrow();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].uri().to_string(), "https://hooks.example.com/done");
    let payload = verify_delivery(&deliveries[0], &id);
    assert_eq!(payload["request_id"], id.as_str());
    assert_eq!(payload["model_id"], "demo");
    assert_eq!(payload["deployment_id"], "dep-1");
    assert_eq!(payload["type"], "async_request_completed");
    assert_eq!(payload["data"], json!({"answer": 42}));
    assert_eq!(payload["errors"], json!([]));
    assert_eq!(payload["time"], w.now().rfc3339());
    drop(deliveries);
    let s = w.status(&id);
    assert_eq!(s["webhook_status"], "SUCCEEDED");
    assert_eq!(s["webhook"]["attempts"][0]["status_code"], 200);
}

#[test]
fn a_failing_receiver_gets_the_result_later_with_the_same_webhook_id() {
    let w = World::new();
    w.net.receiver.set(Some(Receiver::FailFirst(3)));
    let id = w.submit(json!({"model_input": 1, "webhook_endpoint": "https://hooks.example.com/done"}));
    w.complete(&id, json!("ok"));
    let start = w.now.get();
    w.run_until(3_600_000, |w| w.net.deliveries.borrow().len() == 4);
    let deliveries = w.net.deliveries.borrow();
    let ids: Vec<_> = deliveries.iter().map(|d| d.headers()["webhook-id"].clone()).collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    for d in deliveries.iter() {
        verify_delivery(d, &id);
    }
    // Backoff 10 s, 20 s, 40 s (policy in the test config) with at most ±20% jitter.
    let elapsed = w.now.get() - start;
    assert!((56_000..=84_000).contains(&elapsed), "{elapsed}");
    drop(deliveries);
    let s = w.status(&id);
    assert_eq!(s["webhook_status"], "SUCCEEDED");
    let codes: Vec<_> = s["webhook"]["attempts"].as_array().unwrap().iter().map(|a| a["status_code"].clone()).collect();
    assert_eq!(codes, [json!(500), json!(500), json!(500), json!(204)]);
}

#[test]
fn a_receiver_that_never_answers_ends_in_webhook_failed_with_the_output_still_pollable() {
    let w = World::new();
    w.net.receiver.set(Some(Receiver::Unreachable));
    let id = w.submit(json!({"model_input": 1, "webhook_endpoint": "https://hooks.example.com/done"}));
    w.complete(&id, json!("kept"));
    w.run_until(24 * 3_600_000, |w| w.status(&id)["webhook_status"] == "FAILED");
    assert_eq!(w.net.deliveries.borrow().len(), 5, "max_attempts in the test config");
    let s = w.status(&id);
    assert_eq!(s["status"], "WEBHOOK_FAILED");
    assert_eq!(s["output"], "kept");
    assert_eq!(s["webhook"]["attempts"][4]["error"], "timeout");
    assert_eq!(s["webhook"]["next_attempt_at"], Value::Null);
}

#[test]
fn a_redirect_counts_as_a_failed_delivery() {
    let w = World::new();
    w.net.receiver.set(Some(Receiver::AlwaysStatus(302)));
    let id = w.submit(json!({"model_input": 1, "webhook_endpoint": "https://hooks.example.com/done"}));
    w.complete(&id, json!("x"));
    w.run_until(24 * 3_600_000, |w| w.status(&id)["webhook_status"] == "FAILED");
    assert_eq!(w.status(&id)["status"], "WEBHOOK_FAILED");
}
