//! Races, replayed deterministically. Each test parks one engine call at a chosen point (a
//! store write or an outbound request, see [`support::At`]), runs another call to completion
//! meanwhile, then lets the first finish, and asserts what a user then sees. The engine is
//! sans-IO, so the interleavings that Spin's parallel instances and a Durable Object's
//! interleaved requests produce can be replayed here exactly, in milliseconds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bytes::Bytes;
use serde_json::json;
use support::*;

/// A status read asks the upstream (which says SUCCEEDED, so the read moves the job to
/// IN_PROGRESS) and is about to write; meanwhile the inbox stores the result. The read's copy
/// is stale: writing it would lose the output and leave the job IN_PROGRESS forever.
#[test]
fn status_read_reconciling_while_the_inbox_stores_the_result_keeps_the_output() {
    let w = World::new();
    let id = w.submit(json!({"model_input": 1}));
    w.set_upstream_status(&id, "SUCCEEDED");
    w.advance_ms(2_000);
    let read = w.handle(w.request("GET", &format!("/async_request/{id}"), Some(KEY), Bytes::new()));
    let mut read = std::pin::pin!(read);
    // Held as it writes what the upstream said (after its claim on the reconcile).
    let asking = w.park(read.as_mut(), At::Send(format!("async_request/{}", w.upstream_job(&id).id)));
    let writing = w.store.gate.arm(At::Write(format!("job/{id}")));
    assert!(w.resume(read.as_mut(), asking).is_none() && w.store.gate.parked(writing));
    let stored = w.send(w.inbox_delivery(&id, json!({"the": "output"}), json!([]), INBOUND_SECRET));
    assert_eq!(stored.status, 200, "{:?}", stored.body);
    let answer = w.resume(read.as_mut(), writing).expect("the read ends");
    assert_eq!(answer.status, 200);
    let s = w.status(&id);
    assert_eq!((s["status"].as_str(), &s["output"]), (Some("SUCCEEDED"), &json!({"the": "output"})), "{s}");
}

/// Upstream status reads of one job, however many read it at once.
fn upstream_status_reads(w: &World) -> usize {
    w.net.sent.borrow().iter().filter(|r| r.method() == "GET" && r.uri().path().contains("/async_request/")).count()
}

/// Many pollers of one job (a page's tabs, a held long-poll each) find it due for a reconcile
/// at once. The reconcile is claimed on the record before the upstream is asked: while the
/// first is asking, the others answer from the record, and the upstream is asked once.
#[test]
fn pollers_finding_a_job_due_at_once_ask_the_upstream_once() {
    let w = World::new();
    let id = w.submit(json!({"model_input": 1}));
    w.set_upstream_status(&id, "IN_PROGRESS");
    w.advance_ms(2_000);
    let before = upstream_status_reads(&w);
    let first = w.handle(w.request("GET", &format!("/async_request/{id}"), Some(KEY), Bytes::new()));
    let answer = w.race(At::Send(format!("async_request/{}", w.upstream_job(&id).id)), first, || {
        for _ in 0..5 {
            assert_eq!(w.status(&id)["status"], "QUEUED", "answered from the record while the first asks");
        }
    });
    assert_eq!(answer.json()["status"], "IN_PROGRESS");
    assert_eq!(upstream_status_reads(&w) - before, 1, "one upstream read for six readers");
}

/// A sweep lists the index between a submit's index entry and its record. Taking the entry
/// for one a crash left behind and dropping it would leave the job unswept for good: no
/// webhook, no submission retry, never deleted.
#[test]
fn sweep_between_a_submits_index_entry_and_its_record_keeps_the_job_swept() {
    let w = World::new();
    let body = json!({"model_input": 1, "webhook_endpoint": "https://hooks.example.com/done"});
    let submit = w.handle(w.request("POST", "/models/demo/production/async_predict", Some(KEY), body.to_string()));
    let answer = w.race(At::Write("job/".into()), submit, || {
        let report = w.sweep();
        assert!(report.ran);
    });
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    let id = answer.json()["request_id"].as_str().unwrap().to_owned();
    w.complete(&id, json!("out"));
    w.run_until(60_000, |w| w.net.deliveries.borrow().len() == 1);
    assert_eq!(w.status(&id)["webhook_status"], "SUCCEEDED");
}

