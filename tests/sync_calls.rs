//! Calls relayed to the model without a job: sync predict and run_remote, the `sync/{path}`
//! passthrough, the upstream's platform errors, queue status and wake. Through the engine's
//! public API with an in-memory Baseten; what is asserted is what a caller sees.

#![allow(clippy::unwrap_used)]

mod support;

use bytes::Bytes;
use edge_predict::engine::TransportError;
use serde_json::{json, Value};
use support::*;

// ---------- sync predict / run_remote ----------

#[test]
fn predict_returns_the_models_raw_output_status_and_headers() {
    let w = World::new();
    let mut req =
        w.request("POST", "/models/demo/production/predict", Some(KEY), Bytes::from_static(b"{\"prompt\":\"hi\"}"));
    req.headers_mut().insert("content-type", "application/json".parse().unwrap());
    let a = w.send(req);
    assert_eq!(a.status, 200);
    assert_eq!(a.body, Bytes::from_static(b"{\"prompt\":\"hi\"}"), "no envelope");
    assert_eq!(a.headers["x-baseten-request-id"], "up-sync-1");
    assert_eq!(a.headers["content-type"], "application/json");
    assert!(a.headers.get("x-internal-trace").is_none());
    let sent = w.net.sent.borrow();
    assert_eq!(sent[0].uri().to_string(), "https://upstream.test/models/demo/production/predict");
    assert_eq!(sent[0].headers()["authorization"], format!("Api-Key {UPSTREAM_KEY}"), "upstream's own key");
}

#[test]
fn predict_and_run_remote_reach_every_target_in_both_address_forms() {
    let w = World::new();
    for (target, upstream_target) in [
        ("production", "production"),
        ("development", "development"),
        ("environments/staging", "environments/staging"),
        ("deployment/abc123", "deployment/abc123"),
    ] {
        for (path, host, expect) in [
            (format!("/models/demo/{target}/predict"), "gw.example", format!("/models/demo/{upstream_target}/predict")),
            (format!("/{target}/predict"), "model-demo.gw.example", format!("/models/demo/{upstream_target}/predict")),
            (
                format!("/chains/demo-chain/{target}/run_remote"),
                "gw.example",
                format!("/chains/demo-chain/{upstream_target}/run_remote"),
            ),
            (
                format!("/{target}/run_remote"),
                "chain-demo-chain.gw.example",
                format!("/chains/demo-chain/{upstream_target}/run_remote"),
            ),
        ] {
            let mut req = w.request("POST", &path, Some(KEY), Bytes::from_static(b"[1,2]"));
            req.headers_mut().insert("host", host.parse().unwrap());
            let a = w.send(req);
            assert_eq!(a.status, 200, "{host}{path}");
            assert_eq!(a.body, Bytes::from_static(b"[1,2]"));
            assert_eq!(w.net.sent.borrow().last().unwrap().uri().path(), expect);
        }
    }
}

