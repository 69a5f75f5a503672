//! A [`Store`] on a key-value store whose one trustworthy atomic operation is `increment`:
//! Spin's `wasi:keyvalue`. The protocol lives here, generic over [`AtomicKv`], so that it is
//! tested on the host against a model of the real stores' quirks (`tests/spin_store.rs`) and
//! on real Spin by the conformance suite; the Spin adapter only translates calls.
//!
//! Every value is stored behind its version (8 bytes, big-endian). A conditional write of
//! version `n + 1` first claims it with `increment` of `claim/{key}@{n + 1}.0` by the current
//! Unix time in milliseconds: exactly one caller gets its own stamp back (the key was 0), and
//! writes the value. Increment is the one primitive that holds in Spin's real stores: in its
//! SQLite store (the default) a compare-and-swap made for an absent key swaps with an upsert
//! that always succeeds, and in its Redis store every swap reports failure (and an aborted
//! transaction reports success); increment runs in one SQLite transaction, or as Redis
//! `INCRBY`. A caller that loses a claim waits briefly until the winner's value (which follows
//! its claim at once) is there, so whoever re-reads sees it.
//!
//! A claimer can die between its claim and its write: a host is killed, or Spin drops an
//! instance whose client went away. The stamps say when a claim was made; one older than
//! [`STALE_CLAIM_MS`] with its version still unwritten is a dead claimer's, and the version is
//! claimed anew under the next generation (`….1`, …). Until then writes to that key fail
//! (503, retry). What this cannot survive is a claimer that is alive but stalls that long
//! between two consecutive store calls, with no I/O between them, and then writes.
//!
//! Spin's SQLite store runs increment in a deferred transaction: two processes on one database
//! file (two `spin up` on one state directory) can get `database is locked` at once instead of
//! waiting ([`KvError::Busy`](super::kv::KvError::Busy)). Such calls are retried briefly; nothing was written.

use super::kv::{pause, retry_busy, AtomicKv, KvError};
use super::store::{Store, StoreError, Version};
use crate::engine::Timer;

/// How long a caller that lost a claim waits for the winner's value before giving up with a
/// store error (the winner died between its claim and its write).
pub const CLAIM_WAIT_MS: u64 = 2_000;
/// A claim older than this whose version was never written is taken to be a dead claimer's
/// (a host killed, or an instance dropped with its client's connection, between the claim and
/// the write), and the version is claimed anew.
pub const STALE_CLAIM_MS: u64 = 10_000;
const VERSION_BYTES: usize = 8;

/// [`Store`] on an [`AtomicKv`], by the claim protocol above. The [`Timer`] is the wall clock
/// (Unix time: it stamps claims) and bounds every wait; on Spin its sleep blocks the instance,
/// which serves one request and so holds up no one else.
#[derive(Debug)]
pub struct ClaimedStore<K, T> {
    kv: K,
    timer: T,
}

impl<K: AtomicKv, T: Timer> ClaimedStore<K, T> {
    pub fn new(kv: K, timer: T) -> Self {
        Self { kv, timer }
    }

    /// The key-value store underneath, for a test to look at.
    pub fn kv(&self) -> &K {
        &self.kv
    }

    /// The key that claims `version` of `key` (its `generation`th claim).
    pub fn claim_key(key: &str, version: Version, generation: u32) -> String {
        format!("claim/{key}@{version}.{generation}")
    }

    /// Runs a store call, retrying it while the store reports itself busy.
    async fn call<R, F: std::future::Future<Output = Result<R, KvError>>>(
        &self,
        op: impl FnMut() -> F,
    ) -> Result<R, StoreError> {
        retry_busy(&self.timer, op).await
    }

