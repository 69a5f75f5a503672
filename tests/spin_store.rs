//! Spin's store on the host: the engine's claim protocol (`ports/claimed_kv.rs`, the one Spin's
//! adapter uses) over a model of Spin's key-value stores as that protocol meets them.
//!
//! The model keeps what holds in Spin's SQLite and Redis stores and what goes wrong there:
//! - `increment` is atomic (one SQLite transaction, Redis `INCRBY`); it offers no
//!   compare-and-swap, because neither store's holds (see `claimed_kv.rs`);
//! - every call is an await point: Spin runs requests in parallel instances, which interleave
//!   between any two host calls. Tests choose the interleaving;
//! - SQLite answers `database is locked` instead of waiting when two hosts share its file;
//! - a claimer can die between its claim and its write (a host killed, an instance dropped);
//! - the listing comes in pages, with a cursor.
//!
//! The same protocol passes the contract on real Spin (SQLite and Redis) in the conformance
//! suite's `the_store_keeps_the_engines_contract`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use edge_predict::engine::ports::claimed_kv::{ClaimedStore, CLAIM_WAIT_MS, STALE_CLAIM_MS};
use edge_predict::engine::ports::kv::{AtomicKv, Counts, KvError, BUSY_WAIT_MS};
use edge_predict::engine::ports::store_contract;
use edge_predict::engine::{Store, Timer, Timestamp};
use support::{At, Gate, T0};

/// One await point: an instance's host call, where others can run.
async fn step() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await;
}

/// The wall clock all instances read; a pause moves it on.
#[derive(Debug, Clone)]
struct Clock(Rc<Cell<u64>>);

impl Clock {
    fn advance_ms(&self, ms: u64) {
        self.0.set(self.0.get() + ms);
    }
}

impl Timer for Clock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.0.get())
    }

    async fn sleep_until(&self, at: Timestamp) {
        self.0.set(self.0.get().max(at.millis()));
        step().await;
    }
}

/// Spin's key-value store, as above. Counters live beside values, as in the real stores.
#[derive(Debug, Default)]
struct SpinKv {
    data: RefCell<BTreeMap<String, Vec<u8>>>,
    gate: Gate,
    /// The next this many calls are refused as `database is locked`.
    locked: Cell<u64>,
    /// Every this-many-th call is refused as `database is locked` (0: none).
    locked_every: Cell<u64>,
    calls: Cell<u64>,
}

impl SpinKv {
    /// One host call: an await point, then SQLite's lock, then the gate for writes.
    async fn enter(&self, write: Option<&str>) -> Result<(), KvError> {
        step().await;
        let n = self.calls.get() + 1;
        self.calls.set(n);
        if self.locked.get() > 0 {
            self.locked.set(self.locked.get() - 1);
            return Err(KvError::Busy);
        }
        if self.locked_every.get() > 0 && n % self.locked_every.get() == 0 {
            return Err(KvError::Busy);
        }
        if let Some(key) = write {
            self.gate.pass(&At::Write(key.to_owned())).await;
        }
        Ok(())
    }

    fn keys(&self, prefix: &str) -> Vec<String> {
        self.data.borrow().keys().filter(|k| k.starts_with(prefix)).cloned().collect()
    }
}

impl Counts for SpinKv {
    async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        self.enter(Some(key)).await?;
        let mut data = self.data.borrow_mut();
        let stored = data.get(key).map_or(Ok(0), |v| String::from_utf8_lossy(v).parse::<i64>());
        let sum = stored.map_err(|e| KvError::Other(format!("{key} holds no number: {e}")))? + delta;
        data.insert(key.to_owned(), sum.to_string().into_bytes());
        Ok(sum)
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.enter(Some(key)).await?;
        self.data.borrow_mut().remove(key);
        Ok(())
    }
}

