//! Scenario tests through the engine's public API: in-memory store, hand-advanced clock,
//! an in-memory Baseten and a webhook receiver. What is asserted is what a caller sees.

#![allow(clippy::unwrap_used)]

mod support;

use base64::Engine as _;
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
fn every_request_for_a_job_is_placed_in_the_one_object_its_id_names() {
    use edge_predict::engine::{job_object, Placement, JOB_OBJECTS};
    let w = World::new();
    let place = |req: &http::Request<Bytes>, entropy: [u8; 16]| match w.engine().placement(req, w.now(), entropy) {
        Placement::Job(id) => id,
        other => panic!("{} {} placed {other:?}", req.method(), req.uri()),
    };
    let mut objects = std::collections::BTreeSet::new();
    for n in 0u16..2000 {
        let mut entropy = [0u8; 16];
        entropy[..2].copy_from_slice(&n.to_le_bytes());
        let submit = w.request("POST", "/models/demo/production/async_predict", Some(KEY), "{}");
        let id = place(&submit, entropy);
        let object = job_object(&id);
        for (method, path) in [("GET", format!("/async_request/{id}")), ("DELETE", format!("/async_request/{id}"))] {
            assert_eq!(job_object(&place(&w.request(method, &path, Some(KEY), ""), [9; 16])), object);
        }
        objects.insert(object);
    }
    assert_eq!(objects.len(), JOB_OBJECTS, "ids spread over every object");
    // An idempotent retry and the job's inbox reach the object that holds it.
    let body = json!({"model_input": {"q": 1}}).to_string();
    let mut submit = w.request("POST", "/models/demo/production/async_predict", Some(KEY), body);
    submit.headers_mut().insert("idempotency-key", "k1".parse().unwrap());
    let id = place(&submit, [1; 16]);
    assert_eq!(job_object(&place(&submit, [2; 16])), job_object(&id));
    let created = w.send(submit);
    assert_eq!(created.json()["request_id"], id.as_str());
    let delivery = w.inbox_delivery(&id, json!({"ok": true}), Value::Null, INBOUND_SECRET);
    assert_eq!(job_object(&place(&delivery, [3; 16])), job_object(&id));
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
        let admission = w.engine().admit(&head.body(()).unwrap(), w.now());
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

// ---------- bad input ----------

#[test]
fn every_bad_request_gets_its_4xx_with_code_and_message_and_changes_nothing() {
    let w = World::new();
    let existing = w.submit(json!({"model_input": 1}));
    let before = w.snapshot();
    let sent_before = w.net.sent.borrow().len();
    let big = format!("{{\"model_input\":\"{}\"}}", "a".repeat(256 * 1024));
    let async_path = "/models/demo/production/async_predict";
    type Case<'a> = (&'a str, String, Option<&'a str>, String, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("POST", async_path.into(), Some(KEY), "{not json".into(), 400, "MALFORMED_JSON"),
        ("POST", async_path.into(), Some(KEY), "[]".into(), 400, "MALFORMED_JSON"),
        ("POST", async_path.into(), Some(KEY), "{}".into(), 400, "INVALID_ARGUMENT"),
        (
            "POST",
            async_path.into(),
            Some(KEY),
            json!({"model_input": 1, "priority": 3}).to_string(),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            async_path.into(),
            Some(KEY),
            json!({"model_input": 1, "max_time_in_queue_seconds": 5}).to_string(),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            async_path.into(),
            Some(KEY),
            json!({"model_input": 1, "inference_retry_config": {"max_attempts": 11}}).to_string(),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            async_path.into(),
            Some(KEY),
            json!({"model_input": 1, "webhook_endpoint": "http://10.0.0.1/x"}).to_string(),
            400,
            "INVALID_ARGUMENT",
        ),
        ("POST", async_path.into(), Some(KEY), big, 413, "PAYLOAD_TOO_LARGE"),
        (
            "POST",
            "/models/nope/production/async_predict".into(),
            Some(KEY),
            json!({"model_input": 1}).to_string(),
            404,
            "MODEL_DOES_NOT_EXIST",
        ),
        ("POST", "/models/nope/production/predict".into(), Some(KEY), "{}".into(), 404, "MODEL_DOES_NOT_EXIST"),
        ("POST", "/models/demo/production/nonsense".into(), Some(KEY), "{}".into(), 404, "NOT_FOUND"),
        ("GET", "/".into(), Some(KEY), String::new(), 404, "NOT_FOUND"),
        ("GET", async_path.into(), Some(KEY), String::new(), 405, "METHOD_NOT_ALLOWED"),
        ("PUT", format!("/async_request/{existing}"), Some(KEY), String::new(), 405, "METHOD_NOT_ALLOWED"),
        ("POST", async_path.into(), None, json!({"model_input": 1}).to_string(), 401, "UNAUTHORIZED"),
        ("POST", async_path.into(), Some("wrong-key"), json!({"model_input": 1}).to_string(), 401, "UNAUTHORIZED"),
        ("POST", async_path.into(), Some(NARROW_KEY), json!({"model_input": 1}).to_string(), 403, "FORBIDDEN"),
        ("POST", "/chains/demo-chain/production/run_remote".into(), Some(NARROW_KEY), "{}".into(), 403, "FORBIDDEN"),
        ("DELETE", format!("/async_request/{existing}"), Some(NARROW_KEY), String::new(), 403, "FORBIDDEN"),
        ("GET", "/async_request/not-an-id".into(), Some(KEY), String::new(), 404, "REQUEST_NOT_FOUND"),
        ("GET", format!("/async_request/{}", "0".repeat(32)), Some(KEY), String::new(), 404, "REQUEST_NOT_FOUND"),
    ];
    for (method, path, key, body, status, code) in cases {
        let a = w.send(w.request(method, &path, key, body));
        assert_eq!(
            a.status.as_u16(),
            status,
            "{method} {path}: {:?}",
            String::from_utf8_lossy(&a.body[..a.body.len().min(300)])
        );
        a.assert_error(status, code);
    }
    assert_eq!(w.snapshot(), before, "no refused request wrote anything");
    assert_eq!(w.net.sent.borrow().len(), sent_before, "no refused request reached the upstream");
}

