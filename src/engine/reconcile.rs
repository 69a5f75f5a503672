//! Keeping a record true to the upstream: status reads (with the long-poll), reconciliation
//! with the upstream's status record, and queue expiry, which asks the upstream first.

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::Value;

use super::auth;
use super::clock::Timestamp;
use super::config::ApiKey;
use super::error::{json_response, Error};
use super::forward::upstream_request;
use super::job::{codes, Job, JobError, Status, Upstream};
use super::jobs::{move_if_legal, RECONCILE_ON_READ_MS};
use super::route::{Operation, Subject};
use super::{full, Ctx, Engine, HttpClient, Outcome, Store};

/// How often a held long-poll looks at its job again.
const LONG_POLL_STEP_MS: u64 = 500;

impl<S: Store, H: HttpClient> Engine<'_, S, H> {
    pub(crate) async fn status(
        &self,
        key: &ApiKey,
        origin: Option<&str>,
        subject: Option<&Subject>,
        id: &str,
        ctx: Ctx,
        wait_ms: u64,
    ) -> Result<Outcome<H::Body>, Error> {
        let now = ctx.now;
        // What the key may do at all first, so that the answer is the same whether or not the
        // job exists; then whether it may see this job (404 if not), then the job's model.
        auth::authorize_operation(key, Operation::Status, origin)?;
        let job = self.load_visible(id, subject, now).await?;
        auth::authorize_job(key, &job)?;
        auth::authorize(key, Operation::Status, &job.subject, origin)?;
        let (job, changed) = self.refresh(job, now, RECONCILE_ON_READ_MS).await?;
        let view = job.view(now, self.price(&job.subject), self.output_of(&job).await?);
        let wake_at = changed.then(|| job.next_due(self.config.retention_seconds));
        let mut outcome = Outcome::new(full(json_response(StatusCode::OK, &view)), wake_at);
        // A long-poll: until the job ends or the wait is over, ask again shortly.
        let deadline = ctx.received_at.plus_millis(wait_ms);
        if !job.status.is_terminal() && now < deadline {
            outcome.hold_until = Some(now.plus_millis(LONG_POLL_STEP_MS).min(deadline));
        }
        Ok(outcome)
    }

    /// Brings the record up to date: the upstream's view if the last check is older than
    /// `min_interval_ms`, then queue expiry.
    ///
    /// Expiry asks the upstream first, whatever the interval: a job the upstream has already
    /// started (or finished) is never EXPIRED, or its output would be dropped while its compute
    /// is billed. A job still QUEUED upstream is canceled there before it is expired here; if
    /// the upstream cannot be reached, it stays QUEUED and is asked again later.
    pub(crate) async fn refresh(&self, job: Job, now: Timestamp, min_interval_ms: u64) -> Result<(Job, bool), Error> {
        let mut job = job;
        let mut changed = false;
        let expiry_due = job.status == Status::Queued && now >= job.queue_deadline();
        if let Upstream::Submitted { upstream_id: Some(_), checked_at, .. } = &job.upstream {
            if !job.status.is_terminal() && (expiry_due || now >= checked_at.plus_millis(min_interval_ms)) {
                let known = self.reconcile(&job, now).await?;
                job = known.0;
                changed = true;
                if !known.1 && expiry_due {
                    return Ok((job, changed));
                }
                if job.status == Status::Queued && job.cancel_requested && self.canceled_upstream(&job).await {
                    // A cancel recorded while its submission was in flight, whose submitter
                    // did not live to send it: sent now, at most once per reconcile interval.
                    job = self.update(&job.id, |j| move_if_legal(j, Status::Canceled, now)).await?.0;
                }
            }
        }
        if job.status != Status::Queued || now < job.queue_deadline() {
            return Ok((job, changed));
        }
        if matches!(&job.upstream, Upstream::Submitted { upstream_id: Some(_), .. }) {
            let canceled = match self.cancel_upstream(&job).await {
                // Gone upstream (expired or forgotten there): nothing left to stop.
                Ok((status, _)) if status == StatusCode::NOT_FOUND => true,
                Ok((status, body)) => {
                    status.is_success() && serde_json::from_slice::<Value>(&body).is_ok_and(|r| r["canceled"] == true)
                }
                Err(_) => false,
            };
            if !canceled {
                // It started meanwhile, or the upstream did not answer: learn what it is doing.
                let (job, _) = self.reconcile(&job, now).await?;
                return Ok((job, true));
            }
        }
        // A submission still in flight is canceled upstream when its answer comes
        // ([`Engine::submit_upstream`]).
        let (job, _) = self.update(&job.id, |j| j.expire_if_due(now).map_err(Error::from)).await?;
        Ok((job, true))
    }

    /// Asks the upstream for the job's status and folds it into the record; records the
    /// attempt either way, so an unreachable upstream is asked again a reconcile interval
    /// later rather than at once. Returns whether the upstream answered.
    pub(crate) async fn reconcile(&self, job: &Job, now: Timestamp) -> Result<(Job, bool), Error> {
        let Upstream::Submitted { upstream_id: Some(upstream_id), .. } = &job.upstream else {
            return Ok((job.clone(), false));
        };
        // A model since removed from the configuration: nothing to ask.
        let Ok(upstream) = self.config.upstream(&job.subject) else { return Ok((job.clone(), false)) };
        let Ok(url) = upstream.url(&job.target, &format!("async_request/{upstream_id}"), false) else {
            return Ok((job.clone(), false));
        };
        let request = upstream_request(upstream, Method::GET, url, Bytes::new());
        let (record, answered) = match self.call(request).await {
            Ok((status, body)) if status.is_success() => (serde_json::from_slice(&body).unwrap_or(Value::Null), true),
            _ => (Value::Null, false),
        };
        let (job, ()) = self.update(&job.id, |j| apply_upstream_status(j, &record, now)).await?;
        Ok((job, answered))
    }
}