#[test]
fn sync_routes_pass_any_method_and_query_through_and_answer_unchanged() {
    let w = World::new();
    for (host, path) in [
        ("gw.example", "/models/demo/environments/staging/sync/v1/models?limit=2&x=%20y"),
        ("model-demo.gw.example", "/environments/staging/sync/v1/models?limit=2&x=%20y"),
    ] {
        let mut req = w.request("GET", path, Some(KEY), Bytes::new());
        req.headers_mut().insert("host", host.parse().unwrap());
        req.headers_mut().insert("accept", "application/json".parse().unwrap());
        let a = w.send(req);
        assert_eq!(a.status, 200, "{host}{path}");
        let sent = w.net.sent.borrow().last().cloned().unwrap();
        assert_eq!(sent.method(), "GET");
        assert_eq!(
            sent.uri().to_string(),
            "https://upstream.test/models/demo/environments/staging/sync/v1/models?limit=2&x=%20y"
        );
        assert_eq!(
            sent.headers()["authorization"],
            format!("Api-Key {UPSTREAM_KEY}"),
            "the upstream's key, not the caller's"
        );
        assert_eq!(a.json()["accept"], "application/json");
        assert_eq!(
            (a.headers["etag"].to_str().unwrap(), a.headers["cache-control"].to_str().unwrap()),
            ("\"v1\"", "max-age=60")
        );
        assert!(a.headers.get("x-internal-trace").is_none());
    }
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let a = w.send(w.request(
            method,
            "/models/demo/production/sync/items/7?status=418",
            Some(KEY),
            Bytes::from("{\"a\":1}"),
        ));
        // The server's own answer, whatever its status: no gateway fields are added.
        assert_eq!(a.status, 418, "{method}");
        let body = a.json();
        assert_eq!((body["method"].as_str(), body["body"].as_str()), (Some(method), Some("{\"a\":1}")));
        assert!(body.get("code").is_none(), "{body}");
        assert_eq!(w.net.sent.borrow().last().unwrap().uri().path(), "/models/demo/production/sync/items/7");
    }
    w.send(w.request("HEAD", "/models/demo/production/sync/health", Some(KEY), Bytes::new()))
        .assert_error(405, "METHOD_NOT_ALLOWED");
    // Chains have no sync routes, as on Baseten.
    w.send(w.request("GET", "/chains/demo-chain/production/sync/health", Some(KEY), Bytes::new()))
        .assert_error(404, "NOT_FOUND");
}

#[test]
fn sync_is_an_operation_of_its_own() {
    let w = World::new();
    // The narrow key may predict, not call the model server's routes.
    let a = w.send(w.request("GET", "/models/demo/production/sync/health", Some(NARROW_KEY), Bytes::new()));
    a.assert_error(403, "FORBIDDEN");
    assert!(w.net.sent.borrow().is_empty());
    // A browser token for chat only: sync yes, predict no.
    let minted = w.call(
        "POST",
        "/browser_tokens",
        json!({"models": ["demo"], "operations": ["sync"], "origins": ["https://app.example"], "ttl_seconds": 60}),
    );
    let token = minted.json()["token"].as_str().unwrap().to_owned();
    let with_token = |method: &str, path: &str| {
        let mut r = w.request(method, path, None, Bytes::from_static(b"{}"));
        r.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        r.headers_mut().insert("origin", "https://app.example".parse().unwrap());
        w.send(r)
    };
    let a = with_token("POST", "/models/demo/production/sync/v1/chat/completions");
    assert_eq!(a.status, 200);
    assert_eq!(a.headers.get("access-control-allow-origin").unwrap(), "https://app.example");
    with_token("POST", "/models/demo/production/predict").assert_error(403, "FORBIDDEN");
}

#[test]
fn websockets_are_a_sync_route_and_a_clear_501_where_the_platform_has_none() {
    // The in-memory platform, like Spin's wasi:http 0.2, cannot upgrade a connection.
    let w = World::new();
    let upgrade = |key: Option<&str>| {
        let mut r = w.request("GET", "/models/demo/production/websocket", key, Bytes::new());
        r.headers_mut().insert("upgrade", "websocket".parse().unwrap());
        r.headers_mut().insert("connection", "Upgrade".parse().unwrap());
        w.send(r)
    };
    let a = upgrade(Some(KEY));
    a.assert_error(501, "NOT_IMPLEMENTED");
    let body = a.json();
    assert!(body["message"].as_str().unwrap().contains("WebSockets"), "{body}");
    upgrade(None).assert_error(401, "UNAUTHORIZED");
    upgrade(Some(NARROW_KEY)).assert_error(403, "FORBIDDEN");
    w.send(w.request("POST", "/models/demo/production/websocket", Some(KEY), Bytes::new()))
        .assert_error(405, "METHOD_NOT_ALLOWED");
    assert!(w.net.sent.borrow().is_empty(), "nothing reached the upstream");
}