#[test]
fn a_browser_origin_outside_the_keys_scope_is_refused_and_an_allowed_one_gets_cors_headers() {
    let w = World::new();
    let mut req = w.request("POST", "/models/demo/production/predict", Some(KEY), "{}");
    req.headers_mut().insert("origin", "https://app.example".parse().unwrap());
    let a = w.send(req);
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["access-control-allow-origin"], "https://app.example");
    assert!(a.headers["access-control-expose-headers"].to_str().unwrap().contains("x-baseten-request-id"));
    let mut req = w.request("POST", "/models/demo/production/predict", Some(OTHER_KEY), "{}");
    req.headers_mut().insert("origin", "https://app.example".parse().unwrap());
    w.send(req).assert_error(403, "FORBIDDEN");
    let mut req = w.request("POST", "/models/demo/production/predict", Some(KEY), "{}");
    req.headers_mut().insert("origin", "https://evil.example".parse().unwrap());
    let a = w.send(req);
    a.assert_error(403, "FORBIDDEN");
    assert!(a.headers.get("access-control-allow-origin").is_none());
    let mut pre = w.request("OPTIONS", "/models/demo/production/predict", None, "");
    pre.headers_mut().insert("origin", "https://app.example".parse().unwrap());
    let a = w.send(pre);
    assert_eq!(a.status, 204);
    assert_eq!(a.headers["access-control-allow-origin"], "https://app.example");
    assert!(a.headers["access-control-allow-headers"].to_str().unwrap().contains("authorization"));
}

