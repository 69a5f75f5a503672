//! Canceling a job: decided on the record as it is written (a submission or a sweep may move
//! it meanwhile), then, for a job queued upstream, asked of the upstream, which alone can stop it.

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::engine::base::{json_response, Error, Operation, Subject, Timestamp};
use crate::engine::config::ApiKey;
use crate::engine::jobs::reconcile::upstream_message;
use crate::engine::jobs::record::{Job, Status, Upstream};
use crate::engine::sync::relay::upstream_request;
use crate::engine::{full, Engine, HttpClient, Outcome, Store};

const IN_PROGRESS_MESSAGE: &str =
    "request is IN_PROGRESS and cannot be stopped; it may still finish, and its compute is billed (see usage)";

impl<S: Store, H: HttpClient> Engine<'_, S, H> {
    /// A cancel came while the submission was in flight. Accepted: cancel it upstream, and
    /// the job is CANCELED only if the upstream confirms (one that started is reconciled as
    /// such, and its result kept). Not accepted: it never reached the upstream.
    pub(crate) async fn cancel_after_submission(&self, job: Job, now: Timestamp) -> Result<Job, Error> {
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
        let job = self.load_for_caller(key, Operation::Cancel, origin, subject, id, now).await?;
        // Expiry first: a job past its queue deadline is expired (or learned to have started).
        self.refresh(job, now, u64::MAX).await?;
        let answer = |canceled: bool, message: String, job: &Job| {
            let body =
                json!({ "request_id": id, "canceled": canceled, "message": message, "status": job.status.as_str() });
            Outcome::new(full(json_response(StatusCode::OK, &body)), Some(job.next_due(self.config.retention_seconds)))
        };
        // Decided on the record as it is written, not on the copy read above: a submission or
        // a sweep may have moved it since, and the cancel must act on what it finds then.
        let (job, step) = self.update(id, |j| decide_cancel(j, now)).await?;
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
                    Status::InProgress => IN_PROGRESS_MESSAGE.to_owned(),
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
        let api_key = self.config.secret(&upstream.api_key)?;
        let request = upstream_request(api_key, job.trace.as_ref(), Method::DELETE, url, Bytes::new());
        self.call(request).await
    }
}

/// What a cancel does to the record as it is when written (pure: each case a host test).
fn decide_cancel(j: &mut Job, now: Timestamp) -> Result<CancelStep, Error> {
    Ok(match (&j.status, &j.upstream) {
        (s, _) if s.is_terminal() => CancelStep::AlreadyEnded,
        (Status::InProgress, _) => {
            j.cancel_requested = true;
            CancelStep::Recorded(IN_PROGRESS_MESSAGE)
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

fn request_cancel(job: &mut Job) -> Result<(), Error> {
    job.cancel_requested = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::jobs::record::test_job;

    const NOW: Timestamp = Timestamp::from_millis(10_000);

    #[test]
    fn a_cancel_decides_on_the_upstream_state_it_finds() {
        // Leased by a submission in flight: only the wish, which the submission sends.
        let mut job = test_job(Timestamp::from_millis(0));
        assert!(matches!(decide_cancel(&mut job, NOW).unwrap(), CancelStep::Recorded(m) if m.contains("in flight")));
        assert!(job.cancel_requested && job.status == Status::Queued);
        // Waiting for a retry: nothing upstream, canceled here.
        let mut job = test_job(Timestamp::from_millis(0));
        job.upstream =
            Upstream::Pending { input: job_input(), attempts: 1, next_at: NOW.plus_millis(1), in_flight: false };
        assert!(matches!(decide_cancel(&mut job, NOW).unwrap(), CancelStep::Canceled));
        assert_eq!(job.status, Status::Canceled);
        // Queued upstream under its id: only the upstream can stop it; nothing written yet.
        let mut job = test_job(Timestamp::from_millis(0));
        job.upstream =
            Upstream::Submitted { upstream_id: Some("up".into()), attempts: 1, checked_at: NOW, stalled: None };
        let before = job.clone();
        assert!(matches!(decide_cancel(&mut job, NOW).unwrap(), CancelStep::AskUpstream));
        assert_eq!(job, before);
        // Running: the wish, and the answer says it may still finish.
        job.move_to(Status::InProgress, NOW).unwrap();
        assert!(matches!(decide_cancel(&mut job, NOW).unwrap(), CancelStep::Recorded(IN_PROGRESS_MESSAGE)));
        // Ended: nothing.
        job.move_to(Status::Succeeded, NOW).unwrap();
        let before = job.clone();
        assert!(matches!(decide_cancel(&mut job, NOW).unwrap(), CancelStep::AlreadyEnded));
        assert_eq!(job, before);
    }

    fn job_input() -> crate::engine::jobs::record::Submission {
        crate::engine::jobs::record::Submission {
            model_input: serde_json::Value::Null,
            priority: 0,
            retry: Default::default(),
        }
    }
}
