//! Cloudflare Workers adapter (workers-rs). Compiled only for `wasm32-unknown-unknown`.
//!
//! Sharding: jobs live in a fixed set of Durable Objects, the one [`job_object`] names from
//! the request id. The engine's [`Placement`] says where a request runs: stateless routes
//! (predict, queue status, wake, preflight, every refusal) run in the Worker itself; a submit,
//! status, cancel or inbox delivery runs in the job's object ([`object`]), whose SQLite
//! storage ([`sql`]) is the [`Store`](crate::engine::Store) of its jobs and whose alarm runs
//! [`Engine::sweep`](crate::engine::Engine::sweep) at the engine's `wake_at`. Idempotent
//! submits derive their id from the key, so retries reach the same object and its atomic
//! put-if-absent.
//!
//! Admission at the object: the Worker admits each request once (route, key, scope, size,
//! CORS), and the job's object admits what it is sent once more, from the same head. The
//! choice, against handing the object the Worker's decision in a trusted internal header:
//! an object is reachable by more than this Worker (any Worker of the account can bind its
//! class by `script_name`), so a header that meant "already authenticated" would let such a
//! Worker skip the key check; and the object's own admission costs one route parse and one
//! SHA-256 of the key, a few microseconds beside the object round trip. So each place
//! admits once, and neither trusts the other.
//!
//! - [`config`]: the configuration from the Worker's bindings, parsed once per isolate;
//! - [`runtime`]: workerd's clock, randomness, request and response;
//! - [`fetch`]: outbound HTTP through `fetch`;
//! - [`object`]: a job's Durable Object; [`sql`]: its SQLite store;
//! - [`limits`]: a key's limits object, the counters of the key and its browser tokens.
//!
//! Limits: a request whose caller has limits takes them in its key's limits object, after
//! admission and before its body is read or a job's object is reached (one object round trip,
//! only for callers with limits).

mod config;
mod fetch;
mod limits;
mod object;
mod runtime;
mod sql;

use bytes::Bytes;
use http::{HeaderValue, Request};
use http_body_util::Full;
use worker::{event, Context, Env};

use self::config::load_config;
use self::fetch::{FetchClient, WorkerStream};
use self::limits::limits_object;
use self::runtime::{clock_ms, entropy, now, read_request, request_head, Meter};
use self::sql::SqlStore;
use crate::engine::ports::counters::Taken;
use crate::engine::ports::http_client::Timed;
use crate::engine::surface::log::content_length;
use crate::engine::{Admission, Admitted, Ctx, Engine, Error, Placement, StoreError};

const JOBS_BINDING: &str = "JOBS";
const LIMITS_BINDING: &str = "LIMITS";
/// Carries the Worker's randomness to the job's object, so both place the same request id.
const ENTROPY_HEADER: &str = "x-edge-predict-entropy";

/// The Durable Object's name that holds the job with this request id: one of 256, from the
/// id's first byte. It depends on the id alone, so every request for
/// a job, an idempotent retry and the inbox reach the same object forever.
///
/// Why a fixed set and not one object per job: an object's store serves many jobs (the
/// engine's sweep and due index are per store, as on Spin), and on workerd a new object per
/// job costs its own database file: one object per job took ~270–380 durable writes/s where a
/// set of 16–256 objects took 1,600–3,100/s (`make bench`, README). 256 keeps each object far
/// below the per-object request rate Cloudflare advises while spreading load across machines.
pub(crate) fn job_object(request_id: &str) -> String {
    format!("jobs-{}", request_id.get(..2).unwrap_or("00"))
}