#[test]
fn a_bad_configuration_document_answers_500_naming_its_top_level_field_and_logs_the_whole() {
    let err = edge_predict::engine::Config::parse(
        r#"{"public_base_url": "https://x.example", "keys": [{"id": "a", "sha256": "zz"}], "id_secret_name": "IDS"}"#,
        &|_| Some("request-id-secret-0123456789abcdef0123".to_owned()),
    )
    .unwrap_err();
    let response = err.to_response();
    assert_eq!(response.status(), 500);
    let body: Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(body["code"], "GATEWAY_MISCONFIGURED");
    // The caller learns the top-level field; the operator's log (the error's Display) the whole.
    assert!(body["message"].as_str().unwrap().contains("'keys'"), "{body}");
    assert!(!body.to_string().contains("keys[0]"), "{body}");
    assert!(err.to_string().contains("keys[0].sha256"), "{err}");
}

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

// ---------- browser tokens ----------

fn mint(w: &World, key: &str, body: Value) -> support::Answer {
    w.send(w.request("POST", "/browser_tokens", Some(key), body.to_string()))
}

fn with_origin(mut req: http::Request<Bytes>, origin: &str) -> http::Request<Bytes> {
    req.headers_mut().insert("origin", origin.parse().unwrap());
    req
}

const APP: &str = "https://app.example";

fn token(w: &World, body: Value) -> String {
    let a = mint(w, KEY, body);
    assert_eq!(a.status, 201, "{:?}", a.body);
    a.json()["token"].as_str().unwrap().to_owned()
}

#[test]
fn a_server_key_mints_a_scoped_short_lived_browser_token() {
    let w = World::new();
    let a = mint(
        &w,
        KEY,
        json!({"models": ["demo"], "operations": ["predict", "async_predict", "status", "cancel"],
        "origins": [APP], "ttl_seconds": 300}),
    );
    assert_eq!(a.status, 201);
    let body = a.json();
    let tok = body["token"].as_str().unwrap();
    assert!(tok.starts_with("ept_"));
    assert!(!tok.contains(UPSTREAM_KEY) && !tok.contains(KEY));
    assert_eq!(body["expires_at"], w.now().plus_secs(300).rfc3339());

    let predict = |tok: &str, path: &str, origin: &str| {
        w.send(with_origin(w.request("POST", path, Some(tok), "{\"x\":1}"), origin))
    };
    let ok = predict(tok, "/models/demo/production/predict", APP);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.headers["access-control-allow-origin"], APP);
    predict(tok, "/models/demo/production/predict", "https://evil.example").assert_error(403, "FORBIDDEN");
    predict(tok, "/chains/demo-chain/production/run_remote", APP).assert_error(403, "FORBIDDEN");
    predict(tok, "/models/demo/production/wake", APP).assert_error(403, "FORBIDDEN");
    predict(tok, "/_sweep", APP).assert_error(403, "FORBIDDEN");

    // Expired, tampered, or its key removed: 401.
    w.advance_ms(300_000);
    let expired = predict(tok, "/models/demo/production/predict", APP);
    expired.assert_error(401, "UNAUTHORIZED");
    assert!(expired.json()["message"].as_str().unwrap().contains("expired"));
    let fresh = token(&w, json!({"models": ["demo"], "operations": ["predict"], "origins": [APP]}));
    let (claims, sig) = fresh.rsplit_once('.').unwrap();
    let forged = format!("{}x.{sig}", claims);
    predict(&forged, "/models/demo/production/predict", APP).assert_error(401, "UNAUTHORIZED");
    let mut doc = config_doc();
    doc["keys"][0]["id"] = json!("renamed");
    let w2 = World::with_config(doc);
    w2.now.set(w.now.get());
    w2.send(with_origin(w2.request("POST", "/models/demo/production/predict", Some(&fresh), "{}"), APP))
        .assert_error(401, "UNAUTHORIZED");
}