    async fn read(&self, key: &str) -> Result<Option<(Vec<u8>, Version)>, StoreError> {
        let Some(mut stored) = self.call(|| self.kv.get(key)).await? else { return Ok(None) };
        if stored.len() < VERSION_BYTES {
            return Err(StoreError::new(format!("{key}: stored value has no version")));
        }
        let value = stored.split_off(VERSION_BYTES);
        let version = Version::from_be_bytes(stored.try_into().unwrap_or_default());
        Ok(Some((value, version)))
    }

    async fn write(&self, key: &str, value: &[u8], version: Version) -> Result<(), StoreError> {
        let mut stored = Vec::with_capacity(VERSION_BYTES + value.len());
        stored.extend_from_slice(&version.to_be_bytes());
        stored.extend_from_slice(value);
        self.call(|| self.kv.set(key, &stored)).await
    }
}

/// When a claim was made, from the sum of the stamps (Unix milliseconds) its claimers added:
/// usually one stamp; a few when callers raced for it within milliseconds of each other.
fn claim_time(sum: i64, now: i64) -> i64 {
    let claimers = (sum.saturating_add(now / 2) / now.max(1)).max(1);
    sum / claimers
}

impl<K: AtomicKv, T: Timer> Store for ClaimedStore<K, T> {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.read(key).await?.map(|(value, _)| value))
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, Version)>, StoreError> {
        self.read(key).await
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        // Plain keys are never claimed: their version stays 0.
        self.write(key, &value, 0).await
    }

    async fn put_if_version(&self, key: &str, value: Vec<u8>, expected: Version) -> Result<bool, StoreError> {
        let next = expected + 1;
        let began = self.timer.now();
        let mut generation = 0;
        'claim: loop {
            // Increment by the time: the first caller gets exactly its own delta back (the
            // key was 0), and the total tells a later caller when the key was claimed.
            let stamp = i64::try_from(self.timer.now().millis()).unwrap_or(i64::MAX).max(1);
            let claim = Self::claim_key(key, next, generation);
            let total = self.call(|| self.kv.increment(&claim, stamp)).await?;
            if total == stamp {
                self.write(key, &value, next).await?;
                return Ok(true);
            }
            // Lost: the winner writes right after its claim.
            let claimed_at = claim_time(total.saturating_sub(stamp), stamp);
            let stale = u64::try_from(stamp.saturating_sub(claimed_at)).unwrap_or(0) > STALE_CLAIM_MS;
            loop {
                if self.read(key).await?.is_some_and(|(_, version)| version >= next) {
                    return Ok(false);
                }
                if stale {
                    // Its claimer died between claim and write: claim the version anew.
                    generation += 1;
                    continue 'claim;
                }
                if self.timer.now().millis_since(began) > CLAIM_WAIT_MS {
                    return Err(StoreError::new(format!("{key}: version {next} is claimed but not yet written")));
                }
                pause(&self.timer).await;
            }
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        // The value first: while its claims stand, no one else can write the key.
        let version = self.read(key).await?.map_or(0, |(_, version)| version);
        self.call(|| self.kv.delete(key)).await?;
        for v in 1..=version {
            for generation in 0.. {
                let claim = Self::claim_key(key, v, generation);
                if !self.call(|| self.kv.exists(&claim)).await? {
                    break;
                }
                self.call(|| self.kv.delete(&claim)).await?;
            }
        }
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let (page, next) = self.call(|| self.kv.list_keys(cursor.as_deref())).await?;
            keys.extend(page.into_iter().filter(|k| k.starts_with(prefix)));
            match next {
                Some(next) => cursor = Some(next),
                None => return Ok(keys),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::claim_time;

    #[test]
    fn a_claims_time_is_read_from_its_stamps() {
        let t = 1_780_000_000_000;
        assert_eq!(claim_time(t, t + 5), t, "one claimer");
        assert_eq!(claim_time(t + (t + 3), t + 5), t + 1, "two claimers within milliseconds");
        assert_eq!(claim_time(3 * t, t + 20_000), t, "three claimers");
        assert_eq!(claim_time(0, t), 0, "no stamp");
    }
}
