//! Job records in `wasi:keyvalue` bucket `default`. The claim protocol that makes its
//! conditional writes safe is the engine's ([`ClaimedStore`], tested on the host against a
//! model of these stores' quirks); this file only translates its calls.

use spin_sdk::wit::wasi::keyvalue::{atomics, store};

use super::WasiTimer;
use crate::engine::ports::claimed_kv::ClaimedStore;
use crate::engine::ports::kv::{AtomicKv, Counts, KvError};
use crate::engine::StoreError;

/// [`Store`](crate::engine::Store) on `wasi:keyvalue` bucket `default`.
pub(crate) type KvStore = ClaimedStore<Bucket, WasiTimer>;

pub(crate) fn open() -> Result<KvStore, StoreError> {
    Ok(ClaimedStore::new(open_bucket()?, WasiTimer))
}

/// The bucket itself: where the counters of callers' limits are.
#[cfg_attr(not(feature = "spin"), allow(dead_code))] // the component counts in its store's bucket
pub(crate) fn open_bucket() -> Result<Bucket, StoreError> {
    store::open("default").map(Bucket).map_err(|e| StoreError::new(format!("{e:?}")))
}

/// The bucket, as the claim protocol sees it.
#[derive(Debug)]
pub(crate) struct Bucket(store::Bucket);

/// SQLite's busy answer is the one refusal worth retrying: nothing was written.
fn kv_error(e: store::Error) -> KvError {
    match e {
        store::Error::Other(m) if m.contains("database is locked") => KvError::Busy,
        e => KvError::Other(format!("{e:?}")),
    }
}

impl Counts for Bucket {
    async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        atomics::increment(&self.0, key, delta).map_err(kv_error)
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.0.delete(key).map_err(kv_error)
    }
}

impl AtomicKv for Bucket {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.0.get(key).map_err(kv_error)
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.0.set(key, value).map_err(kv_error)
    }

    async fn exists(&self, key: &str) -> Result<bool, KvError> {
        self.0.exists(key).map_err(kv_error)
    }

    async fn list_keys(&self, cursor: Option<&str>) -> Result<(Vec<String>, Option<String>), KvError> {
        self.0.list_keys(cursor).map(|page| (page.keys, page.cursor)).map_err(kv_error)
    }
}
