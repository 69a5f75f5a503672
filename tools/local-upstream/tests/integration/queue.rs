//! Queue order, queue status, cancel, expiry and retries.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::support::{config, start, Behavior, Receiver, Upstream};

/// Submits a job that holds the (concurrency 1) deployment and waits until it runs.
async fn blocker(up: &Upstream, sleep_ms: u64) -> String {
    let rid = up.submit(json!({"model_input": {"sleep_ms": sleep_ms, "role": "blocker"}})).await;
    up.wait_status(&rid, "IN_PROGRESS").await;
    rid
}

#[tokio::test]
async fn lower_priority_runs_first_and_fifo_within_a_priority() {
    let up = start(config()).await;
    let block = blocker(&up, 1000).await;
    let mut jobs = Vec::new();
    for (name, priority) in [("p2", 2), ("p0", 0), ("p1a", 1), ("p1b", 1), ("p0b", 0)] {
        let rid = up
            .submit(json!({
                // Each job takes a few ms, so start times are strictly ordered.
                "model_input": {"name": name, "sleep_ms": 5},
                "priority": priority,
            }))
            .await;
        jobs.push((name, rid));
    }
    // All of them are waiting behind the blocker.
    for (_, rid) in &jobs {
        assert_eq!(up.status(rid).await["status"], "QUEUED");
    }
    up.wait_status(&block, "SUCCEEDED").await;
    let mut started = Vec::new();
    for (name, rid) in &jobs {
        let record = up.wait_status(rid, "SUCCEEDED").await;
        started.push((record["started_at"].as_str().unwrap().to_owned(), *name));
    }
    started.sort();
    let order: Vec<&str> = started.iter().map(|(_, name)| *name).collect();
    assert_eq!(order, ["p0", "p0b", "p1a", "p1b", "p2"]);
}

#[tokio::test]
async fn queue_status_counts_per_deployment() {
    let up = start(config()).await;
    let path = "/models/demo/production/async_queue_status";
    let (code, body) = up.get_json(path).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        body,
        json!({"model_id": "demo", "deployment_id": "dep-demo-prod",
               "num_queued_requests": 0, "num_in_progress_requests": 0})
    );

    let block = blocker(&up, 1000).await;
    let a = up.submit(json!({"model_input": 1})).await;
    let b = up.submit(json!({"model_input": 2, "priority": 2})).await;
    let (_, body) = up.get_json(path).await;
    assert_eq!(body["num_queued_requests"], 2, "{body}");
    assert_eq!(body["num_in_progress_requests"], 1, "{body}");

    // Other deployments have their own queue: development is idle and runs at once.
    let dev = up.submit_to("/models/demo/development/async_predict", json!({"model_input": 3})).await;
    up.wait_status(&dev, "SUCCEEDED").await;
    assert_eq!(up.status(&a).await["status"], "QUEUED");
    let (_, body) = up.get_json("/models/demo/development/async_queue_status").await;
    assert_eq!(body["deployment_id"], "dep-demo-dev");
    assert_eq!(body["num_queued_requests"], 0);

    for rid in [&block, &a, &b] {
        up.wait_status(rid, "SUCCEEDED").await;
    }
    let (_, body) = up.get_json(path).await;
    assert_eq!(body["num_queued_requests"], 0);
    assert_eq!(body["num_in_progress_requests"], 0);
}

#[tokio::test]
async fn concurrency_runs_several_at_once() {
    let up = start(local_upstream::Config { concurrency: 2, ..config() }).await;
    let a = up.submit(json!({"model_input": {"sleep_ms": 1000}})).await;
    let b = up.submit(json!({"model_input": {"sleep_ms": 1000}})).await;
    let c = up.submit(json!({"model_input": {"sleep_ms": 1}})).await;
    up.wait_status(&a, "IN_PROGRESS").await;
    up.wait_status(&b, "IN_PROGRESS").await;
    let (_, body) = up.get_json("/models/demo/production/async_queue_status").await;
    assert_eq!(body["num_in_progress_requests"], 2, "{body}");
    assert_eq!(body["num_queued_requests"], 1, "{body}");
    up.wait_status(&c, "SUCCEEDED").await;
}

