//! The file-backed key-value store behind `wasi:keyvalue` and `fermyon:spin/key-value`.
//!
//! All keys of the single "default" store live in memory and in one JSON file. Every write
//! rewrites the whole file atomically (write a temporary file next to it, fsync, rename, fsync
//! the directory) while holding the store's mutex, so:
//! - a reader of the file (or a restarted host) sees the state after some completed write, never a
//!   half-written file, even if the process is killed mid-write;
//! - read-modify-write operations (`increment`, CAS `swap`) are atomic with respect to every
//!   other request of this host.
//!
//! Compare-and-swap uses per-key versions kept in memory (bumped by every write of that key), so a
//! `swap` fails if the key was written at all since its `cas.new`, even back to the same value.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use anyhow::{bail, Context};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The `format` field of the file: bump it if the layout changes.
const FORMAT: &str = "wasi-host-kv/1";

/// The JSON document on disk: `{"format": "wasi-host-kv/1", "entries": {"key": "<base64 value>"}}`.
#[derive(Serialize, Deserialize)]
struct FileDocument {
    format: String,
    entries: BTreeMap<String, String>,
}

/// A file-backed key-value map with atomic read-modify-write operations.
#[derive(Debug)]
pub struct KvStore {
    path: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    entries: BTreeMap<String, Vec<u8>>,
    /// Version of each key written since this store was opened (absent: version 0).
    versions: HashMap<String, u64>,
    clock: u64,
}

/// What `cas.new` saw: the value of `key` and the key's version at that moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub key: String,
    pub value: Option<Vec<u8>>,
    version: u64,
}

/// The result of [`KvStore::swap`].
#[derive(Debug)]
pub enum SwapOutcome {
    Swapped,
    /// The key was written after the snapshot was taken; here is a fresh snapshot.
    Changed(Snapshot),
}

impl KvStore {
    /// Opens (or starts) the store persisted at `path`; a missing file is an empty store.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let entries = match fs::read(path) {
            Ok(bytes) => decode(&bytes).with_context(|| format!("reading key-value file {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e).with_context(|| format!("reading key-value file {}", path.display())),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok(Self { path: path.to_owned(), state: Mutex::new(State { entries, ..State::default() }) })
    }

    /// The file this store persists to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave `entries` half-updated (see `commit`).
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().entries.get(key).cloned()
    }

    pub fn exists(&self, key: &str) -> bool {
        self.lock().entries.contains_key(key)
    }