#[test]
fn regional_hosts_address_their_environment_with_bare_paths() {
    let w = World::new();
    let host = |req: &mut http::Request<Bytes>, h: &str| req.headers_mut().insert("host", h.parse().unwrap());
    for (path, upstream) in [
        ("/predict", "/models/demo/environments/produs/predict"),
        ("/sync/v1/models", "/models/demo/environments/produs/sync/v1/models"),
    ] {
        let mut req = w.request("POST", path, Some(KEY), Bytes::from_static(b"{}"));
        host(&mut req, "model-demo-produs.gw.example");
        assert_eq!(w.send(req).status, 200, "{path}");
        assert_eq!(w.net.sent.borrow().last().unwrap().uri().path(), upstream);
    }
    let mut req = w.request("POST", "/async_predict", Some(KEY), Bytes::from(json!({"model_input": 1}).to_string()));
    host(&mut req, "model-demo-produs.gw.example");
    let id = w.send(req).json()["request_id"].as_str().unwrap().to_owned();
    assert_eq!(w.status(&id)["status"], "QUEUED");
    assert_eq!(w.net.sent.borrow().last().unwrap().uri().path(), "/models/demo/environments/produs/async_predict");
    let mut req = w.request("POST", "/run_remote", Some(KEY), Bytes::from_static(b"{}"));
    host(&mut req, "chain-demo-chain.gw.example");
    assert_eq!(w.send(req).status, 404, "a known id with a dash is that id, not an environment");
    // A path-form target on a regional host is not a route, as on Baseten.
    let mut req = w.request("POST", "/production/predict", Some(KEY), Bytes::from_static(b"{}"));
    host(&mut req, "model-demo-produs.gw.example");
    w.send(req).assert_error(404, "NOT_FOUND");
}

#[test]
fn a_regional_upstream_gets_its_environments_host_and_bare_paths() {
    let mut doc = config_doc();
    doc["models"]["eu"] =
        json!({"upstream": "https://upstream.test/regional/model-eu-{env}", "api_key_secret_name": "UPSTREAM_KEY"});
    let w = World::with_config(doc);
    assert_eq!(w.call("POST", "/models/eu/environments/fra/predict", json!(1)).status, 200);
    assert_eq!(w.net.sent.borrow().last().unwrap().uri().path(), "/regional/model-eu-fra/predict");
    assert_eq!(w.call("GET", "/models/eu/environments/fra/sync/health", Value::Null).status, 200);
    assert_eq!(w.net.sent.borrow().last().unwrap().uri().path(), "/regional/model-eu-fra/sync/health");
    // It serves its environments only: anything else is refused before a job exists.
    let sent = w.net.sent.borrow().len();
    let before = w.snapshot();
    w.call("POST", "/models/eu/production/predict", json!(1)).assert_error(404, "NOT_FOUND");
    w.call("POST", "/models/eu/production/async_predict", json!({"model_input": 1})).assert_error(404, "NOT_FOUND");
    assert_eq!((w.net.sent.borrow().len(), w.snapshot()), (sent, before));
}

