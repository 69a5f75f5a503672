//! Bad input and refusals: every malformed, unauthorized or oversized request gets a clear 4xx
//! and changes nothing; refusals are decided from the head, before any body or store.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{json, Value};
use support::*;

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
        w.engine().admit(&r, w.now(), [0; 16])
    };
    let submit = "/models/demo/production/async_predict";
    let twenty_mb = 20 * 1024 * 1024;
    let refused = |a: Admission| match a {
        Admission::Refuse(e) => e.code(),
        Admission::Read(a) | Admission::Stream(a) => panic!("admitted, reading up to {}", a.body_limit()),
    };
    assert_eq!(refused(head("POST", submit, None, twenty_mb, None)), "UNAUTHORIZED");
    assert_eq!(refused(head("POST", submit, Some("not-a-key"), 10, None)), "UNAUTHORIZED");
    assert_eq!(refused(head("POST", submit, Some(KEY), 256 * 1024 + 1, None)), "PAYLOAD_TOO_LARGE");
    assert_eq!(admitted(head("POST", submit, Some(KEY), 100, None)), ("read", 256 * 1024));
    let status = "/async_request/0123456789abcdef0123456789abcdef";
    assert_eq!(refused(head("GET", status, None, 0, None)), "UNAUTHORIZED");
    assert_eq!(refused(head("DELETE", status, Some(KEY), twenty_mb, None)), "PAYLOAD_TOO_LARGE");
    let rid = "0123456789abcdef0123456789abcdef";
    let inbox = format!("/webhooks/baseten/{rid}/{}", w.config.inbox_token(rid).unwrap());
    let inbox = inbox.as_str();
    assert_eq!(refused(head("POST", inbox, None, 100, None)), "INVALID_SIGNATURE");
    let tokenless = format!("/webhooks/baseten/{rid}");
    assert_eq!(
        refused(head("POST", &tokenless, None, 100, Some(("x-baseten-signature", "v1=00")))),
        "INVALID_SIGNATURE"
    );
    let signed = Some(("x-baseten-signature", "v1=00"));
    assert!(matches!(head("POST", inbox, None, 100, signed), Admission::Read(_)));
    assert_eq!(refused(head("POST", inbox, None, 33 * 1024 * 1024, signed)), "PAYLOAD_TOO_LARGE");
    // Sync routes stream their body to the upstream, up to Baseten's 100 MB, once the key is
    // known good.
    let predict = "/models/demo/production/predict";
    assert_eq!(refused(head("POST", predict, None, 10, None)), "UNAUTHORIZED");
    assert_eq!(admitted(head("POST", predict, Some(KEY), 50 << 20, None)), ("stream", 100 << 20));
    let sync = "/models/demo/production/sync/v1/chat/completions";
    assert_eq!(refused(head("POST", sync, Some(KEY), (100 << 20) + 1, None)), "PAYLOAD_TOO_LARGE");
}

/// How an admitted request's body is taken ("read" or "stream") and up to how many bytes.
fn admitted(admission: edge_predict::engine::Admission) -> (&'static str, usize) {
    use edge_predict::engine::Admission;
    match admission {
        Admission::Read(a) => ("read", a.body_limit()),
        Admission::Stream(a) => ("stream", a.body_limit()),
        Admission::Refuse(e) => panic!("refused: {e}"),
    }
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
        match w.engine().admit(&r, w.now(), [0; 16]) {
            Admission::Refuse(e) => e.code().to_owned(),
            Admission::Read(a) | Admission::Stream(a) => format!("read {}", a.body_limit()),
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
        w.engine().admit(&r, w.now(), [0; 16])
    };
    assert_eq!(admitted(small("OPTIONS", "/anything", None)), ("read", 0));
    for (method, path) in [("POST", "/_sweep"), ("POST", "/browser_tokens"), ("POST", "/models/demo/production/wake")] {
        assert_eq!(admitted(small(method, path, Some(KEY))), ("read", 16 * 1024), "{path}");
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
