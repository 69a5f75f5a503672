//! Durable async jobs: the record (load, conditional update), submit and cancel. Status reads,
//! reconciliation and expiry are in `reconcile.rs`; the sweep in `sweep.rs`.
//!
//! Store layout: `job/{id}` the record, `due/{id}` the sweep's index of live records,
//! `kept/{end of retention}/{id}` finished ones with only deletion left (`sweep.rs`),
//! `idem/{sha256(key id, Idempotency-Key)}` → `{request_id, body_sha256}`.
//!
//! Order of work on submit: idempotency record, index, job record (QUEUED, submission pending
//! and leased), then the upstream call, then the record update, then 201. The upstream is told
//! to deliver to `/webhooks/baseten/{our id}`, so whichever step a crash interrupts, the record
//! exists and the result can still be matched; the sweep resubmits a submission whose lease
//! ran out. One window remains: a crash after the upstream accepted and before the record says
//! so makes the sweep submit again (Baseten has no idempotent submit); the inbox then keeps the
//! first result and ignores the second.
//!
//! Every write of a record is conditional on the version read ([`Engine::update`]): a request
//! that lost a race re-reads and re-applies its change, so a result the inbox stored meanwhile
//! is never overwritten by a stale copy; terminal states never move again (see
//! [`Status::transition`]). Store layout beyond records: `out/{id}/{delivery}/{n}` large
//! outputs (`output.rs`), `sweep/lease/{window}` and `sweep/next` (`sweep.rs`).

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use serde_json::{json, Value};

use super::auth;
use super::base::{is_request_id, json_response, Error, Operation, Subject, Target, Timestamp};
use super::config::{ApiKey, Config};
use super::forward::{json_request, upstream_request};
use super::job::{codes, Job, JobError, Status, Submission, Upstream};
use super::reconcile::upstream_message;
use super::signature::{hmac_sha256, sha256};
use super::submit::AsyncRequest;
use super::{full, Ctx, Engine, HttpClient, Outcome, Store, Version};

/// How often an update re-reads and re-applies after losing a race before giving up (503).
const UPDATE_ATTEMPTS: usize = 16;
/// The longest wait between submission retries while the upstream is down.
const SUBMIT_RETRY_CAP_MS: u64 = 60_000;

pub(crate) fn job_key(id: &str) -> String {
    format!("job/{id}")
}

pub(crate) fn due_key(id: &str) -> String {
    format!("due/{id}")
}

/// A new job's id: random, or with an `Idempotency-Key`, an HMAC under the gateway's
/// `id_secret` of the API key's id (stable when the key itself is rotated; a browser token's
/// key's, so a page that re-mints its token and retries still submits once) and the
/// idempotency key. Every retry lands on the same id and, on sharded platforms, the same place (where the
/// idempotency record then refuses the same key for another route); without the secret no
/// one can compute another caller's ids.
pub(crate) fn new_request_id(config: &Config, headers: &HeaderMap, now: Timestamp, entropy: [u8; 16]) -> String {
    match (auth::authenticate(config, headers, now), idempotency_key(headers)) {
        (Ok(key), Ok(Some(idem))) => {
            let message = format!("idempotency\n{}\n{idem}", key.tenant());
            hex::encode(&hmac_sha256(config.id_secret.expose().as_bytes(), message.as_bytes())[..16])
        }
        _ => hex::encode(entropy),
    }
}

fn created<B>(id: &str, wake_at: Option<Timestamp>) -> Outcome<B> {
    Outcome::new(full(json_response(StatusCode::CREATED, &json!({ "request_id": id }))), wake_at)
}

/// `Idempotency-Key`: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, Error> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    match value.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()) => Ok(Some(k)),
        _ => Err(Error::invalid("Idempotency-Key", "must be 1 to 255 visible ASCII characters")),
    }
}