#[test]
fn the_v1_front_door_routes_by_the_bodys_model_and_lists_what_a_key_may_use() {
    let mut doc = config_doc();
    doc["models"]["demo"]["openai_model"] = json!("demo-llm");
    doc["models"]["apis"] = json!({
        "upstream": "https://upstream.test/models/apis", "api_key_secret_name": "UPSTREAM_KEY",
        "openai_model": "vendor/big-llm", "openai_base_url": "https://upstream.test/modelapis/v1",
    });
    let w = World::with_config(doc);
    for (model, url) in [
        ("demo-llm", "https://upstream.test/models/demo/production/sync/v1/chat/completions"),
        ("vendor/big-llm", "https://upstream.test/modelapis/v1/chat/completions"),
    ] {
        let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": true});
        let a = w.call("POST", "/v1/chat/completions", body.clone());
        assert_eq!(a.status, 200, "{model}");
        let sent = w.net.sent.borrow().last().cloned().unwrap();
        assert_eq!(sent.uri().to_string(), url);
        assert_eq!(sent.headers()["authorization"], format!("Api-Key {UPSTREAM_KEY}"));
        assert_eq!(serde_json::from_slice::<Value>(sent.body()).unwrap(), body, "the body as the caller sent it");
    }
    for path in ["/v1/completions", "/v1/embeddings"] {
        assert_eq!(w.call("POST", path, json!({"model": "demo-llm", "input": "x"})).status, 200);
        assert!(w.net.sent.borrow().last().unwrap().uri().path().ends_with(&path[3..]), "{path}");
    }
    let models = w.call("GET", "/v1/models", Value::Null).json();
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!((models["object"].as_str(), ids), (Some("list"), vec!["vendor/big-llm", "demo-llm"]));
    // The narrow key may use `demo`, but not the sync operation: refused, nothing sent.
    let sent = w.net.sent.borrow().len();
    let narrow = |method: &str, path: &str, body: Value| {
        w.send(w.request(method, path, Some(NARROW_KEY), Bytes::from(body.to_string())))
    };
    narrow("GET", "/v1/models", Value::Null).assert_error(403, "FORBIDDEN");
    narrow("POST", "/v1/chat/completions", json!({"model": "demo-llm", "messages": []})).assert_error(403, "FORBIDDEN");
    w.call("POST", "/v1/chat/completions", json!({"model": "nope", "messages": []}))
        .assert_error(404, "MODEL_DOES_NOT_EXIST");
    w.call("POST", "/v1/chat/completions", json!({"messages": []})).assert_error(400, "INVALID_ARGUMENT");
    w.call("POST", "/v1/audio/speech", json!({"model": "demo-llm"})).assert_error(404, "NOT_FOUND");
    assert_eq!(w.net.sent.borrow().len(), sent);
}

#[test]
fn a_models_own_error_body_passes_through_unchanged() {
    let w = World::new();
    let a = w.call("POST", "/models/demo/production/predict", json!({"fail_status": 422}));
    assert_eq!(a.status, 422);
    assert_eq!(a.json(), json!({"error": "demo model failure"}), "no gateway envelope");
}

#[test]
fn an_unreachable_or_slow_upstream_is_a_gateway_error() {
    let w = World::new();
    w.net.upstream_down.set(Some(TransportError::Connect("connection refused to 10.1.2.3".into())));
    let a = w.call("POST", "/models/demo/production/predict", json!({}));
    a.assert_error(502, "UPSTREAM_UNREACHABLE");
    assert!(!String::from_utf8_lossy(&a.body).contains("10.1.2.3"), "no internals");
    w.net.upstream_down.set(Some(TransportError::Timeout));
    w.call("POST", "/models/demo/production/predict", json!({})).assert_error(504, "UPSTREAM_TIMEOUT");
    w.call("POST", "/models/demo/production/wake", Value::Null).assert_error(504, "UPSTREAM_TIMEOUT");
}

// ---------- queue status and wake ----------

#[test]
fn queue_status_counts_waiting_jobs_under_the_gateways_model_id() {
    let w = World::new();
    for i in 0..3 {
        w.submit(json!({"model_input": i}));
    }
    let a = w.call("GET", "/models/demo/production/async_queue_status", Value::Null);
    assert_eq!(a.status, 200);
    let b = a.json();
    assert_eq!(b["model_id"], "demo");
    assert_eq!(b["num_queued_requests"], 3);
    assert_eq!(b["num_in_progress_requests"], 0);
    assert_eq!(w.net.sent.borrow().last().unwrap().uri().path(), "/models/demo/production/async_queue_status");
}

#[test]
fn wake_answers_202_with_an_empty_body() {
    let w = World::new();
    let a = w.call("POST", "/models/demo/deployment/dep9/wake", Value::Null);
    assert_eq!(a.status, 202);
    assert!(a.body.is_empty());
    assert_eq!(w.net.sent.borrow()[0].uri().path(), "/models/demo/deployment/dep9/wake");
}
