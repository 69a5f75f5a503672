//! Which secrets a request reads, on a host that parses its configuration for every request
//! (Spin, [`Config::parse_lazy`](edge_predict::engine::Config::parse_lazy)), where each read
//! costs: only those the request uses, each once, and none for a refusal.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::json;
use support::*;

/// The secrets a fresh host (a new Spin instance, its configuration just parsed) reads to
/// answer `call`, in order.
fn reads_of(call: impl FnOnce(&World)) -> Vec<String> {
    let (w, reads) = World::with_lazy_config();
    call(&w);
    let read = reads.borrow().clone();
    read
}

#[test]
fn a_request_reads_only_the_secrets_it_uses_and_each_once() {
    let refused = reads_of(|w| {
        let unauthorized = w.request("POST", "/models/demo/production/async_predict", None, "{}");
        w.send(unauthorized).assert_error(401, "UNAUTHORIZED");
    });
    assert_eq!(refused, Vec::<String>::new(), "a refusal reads no secret");

    let predict = reads_of(|w| {
        let a = w.send(w.request("POST", "/models/demo/production/predict", Some(KEY), r#"{"x": 1}"#));
        assert_eq!(a.status, 200, "{:?}", a.body);
    });
    assert_eq!(predict, ["UPSTREAM_KEY"], "a sync call reads its model's key only");

    let submit = reads_of(|w| {
        w.submit(json!({"model_input": 1}));
        w.submit(json!({"model_input": 2}));
    });
    assert_eq!(submit, ["IDS", "UPSTREAM_KEY"], "its inbox URL's id secret and the model's key, once each");

    let mint = reads_of(|w| {
        let a = w.send(w.request(
            "POST",
            "/browser_tokens",
            Some(KEY),
            r#"{"models": ["demo"], "operations": ["predict"], "origins": ["https://app.example"]}"#,
        ));
        assert_eq!(a.status, 201, "{:?}", a.body);
    });
    assert_eq!(mint, ["TOKENS"]);
}

#[test]
fn a_secret_read_when_first_needed_is_checked_as_at_parse() {
    // Every request, whatever it reads, sees the same configuration as one parsed whole.
    let (w, _) = World::with_lazy_config();
    let eager = parse_config(&config_doc());
    let id = w.submit(json!({"model_input": 1}));
    assert_eq!(w.config.inbox_token(&id).unwrap(), eager.inbox_token(&id).unwrap());
    let (model, parsed) = (&w.config.models["demo"], &eager.models["demo"]);
    assert_eq!(w.config.secret(&model.api_key).unwrap(), eager.secret(&parsed.api_key).unwrap());
}