impl<S: Store, H: HttpClient> Engine<'_, S, H> {
    pub(crate) async fn load(&self, id: &str) -> Result<Option<Job>, Error> {
        Ok(self.load_versioned(id).await?.map(|(job, _)| job))
    }

    async fn load_versioned(&self, id: &str) -> Result<Option<(Job, Version)>, Error> {
        let Some((bytes, version)) = self.store.get_versioned(&job_key(id)).await? else { return Ok(None) };
        serde_json::from_slice(&bytes)
            .map(|job| Some((job, version)))
            .map_err(|e| Error::Store(super::StoreError::new(format!("corrupt record {id}: {e}"))))
    }

    /// Reads the record, applies `f` and writes the result conditionally on the version read;
    /// if another request wrote first, reads again and re-applies `f` to what it wrote. So
    /// nothing another request stored (a result from the inbox, a cancel) is ever overwritten
    /// by a stale copy, and terminal states never move again (see [`Status::transition`]).
    pub(crate) async fn update<T>(
        &self,
        id: &str,
        mut f: impl FnMut(&mut Job) -> Result<T, Error>,
    ) -> Result<(Job, T), Error> {
        for _ in 0..UPDATE_ATTEMPTS {
            let (mut job, version) =
                self.load_versioned(id).await?.ok_or_else(|| Error::RequestNotFound { request_id: id.to_owned() })?;
            let before = job.clone();
            let out = f(&mut job)?;
            if job == before || self.store.put_if_version(&job_key(id), to_bytes(&job), version).await? {
                return Ok((job, out));
            }
        }
        Err(Error::Store(super::StoreError::new(format!("record {id} kept changing under {UPDATE_ATTEMPTS} updates"))))
    }

    /// A job the caller may see: it exists, is within retention and matches the path's subject.
    pub(crate) async fn load_visible(&self, id: &str, subject: Option<&Subject>, now: Timestamp) -> Result<Job, Error> {
        let not_found = || Error::RequestNotFound { request_id: id.to_owned() };
        if !is_request_id(id) {
            return Err(not_found());
        }
        let job = self.load(id).await?.ok_or_else(not_found)?;
        if subject.is_some_and(|s| *s != job.subject) || now >= job.retained_until(self.config.retention_seconds) {
            return Err(not_found());
        }
        Ok(job)
    }

    pub(crate) fn price(&self, subject: &Subject) -> f64 {
        self.config.upstream(subject).map_or(0.0, |u| u.price_per_second)
    }

    pub(crate) async fn submit(
        &self,
        key: &ApiKey,
        subject: Subject,
        target: Target,
        request: &Request<Bytes>,
        ctx: Ctx,
        clock: &dyn Fn() -> Timestamp,
    ) -> Result<Outcome<H::Body>, Error> {
        // A target the upstream cannot serve (a regional upstream serves environments only) is
        // refused before there is a job.
        self.config.upstream(&subject)?.url(&target, subject.async_endpoint(), true)?;
        let body = request.body();
        if body.len() > self.config.async_body_limit {
            return Err(Error::PayloadTooLarge { limit: self.config.async_body_limit });
        }
        let parsed = AsyncRequest::parse(body, self.config.dev_mode)?;
        if parsed.webhook_endpoint.is_some() && self.config.outbound_secret_for(&key.id).is_none() {
            return Err(Error::invalid(
                "webhook_endpoint",
                "this gateway has no outbound webhook secret configured, so it cannot sign deliveries; poll the status instead",
            ));
        }
        let idempotency = idempotency_key(request.headers())?;
        let now = ctx.now;
        let mut id = new_request_id(self.config, request.headers(), now, ctx.entropy);

        let mut idempotency_record = None;
        if let Some(idem) = idempotency {
            let record_key = format!("idem/{}", hex::encode(sha256(format!("{}\n{idem}", key.tenant()).as_bytes())));
            let body_hash = hex::encode(sha256(body));
            // The same key is for one request: another body, model, chain or target is a 409.
            let route = format!("{}/{}/{}", subject.kind(), subject.id(), target.path());
            let record = json!({ "request_id": id, "body_sha256": body_hash, "route": route });
            if !self.store.put_if_absent(&record_key, to_bytes(&record)).await? {
                let existing: Value = match self.store.get(&record_key).await? {
                    Some(bytes) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                    None => Value::Null,
                };
                if existing["body_sha256"] != body_hash.as_str() || existing["route"] != route.as_str() {
                    return Err(Error::IdempotencyKeyReused);
                }
                let Some(existing_id) = existing["request_id"].as_str().filter(|i| is_request_id(i)) else {
                    return Err(Error::Store(super::StoreError::new("corrupt idempotency record")));
                };
                id = existing_id.to_owned();
                if let Some(job) = self.load(&id).await? {
                    // A replay: same answer, nothing submitted here. A submission left pending
                    // by a crash is the sweep's to retry, at the job's next due time.
                    return Ok(created(&id, Some(job.next_due(self.config.retention_seconds))));
                }
                // The first request stopped before writing the job: create it under its id.
            }
            idempotency_record = Some(record_key);
        }

        let input = Submission { model_input: parsed.model_input, priority: parsed.priority, retry: parsed.retry };
        let job = Job::new(
            id.clone(),
            key.id.clone(),
            idempotency_record,
            subject,
            target,
            input,
            parsed.max_time_in_queue_seconds,
            parsed.webhook_endpoint,
            now,
        );
        // Index first, so no record is ever missing from it. The entry says when it was made:
        // a sweep between the two writes must not take it for one a crash left behind.
        self.store.put(&due_key(&id), now.millis().to_string().into_bytes()).await?;
        if !self.store.put_if_absent(&job_key(&id), to_bytes(&job)).await? {
            // A concurrent request with the same Idempotency-Key created it; it submits.
            return Ok(created(&id, None));
        }
        let job = self.submit_upstream(&id, clock).await?;
        Ok(created(&id, Some(job.next_due(self.config.retention_seconds))))
    }

    /// One submission attempt for a job whose submission is pending (and leased by the caller).
    /// Its outcome is recorded at the time `clock` gives once the upstream has answered.
    pub(crate) async fn submit_upstream(&self, id: &str, clock: &dyn Fn() -> Timestamp) -> Result<Job, Error> {
        let now = clock();
        let Some(job) = self.load(id).await? else {
            return Err(Error::RequestNotFound { request_id: id.to_owned() });
        };
        let Upstream::Pending { input, attempts, .. } = &job.upstream else { return Ok(job) };
        let attempts = attempts + 1;
        let upstream = match self.config.upstream(&job.subject) {
            Ok(u) => u,
            Err(e) => {
                let message = e.message();
                return self
                    .update(id, |j| fail(j, now, attempts, JobError::new(codes::MODEL_DOES_NOT_EXIST, message.clone())))
                    .await
                    .map(|(j, ())| j);
            }
        };
        let remaining = job.queue_deadline().millis_since(now) / 1000;
        let body = json!({
            "model_input": input.model_input,
            "webhook_endpoint": self.config.inbox_url(id),
            "priority": input.priority,
            "max_time_in_queue_seconds": remaining.max(10),
            "inference_retry_config": input.retry,
        });
        let answer = match upstream.url(&job.target, job.subject.async_endpoint(), true) {
            Ok(url) => self.call(json_request(upstream, Method::POST, url, &body)).await,
            Err(e) => Err(e),
        };
        let now = clock();
        let (job, ()) = self
            .update(id, |j| {
                let input = match &j.upstream {
                    Upstream::Pending { input, .. } => input,
                    // Canceled or expired while this submission was in flight: if the upstream
                    // accepted it, keep its id (to cancel it there); nothing else to record.
                    Upstream::Abandoned { .. } => {
                        if let Ok((status, body)) = &answer {
                            if status.is_success() {
                                let upstream_id = upstream_request_id(body);
                                j.upstream =
                                    Upstream::Submitted { upstream_id, attempts, checked_at: now, stalled: None };
                            }
                        }
                        return Ok(());
                    }
                    Upstream::Submitted { .. } => return Ok(()),
                };
                match &answer {
                    Ok((status, body)) if status.is_success() => {
                        let upstream_id = upstream_request_id(body);
                        j.upstream = Upstream::Submitted { upstream_id, attempts, checked_at: now, stalled: None };
                        Ok(())
                    }
                    Ok((status, body)) if status.is_client_error() && !matches!(status.as_u16(), 408 | 429) => {
                        let code = match status.as_u16() {
                            404 => codes::MODEL_DOES_NOT_EXIST,
                            400 | 413 | 422 => codes::MODEL_INVALID_INPUT,
                            _ => codes::INTERNAL_SERVER_ERROR,
                        };
                        let message = upstream_message(body)
                            .unwrap_or_else(|| format!("upstream refused the request with {status}"));
                        fail(j, now, attempts, JobError::new(code, message))
                    }
                    // 5xx, 408, 429 or no answer: keep it pending and try again later.
                    Ok(_) | Err(_) => {
                        let backoff = (1000u64 << attempts.min(16).saturating_sub(1)).min(SUBMIT_RETRY_CAP_MS);
                        j.upstream = Upstream::Pending {
                            input: input.clone(),
                            attempts,
                            next_at: now.plus_millis(backoff),
                            in_flight: false,
                        };
                        Ok(())
                    }
                }
            })
            .await?;
        if job.status.is_terminal() && matches!(job.upstream, Upstream::Submitted { upstream_id: Some(_), .. }) {
            // Expired while the submission was in flight: the upstream accepted a job no one
            // wants any more. Stop it there too (its id is on the record).
            let _ = self.cancel_upstream(&job).await;
        }
        if job.cancel_requested && job.status == Status::Queued {
            return self.cancel_after_submission(job, now).await;
        }
        Ok(job)
    }

    /// A cancel came while the submission was in flight. Accepted: cancel it upstream, and
    /// the job is CANCELED only if the upstream confirms (one that started is reconciled as
    /// such, and its result kept). Not accepted: it never reached the upstream.
    async fn cancel_after_submission(&self, job: Job, now: Timestamp) -> Result<Job, Error> {
        if let Upstream::Submitted { upstream_id: Some(_), .. } = &job.upstream {
            if !self.canceled_upstream(&job).await {
                return Ok(self.reconcile(&job, now).await?.0);
            }
        }
        if matches!(job.upstream, Upstream::Submitted { upstream_id: None, .. }) {
            return Ok(job);
        }
        Ok(self.update(&job.id, |j| Ok(j.move_if_legal(Status::Canceled, now)?)).await?.0)
    }

    pub(crate) async fn cancel(
        &self,
        key: &ApiKey,
        origin: Option<&str>,
        subject: Option<&Subject>,
        id: &str,
        now: Timestamp,
    ) -> Result<Outcome<H::Body>, Error> {
        // What the key may do at all first, so that the answer is the same whether or not the
        // job exists; then whether it may see this job (404 if not), then the job's model.
        auth::authorize_operation(key, Operation::Cancel, origin)?;
        let job = self.load_visible(id, subject, now).await?;
        auth::authorize_job(key, &job)?;
        auth::authorize(key, Operation::Cancel, &job.subject, origin)?;
        // Expiry first: a job past its queue deadline is expired (or learned to have started).
        self.refresh(job, now, u64::MAX).await?;
        let answer = |canceled: bool, message: String, job: &Job| {
            let body =
                json!({ "request_id": id, "canceled": canceled, "message": message, "status": job.status.as_str() });
            Outcome::new(full(json_response(StatusCode::OK, &body)), Some(job.next_due(self.config.retention_seconds)))
        };
        let in_progress_message =
            "request is IN_PROGRESS and cannot be stopped; it may still finish, and its compute is billed (see usage)";
        // Decided on the record as it is written, not on the copy read above: a submission or
        // a sweep may have moved it since, and the cancel must act on what it finds then.
        let (job, step) = self
            .update(id, |j| {
                Ok(match (&j.status, &j.upstream) {
                    (s, _) if s.is_terminal() => CancelStep::AlreadyEnded,
                    (Status::InProgress, _) => {
                        j.cancel_requested = true;
                        CancelStep::Recorded(in_progress_message)
                    }
                    (_, Upstream::Pending { in_flight: true, next_at, .. }) if *next_at > now => {
                        // The upstream may be accepting it right now: canceling only here would
                        // let it run (and bill) unseen. The submission reads the wish when it
                        // records the upstream's answer, and sends the cancel with the id.
                        j.cancel_requested = true;
                        CancelStep::Recorded(
                            "a submission to the upstream is in flight; the cancel is recorded and sent upstream as soon as the upstream accepts it",
                        )
                    }
                    (_, Upstream::Pending { .. } | Upstream::Abandoned { .. }) => {
                        j.move_if_legal(Status::Canceled, now)?;
                        CancelStep::Canceled
                    }
                    (_, Upstream::Submitted { upstream_id: None, .. }) => {
                        j.cancel_requested = true;
                        CancelStep::Recorded("the upstream has not confirmed this request yet; cancel was recorded")
                    }
                    (_, Upstream::Submitted { upstream_id: Some(_), .. }) => CancelStep::AskUpstream,
                })
            })
            .await?;
        match step {
            CancelStep::AlreadyEnded => Ok(answer(false, format!("request is already {}", job.status.as_str()), &job)),
            CancelStep::Recorded(message) => Ok(answer(false, message.to_owned(), &job)),
            CancelStep::Canceled => {
                let canceled = job.status == Status::Canceled;
                Ok(answer(canceled, format!("request is {}", job.status.as_str()), &job))
            }
            CancelStep::AskUpstream => {
                let (status, body) = self.cancel_upstream(&job).await?;
                if status.is_success() && confirms_cancel(&body) {
                    let (job, ()) = self.update(id, |j| Ok(j.move_if_legal(Status::Canceled, now)?)).await?;
                    return Ok(answer(
                        job.status == Status::Canceled,
                        "request canceled before it ran".to_owned(),
                        &job,
                    ));
                }
                if !status.is_success() && status != StatusCode::NOT_FOUND {
                    return Err(Error::UpstreamProtocol { message: format!("cancel answered {status}") });
                }
                // The upstream already started it: record the wish, learn its state.
                self.update(id, request_cancel).await?;
                let job = self.load_visible(id, None, now).await?;
                let (job, _) = self.refresh(job, now, 0).await?;
                let message = match job.status {
                    Status::InProgress => in_progress_message.to_owned(),
                    // Canceled upstream already (an earlier cancel that failed here after the
                    // upstream had done it, say): what was asked for is done.
                    Status::Canceled => "request canceled before it ran".to_owned(),
                    s => upstream_message(&body).unwrap_or_else(|| format!("request is {}", s.as_str())),
                };
                Ok(answer(job.status == Status::Canceled, message, &job))
            }
        }
    }

    /// Asks the upstream to cancel the job; whether it confirms that it did.
    pub(crate) async fn canceled_upstream(&self, job: &Job) -> bool {
        self.cancel_upstream(job).await.is_ok_and(|(status, body)| status.is_success() && confirms_cancel(&body))
    }

    /// Asks the upstream to cancel the job (Baseten cancels only QUEUED requests).
    pub(crate) async fn cancel_upstream(&self, job: &Job) -> Result<(StatusCode, Bytes), Error> {
        let Upstream::Submitted { upstream_id: Some(upstream_id), .. } = &job.upstream else {
            return Err(Error::UpstreamProtocol { message: "no upstream id to cancel".to_owned() });
        };
        let upstream = self.config.upstream(&job.subject)?;
        let url = upstream.url(&job.target, &format!("async_request/{upstream_id}"), false)?;
        let request = upstream_request(upstream, Method::DELETE, url, Bytes::new());
        self.call(request).await
    }
}