fn deliveries_to(w: &World, path: &str) -> usize {
    w.net.deliveries.borrow().iter().filter(|r| r.uri().path() == path).count()
}

/// A sweep is slowed past its lease window (a slow receiver, many jobs) while delivering X's
/// webhook; the next window's sweep runs meanwhile. Each webhook is still delivered once:
/// X's attempt is claimed on its record, so the second sweep leaves it and delivers only Y.
#[test]
fn sweep_outliving_its_lease_window_and_the_next_sweep_deliver_each_webhook_once() {
    let w = World::new();
    let x = w.submit(json!({"model_input": "x", "webhook_endpoint": "https://hooks.example.com/slow"}));
    let y = w.submit(json!({"model_input": "y", "webhook_endpoint": "https://hooks.example.com/done"}));
    w.complete(&x, json!("x out"));
    w.complete(&y, json!("y out"));
    let first = w.sweep_call();
    let report = w.race(At::Send("/slow".into()), first, || {
        w.advance_ms(61_000);
        let second = w.sweep();
        assert!(second.ran, "the next window's sweep runs");
    });
    assert!(report.ran);
    assert_eq!((deliveries_to(&w, "/slow"), deliveries_to(&w, "/done")), (1, 1));
    for id in [&x, &y] {
        let s = w.status(id);
        assert_eq!(s["webhook_status"], "SUCCEEDED", "{s}");
        assert_eq!(s["webhook"]["attempts"].as_array().map(Vec::len), Some(1), "{s}");
    }
}