/// The upstream's own message from a Baseten error body (`message`, `error` or `detail`).
pub(crate) fn upstream_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    ["message", "error", "detail"].iter().find_map(|k| v[k].as_str().map(str::to_owned))
}

/// Errors from an upstream status record or webhook payload.
pub(crate) fn upstream_errors(v: &Value) -> Vec<JobError> {
    v.as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| JobError {
                    code: e["code"].as_str().unwrap_or(codes::INTERNAL_SERVER_ERROR).to_owned(),
                    message: e["message"].as_str().unwrap_or_default().to_owned(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Folds the upstream's status record into ours. Stale or odd records never move a job backwards.
fn apply_upstream_status(job: &mut Job, record: &Value, now: Timestamp) -> Result<(), Error> {
    if let Upstream::Submitted { checked_at, .. } = &mut job.upstream {
        *checked_at = now;
    }
    if job.status.is_terminal() || record.is_null() {
        return Ok(());
    }
    if let (None, Some(dep)) = (&job.deployment_id, record["deployment_id"].as_str()) {
        job.deployment_id = Some(dep.to_owned());
    }
    let at = record["status_at"].as_str().and_then(Timestamp::parse_rfc3339).unwrap_or(now).min(now);
    match record["status"].as_str().unwrap_or_default() {
        "IN_PROGRESS" if job.status == Status::Queued => {
            job.move_to(Status::InProgress, now)?;
            job.started_at = Some(at.max(job.created_at));
        }
        // Done upstream; the output comes with the inbox delivery, which may be in flight.
        "SUCCEEDED" => move_if_legal(job, Status::InProgress, now)?,
        s @ ("FAILED" | "EXPIRED" | "CANCELED") => {
            let to = match s {
                "FAILED" => Status::Failed,
                "EXPIRED" => Status::Expired,
                _ => Status::Canceled,
            };
            if job.status.transition(to).is_ok() {
                job.move_to(to, now)?;
                job.errors = upstream_errors(&record["errors"]);
            }
        }
        "WEBHOOK_FAILED" if job.status.transition(Status::Failed).is_ok() => {
            job.move_to(Status::Failed, now)?;
            job.errors.push(JobError::new(
                codes::INTERNAL_SERVER_ERROR,
                "the model finished but the upstream could not deliver its output to the gateway's inbox",
            ));
        }
        _ => {}
    }
    Ok(())
}
