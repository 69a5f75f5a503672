//! Submitting a job: the `async_predict` call (idempotency, the durable record, 201) and each
//! attempt to hand it to the upstream.
//!
//! Order of work on submit: idempotency record, index, job record (QUEUED, submission pending
//! and leased), then the upstream call, then the record update, then 201. The upstream is told
//! to deliver to `/webhooks/baseten/{our id}`, so whichever step a crash interrupts, the record
//! exists and the result can still be matched; the sweep resubmits a submission whose lease
//! ran out. One window remains: a crash after the upstream accepted and before the record says
//! so makes the sweep submit again (Baseten has no idempotent submit); the inbox then keeps the
//! first result and ignores the second.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use serde_json::{json, Value};

use crate::engine::base::crypto::sha256;
use crate::engine::base::{is_request_id, json_response, Error, Subject, Target, Timestamp};
use crate::engine::config::{ApiKey, Config};
use crate::engine::jobs::persist::{due_key, job_events, job_key, to_bytes};
use crate::engine::jobs::reconcile::upstream_message;
use crate::engine::jobs::record::{codes, Job, JobError, Status, Submission, Upstream};
use crate::engine::jobs::request::AsyncRequest;
use crate::engine::sync::relay::json_request;
use crate::engine::{full, Ctx, Engine, HttpClient, Outcome, Store};

/// The longest wait between submission retries while the upstream is down.
const SUBMIT_RETRY_CAP_MS: u64 = 60_000;

/// A new job's id: random, or with an `Idempotency-Key`, an HMAC under the gateway's
/// `id_secret` of the API key's id (stable when the key itself is rotated; a browser token's
/// key's, so a page that re-mints its token and retries still submits once) and the
/// idempotency key. Every retry lands on the same id and, on sharded platforms, the same place (where the
/// idempotency record then refuses the same key for another route); without the secret no
/// one can compute another caller's ids.
pub(crate) fn new_request_id(
    config: &Config,
    key: &ApiKey,
    headers: &HeaderMap,
    entropy: [u8; 16],
) -> Result<String, Error> {
    match idempotency_key(headers) {
        Ok(Some(idem)) => config.derived_id("idempotency", &[key.tenant(), idem]),
        _ => Ok(hex::encode(entropy)),
    }
}

fn created<B>(id: &str, wake_at: Option<Timestamp>) -> Outcome<B> {
    let mut outcome = Outcome::new(full(json_response(StatusCode::CREATED, &json!({ "request_id": id }))), wake_at);
    outcome.note.job_id = Some(id.to_owned());
    outcome
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
        let mut id = new_request_id(self.config, key, request.headers(), ctx.entropy)?;

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
                    return Err(Error::Store(crate::engine::StoreError::new("corrupt idempotency record")));
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
        )
        .with_trace(self.trace.cloned());
        // Index first, so no record is ever missing from it. The entry says when it was made:
        // a sweep between the two writes must not take it for one a crash left behind.
        self.store.put(&due_key(&id), now.millis().to_string().into_bytes()).await?;
        if !self.store.put_if_absent(&job_key(&id), to_bytes(&job)).await? {
            // A concurrent request with the same Idempotency-Key created it; it submits.
            return Ok(created(&id, None));
        }
        if let Some(log) = self.log {
            for line in job_events(None, &job) {
                (log.0)(&line);
            }
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
        let request = || -> Result<Request<Bytes>, Error> {
            let body = json!({
                "model_input": input.model_input,
                "webhook_endpoint": self.config.inbox_url(id)?,
                "priority": input.priority,
                "max_time_in_queue_seconds": remaining.max(10),
                "inference_retry_config": input.retry,
            });
            let url = upstream.url(&job.target, job.subject.async_endpoint(), true)?;
            Ok(json_request(self.config.secret(&upstream.api_key)?, job.trace.as_ref(), Method::POST, url, &body))
        };
        let answer = match request() {
            Ok(request) => self.call(request).await,
            Err(e) => Err(e),
        };
        let now = clock();
        let (job, ()) = self.update(id, |j| apply_submit_answer(j, &answer, attempts, now)).await?;
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
}

