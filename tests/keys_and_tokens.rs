//! Browser tokens (minting, scopes, origins) and the isolation between keys, through the
//! engine's public API. (`access.rs` holds the attacks on them.)

#![allow(clippy::unwrap_used)]

mod support;

use bytes::Bytes;
use serde_json::{json, Value};
use support::*;

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

/// A request is admitted once, when it arrives: its route parsed and its key or token checked
/// then, and not again while it is handled. A long-poll held past its token's expiry is
/// answered as it was admitted; the token's next request is refused.
#[test]
fn a_token_is_checked_once_when_its_request_arrives_even_while_the_request_is_held() {
    let w = World::new();
    let tok = token(
        &w,
        json!({"models": ["demo"], "operations": ["async_predict", "status"], "origins": [APP],
        "ttl_seconds": 10}),
    );
    let body = json!({"model_input": 1}).to_string();
    let submitted =
        w.send(with_origin(w.request("POST", "/models/demo/production/async_predict", Some(&tok), body), APP));
    assert_eq!(submitted.status, 201, "{:?}", submitted.body);
    let id = submitted.json()["request_id"].as_str().unwrap().to_owned();
    w.advance_ms(8_000);
    let clock = WorldClock(&w);
    let status = format!("/async_request/{id}");
    let poll = with_origin(w.request("GET", &format!("{status}?wait=5"), Some(&tok), ""), APP);
    let held = pollster::block_on(w.held(poll, [7; 16], &clock));
    assert_eq!(held.response.status(), 200, "answered as admitted, 3 s after the token expired");
    w.send(with_origin(w.request("GET", &status, Some(&tok), ""), APP)).assert_error(401, "UNAUTHORIZED");
}