/// What a cancel does, decided on the record as it is written.
enum CancelStep {
    AlreadyEnded,
    /// The wish is on the record; what holds the job acts on it (the message says what).
    Recorded(&'static str),
    /// Nothing upstream to stop: canceled here.
    Canceled,
    /// Queued upstream under its id: only the upstream can stop it.
    AskUpstream,
}

/// Whether the upstream's answer to a cancel says it canceled (`{"canceled": true}`).
fn confirms_cancel(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body).is_ok_and(|r| r["canceled"] == true)
}

fn to_bytes<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Serializing our own plain data structures cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn fail(job: &mut Job, now: Timestamp, attempts: u32, error: JobError) -> Result<(), Error> {
    if job.status.is_terminal() {
        return Ok(());
    }
    job.move_to(Status::Failed, now)?;
    job.upstream = Upstream::Abandoned { attempts };
    job.errors.push(error);
    Ok(())
}

fn request_cancel(job: &mut Job) -> Result<(), Error> {
    job.cancel_requested = true;
    Ok(())
}

/// The upstream's `request_id` from its answer to an async submit.
fn upstream_request_id(body: &[u8]) -> Option<String> {
    let parsed: Value = serde_json::from_slice(body).ok()?;
    parsed["request_id"].as_str().map(str::to_owned)
}