/// The upstream is slow to accept a submission (up to the outbound timeout); a sweep runs
/// meanwhile. The submission is still claimed, so the sweep does not submit the job again.
#[test]
fn sweep_during_a_slow_upstream_accept_does_not_submit_again() {
    let w = World::new();
    let submit =
        w.handle(w.request("POST", "/models/demo/production/async_predict", Some(KEY), r#"{"model_input": 1}"#));
    let answer = w.race(At::Send("/async_predict".into()), submit, || {
        w.advance_ms(edge_predict::engine::OUTBOUND_TIMEOUT_MS + 1_000);
        let _ = w.sweep();
    });
    assert_eq!(answer.status, 201);
    assert_eq!(w.async_submissions(), 1, "one upstream submission");
    let id = answer.json()["request_id"].as_str().unwrap().to_owned();
    assert_eq!(w.status(&id)["usage"]["attempts"], 1);
}

/// The upstream starts a job at 590 s of its 600 s queue limit; the gateway's expiry comes
/// at 600 s. It asks the upstream first: the job is IN_PROGRESS, not EXPIRED, and its
/// result is kept when it arrives.
#[test]
fn upstream_start_just_before_the_queue_deadline_is_in_progress_not_expired() {
    let w = World::new();
    let id = w.submit(json!({"model_input": 1, "max_time_in_queue_seconds": 600}));
    w.advance_ms(590_000);
    w.set_upstream_status(&id, "IN_PROGRESS");
    w.advance_ms(10_000);
    let _ = w.sweep();
    let s = w.status(&id);
    assert_eq!(s["status"], "IN_PROGRESS", "{s}");
    w.complete(&id, json!("late but done"));
    let s = w.status(&id);
    assert_eq!((s["status"].as_str(), &s["output"]), (Some("SUCCEEDED"), &json!("late but done")), "{s}");
}

/// Still QUEUED upstream at the deadline: canceled there, then EXPIRED here.
#[test]
fn still_queued_upstream_at_the_deadline_is_canceled_there_and_expired() {
    let w = World::new();
    let id = w.submit(json!({"model_input": 1, "max_time_in_queue_seconds": 600}));
    w.advance_ms(600_000);
    let _ = w.sweep();
    let s = w.status(&id);
    assert_eq!(s["status"], "EXPIRED", "{s}");
    assert_eq!(w.upstream_job(&id).status, "CANCELED");
}

/// A cancel arrives while the job's submission is in flight; the upstream then accepts it.
/// Canceling only here would let the job run and bill upstream, unseen. The cancel is recorded
/// and answered truthfully ("in flight"); once the upstream accepts, the gateway cancels it
/// there, and the job is CANCELED with the upstream's confirmation. The record keeps the id.
#[test]
fn cancel_during_an_in_flight_submission_cancels_it_upstream_too() {
    let w = World::new();
    let submit =
        w.handle(w.request("POST", "/models/demo/production/async_predict", Some(KEY), r#"{"model_input": 1}"#));
    let mut id = String::new();
    let answer = w.race(At::Send("/async_predict".into()), submit, || {
        let key = w.snapshot().into_keys().find(|k| k.starts_with("job/")).expect("the record is written first");
        id = key.trim_start_matches("job/").to_owned();
        let canceled = w.call("DELETE", &format!("/async_request/{id}"), serde_json::Value::Null).json();
        assert_eq!(canceled["canceled"], false, "{canceled}");
        assert!(canceled["message"].as_str().unwrap().contains("in flight"), "{canceled}");
    });
    assert_eq!(answer.status, 201);
    let s = w.status(&id);
    assert_eq!((s["status"].as_str(), s["cancel_requested"].as_bool()), (Some("CANCELED"), Some(true)), "{s}");
    assert_eq!(w.upstream_job(&id).status, "CANCELED", "canceled upstream as well");
}

/// The cancel reads the record while the submission is in flight, and the submission records
/// the upstream's id before the cancel writes. The cancel must act on what it finds when it
/// writes (a job queued upstream under an id) and cancel it there, not record a wish that
/// nothing will act on while the job runs and is billed.
#[test]
fn cancel_deciding_on_a_record_the_submission_has_just_moved_cancels_it_upstream() {
    let w = World::new();
    let submit =
        w.handle(w.request("POST", "/models/demo/production/async_predict", Some(KEY), r#"{"model_input": 1}"#));
    let mut submit = std::pin::pin!(submit);
    let at_upstream = w.park(submit.as_mut(), At::Send("/async_predict".into()));
    let id = w.snapshot().into_keys().find_map(|k| k.strip_prefix("job/").map(str::to_owned)).unwrap();
    let cancel = w.handle(w.request("DELETE", &format!("/async_request/{id}"), Some(KEY), ""));
    let mut cancel = std::pin::pin!(cancel);
    let writing = w.park(cancel.as_mut(), At::Write("job/".into()));
    let submitted = w.resume(submit.as_mut(), at_upstream).expect("the submit ends");
    assert_eq!(submitted.status, 201);
    let canceled = w.resume(cancel.as_mut(), writing).expect("the cancel ends").json();
    assert_eq!(canceled["canceled"], true, "{canceled}");
    assert_eq!(w.upstream_job(&id).status, "CANCELED", "canceled upstream");
    assert_eq!(w.status(&id)["status"], "CANCELED");
}

/// The cancel reads a submission waiting for its retry; before it writes, the sweep claims the
/// submission and sends it, and the upstream starts the job at once. The job must not read
/// CANCELED while it runs (and bills) upstream: the cancel finds the claim and records the
/// wish, the submission sends it, and the upstream's refusal leaves the job IN_PROGRESS.
#[test]
fn cancel_deciding_on_a_record_the_sweep_has_just_claimed_never_hides_a_running_job() {
    let w = World::new();
    w.net.upstream_down.set(Some(edge_predict::engine::TransportError::Timeout));
    let id = w.submit(json!({"model_input": 1}));
    w.net.upstream_down.set(None);
    w.advance_ms(5_000);
    let cancel = w.handle(w.request("DELETE", &format!("/async_request/{id}"), Some(KEY), ""));
    let mut cancel = std::pin::pin!(cancel);
    let writing = w.park(cancel.as_mut(), At::Write("job/".into()));
    let clock = WorldClock(&w);
    let sweep = w.held(w.request("POST", "/_sweep", Some(KEY), ""), [9; 16], &clock);
    let mut sweep = std::pin::pin!(sweep);
    // The sweep claims the submission (its write passes: the cancel holds the parked point)
    // and sends it; it is held as it records the upstream's answer.
    let sending = w.park(sweep.as_mut(), At::Send("/async_predict".into()));
    let recording = w.store.gate.arm(At::Write("job/".into()));
    assert!(w.resume(sweep.as_mut(), sending).is_none());
    assert!(w.store.gate.parked(recording));
    w.set_upstream_status(&id, "IN_PROGRESS");
    let answer = w.resume(cancel.as_mut(), writing).expect("the cancel ends").json();
    assert_eq!(answer["canceled"], false, "{answer}");
    let swept = w.resume(sweep.as_mut(), recording).expect("the sweep ends");
    assert_eq!(swept.response.status(), 200);
    let s = w.status(&id);
    assert_eq!((s["status"].as_str(), s["cancel_requested"].as_bool()), (Some("IN_PROGRESS"), Some(true)), "{s}");
    assert_eq!(w.upstream_job(&id).status, "IN_PROGRESS");
}

/// A cancel recorded while the submission was in flight, whose submitter then died after
/// recording the upstream's id and before sending the cancel: the next reconcile sends it.
#[test]
fn a_recorded_cancel_whose_submitter_died_is_sent_by_the_next_reconcile() {
    let w = World::new();
    let id = w.submit(json!({"model_input": 1}));
    // What the dead submitter left: queued upstream under its id, the wish on the record.
    let key = format!("job/{id}");
    let mut record: serde_json::Value = serde_json::from_slice(&w.store_get(&key).unwrap()).unwrap();
    record["cancel_requested"] = json!(true);
    pollster::block_on(edge_predict::engine::Store::put(&w.store, &key, record.to_string().into_bytes())).unwrap();
    w.run_until(600_000, |w| w.status(&id)["status"] == "CANCELED");
    assert_eq!(w.upstream_job(&id).status, "CANCELED");
}

/// The same cancel, but the submission fails (the upstream is down): it never reached the
/// upstream, so the job is simply CANCELED, and no retry submits it later.
#[test]
fn cancel_during_a_submission_that_then_fails_is_canceled_and_never_retried() {
    let w = World::new();
    let submit =
        w.handle(w.request("POST", "/models/demo/production/async_predict", Some(KEY), r#"{"model_input": 1}"#));
    let mut id = String::new();
    let answer = w.race(At::Send("/async_predict".into()), submit, || {
        let key = w.snapshot().into_keys().find(|k| k.starts_with("job/")).unwrap();
        id = key.trim_start_matches("job/").to_owned();
        w.call("DELETE", &format!("/async_request/{id}"), serde_json::Value::Null);
        w.net.upstream_down.set(Some(edge_predict::engine::TransportError::Timeout));
    });
    assert_eq!(answer.status, 201);
    w.net.upstream_down.set(None);
    w.run_until(600_000, |w| w.status(&id)["status"] == "CANCELED");
    w.advance_ms(600_000);
    let _ = w.sweep();
    assert_eq!(w.async_submissions(), 1, "the failed attempt only");
}

/// A cancel whose upstream call succeeded but whose write here failed (store trouble) is
/// retried by the caller: the upstream now says CANCELED. The answer is what was asked for.
#[test]
fn cancel_retried_after_the_upstream_already_canceled_reports_canceled() {
    let w = World::new();
    let id = w.submit(json!({"model_input": 1}));
    w.set_upstream_status(&id, "CANCELED");
    let answer = w.call("DELETE", &format!("/async_request/{id}"), serde_json::Value::Null);
    assert_eq!(answer.json()["canceled"], true, "{:?}", answer.body);
    assert_eq!(w.status(&id)["status"], "CANCELED");
}

/// Two submits with one `Idempotency-Key`: the first claims the key and is about to write the
/// job's record when the second arrives. The second finds the key claimed and no record yet,
/// creates the record itself and submits; the first then finds the record there and submits
/// nothing. One job, one upstream submission, one request id.
#[test]
fn same_key_submits_interleaved_before_the_record_is_written_submit_once() {
    let w = World::new();
    let request = || {
        let mut r = w.request("POST", "/models/demo/production/async_predict", Some(KEY), r#"{"model_input": 1}"#);
        r.headers_mut().insert("idempotency-key", "order-42".parse().unwrap());
        r
    };
    let mut second = None;
    let first = w.race(At::Write("job/".into()), w.handle(request()), || second = Some(w.send(request())));
    let second = second.unwrap();
    assert_eq!((first.status.as_u16(), second.status.as_u16()), (201, 201));
    assert_eq!(first.json()["request_id"], second.json()["request_id"]);
    assert_eq!(w.async_submissions(), 1);
}

/// Upstream jobs made for our job `id` (each carries the job's inbox URL).
fn upstream_jobs_for(w: &World, id: &str) -> usize {
    let inbox = format!("https://gw.example/webhooks/baseten/{id}/");
    w.net
        .jobs
        .borrow()
        .values()
        .filter(|j| j.body["webhook_endpoint"].as_str().is_some_and(|u| u.starts_with(&inbox)))
        .count()
}

/// Spin's `POST /_sweep` runs long (an upstream that is slow to accept, a queue of pending
/// jobs): it reaches job B two minutes in, past the claim lease of any time it read at the
/// start. Its claim on B must count from when it takes it, or the next window's sweep sees the
/// claim already expired and submits B a second time (two upstream jobs, one billed for
/// nothing). With the route on the host's live clock, B is submitted once.
#[test]
fn a_long_sweep_claims_each_job_at_the_time_it_takes_it() {
    let w = World::new();
    w.net.upstream_down.set(Some(edge_predict::engine::TransportError::Timeout));
    let a = w.submit(json!({"model_input": "a"}));
    let b = w.submit(json!({"model_input": "b"}));
    w.net.upstream_down.set(None);
    w.advance_ms(5_000);
    let clock = WorldClock(&w);
    let sweep = w.held(w.request("POST", "/_sweep", Some(KEY), ""), [9; 16], &clock);
    let mut sweep = std::pin::pin!(sweep);
    let first = w.park(sweep.as_mut(), At::Send("/async_predict".into()));
    // The upstream takes 100 s to accept the first submission; the sweep then goes on to the
    // second and is held there too.
    w.advance_ms(edge_predict::engine::OUTBOUND_TIMEOUT_MS + 70_000);
    let second = w.store.gate.arm(At::Send("/async_predict".into()));
    assert!(w.resume(sweep.as_mut(), first).is_none(), "the sweep goes on to the second job");
    assert!(w.store.gate.parked(second));
    // The next window's sweep runs while the first is still held at the second job.
    w.advance_ms(61_000);
    let report = w.sweep();
    assert!(report.ran, "a new window, a new lease");
    let outcome = w.resume(sweep.as_mut(), second).expect("the held sweep ends");
    assert_eq!(outcome.response.status(), 200);
    for id in [&a, &b] {
        assert_eq!(upstream_jobs_for(&w, id), 1, "job {id} submitted upstream once");
        assert_eq!(w.status(id)["status"], "QUEUED");
    }
}
