//! What the two wasm32-wasip2 packagings share (the Spin HTTP component and the `inference`
//! library component): clock, randomness, configuration from Spin variables, outbound HTTP
//! through `wasi:http`, and job records in `wasi:keyvalue`.
//!
//! Job records live in the `default` bucket: the `store` interface for reads and writes, and
//! `atomics::increment` to claim each new version of a record (see [`KvStore`] for why not CAS).

use bytes::Bytes;
use http::{Request, Response};
use spin_sdk::http::ErrorCode;
use spin_sdk::wit::wasi::keyvalue::{atomics, store};

use std::time::{Duration, Instant};

use crate::engine::{Config, Error, HttpClient, Store, StoreError, Timestamp, TransportError, Version};

/// The Spin variable holding the configuration document. Secrets it names are Spin
/// variables too (lowercased, as Spin requires).
pub(super) const CONFIG_VARIABLE: &str = "edge_predict_config";

pub(super) fn now() -> Timestamp {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    Timestamp::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

pub(super) fn entropy() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    // wasi:random cannot fail for 16 bytes; zeros would only cost uniqueness.
    let _ = getrandom::fill(&mut bytes);
    bytes
}

pub(super) fn load_config() -> Result<Config, Error> {
    let doc = spin_sdk::variables::get(CONFIG_VARIABLE).map_err(|e| Error::Config {
        field: CONFIG_VARIABLE.to_owned(),
        message: format!("variable not available: {e}"),
    })?;
    Config::parse(&doc, &|name| spin_sdk::variables::get(&name.to_ascii_lowercase()).ok())
}

/// Outbound HTTP through `wasi:http/outgoing-handler`. Deadlines are the host's (Spin's
/// outbound timeouts), reported as `Timeout`.
#[derive(Debug)]
pub(super) struct WasiHttp;

impl HttpClient for WasiHttp {
    type Body = Bytes;

    async fn send(&self, request: Request<Bytes>) -> Result<Response<Bytes>, TransportError> {
        let request = request.map(|b| b.to_vec());
        match spin_sdk::http::send::<_, Response<Vec<u8>>>(request).await {
            Ok(response) => Ok(response.map(Bytes::from)),
            Err(spin_sdk::http::SendError::Http(code)) => Err(match code {
                ErrorCode::ConnectionTimeout
                | ErrorCode::ConnectionReadTimeout
                | ErrorCode::ConnectionWriteTimeout
                | ErrorCode::HttpResponseTimeout => TransportError::Timeout,
                other => TransportError::Connect(format!("{other:?}")),
            }),
            Err(e) => Err(TransportError::Connect(e.to_string())),
        }
    }

    async fn read(&self, body: Bytes, limit: usize) -> Result<Bytes, TransportError> {
        if body.len() > limit {
            return Err(TransportError::Body(format!("body exceeds {limit} bytes")));
        }
        Ok(body)
    }
}

/// [`Store`] on `wasi:keyvalue` bucket `default`.
///
/// Every value is stored behind its version (8 bytes, big-endian). A conditional write of
/// version `n + 1` first claims it: `atomics::increment` of `claim/{key}@{n + 1}` returns 1 to
/// exactly one caller, who then writes the value. Increment is the one atomic primitive that
/// holds in Spin's real stores: in its SQLite store (the default) a compare-and-swap made for
/// an absent key swaps with an upsert that always succeeds, and in its Redis store every swap
/// reports failure (and an aborted transaction reports success); increment runs in one SQLite
/// transaction, or as Redis `INCRBY`. A caller that loses a claim waits briefly until the
/// winner's value (which follows its claim at once) is there, so whoever re-reads sees it.
///
/// What this cannot survive: a host killed between a claim and its write leaves that key at
/// its old version with the next one claimed; later writes to that key fail (503) until it
/// is deleted. The window is two consecutive store calls with no I/O between them.
///
/// Spin's SQLite store runs increment in a deferred transaction: two processes on one
/// database file (two `spin up` on one state directory) can get `database is locked` at
/// once instead of waiting. Such calls are retried briefly; nothing was written.
pub(super) struct KvStore {
    bucket: store::Bucket,
}

/// How long a caller that lost a claim waits for the winner's value before giving up with a
/// store error (the winner died between its claim and its write).
const CLAIM_WAIT: Duration = Duration::from_secs(2);
/// How long a store call refused with `database is locked` is retried.
const BUSY_WAIT: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(2);
const VERSION_BYTES: usize = 8;

impl KvStore {
    pub(super) fn open() -> Result<Self, StoreError> {
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

fn claim_key(key: &str, version: Version) -> String {
    format!("claim/{key}@{version}")
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
        if self.call(|b| atomics::increment(b, &claim_key(key, next), 1))? == 1 {
            self.write(key, &value, next)?;
            return Ok(true);
        }
        // Lost: the winner writes right after its claim. One instance serves one request, so
        // blocking this one while it waits holds up no one else.
        let began = Instant::now();
        while self.read(key)?.is_none_or(|(_, version)| version < next) {
            if began.elapsed() > CLAIM_WAIT {
                return Err(StoreError::new(format!("{key}: version {next} is claimed but was never written")));
            }
            std::thread::sleep(POLL);
        }
        Ok(false)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        // The value first: while its claims stand, no one else can write the key.
        let version = self.read(key)?.map_or(0, |(_, version)| version);
        self.call(|b| b.delete(key))?;
        for v in 1..=version {
            self.call(|b| b.delete(&claim_key(key, v)))?;
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