#[test]
fn a_browser_token_sees_only_its_own_jobs_or_the_one_it_is_bound_to() {
    let w = World::new();
    let ops = json!(["async_predict", "status", "cancel"]);
    let alice = token(&w, json!({"models": ["demo"], "operations": ops, "origins": [APP]}));
    let bob = token(&w, json!({"models": ["demo"], "operations": ops, "origins": [APP]}));
    let submit = |tok: &str| {
        let a = w.send(with_origin(
            w.request(
                "POST",
                "/models/demo/production/async_predict",
                Some(tok),
                json!({"model_input": 1}).to_string(),
            ),
            APP,
        ));
        assert_eq!(a.status, 201, "{:?}", a.body);
        a.json()["request_id"].as_str().unwrap().to_owned()
    };
    let job = submit(&alice);
    let read =
        |tok: &str, method: &str, path: String| w.send(with_origin(w.request(method, &path, Some(tok), ""), APP));
    assert_eq!(read(&alice, "GET", format!("/async_request/{job}")).status, 200);
    // Another token's job is answered as one that does not exist.
    read(&bob, "GET", format!("/async_request/{job}")).assert_error(404, "REQUEST_NOT_FOUND");
    read(&bob, "DELETE", format!("/async_request/{job}")).assert_error(404, "REQUEST_NOT_FOUND");
    assert_eq!(w.status(&job)["status"], "QUEUED", "bob changed nothing; the server key still sees it");

    // A token bound to one job the server created may follow that job only.
    let server_job = w.submit(json!({"model_input": 2}));
    let bound =
        token(&w, json!({"models": ["demo"], "operations": ["status"], "origins": [APP], "request_id": server_job}));
    assert_eq!(read(&bound, "GET", format!("/async_request/{server_job}")).status, 200);
    read(&bound, "GET", format!("/async_request/{job}")).assert_error(404, "REQUEST_NOT_FOUND");
    // It may not cancel at all: refused for the operation, which says nothing about the job.
    read(&bound, "DELETE", format!("/async_request/{server_job}")).assert_error(403, "FORBIDDEN");
}

// ---------- isolation between keys ----------

#[test]
fn a_key_sees_only_its_own_and_its_tokens_jobs_unless_configured_for_all() {
    let mut doc = config_doc();
    doc["keys"].as_array_mut().unwrap().push(json!({"id": "operator", "sha256": sha256_hex("operator-key"),
        "models": ["*"], "chains": ["*"], "jobs": "all"}));
    let w = World::with_config(doc);
    let mine = w.submit(json!({"model_input": 1, "webhook_endpoint": "https://hooks.example.com/private"}));
    let as_key =
        |key: &str, method: &str, id: &str| w.send(w.request(method, &format!("/async_request/{id}"), Some(key), ""));
    let before = w.snapshot();
    // Another key: as if the job did not exist, for reads and cancels alike; nothing changes.
    as_key(OTHER_KEY, "GET", &mine).assert_error(404, "REQUEST_NOT_FOUND");
    as_key(OTHER_KEY, "DELETE", &mine).assert_error(404, "REQUEST_NOT_FOUND");
    let unknown = "0123456789abcdef0123456789abcdef";
    assert_eq!(
        as_key(OTHER_KEY, "GET", &mine).body.len() - mine.len(),
        as_key(OTHER_KEY, "GET", unknown).body.len() - unknown.len()
    );
    assert_eq!(w.snapshot(), before);
    // Its own key, and a key configured to see every job, do see it.
    assert_eq!(as_key(KEY, "GET", &mine).status, 200);
    let seen = as_key("operator-key", "GET", &mine);
    assert_eq!((seen.status.as_u16(), seen.json()["request_id"].as_str()), (200, Some(mine.as_str())));
    assert_eq!(as_key("operator-key", "DELETE", &mine).json()["canceled"], true);
}

