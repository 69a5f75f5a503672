//! Who may do what: keys, browser tokens and their scopes, as another tenant or a careless one
//! would try them. Scopes only narrow: a token sees at most what its key sees, a binding to a
//! job counts only if the key could see that job, and no answer tells a caller that another's
//! job is there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use support::*;

const APP: &str = "https://app.example";
/// The test configuration's token secret (support::parse_config).
const TOKEN_SECRET: &str = "browser-token-signing-secret-0123456789";

/// The configuration with key `other` allowed to mint tokens (and no origins: a server key).
fn other_mints() -> Value {
    let mut doc = config_doc();
    doc["keys"][1]["operations"] = json!(["predict", "async_predict", "status", "cancel", "mint_token"]);
    doc
}

fn mint(w: &World, key: &str, body: Value) -> Answer {
    w.send(w.request("POST", "/browser_tokens", Some(key), body.to_string()))
}

fn minted(w: &World, key: &str, body: Value) -> String {
    let a = mint(w, key, body);
    assert_eq!(a.status, 201, "{:?}", a.body);
    a.json()["token"].as_str().unwrap().to_owned()
}

/// A token with these claims, signed with the gateway's token secret: what a mint made
/// elsewhere (a place without the job at hand, an older gateway) would have signed.
fn signed_token(claims: Value) -> String {
    let signed = format!("ept_{}", B64.encode(claims.to_string()));
    let mut mac = Hmac::<Sha256>::new_from_slice(TOKEN_SECRET.as_bytes()).unwrap();
    mac.update(signed.as_bytes());
    format!("{signed}.{}", B64.encode(mac.finalize().into_bytes()))
}

fn from(w: &World, method: &str, path: &str, key: &str, origin: Option<&str>) -> Answer {
    let mut request = w.request(method, path, Some(key), Bytes::new());
    if let Some(origin) = origin {
        request.headers_mut().insert("origin", origin.parse().unwrap());
    }
    w.send(request)
}

/// Key `other` binds a token to key `main`'s job: the token reads nothing of it (no output,
/// no webhook, no usage), cancels nothing, and its long-poll holds nothing; the store is as
/// it was. The binding is signed as a mint would sign it: it is refused at use, not only at
/// mint.
#[test]
fn a_token_bound_to_another_keys_job_reads_and_cancels_nothing() {
    let w = World::with_config(other_mints());
    let theirs = w.submit(json!({"model_input": 1, "webhook_endpoint": "https://hooks.example.com/private"}));
    let exp = w.now().plus_secs(600).millis();
    let token = signed_token(json!({"kid": "other", "jti": "00000000000000000000000000000001", "exp": exp,
        "models": ["demo"], "chains": [], "ops": ["status", "cancel"], "origins": [APP], "rid": theirs}));
    let before = w.snapshot();
    for (method, path) in [
        ("GET", format!("/async_request/{theirs}")),
        ("GET", format!("/async_request/{theirs}?wait=30")),
        ("GET", format!("/models/demo/async_request/{theirs}")),
        ("DELETE", format!("/async_request/{theirs}")),
        ("POST", format!("/async_request/{theirs}/cancel")),
    ] {
        from(&w, method, &path, &token, Some(APP)).assert_error(404, "REQUEST_NOT_FOUND");
    }
    assert_eq!(w.snapshot(), before, "nothing was written");
    assert_eq!(w.status(&theirs)["status"], "QUEUED");
    assert_eq!(w.upstream_job(&theirs).status, "QUEUED", "not canceled upstream either");
}

/// Where the job is at hand (the mint runs in the job's place), a binding to a job the key
/// cannot see is refused at mint, as that job would be: 404, the same as for no job at all.
#[test]
fn minting_a_token_bound_to_a_job_the_key_cannot_see_is_refused() {
    let w = World::with_config(other_mints());
    let theirs = w.submit(json!({"model_input": 1}));
    let bound = |id: &str| json!({"models": ["demo"], "operations": ["status"], "origins": [APP], "request_id": id});
    let before = w.snapshot();
    mint(&w, OTHER_KEY, bound(&theirs)).assert_error(404, "REQUEST_NOT_FOUND");
    mint(&w, OTHER_KEY, bound("0123456789abcdef0123456789abcdef")).assert_error(404, "REQUEST_NOT_FOUND");
    assert_eq!(w.snapshot(), before);
    // Its own key binds a token to it, and that token follows it.
    let token = minted(&w, KEY, bound(&theirs));
    assert_eq!(from(&w, "GET", &format!("/async_request/{theirs}"), &token, Some(APP)).status, 200);
}