    /// All keys, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.lock().entries.keys().cloned().collect()
    }

    pub fn get_many(&self, keys: Vec<String>) -> Vec<(String, Option<Vec<u8>>)> {
        let state = self.lock();
        keys.into_iter()
            .map(|k| {
                let v = state.entries.get(&k).cloned();
                (k, v)
            })
            .collect()
    }

    pub fn set(&self, key: &str, value: Vec<u8>) -> anyhow::Result<()> {
        let mut state = self.lock();
        self.commit(&mut state, vec![(key.to_owned(), Some(value))])
    }

    pub fn delete(&self, key: &str) -> anyhow::Result<()> {
        let mut state = self.lock();
        if !state.entries.contains_key(key) {
            return Ok(());
        }
        self.commit(&mut state, vec![(key.to_owned(), None)])
    }

    pub fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> anyhow::Result<()> {
        let mut state = self.lock();
        self.commit(&mut state, pairs.into_iter().map(|(k, v)| (k, Some(v))).collect())
    }

    pub fn delete_many(&self, keys: Vec<String>) -> anyhow::Result<()> {
        let mut state = self.lock();
        self.commit(&mut state, keys.into_iter().map(|k| (k, None)).collect())
    }

    /// Adds `delta` to the counter at `key` (absent: 0) and returns the new value.
    ///
    /// Counters are stored as 8-byte little-endian i64, as Spin's SQLite key-value store does.
    pub fn increment(&self, key: &str, delta: i64) -> anyhow::Result<i64> {
        let mut state = self.lock();
        let current = match state.entries.get(key) {
            None => 0,
            Some(bytes) => match <[u8; 8]>::try_from(bytes.as_slice()) {
                Ok(le) => i64::from_le_bytes(le),
                Err(_) => bail!("value of {key:?} is not a counter (8-byte little-endian i64)"),
            },
        };
        let Some(next) = current.checked_add(delta) else { bail!("incrementing {key:?} by {delta} overflows") };
        self.commit(&mut state, vec![(key.to_owned(), Some(next.to_le_bytes().to_vec()))])?;
        Ok(next)
    }

    /// Starts a compare-and-swap on `key`.
    pub fn snapshot(&self, key: &str) -> Snapshot {
        Self::snapshot_of(&self.lock(), key)
    }

    fn snapshot_of(state: &State, key: &str) -> Snapshot {
        Snapshot {
            key: key.to_owned(),
            value: state.entries.get(key).cloned(),
            version: state.versions.get(key).copied().unwrap_or(0),
        }
    }

    /// Writes `value` if `snapshot.key` was not written since `snapshot` was taken.
    pub fn swap(&self, snapshot: &Snapshot, value: Vec<u8>) -> anyhow::Result<SwapOutcome> {
        let mut state = self.lock();
        let version = state.versions.get(&snapshot.key).copied().unwrap_or(0);
        if version != snapshot.version {
            return Ok(SwapOutcome::Changed(Self::snapshot_of(&state, &snapshot.key)));
        }
        self.commit(&mut state, vec![(snapshot.key.clone(), Some(value))])?;
        Ok(SwapOutcome::Swapped)
    }

    /// Applies `changes` (None deletes): persists the new map first, then updates memory, so
    /// memory and file agree even when the write fails.
    fn commit(&self, state: &mut State, changes: Vec<(String, Option<Vec<u8>>)>) -> anyhow::Result<()> {
        let mut next = state.entries.clone();
        for (key, value) in &changes {
            match value {
                Some(v) => next.insert(key.clone(), v.clone()),
                None => next.remove(key),
            };
        }
        self.persist(&next).with_context(|| format!("writing key-value file {}", self.path.display()))?;
        state.entries = next;
        for (key, _) in changes {
            state.clock += 1;
            let clock = state.clock;
            state.versions.insert(key, clock);
        }
        Ok(())
    }

    fn persist(&self, entries: &BTreeMap<String, Vec<u8>>) -> anyhow::Result<()> {
        let doc = FileDocument {
            format: FORMAT.to_owned(),
            entries: entries
                .iter()
                .map(|(k, v)| (k.clone(), base64::engine::general_purpose::STANDARD.encode(v)))
                .collect(),
        };
        let mut bytes = serde_json::to_vec_pretty(&doc)?;
        bytes.push(b'\n');
        let mut tmp_name = self.path.file_name().context("key-value path has no file name")?.to_owned();
        tmp_name.push(".tmp");
        let tmp = self.path.with_file_name(tmp_name);
        {
            let mut file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
            file.write_all(&bytes)?;
            file.sync_all()?;
        }
        fs::rename(&tmp, &self.path).with_context(|| format!("renaming {} into place", tmp.display()))?;
        // Make the rename itself durable; best effort (not every filesystem allows fsync on a directory).
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

fn decode(bytes: &[u8]) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let doc: FileDocument = serde_json::from_slice(bytes)?;
    if doc.format != FORMAT {
        bail!("unknown format {:?} (expected {FORMAT:?})", doc.format);
    }
    doc.entries
        .into_iter()
        .map(|(k, v)| {
            let value = base64::engine::general_purpose::STANDARD
                .decode(&v)
                .with_context(|| format!("value of {k:?} is not base64"))?;
            Ok((k, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn persists_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/kv.json");
        let kv = KvStore::open(&path).unwrap();
        kv.set("a", b"1".to_vec()).unwrap();
        kv.set("b", vec![0, 255]).unwrap();
        kv.delete("a").unwrap();
        assert_eq!(kv.increment("n", 5).unwrap(), 5);
        assert_eq!(kv.increment("n", -2).unwrap(), 3);
        drop(kv);
        let kv = KvStore::open(&path).unwrap();
        assert_eq!(kv.keys(), vec!["b".to_owned(), "n".to_owned()]);
        assert_eq!(kv.get("b"), Some(vec![0, 255]));
        assert_eq!(kv.get("n"), Some(3i64.to_le_bytes().to_vec()));
        assert!(!path.with_file_name("kv.json.tmp").exists());
    }

    #[test]
    fn swap_fails_after_any_write_even_to_the_same_value() {
        let dir = tempfile::tempdir().unwrap();
        let kv = KvStore::open(&dir.path().join("kv.json")).unwrap();
        let snap = kv.snapshot("k");
        assert_eq!(snap.value, None);
        kv.set("k", b"x".to_vec()).unwrap();
        kv.delete("k").unwrap(); // back to absent: still a change
        let SwapOutcome::Changed(fresh) = kv.swap(&snap, b"mine".to_vec()).unwrap() else { panic!("swapped") };
        assert!(matches!(kv.swap(&fresh, b"mine".to_vec()).unwrap(), SwapOutcome::Swapped));
        assert_eq!(kv.get("k"), Some(b"mine".to_vec()));
    }

    #[test]
    fn rejects_a_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.json");
        fs::write(&path, b"{not json").unwrap();
        assert!(KvStore::open(&path).is_err());
    }
}