#[test]
fn minting_refuses_anything_beyond_the_keys_scope() {
    let w = World::new();
    let base = json!({"models": ["demo"], "operations": ["predict"], "origins": [APP]});
    let with = |field: &str, value: Value| {
        let mut b = base.clone();
        b[field] = value;
        b
    };
    let cases = [
        (KEY, with("models", json!(["*"])), 400, "INVALID_ARGUMENT"),
        (KEY, with("models", json!([])), 400, "INVALID_ARGUMENT"),
        (KEY, with("operations", json!(["sweep"])), 400, "INVALID_ARGUMENT"),
        (KEY, with("operations", json!(["mint_token"])), 400, "INVALID_ARGUMENT"),
        (KEY, with("operations", json!(["launch"])), 400, "INVALID_ARGUMENT"),
        (KEY, with("origins", json!([])), 400, "INVALID_ARGUMENT"),
        (KEY, with("origins", json!(["*"])), 400, "INVALID_ARGUMENT"),
        (KEY, with("origins", json!(["https://app.example/path"])), 400, "INVALID_ARGUMENT"),
        (KEY, with("ttl_seconds", json!(901)), 400, "INVALID_ARGUMENT"),
        (KEY, with("request_id", json!("nope")), 400, "INVALID_ARGUMENT"),
        (KEY, with("scopes", json!([])), 400, "INVALID_ARGUMENT"),
        (NARROW_KEY, base.clone(), 403, "FORBIDDEN"),
        ("wrong", base.clone(), 401, "UNAUTHORIZED"),
    ];
    for (key, body, status, code) in cases {
        mint(&w, key, body.clone()).assert_error(status, code);
    }
    let narrow_scope = json!({"models": ["demo"], "operations": ["predict"], "origins": [APP]});
    let mut doc = config_doc();
    doc["keys"][2]["operations"] = json!(["predict", "status", "mint_token"]);
    let w2 = World::with_config(doc);
    assert_eq!(mint(&w2, NARROW_KEY, narrow_scope).status, 201);
    mint(&w2, NARROW_KEY, json!({"models": ["demo"], "operations": ["cancel"], "origins": [APP]}))
        .assert_error(400, "INVALID_ARGUMENT");
    mint(&w2, NARROW_KEY, json!({"models": ["other"], "operations": ["predict"], "origins": [APP]}))
        .assert_error(400, "INVALID_ARGUMENT");
    // A server key used from a page its origins do not list cannot mint.
    let from_page =
        with_origin(w.request("POST", "/browser_tokens", Some(KEY), base.to_string()), "https://evil.example");
    w.send(from_page).assert_error(403, "FORBIDDEN");
    // A token cannot mint.
    let t = token(&w, base);
    w.send(w.request("POST", "/browser_tokens", Some(&t), "{}")).assert_error(403, "FORBIDDEN");
    // Without the feature configured, the route does not exist.
    let mut doc = config_doc();
    doc.as_object_mut().unwrap().remove("browser_tokens");
    let w3 = World::with_config(doc);
    mint(&w3, KEY, json!({})).assert_error(404, "NOT_FOUND");
}

#[test]
fn a_browser_tokens_own_origins_pass_the_browsers_cors_check() {
    // A server key (it lists no origins of its own) mints for the page's origin.
    let mut doc = config_doc();
    doc["keys"][1]["operations"] = json!(["predict", "mint_token"]);
    let w = World::with_config(doc);
    let widget = "https://widget.example";
    let minted = mint(&w, OTHER_KEY, json!({"models": ["demo"], "operations": ["predict"], "origins": [widget]}));
    assert_eq!(minted.status, 201, "{:?}", minted.body);
    let tok = minted.json()["token"].as_str().unwrap().to_owned();
    // Preflight carries no credentials: with tokens enabled it is answered for any origin.
    let pre = w.send(with_origin(w.request("OPTIONS", "/models/demo/production/predict", None, ""), widget));
    assert_eq!(pre.status, 204);
    assert_eq!(pre.headers["access-control-allow-origin"], widget);
    assert!(pre.headers["access-control-allow-headers"].to_str().unwrap().contains("authorization"));
    // The real request is checked against the token's own origins.
    let a = w.send(with_origin(w.request("POST", "/models/demo/production/predict", Some(&tok), "{}"), widget));
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["access-control-allow-origin"], widget);
    let other = w.send(with_origin(
        w.request("POST", "/models/demo/production/predict", Some(&tok), "{}"),
        "https://evil.example",
    ));
    other.assert_error(403, "FORBIDDEN");
    assert!(other.headers.get("access-control-allow-origin").is_none());
    let server_key =
        w.send(with_origin(w.request("POST", "/models/demo/production/predict", Some(OTHER_KEY), "{}"), widget));
    server_key.assert_error(403, "FORBIDDEN");
    assert!(server_key.headers.get("access-control-allow-origin").is_none());
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
    let outcome = pollster::block_on(w.engine().handle_held(w.request("GET", path, Some(KEY), ""), [7; 16], clock));
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