/// A binding counts only while the key could see the job: an operator key (`"jobs": "all"`)
/// binds a token to a tenant's job; once the key no longer sees every job, neither does the
/// token.
#[test]
fn a_binding_follows_its_keys_view_at_every_use() {
    let mut doc = config_doc();
    doc["keys"].as_array_mut().unwrap().push(json!({"id": "operator", "sha256": sha256_hex("operator-key"),
        "models": ["*"], "chains": ["*"], "jobs": "all", "operations": ["status", "mint_token"]}));
    let mut w = World::with_config(doc.clone());
    let tenants = w.submit(json!({"model_input": 1}));
    let token = minted(
        &w,
        "operator-key",
        json!({"models": ["demo"], "operations": ["status"], "origins": [APP], "request_id": tenants}),
    );
    let path = format!("/async_request/{tenants}");
    assert_eq!(from(&w, "GET", &path, &token, Some(APP)).status, 200);
    doc["keys"][3]["jobs"] = json!("own");
    w.config = parse_config(&doc);
    from(&w, "GET", &path, &token, Some(APP)).assert_error(404, "REQUEST_NOT_FOUND");
}

/// A key that lists browser origins mints tokens for those origins only; a token whose
/// claims name others is not usable from them.
#[test]
fn a_tokens_origins_stay_within_its_keys() {
    let w = World::new();
    let body = |origin: &str| json!({"models": ["demo"], "operations": ["predict"], "origins": [origin]});
    mint(&w, KEY, body("https://evil.example")).assert_error(400, "INVALID_ARGUMENT");
    let token = minted(&w, KEY, body(APP));
    assert_eq!(from(&w, "POST", "/models/demo/production/predict", &token, Some(APP)).status, 200);
    let exp = w.now().plus_secs(600).millis();
    let wide = signed_token(json!({"kid": "main", "jti": "00000000000000000000000000000002", "exp": exp,
        "models": ["demo"], "chains": [], "ops": ["predict"], "origins": [APP, "https://evil.example"]}));
    let refused = from(&w, "POST", "/models/demo/production/predict", &wide, Some("https://evil.example"));
    refused.assert_error(403, "FORBIDDEN");
    assert!(refused.headers.get("access-control-allow-origin").is_none());
}

/// A key configured without an `operations` list has every operation a tenant uses, but not
/// the operator's: running the store's sweep and minting browser tokens are granted by name.
#[test]
fn sweep_and_mint_token_are_granted_only_by_name() {
    let w = World::new();
    let before = w.snapshot();
    w.send(w.request("POST", "/_sweep", Some(OTHER_KEY), "")).assert_error(403, "FORBIDDEN");
    mint(&w, OTHER_KEY, json!({"models": ["demo"], "operations": ["status"], "origins": [APP]}))
        .assert_error(403, "FORBIDDEN");
    assert_eq!(w.snapshot(), before);
    let a = w.send(w.request("POST", "/models/demo/production/predict", Some(OTHER_KEY), "{}"));
    assert_eq!(a.status, 200);
    assert_eq!(w.send(w.request("POST", "/_sweep", Some(KEY), "")).status, 200);
}

/// Whatever the caller may or may not do, another's job is answered exactly as a job that
/// does not exist: a key without the operation, from an origin it does not list, with a path
/// naming another model, or simply not its job.
#[test]
fn another_keys_job_is_answered_as_no_job_whatever_the_operation_or_origin() {
    let w = World::new();
    let theirs = w.submit(json!({"model_input": 1}));
    let nobodys = "0123456789abcdef0123456789abcdef";
    let cases: [(&str, &str, &str, Option<&str>); 6] = [
        ("GET", "/async_request/{id}", OTHER_KEY, None),
        ("DELETE", "/async_request/{id}", OTHER_KEY, None),
        ("DELETE", "/async_request/{id}", NARROW_KEY, None),
        ("GET", "/async_request/{id}", NARROW_KEY, Some("https://evil.example")),
        ("GET", "/chains/demo-chain/async_request/{id}", NARROW_KEY, None),
        ("GET", "/models/demo/async_request/{id}?wait=5", OTHER_KEY, Some("https://evil.example")),
    ];
    for (method, path, key, origin) in cases {
        let answer = |id: &str| {
            let a = from(&w, method, &path.replace("{id}", id), key, origin);
            (a.status, String::from_utf8_lossy(&a.body).replace(id, "{id}"))
        };
        assert_eq!(answer(&theirs), answer(nobodys), "{method} {path} as {key} from {origin:?}");
    }
}

