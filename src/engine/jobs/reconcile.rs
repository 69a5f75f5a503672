//! Keeping a record true to the upstream: status reads (with the long-poll), reconciliation
//! with the upstream's status record, and queue expiry, which asks the upstream first.

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::Value;

use crate::engine::base::{json_response, Error, Operation, Subject, Timestamp};
use crate::engine::config::ApiKey;
use crate::engine::jobs::record::{codes, Job, JobError, Stall, StallReason, Status, Upstream, RECONCILE_ON_READ_MS};
use crate::engine::sync::relay::upstream_request;
use crate::engine::{full, Ctx, Engine, HttpClient, Outcome, Store};

/// How soon a held long-poll first looks at its job again; each later look waits twice as
/// long as the one before, up to [`LONG_POLL_STEP_MAX_MS`].
const LONG_POLL_STEP_MS: u64 = 500;
const LONG_POLL_STEP_MAX_MS: u64 = 2_000;

/// The wait before a held poll's next look, `held_ms` after it was received: 500 ms, then
/// 1 s, then every 2 s (17 looks in 30 s, not 61).
fn long_poll_step(held_ms: u64) -> u64 {
    let mut step = LONG_POLL_STEP_MS;
    let mut at = 0;
    while at + step <= held_ms && step < LONG_POLL_STEP_MAX_MS {
        at += step;
        step *= 2;
    }
    step.min(LONG_POLL_STEP_MAX_MS)
}

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
        let job = self.load_for_caller(key, Operation::Status, origin, subject, id, now).await?;
        let (job, changed) = self.refresh(job, now, RECONCILE_ON_READ_MS).await?;
        let view = job.view(now, self.price(&job.subject), self.output_of(&job).await?, key.token.is_none());
        let wake_at = changed.then(|| job.next_due(self.config.retention_seconds));
        let mut outcome = Outcome::new(full(json_response(StatusCode::OK, &view)), wake_at);
        // A long-poll: until the job ends or the wait is over, ask again shortly.
        let deadline = ctx.received_at.plus_millis(wait_ms);
        if !job.status.is_terminal() && now < deadline {
            let step = long_poll_step(now.millis_since(ctx.received_at));
            outcome.hold_until = Some(now.plus_millis(step).min(deadline));
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
        // Past its queue deadline a job is asked at once if it was last asked before it, then
        // at most once a read interval, whoever reads.
        let interval = if expiry_due { min_interval_ms.min(RECONCILE_ON_READ_MS) } else { min_interval_ms };
        let due = |j: &Job| match &j.upstream {
            Upstream::Submitted { checked_at, .. } => {
                let asked_before_deadline = expiry_due && *checked_at < j.queue_deadline();
                !j.status.is_terminal() && (asked_before_deadline || now >= checked_at.plus_millis(interval))
            }
            _ => false,
        };
        if due(&job) {
            // Claimed on the record first, as submissions and deliveries are: of the readers
            // (and the sweep) that find the job due at once, one asks the upstream; the others
            // answer from the record as it is.
            let (claimed, won) = self
                .update(&job.id, |j| {
                    let won = due(j);
                    if let (true, Upstream::Submitted { checked_at, .. }) = (won, &mut j.upstream) {
                        *checked_at = now;
                    }
                    Ok(won)
                })
                .await?;
            job = claimed;
            if !won {
                // Another is asking: its answer (and any expiry) is its to write.
                return Ok((job, false));
            }
            let has_id = matches!(job.upstream, Upstream::Submitted { upstream_id: Some(_), .. });
            let known = self.reconcile(&job, now).await?;
            job = known.0;
            changed = true;
            // Not answered (or not askable): expiry waits, as a started job must not be
            // expired; a job that cannot be asked ends when its stall does.
            if (!known.1 || !has_id) && expiry_due {
                return Ok((job, changed));
            }
            if job.status == Status::Queued && job.cancel_requested && self.canceled_upstream(&job).await {
                // A cancel recorded while its submission was in flight, whose submitter did
                // not live to send it: sent now, at most once per reconcile interval.
                job = self.update(&job.id, |j| Ok(j.move_if_legal(Status::Canceled, now)?)).await?.0;
            }
        } else if expiry_due && matches!(job.upstream, Upstream::Submitted { .. }) {
            // Asked within the interval: expiry waits for the next ask, which learns first
            // whether the upstream has started it.
            return Ok((job, false));
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
    /// attempt either way, so the reconcile interval paces the next one (an unreachable
    /// upstream, a job that cannot be asked). Returns whether the upstream answered.
    pub(crate) async fn reconcile(&self, job: &Job, now: Timestamp) -> Result<(Job, bool), Error> {
        let asked = self.ask_upstream(job).await;
        let answered = matches!(asked, Asked::Record(_));
        let (job, ()) = self.update(&job.id, |j| apply_reconcile(j, &asked, now)).await?;
        Ok((job, answered))
    }

    async fn ask_upstream(&self, job: &Job) -> Asked {
        let Upstream::Submitted { upstream_id, .. } = &job.upstream else { return Asked::Unanswered };
        let Some(upstream_id) = upstream_id else { return Asked::Stalled(StallReason::NoUpstreamId) };
        let Ok(upstream) = self.config.upstream(&job.subject) else {
            return Asked::Stalled(StallReason::NotConfigured);
        };
        let Ok(url) = upstream.url(&job.target, &format!("async_request/{upstream_id}"), false) else {
            return Asked::Stalled(StallReason::NotConfigured);
        };
        // A key this host cannot read (a lazily read secret not set) leaves the model unusable.
        let Ok(api_key) = self.config.secret(&upstream.api_key) else {
            return Asked::Stalled(StallReason::NotConfigured);
        };
        match self.call(upstream_request(api_key, job.trace.as_ref(), Method::GET, url, Bytes::new())).await {
            Ok((status, body)) if status.is_success() => {
                Asked::Record(serde_json::from_slice(&body).unwrap_or(Value::Null))
            }
            Ok((StatusCode::NOT_FOUND, _)) => Asked::Stalled(StallReason::UpstreamForgot),
            _ => Asked::Unanswered,
        }
    }
}

/// What asking the upstream about a job gave.
enum Asked {
    Record(Value),
    /// No answer, or not one to act on (5xx, 429): asked again later.
    Unanswered,
    /// Nothing the gateway can learn, for this reason.
    Stalled(StallReason),
}

/// Folds what asking gave into the record: the attempt's time, the upstream's status, and
/// the stall, which ends the job FAILED once it has lasted its grace.
fn apply_reconcile(job: &mut Job, asked: &Asked, now: Timestamp) -> Result<(), Error> {
    if let Upstream::Submitted { checked_at, .. } = &mut job.upstream {
        *checked_at = now;
    }
    if job.status.is_terminal() {
        return Ok(());
    }
    let stall = match asked {
        Asked::Record(record) => apply_upstream_status(job, record, now)?,
        Asked::Unanswered => return Ok(()),
        Asked::Stalled(reason) => Some(*reason),
    };
    let Upstream::Submitted { stalled, .. } = &mut job.upstream else { return Ok(()) };
    *stalled = match (stall, *stalled) {
        (None, _) => None,
        // The same trouble as before: it has lasted since then.
        (Some(reason), Some(before)) if before.reason == reason => Some(before),
        (Some(reason), _) => Some(Stall { since: now, reason }),
    };
    if let Some(stall) = *stalled {
        if now >= job.stall_deadline(&stall) && job.status.transition(Status::Failed).is_ok() {
            job.move_to(Status::Failed, now)?;
            job.errors.push(stall.reason.error(now.millis_since(stall.since)));
        }
    }
    Ok(())
}

/// The most of an upstream's error text a record keeps: a model whose exception echoes its
/// input must not grow its job's record past what a store row holds (2 MB on Workers).
pub(crate) const UPSTREAM_MESSAGE_LIMIT: usize = 8 * 1024;
/// The most upstream errors a record keeps.
pub(crate) const UPSTREAM_ERRORS_LIMIT: usize = 16;

/// `text` cut to [`UPSTREAM_MESSAGE_LIMIT`] bytes at a character boundary, marked if cut.
fn capped(text: &str) -> String {
    if text.len() <= UPSTREAM_MESSAGE_LIMIT {
        return text.to_owned();
    }
    let end = (0..=UPSTREAM_MESSAGE_LIMIT).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
    format!("{}… ({} bytes, cut)", &text[..end], text.len())
}

/// The upstream's own message from a Baseten error body (`message`, `error` or `detail`).
pub(crate) fn upstream_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    ["message", "error", "detail"].iter().find_map(|k| v[k].as_str().map(capped))
}

