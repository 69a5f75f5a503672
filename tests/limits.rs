//! Limits: what a key may spend, and a browser token within its key's. Exactly the quota of
//! concurrent requests pass however their counter calls interleave; a refused request gets
//! Baseten's `rate_limited` with `Retry-After` and the IETF `RateLimit` fields, reaches no
//! upstream and writes no job; a token is minted with lower limits, never higher, and what it
//! spends counts against its key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::future::Future;
use std::task::{Context, Poll, Waker};

use edge_predict::engine::ports::counters::{self, Charge, Taken};
use serde_json::{json, Value};
use support::{At, World, KEY, T0};

/// The test configuration with limits on the main key.
fn limited(limits: Value) -> World {
    let mut doc = support::config_doc();
    doc["keys"][0]["limits"] = limits;
    World::with_config(doc)
}

fn predict(w: &World, key: &str) -> support::Answer {
    w.send(w.request("POST", "/models/demo/production/predict", Some(key), "{}"))
}

fn mint(w: &World, body: Value) -> String {
    let a = w.send(w.request("POST", "/browser_tokens", Some(KEY), body.to_string()));
    assert_eq!(a.status, 201, "{:?}", a.body);
    a.json()["token"].as_str().unwrap().to_owned()
}

fn jobs_kept(w: &World) -> usize {
    w.store.inner.snapshot().keys().filter(|k| k.starts_with("job/")).count()
}

fn token_body(limits: Value) -> Value {
    json!({"models": ["demo"], "operations": ["predict", "async_predict", "status"], "origins": ["https://app.example"], "limits": limits})
}

/// The refusal as Baseten's SDK and a browser see it: 429, `rate_limited`, how long to wait,
/// and which policy (draft-ietf-httpapi-ratelimit-headers), readable by an allowed origin.
#[test]
fn over_the_limit_is_a_429_with_retry_after_and_ratelimit_fields() {
    let w = limited(json!({"requests_per_minute": 2}));
    // 15 s into a minute: 45 s of this window left.
    w.advance_ms(60_000 - T0 % 60_000 + 15_000);
    assert_eq!(predict(&w, KEY).status, 200);
    assert_eq!(predict(&w, KEY).status, 200);
    let sent = w.net.sent.borrow().len();
    let mut request = w.request("POST", "/models/demo/production/predict", Some(KEY), "{}");
    request.headers_mut().insert("origin", "https://app.example".parse().unwrap());
    let refused = w.send(request);
    refused.assert_error(429, "RATE_LIMITED");
    assert_eq!(refused.json()["error_code"], "rate_limited");
    let header = |name: &str| refused.headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(header("retry-after").as_deref(), Some("45"));
    assert_eq!(header("ratelimit-policy").as_deref(), Some("\"requests_per_minute\";q=2;w=60"));
    assert_eq!(header("ratelimit").as_deref(), Some("\"requests_per_minute\";r=0;t=45"));
    let exposed = header("access-control-expose-headers").unwrap();
    for name in ["retry-after", "ratelimit", "ratelimit-policy"] {
        assert!(exposed.split(", ").any(|h| h == name), "{name} is exposed to the page: {exposed}");
    }
    assert_eq!(w.net.sent.borrow().len(), sent, "a refused request reaches no upstream");
    // The next minute is a new window.
    w.advance_ms(45_000);
    assert_eq!(predict(&w, KEY).status, 200);
}

/// Exactly the quota passes, whichever order concurrent requests reach their counter in:
/// every request parks at its increment, and they are let go in a seeded order.
#[test]
fn exactly_the_quota_of_concurrent_requests_pass_in_every_interleaving() {
    for seed in 0..50u64 {
        let w = limited(json!({"requests_per_minute": 3}));
        let calls: Vec<_> = (0..7)
            .map(|_| Box::pin(w.handle(w.request("POST", "/models/demo/production/predict", Some(KEY), "{}"))))
            .collect();
        let mut calls: Vec<_> = calls.into_iter().map(Some).collect();
        let mut cx = Context::from_waker(Waker::noop());
        // Park each call at its counter's increment, all at once.
        let points: Vec<_> = calls
            .iter_mut()
            .map(|call| {
                let point = w.store.gate.arm(At::Write("limits/".to_owned()));
                assert!(call.as_mut().unwrap().as_mut().poll(&mut cx).is_pending());
                assert!(w.store.gate.parked(point));
                point
            })
            .collect();
        let mut order: Vec<usize> = (0..calls.len()).collect();
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for i in (1..order.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            order.swap(i, usize::try_from(state % (i as u64 + 1)).unwrap());
        }
        let mut passed = 0;
        let mut refused = 0;
        for i in order {
            w.store.gate.release(points[i]);
            let mut call = calls[i].take().unwrap();
            match call.as_mut().poll(&mut cx) {
                Poll::Ready(answer) if answer.status == 200 => passed += 1,
                Poll::Ready(answer) => {
                    answer.assert_error(429, "RATE_LIMITED");
                    refused += 1;
                }
                Poll::Pending => panic!("seed {seed}: a call parked twice"),
            }
        }
        assert_eq!((passed, refused), (3, 4), "seed {seed}");
        let counts = w.counts.counts.borrow();
        assert_eq!(counts.values().copied().collect::<Vec<_>>(), [3], "seed {seed}: refusals gave their unit back");
    }
}

