//! Auth, sync predict, async submission validation, routing and wake.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::support::{assert_is_id, config, start, Upstream, KEY};

async fn predict_with_auth(up: &Upstream, auth: Option<&str>) -> reqwest::Response {
    let mut req = up.client.post(format!("{}/models/demo/production/predict", up.url)).json(&json!({"x": 1}));
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn auth_accepts_bearer_and_api_key_only_with_the_right_key() {
    let up = start(config()).await;
    for auth in [format!("Bearer {KEY}"), format!("Api-Key {KEY}")] {
        let resp = predict_with_auth(&up, Some(&auth)).await;
        assert_eq!(resp.status(), StatusCode::OK, "{auth}");
    }
    for auth in [
        None,
        Some("Bearer nope".to_owned()),
        Some("Api-Key nope".to_owned()),
        Some(format!("Basic {KEY}")),
        Some(KEY.to_owned()),
    ] {
        let resp = predict_with_auth(&up, auth.as_deref()).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "UNAUTHORIZED");
        assert!(body["message"].is_string());
        assert_eq!(body["error"], body["message"]);
    }
    // Auth applies to every route, known or not.
    let resp = up.client.get(format!("{}/models/demo/async_request/abc", up.url)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn sync_predict_echoes_input_with_a_request_id() {
    let up = start(config()).await;
    let input = json!({"prompt": "hi", "nested": [1, 2, {"a": null}], "sleep_ms": 1});
    for path in [
        "/models/demo/production/predict",
        "/models/demo/development/predict",
        "/models/demo/environments/staging/predict",
        "/models/demo/deployment/abc123/predict",
        "/chains/demo-chain/production/run_remote",
    ] {
        let resp = up.post(path, &input).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let id = resp.headers()["x-baseten-request-id"].to_str().unwrap().to_owned();
        assert_is_id(&id);
        assert_eq!(resp.json::<Value>().await.unwrap(), input, "{path}");
    }
    // Non-object inputs are echoed too.
    let resp = up.post("/models/demo/production/predict", &json!([1, "two"])).await;
    assert_eq!(resp.json::<Value>().await.unwrap(), json!([1, "two"]));
}

#[tokio::test]
async fn sync_predict_passes_fail_status_through() {
    let up = start(config()).await;
    for status in [418u16, 503] {
        let resp = up.post("/models/demo/production/predict", &json!({"fail_status": status})).await;
        assert_eq!(resp.status().as_u16(), status);
        assert_is_id(resp.headers()["x-baseten-request-id"].to_str().unwrap());
        assert_eq!(resp.json::<Value>().await.unwrap(), json!({"error": "demo model failure"}));
    }
    let resp = up.req(reqwest::Method::POST, "/models/demo/production/predict").body("{not json").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn unknown_models_chains_routes_and_requests_are_404() {
    let up = start(config()).await;
    for path in [
        "/models/nope/production/predict",
        "/chains/nope/production/run_remote",
        "/models/demo/production/run_remote",
        "/chains/demo-chain/production/predict",
        "/models/demo/staging/predict",
        "/something",
    ] {
        let resp = up.post(path, &json!({})).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "NOT_FOUND", "{path}");
    }
    let (code, body) = up.get_json("/models/demo/async_request/0123456789abcdef0123456789abcdef").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "NOT_FOUND");
    let (code, _) = up.cancel("0123456789abcdef0123456789abcdef").await;
    assert_eq!(code, StatusCode::NOT_FOUND);

    // A request is only visible under the model that owns it.
    let rid = up.submit(json!({"model_input": 1})).await;
    let (code, _) = up.get_json(&format!("/chains/demo-chain/async_request/{rid}")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn async_submission_is_validated() {
    let up = start(config()).await;
    let path = "/models/demo/production/async_predict";
    let table = [
        (json!({}), "model_input"),
        (json!({"webhook_endpoint": "http://x/"}), "model_input"),
        (json!({"model_input": 1, "priority": 3}), "priority"),
        (json!({"model_input": 1, "priority": "1"}), "priority"),
        (json!({"model_input": 1, "max_time_in_queue_seconds": 5}), "max_time_in_queue_seconds"),
        (json!({"model_input": 1, "max_time_in_queue_seconds": 259_201}), "max_time_in_queue_seconds"),
        (
            json!({"model_input": 1, "inference_retry_config": {"max_attempts": 11}}),
            "inference_retry_config.max_attempts",
        ),
        (
            json!({"model_input": 1, "inference_retry_config": {"max_attempts": 0}}),
            "inference_retry_config.max_attempts",
        ),
        (
            json!({"model_input": 1, "inference_retry_config": {"initial_delay_ms": 10_001}}),
            "inference_retry_config.initial_delay_ms",
        ),
        (
            json!({"model_input": 1, "inference_retry_config": {"max_delay_ms": 60_001}}),
            "inference_retry_config.max_delay_ms",
        ),
        (json!({"model_input": 1, "inference_retry_config": 3}), "inference_retry_config"),
        (json!({"model_input": 1, "webhook_endpoint": 42}), "webhook_endpoint"),
        (json!({"model_input": 1, "webhook_endpoint": "not a url"}), "webhook_endpoint"),
        (json!("just a string"), "object"),
    ];
    for (body, field) in table {
        let resp = up.post(path, &body).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["code"], "INVALID_REQUEST", "{body}");
        let message = err["message"].as_str().unwrap();
        assert!(message.contains(field), "{body}: {message}");
        assert_eq!(err["error"], err["message"]);
    }

    let resp = up
        .req(reqwest::Method::POST, path)
        .header("content-type", "application/json")
        .body(r#"{"model_input": "#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let err: Value = resp.json().await.unwrap();
    assert!(err["message"].as_str().unwrap().contains("JSON"), "{err}");

    // Exactly 256 KiB is accepted; one byte more is 413.
    let body_of = |len: usize| {
        let prefix = r#"{"model_input":""#;
        let suffix = r#""}"#;
        format!("{prefix}{}{suffix}", "a".repeat(len - prefix.len() - suffix.len()))
    };
    let limit = 256 * 1024;
    let resp = up.req(reqwest::Method::POST, path).body(body_of(limit)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = up.req(reqwest::Method::POST, path).body(body_of(limit + 1)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["code"], "PAYLOAD_TOO_LARGE");
}

#[tokio::test]
async fn async_status_record_has_baseten_fields() {
    let up = start(config()).await;
    let rid = up
        .submit_to("/models/demo/environments/staging/async_predict", json!({"model_input": {"secret": "output"}}))
        .await;
    let record = up.wait_status(&rid, "SUCCEEDED").await;
    assert_eq!(record["request_id"], rid.as_str());
    assert_eq!(record["model_id"], "demo");
    assert_eq!(record["deployment_id"], "dep-demo-staging");
    assert_eq!(record["webhook_status"], "NO_WEBHOOK_PROVIDED");
    assert_eq!(record["errors"], json!([]));
    assert_eq!(record["attempts"], 1);
    for field in ["created_at", "status_at", "started_at"] {
        let ts = record[field].as_str().unwrap();
        // e.g. 2026-11-23T05:09:12.123Z
        assert_eq!(ts.len(), 24, "{field}: {ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{field}: {ts}");
    }
    assert!(record["created_at"].as_str() <= record["status_at"].as_str());
    // Like Baseten, the status record never carries the output.
    assert!(!record.to_string().contains("output"), "{record}");
}

#[tokio::test]
async fn wake_is_202_with_an_empty_body() {
    let up = start(config()).await;
    for path in ["/models/demo/production/wake", "/models/demo/development/wake", "/chains/demo-chain/production/wake"]
    {
        let resp = up.req(reqwest::Method::POST, path).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "{path}");
        assert!(resp.bytes().await.unwrap().is_empty(), "{path}");
    }
    let resp = up.req(reqwest::Method::GET, "/models/demo/production/wake").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn host_form_addressing() {
    let up = start(config()).await;
    let host_req = |method: reqwest::Method, host: &str, path: &str| up.req(method, path).header("host", host);

    let resp = host_req(reqwest::Method::POST, "model-demo.localhost", "/production/predict")
        .json(&json!({"via": "host"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"via": "host"}));

    let resp = host_req(reqwest::Method::POST, "model-demo.api.example.test:8788", "/development/async_predict")
        .json(&json!({"model_input": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let rid = resp.json::<Value>().await.unwrap()["request_id"].as_str().unwrap().to_owned();
    // The same request is visible in both forms.
    let record = up.wait_status(&rid, "SUCCEEDED").await;
    assert_eq!(record["deployment_id"], "dep-demo-dev");
    let resp =
        host_req(reqwest::Method::GET, "model-demo.localhost", &format!("/async_request/{rid}")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap()["request_id"], rid.as_str());

    // Chains: run_remote, async_run_remote, status with chain_id, queue status.
    let resp = host_req(reqwest::Method::POST, "chain-demo-chain.localhost", "/production/run_remote")
        .json(&json!([1]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = host_req(reqwest::Method::POST, "chain-demo-chain.localhost", "/production/async_run_remote")
        .json(&json!({"model_input": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let rid = resp.json::<Value>().await.unwrap()["request_id"].as_str().unwrap().to_owned();
    let (code, record) = up.get_json(&format!("/chains/demo-chain/async_request/{rid}")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(record["chain_id"], "demo-chain");
    assert_eq!(record["deployment_id"], "dep-demo-chain-prod");
    assert!(record.get("model_id").is_none());
    let resp = host_req(reqwest::Method::GET, "chain-demo-chain.localhost", "/production/async_queue_status")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["chain_id"], "demo-chain");
    assert_eq!(body["deployment_id"], "dep-demo-chain-prod");

    // An unknown host-form model is 404; a plain host with a bare path too.
    let resp = host_req(reqwest::Method::POST, "model-nope.localhost", "/production/predict")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = up.post("/production/predict", &json!({})).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}