impl AtomicKv for SpinKv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.enter(None).await?;
        Ok(self.data.borrow().get(key).cloned())
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.enter(Some(key)).await?;
        self.data.borrow_mut().insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool, KvError> {
        self.enter(None).await?;
        Ok(self.data.borrow().contains_key(key))
    }

    /// Two keys a page, so the protocol must follow the cursor.
    async fn list_keys(&self, cursor: Option<&str>) -> Result<(Vec<String>, Option<String>), KvError> {
        self.enter(None).await?;
        let data = self.data.borrow();
        let after = |k: &&String| cursor.is_none_or(|c| k.as_str() > c);
        let page: Vec<String> = data.keys().filter(after).take(2).cloned().collect();
        let more = page.last().is_some_and(|last| data.keys().any(|k| k > last));
        let next = if more { page.last().cloned() } else { None };
        Ok((page, next))
    }
}

type SpinStore = ClaimedStore<SpinKv, Clock>;

fn spin_store() -> (SpinStore, Clock) {
    let clock = Clock(Rc::new(Cell::new(T0)));
    (ClaimedStore::new(SpinKv::default(), clock.clone()), clock)
}

fn poll_once<T>(call: Pin<&mut impl Future<Output = T>>) -> Option<T> {
    match call.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

/// Polls `call` until it parks or finishes, at most `steps` times.
fn poll_steps<T>(mut call: Pin<&mut impl Future<Output = T>>, steps: usize) -> Option<T> {
    (0..steps).find_map(|_| poll_once(call.as_mut()))
}

fn value(store: &SpinStore, key: &str) -> Option<(Vec<u8>, u64)> {
    pollster::block_on(store.get_versioned(key)).unwrap()
}

#[test]
fn the_claim_protocol_keeps_the_store_contract() {
    let (store, _) = spin_store();
    pollster::block_on(store_contract::check(&store, "check/")).unwrap();
    assert!(store.kv().keys("").is_empty(), "scratch keys and their claims are gone: {:?}", store.kv().keys(""));
}

#[test]
fn it_keeps_the_contract_while_sqlite_says_the_database_is_locked() {
    let (store, _) = spin_store();
    store.kv().locked_every.set(3);
    pollster::block_on(store_contract::check(&store, "check/")).unwrap();
    assert!(store.kv().keys("").is_empty(), "{:?}", store.kv().keys(""));
}

/// Three instances read a record at one version and write it at once, in many interleavings
/// of their store calls: exactly one write wins, the others learn they lost (no error), and the
/// record holds the winner's value at the next version.
#[test]
fn writers_at_one_version_in_any_interleaving_exactly_one_wins() {
    for seed in 0..300u64 {
        let (store, _) = spin_store();
        let key = "job/j";
        let expected = if seed % 2 == 0 {
            0
        } else {
            pollster::block_on(store.put_if_absent(key, b"first".to_vec())).unwrap();
            1
        };
        let names = ["a", "b", "c"];
        let mut writers: Vec<_> =
            names.iter().map(|name| Box::pin(store.put_if_version(key, name.as_bytes().to_vec(), expected))).collect();
        let mut results: Vec<Option<bool>> = vec![None; names.len()];
        let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut polls = 0;
        while results.iter().any(Option::is_none) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let running: Vec<usize> = (0..names.len()).filter(|&i| results[i].is_none()).collect();
            let i = running[usize::try_from(rng % running.len() as u64).unwrap()];
            if let Some(result) = poll_once(writers[i].as_mut()) {
                results[i] = Some(result.unwrap_or_else(|e| panic!("seed {seed}: writer {i} failed: {e}")));
            }
            polls += 1;
            assert!(polls < 100_000, "seed {seed}: the writers never finish");
        }
        drop(writers);
        let winners: Vec<usize> = (0..names.len()).filter(|&i| results[i] == Some(true)).collect();
        assert_eq!(winners.len(), 1, "seed {seed}: {results:?}");
        let written = value(&store, key);
        assert_eq!(written, Some((names[winners[0]].as_bytes().to_vec(), expected + 1)), "seed {seed}");
    }
}