/// A submit over `submits_per_minute` writes no job and reaches no upstream; other requests
/// still pass while they are within `requests_per_minute`.
#[test]
fn submits_have_their_own_limit_and_a_refused_one_writes_no_job() {
    let w = limited(json!({"requests_per_minute": 10, "submits_per_minute": 1}));
    let id = w.submit(json!({"model_input": {"n": 1}}));
    let jobs = jobs_kept(&w);
    let sent = w.net.sent.borrow().len();
    w.call("POST", "/models/demo/production/async_predict", json!({"model_input": {"n": 2}}))
        .assert_error(429, "RATE_LIMITED");
    assert_eq!(jobs_kept(&w), jobs, "no job written");
    assert_eq!(w.net.sent.borrow().len(), sent, "no upstream reached");
    assert_eq!(w.call("GET", &format!("/async_request/{id}"), Value::Null).status, 200, "a status read still passes");
    assert_eq!(predict(&w, KEY).status, 200);
}

#[test]
fn a_key_without_limits_is_not_counted() {
    let w = World::new();
    for _ in 0..20 {
        assert_eq!(predict(&w, KEY).status, 200);
    }
    assert!(w.counts.counts.borrow().is_empty(), "no counter touched");
}

/// A token may be minted with lower limits than its key's, never higher; its requests take
/// from its own limits and from its key's, so a page cannot spend past its backend's quota.
#[test]
fn a_tokens_limits_are_within_its_keys_and_it_spends_from_both() {
    let w = limited(json!({"requests_per_minute": 4}));
    let a = w.send(w.request(
        "POST",
        "/browser_tokens",
        Some(KEY),
        token_body(json!({"requests_per_minute": 5})).to_string(),
    ));
    a.assert_error(400, "INVALID_ARGUMENT");
    assert!(a.json()["message"].as_str().unwrap().contains("limits.requests_per_minute"), "{}", a.json());
    let a =
        w.send(w.request("POST", "/browser_tokens", Some(KEY), token_body(json!({"tokens_per_hour": 5})).to_string()));
    a.assert_error(400, "INVALID_ARGUMENT");

    // Mints are requests of the key: with the two refused above, 3 of its 4 are spent.
    let token = mint(&w, token_body(json!({"requests_per_minute": 1})));
    let mut from_page = w.request("POST", "/models/demo/production/predict", Some(&token), "{}");
    from_page.headers_mut().insert("origin", "https://app.example".parse().unwrap());
    assert_eq!(w.send(from_page.clone()).status, 200, "the token's first");
    let second = w.send(from_page.clone());
    second.assert_error(429, "RATE_LIMITED");
    assert!(second.json()["message"].as_str().unwrap().contains("browser token is at its requests_per_minute of 1"));
    // The token's request counted against the key too: the key is at 4 of 4.
    let key = predict(&w, KEY);
    key.assert_error(429, "RATE_LIMITED");
    assert!(key.json()["message"].as_str().unwrap().starts_with("this key is at"), "{}", key.json());
}

/// A token refused by its key's limit spends nothing of its own: all or none.
#[test]
fn a_request_refused_by_one_counter_gives_back_what_it_took_of_the_others() {
    let w = World::new();
    let charges = |token_limit, key_limit| {
        vec![
            Charge { counter: "limits/main~t/requests_per_minute/1".to_owned(), limit: token_limit, follows: None },
            Charge { counter: "limits/main/requests_per_minute/1".to_owned(), limit: key_limit, follows: None },
        ]
    };
    let clock = support::WorldClock(&w);
    let take = |charges: Vec<Charge>| pollster::block_on(counters::take(&w.counts, &clock, &charges)).unwrap();
    assert_eq!(take(charges(5, 1)), Taken::All(vec![1, 1]));
    assert_eq!(take(charges(5, 1)), Taken::Full(1));
    assert_eq!(w.counts.counts.borrow()["limits/main~t/requests_per_minute/1"], 1, "the token's unit came back");
    assert_eq!(w.counts.counts.borrow()["limits/main/requests_per_minute/1"], 1);
}

/// A window's counter is deleted when the next window's is first taken: past windows do not
/// pile up in the store.
#[test]
fn past_windows_are_deleted_as_new_ones_begin() {
    let w = limited(json!({"requests_per_minute": 100}));
    for _ in 0..5 {
        assert_eq!(predict(&w, KEY).status, 200);
        w.advance_ms(60_000);
    }
    assert_eq!(w.counts.counts.borrow().len(), 1, "{:?}", w.counts.counts.borrow());
}

#[test]
fn limits_in_the_document_are_checked_by_name() {
    let mut doc = support::config_doc();
    doc["keys"][0]["limits"] = json!({"requests_per_minute": 10, "jobs_per_week": 3});
    let e = edge_predict::engine::Config::parse(&doc.to_string(), &support::secret_value).unwrap_err();
    assert!(e.to_string().contains("keys[0].limits"), "{e}");
}

/// The tenant next door: one key at its limit leaves another key's requests untouched, and a
/// caller without a key reaches no counter at all.
#[test]
fn one_keys_limit_is_not_another_keys_and_no_key_counts_nothing() {
    let mut doc = support::config_doc();
    doc["keys"][0]["limits"] = json!({"requests_per_minute": 1});
    doc["keys"][1]["limits"] = json!({"requests_per_minute": 1});
    let w = World::with_config(doc);
    assert_eq!(predict(&w, KEY).status, 200);
    predict(&w, KEY).assert_error(429, "RATE_LIMITED");
    assert_eq!(predict(&w, support::OTHER_KEY).status, 200, "the other key has its own count");
    let counted = w.counts.counts.borrow().clone();
    for _ in 0..5 {
        predict(&w, "not-a-key").assert_error(401, "UNAUTHORIZED");
    }
    assert_eq!(*w.counts.counts.borrow(), counted, "an unauthenticated request touches no counter");
}
