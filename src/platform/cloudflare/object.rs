//! A job's Durable Object: one of the fixed set [`super::job_object`] names. Its SQLite
//! storage is the store of its jobs, its alarm the engine's sweep. It admits each request it
//! is sent again, from the head, as any place does (see [`super`]).

use std::cell::Cell;
use std::rc::Rc;

use http::Request;
use worker::{durable_object, DurableObject, Env, HttpRequest, State};

use super::config::load_config;
use super::fetch::FetchClient;
use super::runtime::{alarm_date, clock_ms, entropy, now, read_request, Meter, WorkerTimer};
use super::sql::SqlStore;
use super::ENTROPY_HEADER;
use crate::engine::ports::http_client::Timed;
use crate::engine::{Admission, Engine, Error, Outcome, StoreError, Timestamp};

/// How soon an alarm that found the configuration unusable runs again.
const CONFIG_RETRY_MS: u64 = 10_000;

/// One job's Durable Object: its SQLite storage is the job's store, its alarm the sweep.
#[allow(missing_debug_implementations)] // State and Env have no Debug
#[durable_object]
pub struct JobObject {
    state: State,
    env: Env,
    /// Whether this object's table exists (see [`SqlStore`]).
    table: Rc<Cell<bool>>,
}

impl JobObject {
    fn store(&self) -> SqlStore {
        SqlStore { sql: Some(self.state.storage().sql()), table: Some(Rc::clone(&self.table)) }
    }

    /// Moves the alarm to `wake_at` if that is earlier than the one set (or none is).
    async fn schedule(&self, wake_at: Option<Timestamp>) -> worker::Result<()> {
        let Some(at) = wake_at else { return Ok(()) };
        let storage = self.state.storage();
        let current = storage.get_alarm().await?;
        let at_ms = i64::try_from(at.millis()).unwrap_or(i64::MAX);
        if current.is_none_or(|c| c > at_ms) {
            storage.set_alarm(worker::ScheduledTime::new(alarm_date(at))).await?;
        }
        Ok(())
    }
}

impl DurableObject for JobObject {
    fn new(state: State, env: Env) -> Self {
        Self { state, env, table: Rc::default() }
    }

    async fn fetch(&self, request: worker::Request) -> worker::Result<worker::Response> {
        let began_ms = clock_ms();
        let http = Timed::new(FetchClient, &clock_ms);
        let mut meter = Meter { received_at: now(), began_ms, http: &http, bytes_in: None };
        let config = match load_config(&self.env) {
            Ok(c) => c,
            Err(e) => return Ok(meter.refused(&e, e.to_response())),
        };
        let request = match http::Request::try_from(request) {
            Ok(r) => r,
            Err(e) => {
                let e = Error::Store(StoreError::new(e.to_string()));
                return Ok(meter.refused(&e, e.to_response()));
            }
        };
        let store = self.store();
        let log = |line: &str| worker::console_log!("{line}");
        let engine = Engine::new(&config, &store, &http).with_log(&log);
        // Every answer from here on is the engine's: JSON, with CORS for the caller's origin.
        let (mut parts, body) = request.into_parts();
        let entropy = parts
            .headers
            .remove(ENTROPY_HEADER)
            .and_then(|v| hex::decode(v.as_bytes()).ok())
            .and_then(|v| <[u8; 16]>::try_from(v).ok())
            .unwrap_or_else(entropy);
        // This object's own admission: it trusts nothing the Worker decided (see `super`).
        let head = Request::from_parts(parts, ());
        let mut admitted = match engine.admit(&head, now(), entropy) {
            Admission::Read(admitted) => admitted,
            Admission::Refuse(e) => return Ok(meter.refused(&e, engine.refusal(&head, &e, now()))),
            // Sync routes are stateless: the Worker never sends one here.
            Admission::Stream(admitted) => {
                let e = Error::NotFound { what: "a sync route in a job's object".to_owned() };
                return Ok(meter.refuse(&admitted, &e));
            }
        };
        let (parts, ()) = head.into_parts();
        let request = match read_request(HttpRequest::from_parts(parts, body), admitted.body_limit()).await {
            Ok(r) => r,
            Err(e) => return Ok(meter.refuse(&admitted, &e)),
        };
        meter.bytes_in = Some(request.body().len() as u64);
        if let Err(e) = engine.check_body(&mut admitted, &request) {
            return Ok(meter.refuse(&admitted, &e));
        }
        // Long-polls are held here, in the job's object: timers keep it alive, not busy.
        let Outcome { response, wake_at, note, .. } =
            engine.handle_held(&admitted, request, entropy, &WorkerTimer).await;
        if let Err(e) = self.schedule(wake_at).await {
            // The job's schedule is its alarm: without it, say so (503, retry) rather than 200.
            worker::console_error!("alarm not set: {e}");
            return Ok(meter.refuse(&admitted, &Error::Store(StoreError::new("the job's alarm could not be set"))));
        }
        let status = response.status();
        Ok(meter.answer(response, |m| admitted.log_line(status, &note, m)))
    }

    async fn alarm(&self) -> worker::Result<worker::Response> {
        let config = match load_config(&self.env) {
            Ok(c) => c,
            Err(e) => {
                // The job's schedule must survive a bad deploy: answering an error would end
                // this alarm for good (and the platform's own retries give up after a few).
                // Come back until the configuration is fixed.
                worker::console_error!("alarm: {e}; trying again in {} s", CONFIG_RETRY_MS / 1000);
                self.schedule(Some(now().plus_millis(CONFIG_RETRY_MS))).await?;
                return worker::Response::empty();
            }
        };
        let store = self.store();
        // The same engine type as `fetch`'s: one copy of the engine in the Worker's wasm.
        let http = Timed::new(FetchClient, &clock_ms);
        let log = |line: &str| worker::console_log!("{line}");
        let report = Engine::new(&config, &store, &http).with_log(&log).sweep(&now).await;
        if report.failed > 0 {
            let first = report.first_error.as_deref().unwrap_or_default();
            worker::console_error!("sweep: {} job(s) failed and stay due; first: {first}", report.failed);
        }
        self.schedule(report.wake_at).await?;
        worker::Response::empty()
    }
}