/// The winner has claimed the version and not yet written it; the loser's re-read would find
/// the old record and its caller would retry on a stale copy. It waits until the value is
/// there, then reports the lost race.
#[test]
fn a_loser_waits_for_the_winners_value_and_then_sees_it() {
    let (store, _) = spin_store();
    let point = store.kv().gate.arm(At::Write("job/j".into()));
    let mut winner = pin!(store.put_if_absent("job/j", b"winner".to_vec()));
    assert!(
        poll_steps(winner.as_mut(), 20).is_none() && store.kv().gate.parked(point),
        "claimed, parked before its write"
    );
    let mut loser = pin!(store.put_if_absent("job/j", b"loser".to_vec()));
    assert!(poll_steps(loser.as_mut(), 50).is_none(), "the loser waits while the claimed version is unwritten");
    store.kv().gate.release(point);
    assert!(poll_steps(winner.as_mut(), 20).unwrap().unwrap());
    assert!(!poll_steps(loser.as_mut(), 20).expect("the loser sees the value").unwrap());
    assert_eq!(value(&store, "job/j"), Some((b"winner".to_vec(), 1)));
}

/// A claimer dies between its claim and its write. Writers of that version then fail (a 503,
/// retried) rather than wait for ever, and once the claim is older than `STALE_CLAIM_MS` the
/// version is claimed anew and written.
#[test]
fn a_dead_claimers_version_is_claimed_anew_once_its_claim_is_stale() {
    let (store, clock) = spin_store();
    let point = store.kv().gate.arm(At::Write("job/j".into()));
    {
        let mut dying = pin!(store.put_if_absent("job/j", b"never".to_vec()));
        assert!(poll_steps(dying.as_mut(), 20).is_none() && store.kv().gate.parked(point));
    } // The instance is gone: its claim stands, its value was never written.
    let began = clock.now();
    let refused = pollster::block_on(store.put_if_absent("job/j", b"too soon".to_vec()));
    assert!(refused.unwrap_err().to_string().contains("claimed but not yet written"));
    assert!(clock.now().millis_since(began) <= CLAIM_WAIT_MS + 10, "it gave up after CLAIM_WAIT_MS");
    assert_eq!(value(&store, "job/j"), None, "nothing written");
    clock.advance_ms(STALE_CLAIM_MS);
    assert!(pollster::block_on(store.put_if_absent("job/j", b"later".to_vec())).unwrap());
    assert_eq!(value(&store, "job/j"), Some((b"later".to_vec(), 1)));
    assert!(
        store.kv().keys("claim/").contains(&SpinStore::claim_key("job/j", 1, 1)),
        "claimed under the next generation: {:?}",
        store.kv().keys("claim/")
    );
    // The record moves on as usual, and deleting it removes every generation's claim.
    assert!(pollster::block_on(store.put_if_version("job/j", b"next".to_vec(), 1)).unwrap());
    pollster::block_on(store.delete("job/j")).unwrap();
    assert!(store.kv().keys("").is_empty(), "{:?}", store.kv().keys(""));
}

/// A store locked for longer than the retry: the call fails as a store error (a 503), and
/// because the refused increment did nothing, no claim stands in the next writer's way.
#[test]
fn a_store_locked_past_the_retry_refuses_the_write_and_leaves_no_claim() {
    let (store, clock) = spin_store();
    store.kv().locked.set(u64::MAX);
    let began = clock.now();
    let refused = pollster::block_on(store.put_if_absent("job/j", b"v".to_vec()));
    assert!(refused.unwrap_err().to_string().contains("busy"));
    assert!(clock.now().millis_since(began) <= BUSY_WAIT_MS + 10);
    assert!(store.kv().keys("").is_empty(), "nothing written, nothing claimed");
    store.kv().locked.set(0);
    assert!(pollster::block_on(store.put_if_absent("job/j", b"v".to_vec())).unwrap(), "the next writer is not held up");
}

#[test]
fn a_listing_follows_the_cursor_and_sees_no_claims() {
    let (store, _) = spin_store();
    for i in 0..5 {
        assert!(pollster::block_on(store.put_if_absent(&format!("job/{i}"), Vec::new())).unwrap());
    }
    pollster::block_on(store.put("due/1", Vec::new())).unwrap();
    let listed = pollster::block_on(store.list("job/")).unwrap();
    assert_eq!(listed, ["job/0", "job/1", "job/2", "job/3", "job/4"]);
    assert_eq!(store.kv().keys("claim/").len(), 5, "each record's claim is kept beside it");
}