/// Errors from an upstream status record or webhook payload, at most
/// [`UPSTREAM_ERRORS_LIMIT`] of them, each message capped. A code outside Baseten's enum
/// becomes `INTERNAL_SERVER_ERROR`, the upstream's own kept as the precise code.
pub(crate) fn upstream_errors(v: &Value) -> Vec<JobError> {
    v.as_array()
        .map(|errors| {
            errors
                .iter()
                .take(UPSTREAM_ERRORS_LIMIT)
                .map(|e| {
                    let code = e["code"].as_str().unwrap_or(codes::INTERNAL_SERVER_ERROR);
                    let message = capped(e["message"].as_str().unwrap_or_default());
                    if codes::is_baseten(code) {
                        JobError::new(code, message)
                    } else {
                        let precise = if code.len() <= 64 { code } else { "UPSTREAM_ERROR" };
                        JobError::gateway(codes::INTERNAL_SERVER_ERROR, precise, message)
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Folds the upstream's status record into ours. Stale or odd records never move a job
/// backwards. Returns the stall the record shows: finished upstream, result not here.
fn apply_upstream_status(job: &mut Job, record: &Value, now: Timestamp) -> Result<Option<StallReason>, Error> {
    if record.is_null() {
        return Ok(None);
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
        // Done upstream; the output comes with the inbox delivery, which may be in flight, or
        // (`WEBHOOK_FAILED`) may never come.
        "SUCCEEDED" | "WEBHOOK_FAILED" => {
            job.move_if_legal(Status::InProgress, now)?;
            return Ok(Some(StallReason::ResultNotDelivered));
        }
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
        _ => {}
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_long_poll_looks_again_less_and_less_often() {
        let mut looks = vec![0];
        while let Some(&at) = looks.last().filter(|at| **at < 30_000) {
            looks.push(at + long_poll_step(at));
        }
        assert_eq!(&looks[..5], &[0, 500, 1_500, 3_500, 5_500]);
        assert_eq!(looks.iter().filter(|at| **at < 30_000).count(), 17, "{looks:?}");
    }
}
