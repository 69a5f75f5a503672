//! Signed webhook delivery, secret rotation, retries and failure.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::support::{config, start, Behavior, Receiver, SECRET};

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn success_is_delivered_signed() {
    let up = start(config()).await;
    let mut hook = Receiver::start(Behavior::default()).await;
    let input = json!({"prompt": "hello", "n": [1, 2]});
    let rid = up.submit(json!({"model_input": input, "webhook_endpoint": hook.url})).await;
    let delivery = hook.next().await;

    assert_eq!(delivery.header("content-type"), "application/json");
    assert_eq!(delivery.header("x-baseten-request-id"), rid);
    assert_eq!(delivery.header("x-baseten-signature"), format!("v1={}", hmac_hex(SECRET, &delivery.body)));
    let payload = delivery.json();
    assert_eq!(payload["request_id"], rid.as_str());
    assert_eq!(payload["model_id"], "demo");
    assert_eq!(payload["deployment_id"], "dep-demo-prod");
    assert_eq!(payload["type"], "async_request_completed");
    assert_eq!(payload["data"], input);
    assert_eq!(payload["errors"], json!([]));
    let time = payload["time"].as_str().unwrap();
    assert!(time.len() == 24 && time.ends_with('Z'), "{time}");

    let record = up.wait_settled(&rid).await;
    assert_eq!(record["status"], "SUCCEEDED");
    assert_eq!(record["webhook_status"], "SUCCEEDED");
    hook.assert_empty();
}

#[tokio::test]
async fn rotated_secrets_sign_once_each_newest_first() {
    let up =
        start(local_upstream::Config { webhook_secrets: vec!["new-secret".into(), "old-secret".into()], ..config() })
            .await;
    let mut hook = Receiver::start(Behavior::default()).await;
    up.submit(json!({"model_input": 1, "webhook_endpoint": hook.url})).await;
    let delivery = hook.next().await;
    assert_eq!(
        delivery.header("x-baseten-signature"),
        format!("v1={},v1={}", hmac_hex("new-secret", &delivery.body), hmac_hex("old-secret", &delivery.body))
    );
}

#[tokio::test]
async fn chain_webhooks_carry_model_id_and_chain_id() {
    let up = start(config()).await;
    let mut hook = Receiver::start(Behavior::default()).await;
    let rid = up
        .submit_to(
            "/chains/demo-chain/production/async_run_remote",
            json!({"model_input": {"x": 1}, "webhook_endpoint": hook.url}),
        )
        .await;
    let payload = hook.next().await.json();
    assert_eq!(payload["request_id"], rid.as_str());
    assert_eq!(payload["model_id"], "demo-chain");
    assert_eq!(payload["chain_id"], "demo-chain");
    assert_eq!(payload["data"], json!({"x": 1}));
}

#[tokio::test]
async fn a_failed_first_attempt_is_retried_once() {
    let up = start(config()).await;
    let mut hook = Receiver::start(Behavior { fail_first: 1, ..Behavior::default() }).await;
    let rid = up.submit(json!({"model_input": 1, "webhook_endpoint": hook.url})).await;
    let first = hook.next().await;
    let second = hook.next().await;
    // The retry is the same signed body.
    assert_eq!(first.body, second.body);
    assert_eq!(first.header("x-baseten-signature"), second.header("x-baseten-signature"));
    let record = up.wait_settled(&rid).await;
    assert_eq!(record["status"], "SUCCEEDED");
    assert_eq!(record["webhook_status"], "SUCCEEDED");
    hook.assert_empty();
}

#[tokio::test]
async fn a_timed_out_first_attempt_is_retried() {
    let up = start(local_upstream::Config { webhook_timeout: Duration::from_millis(200), ..config() }).await;
    let mut hook = Receiver::start(Behavior { hang_first: 1, ..Behavior::default() }).await;
    let rid = up.submit(json!({"model_input": 1, "webhook_endpoint": hook.url})).await;
    hook.next().await;
    hook.next().await;
    let record = up.wait_settled(&rid).await;
    assert_eq!(record["status"], "SUCCEEDED");
    assert_eq!(record["webhook_status"], "SUCCEEDED");
}

#[tokio::test]
async fn two_failed_attempts_mark_webhook_failed() {
    let up = start(config()).await;
    let mut hook = Receiver::start(Behavior { fail_first: usize::MAX, ..Behavior::default() }).await;
    let ok = up.submit(json!({"model_input": 1, "webhook_endpoint": hook.url})).await;
    let record = up.wait_settled(&ok).await;
    assert_eq!(record["status"], "WEBHOOK_FAILED");
    assert_eq!(record["webhook_status"], "FAILED");
    hook.next().await;
    hook.next().await;
    hook.assert_empty();

    // A failed request keeps FAILED; only webhook_status records the delivery.
    let failed = up.submit(json!({"model_input": {"fail_status": 422}, "webhook_endpoint": hook.url})).await;
    let record = up.wait_settled(&failed).await;
    assert_eq!(record["status"], "FAILED");
    assert_eq!(record["webhook_status"], "FAILED");
    let payload: Value = hook.next().await.json();
    assert_eq!(payload["data"], Value::Null);
    assert_eq!(payload["errors"][0]["code"], "MODEL_PREDICT_ERROR");
}

#[tokio::test]
async fn an_unreachable_endpoint_fails_delivery() {
    let up = start(config()).await;
    // Bind then drop a listener to get a port nobody listens on.
    let port = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let rid = up
        .submit(json!({"model_input": 1,
                       "webhook_endpoint": format!("http://127.0.0.1:{port}/hook")}))
        .await;
    let record = up.wait_settled(&rid).await;
    assert_eq!(record["status"], "WEBHOOK_FAILED");
    assert_eq!(record["webhook_status"], "FAILED");
}