// ---------- admission: refused from the head, before any body or store ----------

#[test]
fn requests_are_admitted_from_their_head_alone() {
    use edge_predict::engine::Admission;
    let w = World::new();
    let head = |method: &str, path: &str, key: Option<&str>, length: usize, extra: Option<(&'static str, &str)>| {
        let mut r = w.request(method, path, key, "");
        r.headers_mut().insert("content-length", length.into());
        if let Some((name, value)) = extra {
            r.headers_mut().insert(http::HeaderName::from_static(name), value.parse().unwrap());
        }
        w.engine().admit(&r, w.now())
    };
    let submit = "/models/demo/production/async_predict";
    let twenty_mb = 20 * 1024 * 1024;
    let refused = |a: Admission| match a {
        Admission::Refuse(e) => e.code(),
        Admission::Read { body_limit } | Admission::Stream { body_limit } => {
            panic!("admitted, reading up to {body_limit}")
        }
    };
    assert_eq!(refused(head("POST", submit, None, twenty_mb, None)), "UNAUTHORIZED");
    assert_eq!(refused(head("POST", submit, Some("not-a-key"), 10, None)), "UNAUTHORIZED");
    assert_eq!(refused(head("POST", submit, Some(KEY), 256 * 1024 + 1, None)), "PAYLOAD_TOO_LARGE");
    assert_eq!(head("POST", submit, Some(KEY), 100, None), Admission::Read { body_limit: 256 * 1024 });
    let status = "/async_request/0123456789abcdef0123456789abcdef";
    assert_eq!(refused(head("GET", status, None, 0, None)), "UNAUTHORIZED");
    assert_eq!(refused(head("DELETE", status, Some(KEY), twenty_mb, None)), "PAYLOAD_TOO_LARGE");
    let rid = "0123456789abcdef0123456789abcdef";
    let inbox = format!("/webhooks/baseten/{rid}/{}", w.config.inbox_token(rid));
    let inbox = inbox.as_str();
    assert_eq!(refused(head("POST", inbox, None, 100, None)), "INVALID_SIGNATURE");
    let tokenless = format!("/webhooks/baseten/{rid}");
    assert_eq!(
        refused(head("POST", &tokenless, None, 100, Some(("x-baseten-signature", "v1=00")))),
        "INVALID_SIGNATURE"
    );
    let signed = Some(("x-baseten-signature", "v1=00"));
    assert!(matches!(head("POST", inbox, None, 100, signed), Admission::Read { .. }));
    assert_eq!(refused(head("POST", inbox, None, 33 * 1024 * 1024, signed)), "PAYLOAD_TOO_LARGE");
    // Sync routes stream their body to the upstream, up to Baseten's 100 MB, once the key is
    // known good.
    let predict = "/models/demo/production/predict";
    assert_eq!(refused(head("POST", predict, None, 10, None)), "UNAUTHORIZED");
    assert_eq!(head("POST", predict, Some(KEY), 50 << 20, None), Admission::Stream { body_limit: 100 << 20 });
    let sync = "/models/demo/production/sync/v1/chat/completions";
    assert_eq!(refused(head("POST", sync, Some(KEY), (100 << 20) + 1, None)), "PAYLOAD_TOO_LARGE");
}