/// What the upstream's answer to submission attempt `attempts` does to the record, as it is
/// when the answer is recorded (pure, so every case is a host test without awaits):
/// accepted, the upstream id is kept; refused (a 4xx other than 408 and 429), the job fails
/// with Baseten's code; otherwise it stays pending, retried after a backoff. A job canceled or
/// expired meanwhile only keeps the upstream id, so it can be stopped there too.
pub(crate) fn apply_submit_answer(
    j: &mut Job,
    answer: &Result<(StatusCode, Bytes), Error>,
    attempts: u32,
    now: Timestamp,
) -> Result<(), Error> {
    let input = match &j.upstream {
        Upstream::Pending { input, .. } => input,
        // Canceled or expired while this submission was in flight: if the upstream
        // accepted it, keep its id (to cancel it there); nothing else to record.
        Upstream::Abandoned { .. } => {
            if let Ok((status, body)) = answer {
                if status.is_success() {
                    let upstream_id = upstream_request_id(body);
                    j.upstream = Upstream::Submitted { upstream_id, attempts, checked_at: now, stalled: None };
                }
            }
            return Ok(());
        }
        Upstream::Submitted { .. } => return Ok(()),
    };
    match answer {
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
            let message =
                upstream_message(body).unwrap_or_else(|| format!("upstream refused the request with {status}"));
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

/// The upstream's `request_id` from its answer to an async submit.
fn upstream_request_id(body: &[u8]) -> Option<String> {
    let parsed: Value = serde_json::from_slice(body).ok()?;
    parsed["request_id"].as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::jobs::record::test_job;

    fn answer(status: u16, body: &str) -> Result<(StatusCode, Bytes), Error> {
        Ok((StatusCode::from_u16(status).unwrap(), Bytes::from(body.to_owned())))
    }

    #[test]
    fn an_accepted_submission_keeps_the_upstream_id() {
        let now = Timestamp::from_millis(5_000);
        let mut job = test_job(Timestamp::from_millis(0));
        apply_submit_answer(&mut job, &answer(201, r#"{"request_id": "up-1"}"#), 1, now).unwrap();
        assert_eq!(
            job.upstream,
            Upstream::Submitted { upstream_id: Some("up-1".into()), attempts: 1, checked_at: now, stalled: None }
        );
        assert_eq!(job.status, Status::Queued);
    }

    #[test]
    fn a_refusal_fails_the_job_with_basetens_code_and_a_retryable_answer_backs_off() {
        let now = Timestamp::from_millis(5_000);
        for (status, code) in
            [(404, "MODEL_DOES_NOT_EXIST"), (422, "MODEL_INVALID_INPUT"), (403, "INTERNAL_SERVER_ERROR")]
        {
            let mut job = test_job(Timestamp::from_millis(0));
            apply_submit_answer(&mut job, &answer(status, r#"{"error": "no"}"#), 1, now).unwrap();
            assert_eq!(
                (job.status, job.errors[0].code.as_str(), job.errors[0].message.as_str()),
                (Status::Failed, code, "no")
            );
        }
        for (attempts, failure) in [(1, answer(503, "")), (2, answer(429, "")), (3, Err(Error::UpstreamTimeout))] {
            let mut job = test_job(Timestamp::from_millis(0));
            apply_submit_answer(&mut job, &failure, attempts, now).unwrap();
            let backoff = 1000 << (attempts - 1);
            assert!(
                matches!(job.upstream, Upstream::Pending { next_at, in_flight: false, .. } if next_at == now.plus_millis(backoff))
            );
        }
    }

    #[test]
    fn a_job_canceled_while_its_submission_was_in_flight_keeps_only_the_upstream_id() {
        let now = Timestamp::from_millis(5_000);
        let mut job = test_job(Timestamp::from_millis(0));
        job.move_to(Status::Canceled, now).unwrap();
        apply_submit_answer(&mut job, &answer(201, r#"{"request_id": "up-1"}"#), 1, now).unwrap();
        assert_eq!(job.status, Status::Canceled);
        assert!(matches!(&job.upstream, Upstream::Submitted { upstream_id: Some(id), .. } if id == "up-1"));
    }
}
