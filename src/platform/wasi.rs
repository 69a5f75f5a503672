//! What the two wasm32-wasip2 packagings share (the Spin HTTP component and the `inference`
//! library component): clock, randomness, configuration from Spin variables, outbound HTTP
//! through `wasi:http`, and job records in `wasi:keyvalue`.
//!
//! Job records live in the `default` bucket: the `store` interface for reads and writes,
//! `atomics` compare-and-swap for put-if-absent, so an idempotency key is claimed exactly
//! once even across instances (Spin >= 3 provides both).

use bytes::Bytes;
use http::{Request, Response};
use spin_sdk::http::ErrorCode;
use spin_sdk::wit::wasi::keyvalue::{atomics, store};

use crate::engine::{Config, Error, HttpClient, Store, StoreError, Timestamp, TransportError};

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
pub(super) struct KvStore {
    bucket: store::Bucket,
}

impl KvStore {
    pub(super) fn open() -> Result<Self, StoreError> {
        store::open("default").map(|bucket| Self { bucket }).map_err(kv_error)
    }
}

fn kv_error(e: store::Error) -> StoreError {
    StoreError::new(format!("{e:?}"))
}

impl Store for KvStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.bucket.get(key).map_err(kv_error)
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.bucket.set(key, &value).map_err(kv_error)
    }

    async fn put_if_absent(&self, key: &str, value: Vec<u8>) -> Result<bool, StoreError> {
        let cas = atomics::Cas::new(&self.bucket, key).map_err(kv_error)?;
        if cas.current().map_err(kv_error)?.is_some() {
            return Ok(false);
        }
        match atomics::swap(cas, &value) {
            Ok(()) => Ok(true),
            Err(atomics::CasError::CasFailed(_)) => Ok(false),
            Err(atomics::CasError::StoreError(e)) => Err(kv_error(e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.bucket.delete(key).map_err(kv_error)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.bucket.list_keys(cursor.as_deref()).map_err(kv_error)?;
            keys.extend(page.keys.into_iter().filter(|k| k.starts_with(prefix)));
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(keys),
            }
        }
    }
}