#[tokio::test]
async fn only_queued_requests_can_be_canceled() {
    let up = start(config()).await;
    let mut hook = Receiver::start(Behavior::default()).await;
    let block = blocker(&up, 1000).await;
    let victim = up.submit(json!({"model_input": {"victim": true}, "webhook_endpoint": hook.url})).await;
    let after = up.submit(json!({"model_input": {"after": true}, "webhook_endpoint": hook.url})).await;

    let (code, body) = up.cancel(&victim).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["request_id"], victim.as_str());
    assert_eq!(body["canceled"], true, "{body}");
    let record = up.status(&victim).await;
    assert_eq!(record["status"], "CANCELED");
    assert_eq!(record["webhook_status"], "CANCELED");

    let (code, body) = up.cancel(&block).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["canceled"], false);
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("IN_PROGRESS"), "{message}");

    // The request queued after the canceled one runs and notifies; the
    // canceled one never runs and never notifies.
    let delivery = hook.next().await;
    assert_eq!(delivery.json()["request_id"], after.as_str());
    up.wait_settled(&after).await;
    hook.assert_empty();
    let record = up.status(&victim).await;
    assert_eq!(record["status"], "CANCELED");
    assert_eq!(record["attempts"], 0);
    assert_eq!(record["started_at"], Value::Null);

    // Finished requests cannot be canceled either.
    let (_, body) = up.cancel(&block).await;
    assert_eq!(body["canceled"], false);
    assert!(body["message"].as_str().unwrap().contains("SUCCEEDED"), "{body}");
    let (_, body) = up.cancel(&victim).await;
    assert_eq!(body["canceled"], false);
}

#[tokio::test]
async fn requests_waiting_too_long_expire_and_notify() {
    // Time scale: one queue second is 10 ms, so max_time_in_queue_seconds = 10
    // expires after 100 ms of real time while the blocker holds the queue.
    let up = start(local_upstream::Config { queue_second: Duration::from_millis(10), ..config() }).await;
    let mut hook = Receiver::start(Behavior::default()).await;
    let block = blocker(&up, 3000).await;
    let rid = up
        .submit(json!({
            "model_input": {"late": true},
            "max_time_in_queue_seconds": 10,
            "webhook_endpoint": hook.url,
        }))
        .await;
    let record = up.wait_settled(&rid).await;
    assert_eq!(record["status"], "EXPIRED");
    assert_eq!(record["webhook_status"], "SUCCEEDED");
    assert_eq!(record["errors"][0]["code"], "MODEL_PREDICT_TIMEOUT");
    assert_eq!(record["errors"][0]["message"], "request expired after waiting 10 s in queue");
    assert_eq!(record["attempts"], 0);
    // It expired while the blocker was still running.
    assert_eq!(up.status(&block).await["status"], "IN_PROGRESS");

    let payload = hook.next().await.json();
    assert_eq!(payload["request_id"], rid.as_str());
    assert_eq!(payload["data"], Value::Null);
    assert_eq!(payload["errors"], record["errors"]);
    let (_, body) = up.get_json("/models/demo/production/async_queue_status").await;
    assert_eq!(body["num_queued_requests"], 0);
}

#[tokio::test]
async fn server_errors_are_retried_and_client_errors_are_not() {
    let up = start(config()).await;
    let retry = json!({"max_attempts": 4, "initial_delay_ms": 5, "max_delay_ms": 20});
    let flaky = up.submit(json!({"model_input": {"fail_status": 503}, "inference_retry_config": retry})).await;
    let record = up.wait_status(&flaky, "FAILED").await;
    assert_eq!(record["attempts"], 4);
    assert_eq!(record["errors"][0]["code"], "MODEL_PREDICT_ERROR");
    let message = record["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("503") && message.contains("4 attempts"), "{message}");

    let bad = up.submit(json!({"model_input": {"fail_status": 400}, "inference_retry_config": retry})).await;
    let record = up.wait_status(&bad, "FAILED").await;
    assert_eq!(record["attempts"], 1);
    assert_eq!(record["errors"][0]["code"], "MODEL_PREDICT_ERROR");
    assert!(record["errors"][0]["message"].as_str().unwrap().contains("400"));

    // Default retry config: three attempts in total.
    let default = up
        .submit(json!({"model_input": {"fail_status": 500},
                       "inference_retry_config": {"initial_delay_ms": 0}}))
        .await;
    assert_eq!(up.wait_status(&default, "FAILED").await["attempts"], 3);
}
