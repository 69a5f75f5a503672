//! The store the engine is given, checked through the engine: `POST /_store_check` puts it
//! through the store contract (`ports/store_contract.rs`) on scratch keys and leaves it as it
//! was. (The same route runs the contract on workerd's and Spin's stores in the conformance
//! suite.)

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{json, Value};
use support::*;

#[test]
fn a_store_check_says_the_store_keeps_its_contract_and_leaves_it_as_it_was() {
    let w = World::new();
    w.submit(json!({"model_input": 1}));
    let before = w.snapshot();
    let a = w.call("POST", "/_store_check", Value::Null);
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.json(), json!({"kept": true}));
    assert_eq!(w.snapshot(), before, "scratch keys gone, jobs untouched");
}

#[test]
fn only_the_operator_checks_the_store() {
    let w = World::new();
    w.send(w.request("POST", "/_store_check", None, "")).assert_error(401, "UNAUTHORIZED");
    w.send(w.request("POST", "/_store_check", Some(OTHER_KEY), "")).assert_error(403, "FORBIDDEN");
    w.send(w.request("GET", "/_store_check", Some(KEY), "")).assert_error(405, "METHOD_NOT_ALLOWED");
    assert!(w.snapshot().is_empty(), "a refusal touches no store");
}