#[event(fetch)]
async fn fetch(raw: worker::web_sys::Request, env: Env, _ctx: Context) -> worker::Result<worker::Response> {
    let began_ms = clock_ms();
    let http = Timed::new(FetchClient, &clock_ms);
    let mut meter = Meter { received_at: now(), began_ms, http: &http, bytes_in: None };
    let config = match load_config(&env) {
        Ok(c) => c,
        Err(e) => {
            // The operator's log names the whole field; the caller is told its top level only.
            worker::console_error!("{e}");
            return Ok(meter.refused(&e, e.to_response()));
        }
    };
    let entropy = entropy();
    let engine = Engine::new(&config, &SqlStore::STATELESS, &http);
    let head = match request_head(&raw) {
        Ok(head) => head,
        Err(e) => return Ok(meter.refused(&e, e.to_response())),
    };
    meter.bytes_in = content_length(head.headers());
    // Credentials and announced size first: a refused request reads no body, touches no object.
    let (mut admitted, streamed) = match engine.admit(&head, now(), entropy) {
        Admission::Refuse(e) => {
            // Unread and unwanted: canceled, so workerd answers now instead of waiting for it.
            if let Some(body) = raw.body() {
                let _ = body.cancel();
            }
            return Ok(meter.refused(&e, engine.refusal(&head, &e, now())));
        }
        Admission::Stream(admitted) => (admitted, true),
        Admission::Read(admitted) => (admitted, false),
    };
    if let Err(e) = take_limits(&env, &admitted).await {
        if let Some(body) = raw.body() {
            let _ = body.cancel();
        }
        return Ok(meter.refuse(&admitted, &e));
    }
    if streamed {
        // A sync route: the runtime's own body stream goes to the upstream and the answer
        // back, neither read here.
        let limit = admitted.body_limit();
        let request = head.map(|()| WorkerStream::Caller { body: raw.body(), limit });
        let outcome = engine.handle_stream(&admitted, request).await;
        // A body refused before it went upstream is canceled (see above).
        if let Some(body) = raw.body().filter(|b| !b.locked()) {
            let _ = body.cancel();
        }
        let status = outcome.response.status();
        return Ok(meter.answer(outcome.response, |m| admitted.log_line(status, &outcome.note, m)));
    }
    let request = match worker::request_from_wasm(raw) {
        Ok(request) => read_request(request, admitted.body_limit()).await,
        Err(e) => Err(Error::MalformedJson { message: format!("the request could not be read: {e}") }),
    };
    let request = match request {
        Ok(r) => r,
        Err(e) => return Ok(meter.refuse(&admitted, &e)),
    };
    meter.bytes_in = Some(request.body().len() as u64);
    // A forged delivery is refused here, before the job's object is touched.
    if let Err(e) = engine.check_body(&mut admitted, &request) {
        return Ok(meter.refuse(&admitted, &e));
    }
    match engine.placement(&admitted, &request, entropy) {
        // Each object sweeps itself at its alarm: `/_sweep` has no store to sweep here.
        Placement::Stateless | Placement::Store => {
            let outcome = engine.handle(&admitted, request, Ctx::new(now(), entropy)).await;
            let status = outcome.response.status();
            Ok(meter.answer(outcome.response, |m| admitted.log_line(status, &outcome.note, m)))
        }
        // The job's object answers, with its Server-Timing, and logs the request.
        Placement::Job(request_id) => match forward(&env, &request_id, request, entropy).await {
            Ok(response) => Ok(response),
            Err(e) => {
                // Still the gateway's JSON, with CORS: the caller may retry.
                worker::console_error!("job object {request_id}: {e}");
                Ok(meter.refuse(&admitted, &Error::Store(StoreError::new("the job's object could not be reached"))))
            }
        },
    }
}

/// Takes what the request spends of its caller's limits, in its key's limits object.
async fn take_limits(env: &Env, admitted: &Admitted) -> Result<(), Error> {
    let spend = admitted.spend(now());
    if spend.is_empty() {
        return Ok(());
    }
    let object = limits_object(spend.tenant());
    let unreachable = |e: worker::Error| {
        worker::console_error!("limits object {object}: {e}");
        Error::Store(StoreError::new("the caller's limits could not be counted"))
    };
    let mut init = worker::RequestInit::new();
    init.with_method(worker::Method::Post)
        .with_body(Some(serde_json::to_string(&spend.charges()).unwrap_or_default().into()));
    let request = worker::Request::new_with_init("https://limits.internal/take", &init).map_err(unreachable)?;
    let namespace = env.durable_object(LIMITS_BINDING).map_err(unreachable)?;
    let stub = namespace.id_from_name(&object).and_then(|id| id.get_stub()).map_err(unreachable)?;
    let mut response = stub.fetch_with_request(request).await.map_err(unreachable)?;
    if response.status_code() != 200 {
        let message = response.text().await.unwrap_or_default();
        return Err(unreachable(worker::Error::RustError(message)));
    }
    let taken: Taken = response.json().await.map_err(unreachable)?;
    spend.verdict(&taken, now())
}

/// Runs a job's request in its Durable Object, with the Worker's entropy (so both place the
/// same request id).
async fn forward(
    env: &Env,
    request_id: &str,
    request: Request<Bytes>,
    entropy: [u8; 16],
) -> worker::Result<worker::Response> {
    let mut request = request.map(Full::new);
    let value = HeaderValue::from_str(&hex::encode(entropy)).map_err(|e| worker::Error::RustError(e.to_string()))?;
    request.headers_mut().insert(ENTROPY_HEADER, value);
    let stub = env.durable_object(JOBS_BINDING)?.id_from_name(&job_object(request_id))?.get_stub()?;
    let response = stub.fetch_with_request(worker::Request::try_from(request)?).await?;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test]
    fn request_ids_spread_over_every_object_and_each_names_one_for_good() {
        let mut objects = std::collections::BTreeSet::new();
        for n in 0u16..2000 {
            let mut entropy = [0u8; 16];
            entropy[..2].copy_from_slice(&n.to_le_bytes());
            let id = hex::encode(entropy);
            assert_eq!(job_object(&id), job_object(&id.clone()));
            objects.insert(job_object(&id));
        }
        assert_eq!(objects.len(), 256, "ids spread over every object");
        assert_eq!(job_object("x"), "jobs-00", "an id too short for a prefix still names an object");
    }
}
