//! Job records in `wasi:keyvalue` bucket `default`: the `store` interface for reads and writes,
//! and `atomics::increment` to claim each new version of a record (see [`KvStore`] for why
//! not compare-and-swap).

use std::time::{Duration, Instant};

use spin_sdk::wit::wasi::keyvalue::{atomics, store};

use super::now;
use crate::engine::{Store, StoreError, Version};

/// [`Store`] on `wasi:keyvalue` bucket `default`.
///
/// Every value is stored behind its version (8 bytes, big-endian). A conditional write of
/// version `n + 1` first claims it with `atomics::increment` of `claim/{key}@{n + 1}.0` by the
/// current Unix time in milliseconds: exactly one caller gets its own stamp back (the key was
/// 0), and writes the value. Increment is the one atomic primitive that holds in Spin's real
/// stores: in its SQLite store (the default) a compare-and-swap made for an absent key swaps
/// with an upsert that always succeeds, and in its Redis store every swap reports failure
/// (and an aborted transaction reports success); increment runs in one SQLite transaction, or
/// as Redis `INCRBY`. A caller that loses a claim waits briefly until the winner's value
/// (which follows its claim at once) is there, so whoever re-reads sees it.
///
/// A claimer can die between its claim and its write: a host is killed, or Spin drops an
/// instance whose client went away. The stamps say when a claim was made; one older than
/// [`STALE_CLAIM_MS`] with its version still unwritten is a dead claimer's, and the version
/// is claimed anew under the next generation (`….1`, …). Until then writes to that key fail
/// (503, retry). What this cannot survive is a claimer that is alive but stalls that long
/// between two consecutive store calls, with no I/O between them, and then writes.
///
/// Spin's SQLite store runs increment in a deferred transaction: two processes on one
/// database file (two `spin up` on one state directory) can get `database is locked` at
/// once instead of waiting. Such calls are retried briefly; nothing was written.
pub(crate) struct KvStore {
    bucket: store::Bucket,
}

/// How long a caller that lost a claim waits for the winner's value before giving up with a
/// store error (the winner died between its claim and its write).
const CLAIM_WAIT: Duration = Duration::from_secs(2);
/// A claim older than this whose version was never written is taken to be a dead claimer's
/// (a host killed, or an instance dropped with its client's connection, between the claim
/// and the write), and the version is claimed anew.
const STALE_CLAIM_MS: i64 = 10_000;
/// How long a store call refused with `database is locked` is retried.
const BUSY_WAIT: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(2);
const VERSION_BYTES: usize = 8;

impl KvStore {
    pub(crate) fn open() -> Result<Self, StoreError> {
        store::open("default").map(|bucket| Self { bucket }).map_err(kv_error)
    }

    /// Runs a store call, retrying it while SQLite reports the database locked.
    fn call<T>(&self, mut op: impl FnMut(&store::Bucket) -> Result<T, store::Error>) -> Result<T, StoreError> {
        let began = Instant::now();
        loop {
            match op(&self.bucket) {
                Err(store::Error::Other(m)) if m.contains("database is locked") && began.elapsed() < BUSY_WAIT => {
                    std::thread::sleep(POLL);
                }
                result => return result.map_err(kv_error),
            }
        }
    }

    fn read(&self, key: &str) -> Result<Option<(Vec<u8>, Version)>, StoreError> {
        let Some(mut stored) = self.call(|b| b.get(key))? else { return Ok(None) };
        if stored.len() < VERSION_BYTES {
            return Err(StoreError::new(format!("{key}: stored value has no version")));
        }
        let value = stored.split_off(VERSION_BYTES);
        let version = Version::from_be_bytes(stored.try_into().unwrap_or_default());
        Ok(Some((value, version)))
    }

    fn write(&self, key: &str, value: &[u8], version: Version) -> Result<(), StoreError> {
        let mut stored = Vec::with_capacity(VERSION_BYTES + value.len());
        stored.extend_from_slice(&version.to_be_bytes());
        stored.extend_from_slice(value);
        self.call(|b| b.set(key, &stored))
    }
}

fn claim_key(key: &str, version: Version, generation: u32) -> String {
    format!("claim/{key}@{version}.{generation}")
}

/// When a claim was made, from the sum of the stamps (Unix milliseconds) its claimers added:
/// usually one stamp; a few when callers raced for it within milliseconds of each other.
fn claim_time(sum: i64, now: i64) -> i64 {
    let claimers = (sum.saturating_add(now / 2) / now.max(1)).max(1);
    sum / claimers
}

fn kv_error(e: store::Error) -> StoreError {
    StoreError::new(format!("{e:?}"))
}

impl Store for KvStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.read(key)?.map(|(value, _)| value))
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, Version)>, StoreError> {
        self.read(key)
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        // Plain keys are never claimed: their version stays 0.
        self.write(key, &value, 0)
    }

    async fn put_if_version(&self, key: &str, value: Vec<u8>, expected: Version) -> Result<bool, StoreError> {
        let next = expected + 1;
        let began = Instant::now();
        let mut generation = 0;
        'claim: loop {
            // Increment by the time: the first caller gets exactly its own delta back (the
            // key was 0), and the total tells a later caller when the key was claimed.
            let stamp = i64::try_from(now().millis()).unwrap_or(i64::MAX).max(1);
            let claim = claim_key(key, next, generation);
            let total = self.call(|b| atomics::increment(b, &claim, stamp))?;
            if total == stamp {
                self.write(key, &value, next)?;
                return Ok(true);
            }
            // Lost: the winner writes right after its claim. One instance serves one request,
            // so blocking this one while it waits holds up no one else.
            let claimed_at = claim_time(total.saturating_sub(stamp), stamp);
            loop {
                if self.read(key)?.is_some_and(|(_, version)| version >= next) {
                    return Ok(false);
                }
                if stamp.saturating_sub(claimed_at) > STALE_CLAIM_MS {
                    // Its claimer died between claim and write: claim the version anew.
                    generation += 1;
                    continue 'claim;
                }
                if began.elapsed() > CLAIM_WAIT {
                    return Err(StoreError::new(format!("{key}: version {next} is claimed but not yet written")));
                }
                std::thread::sleep(POLL);
            }
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        // The value first: while its claims stand, no one else can write the key.
        let version = self.read(key)?.map_or(0, |(_, version)| version);
        self.call(|b| b.delete(key))?;
        for v in 1..=version {
            for generation in 0.. {
                let claim = claim_key(key, v, generation);
                if !self.call(|b| b.exists(&claim))? {
                    break;
                }
                self.call(|b| b.delete(&claim))?;
            }
        }
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.call(|b| b.list_keys(cursor.as_deref()))?;
            keys.extend(page.keys.into_iter().filter(|k| k.starts_with(prefix)));
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(keys),
            }
        }
    }
}
