//! Spin / wasi:http adapter (spin-sdk 5.2, WASIp2). Compiled for `wasm32-wasip2` with the
//! `spin` feature; exports `wasi:http/incoming-handler@0.2.0`.
//!
//! Job records live in the `default` key-value store through `wasi:keyvalue` (Spin ≥ 3): the
//! `store` interface for reads and writes, `atomics` compare-and-swap for put-if-absent, so an
//! idempotency key is claimed exactly once even across instances. Spin has no alarms and no
//! work after a request, so the response is sent first and then, in the same invocation, the
//! engine's sweep runs if one is due ([`Engine::sweep_if_due`]); `POST /_sweep` (any gateway
//! key) runs it on demand for a cron trigger or any scheduler.

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response};
use spin_sdk::http::{ErrorCode, Fields, IncomingRequest, OutgoingResponse, ResponseOutparam};
use spin_sdk::http_component;
use spin_sdk::wit::wasi::keyvalue::{atomics, store};

use crate::engine::{
    Body, Config, Ctx, Engine, Error, HttpClient, Store, StoreError, Timestamp, TransportError, MAX_REQUEST_BODY,
};

/// The Spin variable holding the configuration document. Secrets it names are Spin
/// variables too (lowercased, as Spin requires).
const CONFIG_VARIABLE: &str = "edge_predict_config";

fn now() -> Timestamp {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    Timestamp::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

fn entropy() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    // wasi:random cannot fail for 16 bytes; zeros would only cost uniqueness.
    let _ = getrandom::fill(&mut bytes);
    bytes
}

fn load_config() -> Result<Config, Error> {
    let doc = spin_sdk::variables::get(CONFIG_VARIABLE).map_err(|e| Error::Config {
        field: CONFIG_VARIABLE.to_owned(),
        message: format!("variable not available: {e}"),
    })?;
    Config::parse(&doc, &|name| spin_sdk::variables::get(&name.to_ascii_lowercase()).ok())
}

async fn read_request(incoming: IncomingRequest) -> Result<Request<Bytes>, Error> {
    let mut request = Request::new(Bytes::new());
    *request.method_mut() = incoming.method().into();
    *request.uri_mut() = incoming.path_with_query().unwrap_or_default().parse().unwrap_or_default();
    for (name, value) in incoming.headers().entries() {
        if let (Ok(name), Ok(value)) = (http::HeaderName::try_from(name), http::HeaderValue::from_bytes(&value)) {
            request.headers_mut().append(name, value);
        }
    }
    let mut body = Vec::new();
    let mut stream = std::pin::pin!(incoming.into_body_stream());
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| Error::MalformedJson { message: format!("request body could not be read: {e}") })?;
        if body.len() + chunk.len() > MAX_REQUEST_BODY {
            return Err(Error::PayloadTooLarge { limit: MAX_REQUEST_BODY });
        }
        body.extend_from_slice(&chunk);
    }
    *request.body_mut() = Bytes::from(body);
    Ok(request)
}

async fn send_response(out: ResponseOutparam, response: Response<Bytes>) {
    let (parts, body) = response.into_parts();
    let entries: Vec<(String, Vec<u8>)> =
        parts.headers.iter().map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec())).collect();
    let headers = Fields::from_list(&entries).unwrap_or_else(|_| Fields::new());
    let outgoing = OutgoingResponse::new(headers);
    let _ = outgoing.set_status_code(parts.status.as_u16());
    // The body sink is finished when dropped, at the end of this call: the caller sees the
    // whole response before the sweep that may follow.
    let _ = out.set_with_body(outgoing, body.to_vec()).await;
}

#[http_component]
async fn handle(incoming: IncomingRequest, out: ResponseOutparam) {
    let config = match load_config() {
        Ok(c) => c,
        Err(e) => return send_response(out, e.to_response()).await,
    };
    let store = match KvStore::open() {
        Ok(s) => s,
        Err(e) => return send_response(out, Error::Store(e).to_response()).await,
    };
    let engine = Engine::new(&config, &store, &WasiHttp);
    let outcome = match read_request(incoming).await {
        Ok(request) => engine.handle(request, Ctx { now: now(), entropy: entropy() }).await,
        Err(e) => return send_response(out, e.to_response()).await,
    };
    let response = outcome.response.map(|body| match body {
        Body::Full(bytes) | Body::Upstream(bytes) => bytes,
    });
    send_response(out, response).await;
    // After the response: remember when the engine wants to run again, and run what is due.
    engine.note_wake(outcome.wake_at).await;
    let _ = engine.sweep_if_due(now()).await;
}

/// Outbound HTTP through `wasi:http/outgoing-handler`. Deadlines are the host's (Spin's
/// outbound timeouts), reported as `Timeout`.
#[derive(Debug)]
struct WasiHttp;

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
struct KvStore {
    bucket: store::Bucket,
}

impl KvStore {
    fn open() -> Result<Self, StoreError> {
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
