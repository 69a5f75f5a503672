//! Storage, shaped by what the engine needs: reads that return a version, writes conditional
//! on the version read (absent included), plain writes for keys only one writer owns, delete,
//! and a prefix listing for the sweep. Async and without `Send`: wasm is single-threaded.
//!
//! Workers implement it on a Durable Object's SQLite storage (a version column, `UPDATE …
//! WHERE version = ?`); Spin on its key-value store (a version per value, each new version
//! claimed with `atomics::increment`, the one primitive that is atomic in Spin's real stores).
//! [`MemoryStore`] is the reference.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

pub use crate::engine::base::StoreError;

/// A value's version: 0 means absent; every conditional write makes it one higher.
pub type Version = u64;

/// Keys are short ASCII strings (`job/<id>`, `idem/<hex>`, `due/<id>`); values are bytes.
///
/// Two kinds of key, never mixed: keys written with [`Store::put_if_version`] (job records,
/// idempotency records, leases), where every write is conditional on the version read, so
/// concurrent requests never overwrite each other; and keys written with [`Store::put`]
/// (index entries, hints), where the last write wins.
#[allow(async_fn_in_trait)] // implemented and called on single-threaded wasm: no Send bound wanted
pub trait Store {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// The value and its version.
    async fn get_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, Version)>, StoreError>;
    /// Writes unconditionally (last write wins).
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError>;
    /// Writes `value` as version `expected + 1` only if `key` is still at version `expected`
    /// (0: absent). `Ok(false)` if another write got there first: re-read and re-apply. Atomic.
    async fn put_if_version(&self, key: &str, value: Vec<u8>, expected: Version) -> Result<bool, StoreError>;
    /// Deletes the key (and its version: it can be created again). Only for keys no request
    /// is still writing: records at the end of their retention, a lease by its holder.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Every key starting with `prefix`, in any order.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;

    /// Writes only if `key` has no value; `Ok(false)` if it had one, which can then be read.
    async fn put_if_absent(&self, key: &str, value: Vec<u8>) -> Result<bool, StoreError> {
        self.put_if_version(key, value, 0).await
    }
}

/// The store for requests placed [`Stateless`](crate::engine::Placement::Stateless): every call fails,
/// so a routing mistake shows as a 503, never as state written in the wrong place.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoStore;

impl Store for NoStore {
    async fn get(&self, _: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Err(StoreError::new("no store for a stateless request"))
    }
    async fn get_versioned(&self, _: &str) -> Result<Option<(Vec<u8>, Version)>, StoreError> {
        Err(StoreError::new("no store for a stateless request"))
    }
    async fn put(&self, _: &str, _: Vec<u8>) -> Result<(), StoreError> {
        Err(StoreError::new("no store for a stateless request"))
    }
    async fn put_if_version(&self, _: &str, _: Vec<u8>, _: Version) -> Result<bool, StoreError> {
        Err(StoreError::new("no store for a stateless request"))
    }
    async fn delete(&self, _: &str) -> Result<(), StoreError> {
        Err(StoreError::new("no store for a stateless request"))
    }
    async fn list(&self, _: &str) -> Result<Vec<String>, StoreError> {
        Err(StoreError::new("no store for a stateless request"))
    }
}

/// In-memory reference store. Clones share contents, so a test can "restart" the engine on
/// the same data; `fail_writes_after` simulates a crash at a chosen write.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Rc<RefCell<MemoryInner>>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    map: BTreeMap<String, (Version, Vec<u8>)>,
    writes_left: Option<usize>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// After `n` more successful writes, every write fails (until `heal`).
    pub fn fail_writes_after(&self, n: usize) {
        self.inner.borrow_mut().writes_left = Some(n);
    }

    pub fn heal(&self) {
        self.inner.borrow_mut().writes_left = None;
    }

    /// A copy of everything stored, for asserting that a refused request changed nothing.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.inner.borrow().map.iter().map(|(k, (_, v))| (k.clone(), v.clone())).collect()
    }

    fn write(&self, f: impl FnOnce(&mut BTreeMap<String, (Version, Vec<u8>)>) -> bool) -> Result<bool, StoreError> {
        let mut inner = self.inner.borrow_mut();
        match inner.writes_left {
            Some(0) => return Err(StoreError::new("simulated crash: write refused")),
            Some(ref mut n) => *n -= 1,
            None => {}
        }
        Ok(f(&mut inner.map))
    }
}

impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.inner.borrow().map.get(key).map(|(_, v)| v.clone()))
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, Version)>, StoreError> {
        Ok(self.inner.borrow().map.get(key).map(|(version, v)| (v.clone(), *version)))
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.write(|m| {
            let version = m.get(key).map_or(0, |(v, _)| *v);
            m.insert(key.to_owned(), (version + 1, value)).is_none()
        })
        .map(drop)
    }

    async fn put_if_version(&self, key: &str, value: Vec<u8>, expected: Version) -> Result<bool, StoreError> {
        self.write(|m| {
            if m.get(key).map_or(0, |(v, _)| *v) != expected {
                return false;
            }
            m.insert(key.to_owned(), (expected + 1, value));
            true
        })
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.write(|m| m.remove(key).is_some()).map(drop)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .inner
            .borrow()
            .map
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pollster::block_on;

    #[test]
    fn memory_store_semantics() {
        block_on(async {
            let s = MemoryStore::new();
            assert_eq!(s.get("a").await.unwrap(), None);
            assert!(s.put_if_absent("a", b"1".to_vec()).await.unwrap());
            assert!(!s.put_if_absent("a", b"2".to_vec()).await.unwrap());
            assert_eq!(s.get("a").await.unwrap(), Some(b"1".to_vec()));
            // Conditional on the version read: a stale writer loses and changes nothing.
            assert_eq!(s.get_versioned("a").await.unwrap(), Some((b"1".to_vec(), 1)));
            assert!(s.put_if_version("a", b"3".to_vec(), 1).await.unwrap());
            assert!(!s.put_if_version("a", b"stale".to_vec(), 1).await.unwrap());
            assert!(!s.put_if_version("a", b"stale".to_vec(), 0).await.unwrap());
            assert_eq!(s.get_versioned("a").await.unwrap(), Some((b"3".to_vec(), 2)));
            // Deleted: absent again (version 0), so it can be created anew.
            s.delete("a").await.unwrap();
            assert!(s.put_if_absent("a", b"4".to_vec()).await.unwrap());
            s.put("p/1", vec![]).await.unwrap();
            s.put("p/2", vec![]).await.unwrap();
            s.put("q/1", vec![]).await.unwrap();
            assert_eq!(s.list("p/").await.unwrap(), ["p/1", "p/2"]);
            s.delete("p/1").await.unwrap();
            assert_eq!(s.list("p/").await.unwrap(), ["p/2"]);
            s.fail_writes_after(1);
            s.put("b", vec![]).await.unwrap();
            assert!(s.put("c", vec![]).await.is_err());
            assert_eq!(s.get("c").await.unwrap(), None);
            s.heal();
            s.put("c", vec![]).await.unwrap();
        });
    }
}