/// Every refusal is decided from the head, for every route: one that does not exist or not
/// for this method, one without credentials, one the key may not use (its operation, its
/// model, the page's origin). Routes that take no body read at most a small bound, and a
/// preflight none.
/// method, path, key, origin, the code `admit` answers with.
type HeadCase = (&'static str, &'static str, Option<&'static str>, Option<&'static str>, &'static str);

#[test]
fn every_refusal_is_decided_from_the_head_and_bodiless_routes_read_little() {
    use edge_predict::engine::Admission;
    let w = World::new();
    let head = |method: &str, path: &str, key: Option<&str>, origin: Option<&str>| {
        let mut r = w.request(method, path, key, "");
        r.headers_mut().insert("content-length", (32usize << 20).into());
        if let Some(origin) = origin {
            r.headers_mut().insert("origin", origin.parse().unwrap());
        }
        match w.engine().admit(&r, w.now()) {
            Admission::Refuse(e) => e.code().to_owned(),
            Admission::Read { body_limit } | Admission::Stream { body_limit } => format!("read {body_limit}"),
        }
    };
    let evil = Some("https://evil.example");
    let cases: [HeadCase; 16] = [
        ("POST", "/nope", None, None, "NOT_FOUND"),
        ("GET", "/models/demo/production/predict", None, None, "METHOD_NOT_ALLOWED"),
        ("OPTIONS", "/models/demo/production/predict", None, None, "PAYLOAD_TOO_LARGE"),
        ("POST", "/_sweep", None, None, "UNAUTHORIZED"),
        ("POST", "/_sweep", Some(OTHER_KEY), None, "FORBIDDEN"),
        ("POST", "/_sweep", Some(KEY), None, "PAYLOAD_TOO_LARGE"),
        ("POST", "/browser_tokens", None, None, "UNAUTHORIZED"),
        ("POST", "/browser_tokens", Some(KEY), None, "PAYLOAD_TOO_LARGE"),
        ("POST", "/v1/chat/completions", None, None, "UNAUTHORIZED"),
        ("POST", "/v1/chat/completions", Some(NARROW_KEY), None, "FORBIDDEN"),
        ("POST", "/models/demo/production/wake", None, None, "UNAUTHORIZED"),
        ("GET", "/models/demo/production/async_queue_status", Some(KEY), None, "PAYLOAD_TOO_LARGE"),
        ("POST", "/models/demo/production/async_predict", Some(NARROW_KEY), None, "FORBIDDEN"),
        ("POST", "/chains/demo-chain/production/run_remote", Some(NARROW_KEY), None, "FORBIDDEN"),
        ("POST", "/models/demo/production/async_predict", Some(KEY), evil, "FORBIDDEN"),
        ("GET", "/models/demo/async_request/0123456789abcdef0123456789abcdef", Some(KEY), evil, "FORBIDDEN"),
    ];
    for (method, path, key, origin, expected) in cases {
        assert_eq!(head(method, path, key, origin), expected, "{method} {path} {key:?} {origin:?}");
    }
    let small = |method: &str, path: &str, key: Option<&str>| {
        let r = w.request(method, path, key, "");
        w.engine().admit(&r, w.now())
    };
    assert_eq!(small("OPTIONS", "/anything", None), Admission::Read { body_limit: 0 });
    for (method, path) in [("POST", "/_sweep"), ("POST", "/browser_tokens"), ("POST", "/models/demo/production/wake")] {
        assert_eq!(small(method, path, Some(KEY)), Admission::Read { body_limit: 16 * 1024 }, "{path}");
    }
}

#[test]
fn a_platform_error_from_the_upstream_gets_code_and_message_and_keeps_its_fields() {
    let w = World::new();
    let a = w.call("POST", "/models/demo/production/predict", json!({"platform_status": 503}));
    a.assert_error(503, "MODEL_UNAVAILABLE");
    let body = a.json();
    assert_eq!(body["error_code"], "model_unavailable", "Baseten's enum, in its case");
    assert_eq!((body["message"].as_str(), body["detail"].as_str()), (Some("no replica"), Some("d")), "{body}");
    assert_eq!(a.headers.get("retry-after").unwrap(), "7");
    // The model's own error is not touched.
    let a = w.call("POST", "/models/demo/production/predict", json!({"fail_status": 422}));
    assert_eq!((a.status.as_u16(), a.json()), (422, json!({"error": "demo model failure"})));
}

#[test]
fn a_failed_delivery_records_a_category_not_the_networks_own_words() {
    let w = World::new();
    let id = w.submit(json!({"model_input": 1, "webhook_endpoint": "https://nothing-there.example.net/hook"}));
    w.complete(&id, json!("out"));
    let _ = w.sweep();
    let attempt = &w.status(&id)["webhook"]["attempts"][0];
    assert_eq!((attempt["error"].as_str(), &attempt["status_code"]), (Some("connect"), &Value::Null), "{attempt}");
}

#[test]
fn a_key_with_its_own_outbound_secret_signs_its_deliveries_with_it() {
    let mut doc = config_doc();
    doc["keys"][1]["outbound_secret_name"] = json!("TENANT_OUTBOUND");
    let w = World::with_config(doc);
    let hook = json!({"model_input": 1, "webhook_endpoint": "https://hooks.example.com/t"});
    let mine = w.submit(hook.clone());
    let theirs = {
        let a = w.send(w.request("POST", "/models/demo/production/async_predict", Some(OTHER_KEY), hook.to_string()));
        a.json()["request_id"].as_str().unwrap().to_owned()
    };
    w.complete(&mine, json!(1));
    w.complete(&theirs, json!(2));
    w.run_until(60_000, |w| w.net.deliveries.borrow().len() == 2);
    for d in w.net.deliveries.borrow().iter() {
        let id = d.headers()["x-baseten-request-id"].to_str().unwrap();
        let secret = if id == theirs { TENANT_OUTBOUND_SECRET } else { OUTBOUND_SECRET };
        let expected = format!("v1={}", hmac_hex(secret, d.body()));
        assert_eq!(d.headers()["x-baseten-signature"].to_str().unwrap(), expected, "job {id}");
    }
}

#[test]
fn an_idempotency_key_belongs_to_one_route_and_its_id_needs_the_gateway_secret() {
    let w = World::new();
    let submit = |path: &str, key: &str| {
        let mut r = w.request("POST", path, Some(KEY), json!({"model_input": 1}).to_string());
        r.headers_mut().insert("idempotency-key", key.parse().unwrap());
        w.send(r)
    };
    let first = submit("/models/demo/production/async_predict", "order-7");
    assert_eq!(first.status, 201);
    // The same key for another target or another model is a conflict, not the first job.
    submit("/models/demo/development/async_predict", "order-7").assert_error(409, "IDEMPOTENCY_KEY_REUSED");
    submit("/chains/demo-chain/production/async_run_remote", "order-7").assert_error(409, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(w.async_submissions(), 1);
    // The id is not the digest anyone reading the configuration could compute.
    let id = first.json()["request_id"].as_str().unwrap().to_owned();
    let guessable = hex::encode(
        &<sha2::Sha256 as sha2::Digest>::digest(format!("{}\nidempotency\norder-7", sha256_hex(KEY)))[..16],
    );
    assert_ne!(id, guessable);
    let mut doc = config_doc();
    doc["id_secret_name"] = json!("TOKENS");
    let other_secret = World::with_config(doc);
    let mut r =
        other_secret.request("POST", "/models/demo/production/async_predict", Some(KEY), r#"{"model_input": 1}"#);
    r.headers_mut().insert("idempotency-key", "order-7".parse().unwrap());
    assert_ne!(other_secret.send(r).json()["request_id"].as_str(), Some(id.as_str()), "another secret, another id");
}
