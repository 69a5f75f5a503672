//! A key-value store whose one trustworthy atomic operation is `increment`, as Spin's
//! `wasi:keyvalue` is (and as a Durable Object's SQLite can be made to be): what the claim
//! protocol ([`super::claimed_kv`]) and the limit counters ([`super::counters`]) are built on.

use super::store::StoreError;
use crate::engine::Timer;

/// How long a call refused as [`KvError::Busy`] is retried.
pub const BUSY_WAIT_MS: u64 = 2_000;
/// How long a waiting caller pauses between two looks.
pub const POLL_MS: u64 = 2;

/// What the counters need of a key-value store: an atomic increment, and a delete.
#[allow(async_fn_in_trait)] // implemented and called on single-threaded wasm: no Send bound wanted
pub trait Counts {
    /// Adds `delta` to the number stored at `key` (0 if absent) and returns the sum. Atomic.
    async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError>;
    async fn delete(&self, key: &str) -> Result<(), KvError>;
}

/// What the claim protocol needs of a key-value store besides [`Counts`].
#[allow(async_fn_in_trait)] // implemented and called on single-threaded wasm: no Send bound wanted
pub trait AtomicKv: Counts {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    async fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError>;
    async fn exists(&self, key: &str) -> Result<bool, KvError>;
    /// One page of every key in the store, from `cursor`, and the cursor of the next page.
    async fn list_keys(&self, cursor: Option<&str>) -> Result<(Vec<String>, Option<String>), KvError>;
}

/// A key-value call that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvError {
    /// The store refused the call without doing it (SQLite's `database is locked`): try again.
    Busy,
    Other(String),
}

/// Pauses a waiting caller between two looks.
pub(crate) async fn pause(timer: &impl Timer) {
    timer.sleep_until(timer.now().plus_millis(POLL_MS)).await;
}

/// Runs a key-value call, retrying it while the store reports itself busy (for at most
/// [`BUSY_WAIT_MS`]: nothing was written by a refused call).
pub(crate) async fn retry_busy<R, F: std::future::Future<Output = Result<R, KvError>>>(
    timer: &impl Timer,
    mut op: impl FnMut() -> F,
) -> Result<R, StoreError> {
    let began = timer.now();
    loop {
        match op().await {
            Ok(value) => return Ok(value),
            Err(KvError::Busy) if timer.now().millis_since(began) < BUSY_WAIT_MS => pause(timer).await,
            Err(KvError::Busy) => return Err(StoreError::new("the store stayed busy (database is locked)")),
            Err(KvError::Other(message)) => return Err(StoreError::new(message)),
        }
    }
}