/// A page re-mints its token (they last minutes) and retries its submit with the same
/// `Idempotency-Key`: one job, one upstream submission. Minted with the same `session`, the
/// new token also owns the job; another session of the same key does not see it.
#[test]
fn a_page_that_re_mints_its_token_and_retries_submits_once() {
    let w = World::new();
    let page = |session: &str| {
        minted(
            &w,
            KEY,
            json!({"models": ["demo"], "operations": ["async_predict", "status"], "origins": [APP], "session": session}),
        )
    };
    let submit = |token: &str| {
        let mut r = w.request("POST", "/models/demo/production/async_predict", Some(token), r#"{"model_input": 1}"#);
        r.headers_mut().insert("idempotency-key", "order-7".parse().unwrap());
        r.headers_mut().insert("origin", APP.parse().unwrap());
        let a = w.send(r);
        assert_eq!(a.status, 201, "{:?}", a.body);
        a.json()["request_id"].as_str().unwrap().to_owned()
    };
    let first = submit(&page("alice"));
    w.advance_ms(600_000);
    let again = page("alice");
    assert_eq!(submit(&again), first, "the same job");
    assert_eq!(w.async_submissions(), 1, "submitted once");
    assert_eq!(from(&w, "GET", &format!("/async_request/{first}"), &again, Some(APP)).status, 200);
    let bob = page("bob");
    from(&w, "GET", &format!("/async_request/{first}"), &bob, Some(APP)).assert_error(404, "REQUEST_NOT_FOUND");
    mint(&w, KEY, json!({"models": ["demo"], "operations": ["status"], "origins": [APP], "session": "a~b"}))
        .assert_error(400, "INVALID_ARGUMENT");
}

/// A chat page's token may use a model's own server (`sync`) and nothing else. Dot-segments
/// in any encoding or case, and encoded separators, would walk out of `{target}/sync/` to the
/// upstream's `async_predict` (with the gateway's upstream key, past the job record and the
/// webhook checks), another target, or another job's status: each is refused, and nothing
/// reaches the upstream.
#[test]
fn a_sync_route_cannot_walk_out_of_sync_with_dot_segments_or_encoded_separators() {
    let w = World::new();
    let chat = minted(&w, KEY, json!({"models": ["demo"], "operations": ["sync"], "origins": [APP]}));
    let body = json!({"model_input": 1, "webhook_endpoint": "https://attacker.example/"}).to_string();
    for route in [
        "../async_predict",
        "./../async_predict",
        "%2e%2e/async_predict",
        "%2E%2e/async_predict",
        ".%2E/async_predict",
        "%2e./async_predict",
        "v1/../../async_predict",
        "../../development/predict",
        "..%2fasync_predict",
        "..%2Fasync_predict",
        "..%5casync_predict",
        "x/%2e",
    ] {
        let path = format!("/models/demo/production/sync/{route}");
        let mut request = w.request("POST", &path, Some(&chat), body.clone());
        request.headers_mut().insert("origin", APP.parse().unwrap());
        w.send(request).assert_error(400, "INVALID_ARGUMENT");
    }
    assert!(w.net.sent.borrow().is_empty(), "nothing reached the upstream");
    // What stays inside passes: dots inside a name are not dot-segments.
    let mut request = w.request("GET", "/models/demo/production/sync/v1/models/a..b", Some(&chat), "");
    request.headers_mut().insert("origin", APP.parse().unwrap());
    let a = w.send(request);
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.json()["path"], "/models/demo/production/sync/v1/models/a..b");
}

/// The README's pattern: the backend submits with a webhook, then mints the page a token
/// bound to that job. The page sees the job and its delivery history, never the endpoint
/// (which may carry the backend's secret in its path or query); the backend still does.
#[test]
fn a_browser_token_never_sees_the_webhook_endpoint() {
    let w = World::new();
    let hook = "https://hooks.example.com/done?secret=backend-only";
    let id = w.submit(json!({"model_input": 1, "webhook_endpoint": hook}));
    let token =
        minted(&w, KEY, json!({"models": ["demo"], "operations": ["status"], "origins": [APP], "request_id": id}));
    let page = from(&w, "GET", &format!("/async_request/{id}"), &token, Some(APP));
    assert_eq!(page.status, 200, "{:?}", page.body);
    let record = page.json();
    assert!(record["webhook"].is_object() && record["webhook"]["endpoint"].is_null(), "{record}");
    assert!(!String::from_utf8_lossy(&page.body).contains("backend-only"), "{record}");
    assert_eq!(w.status(&id)["webhook"]["endpoint"], hook, "the key that submitted sees it");
}
