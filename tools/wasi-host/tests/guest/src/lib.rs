//! Test guest for wasi-host: one route per host interface it links.
//!
//! Routes (query values are used raw, without percent-decoding):
//! - `GET /var?name=N`: `fermyon:spin/variables.get(N)`; 404 `undefined: N` when missing.
//! - `GET|PUT|DELETE /kv?key=K`: `wasi:keyvalue/store` on bucket "default" (GET 404 when absent).
//! - `GET /kv-exists?key=K`, `GET /kv-keys` (sorted, one per line).
//! - `POST /kv-incr?key=K&delta=D`: `wasi:keyvalue/atomics.increment`.
//! - `POST /kv-put-if-absent?key=K`: CAS put-if-absent; 201 created, 409 `exists` or `cas-failed`.
//! - `POST /kv-cas-race?key=K`: `cas.new`, then a plain `set` of K, then `swap`: must answer 409 `cas-failed`.
//! - `GET|PUT /spin-kv?key=K`: `fermyon:spin/key-value` on store "default".
//! - `GET /fetch?url=U`: outbound GET through `wasi:http/outgoing-handler`; echoes upstream status and body.
//! - `GET /spin-headers`: the `spin-*` request headers, sorted, one `name: value` per line.
//! - `GET /sleep?ms=N`: sleeps N ms (a host clock wait), then answers `slept N`.

use spin_sdk::http::{IntoResponse, Method, Request, Response};
use spin_sdk::http_component;
use spin_sdk::wit::wasi::keyvalue::{atomics, store};

fn query<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.query().split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

fn text(status: u16, body: impl Into<String>) -> Response {
    Response::builder().status(status).header("content-type", "text/plain").body(body.into()).build()
}

fn bucket() -> anyhow::Result<store::Bucket> {
    store::open("default").map_err(|e| anyhow::anyhow!("open: {e:?}"))
}

#[http_component]
async fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let path = req.path().to_owned();
    println!("guest: {:?} {path}?{}", req.method(), req.query());
    let key = query(&req, "key").unwrap_or("").to_owned();
    let resp = match (req.method(), path.as_str()) {
        (Method::Get, "/var") => {
            let name = query(&req, "name").unwrap_or("");
            match spin_sdk::variables::get(name) {
                Ok(value) => text(200, value),
                Err(spin_sdk::variables::Error::Undefined(n)) => text(404, format!("undefined: {n}")),
                Err(e) => text(500, format!("error: {e:?}")),
            }
        }
        (Method::Get, "/kv") => match bucket()?.get(&key) {
            Ok(Some(v)) => Response::new(200, v),
            Ok(None) => text(404, "absent"),
            Err(e) => text(500, format!("{e:?}")),
        },
        (Method::Put, "/kv") => {
            bucket()?.set(&key, req.body()).map_err(|e| anyhow::anyhow!("set: {e:?}"))?;
            text(204, "")
        }
        (Method::Delete, "/kv") => {
            bucket()?.delete(&key).map_err(|e| anyhow::anyhow!("delete: {e:?}"))?;
            text(204, "")
        }
        (Method::Get, "/kv-exists") => {
            text(200, bucket()?.exists(&key).map_err(|e| anyhow::anyhow!("{e:?}"))?.to_string())
        }
        (Method::Get, "/kv-keys") => {
            let mut keys = bucket()?.list_keys(None).map_err(|e| anyhow::anyhow!("{e:?}"))?.keys;
            keys.sort();
            text(200, keys.join("\n"))
        }
        (Method::Post, "/kv-incr") => {
            let delta: i64 = query(&req, "delta").unwrap_or("1").parse()?;
            let n = atomics::increment(&bucket()?, &key, delta).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            text(200, n.to_string())
        }
        (Method::Post, "/kv-put-if-absent") => {
            let b = bucket()?;
            let cas = atomics::Cas::new(&b, &key).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            if cas.current().map_err(|e| anyhow::anyhow!("{e:?}"))?.is_some() {
                text(409, "exists")
            } else {
                match atomics::swap(cas, req.body()) {
                    Ok(()) => text(201, "created"),
                    Err(atomics::CasError::CasFailed(_)) => text(409, "cas-failed"),
                    Err(atomics::CasError::StoreError(e)) => text(500, format!("{e:?}")),
                }
            }
        }
        (Method::Post, "/kv-cas-race") => {
            let b = bucket()?;
            let cas = atomics::Cas::new(&b, &key).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            b.set(&key, b"changed-behind-cas").map_err(|e| anyhow::anyhow!("{e:?}"))?;
            match atomics::swap(cas, req.body()) {
                Ok(()) => text(200, "swapped"),
                Err(atomics::CasError::CasFailed(fresh)) => {
                    let now = fresh.current().map_err(|e| anyhow::anyhow!("{e:?}"))?.unwrap_or_default();
                    text(409, format!("cas-failed; current={}", String::from_utf8_lossy(&now)))
                }
                Err(atomics::CasError::StoreError(e)) => text(500, format!("{e:?}")),
            }
        }
        (Method::Get, "/spin-kv") => match spin_sdk::key_value::Store::open_default()?.get(&key)? {
            Some(v) => Response::new(200, v),
            None => text(404, "absent"),
        },
        (Method::Put, "/spin-kv") => {
            spin_sdk::key_value::Store::open_default()?.set(&key, req.body())?;
            text(204, "")
        }
        (Method::Get, "/fetch") => {
            let url = query(&req, "url").unwrap_or("");
            let upstream: Response = spin_sdk::http::send(Request::get(url)).await?;
            Response::builder()
                .status(*upstream.status())
                .header("x-upstream-status", upstream.status().to_string())
                .body(upstream.into_body())
                .build()
        }
        (Method::Get, "/spin-headers") => {
            let mut lines: Vec<String> = req
                .headers()
                .filter(|(name, _)| name.starts_with("spin-"))
                .map(|(name, value)| format!("{name}: {}", value.as_str().unwrap_or("?")))
                .collect();
            lines.sort();
            text(200, lines.join("\n"))
        }
        (Method::Get, "/sleep") => {
            let ms: u64 = query(&req, "ms").unwrap_or("0").parse()?;
            std::thread::sleep(std::time::Duration::from_millis(ms));
            text(200, format!("slept {ms}"))
        }
        _ => text(404, "no such route"),
    };
    Ok(resp)
}
