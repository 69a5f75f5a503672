//! The async job record and its two state machines: request status and webhook status.
//!
//! A record is created QUEUED with its upstream submission pending, before the upstream is
//! called and before the caller gets 201. Every later change goes through [`Job::move_to`] or
//! the webhook transitions, which refuse illegal moves with a typed error.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::base::crypto::sha256;
use crate::engine::base::{IllegalTransition, Subject, Target, Timestamp, Trace};
use crate::engine::config::DeliveryPolicy;
use crate::engine::jobs::request::RetryConfig;

/// Baseten's request status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Queued,
    InProgress,
    Succeeded,
    Failed,
    Expired,
    Canceled,
    /// Succeeded, but the caller's webhook could not be delivered (the output is still kept).
    WebhookFailed,
}

impl Status {
    pub fn is_terminal(self) -> bool {
        match self {
            Self::Queued | Self::InProgress => false,
            Self::Succeeded | Self::Failed | Self::Expired | Self::Canceled | Self::WebhookFailed => true,
        }
    }

    /// The only legal moves. Anything else is a bug or a stale message, never applied.
    pub fn transition(self, to: Self) -> Result<Self, IllegalTransition> {
        use Status::*;
        let legal = match (self, to) {
            (Queued, InProgress | Succeeded | Failed | Expired | Canceled) => true,
            (InProgress, Succeeded | Failed) => true,
            (Succeeded, WebhookFailed) => true,
            (Queued | InProgress | Succeeded | Failed | Expired | Canceled | WebhookFailed, _) => false,
        };
        if legal {
            Ok(to)
        } else {
            Err(IllegalTransition { machine: "status", from: self.as_str(), to: to.as_str() })
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "QUEUED",
            Self::InProgress => "IN_PROGRESS",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::Expired => "EXPIRED",
            Self::Canceled => "CANCELED",
            Self::WebhookFailed => "WEBHOOK_FAILED",
        }
    }
}

/// Baseten's webhook status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WebhookStatus {
    Pending,
    Succeeded,
    Failed,
    Canceled,
    NoWebhookProvided,
}

impl WebhookStatus {
    pub fn transition(self, to: Self) -> Result<Self, IllegalTransition> {
        use WebhookStatus::*;
        let legal = match (self, to) {
            (Pending, Succeeded | Failed | Canceled) => true,
            (Pending | Succeeded | Failed | Canceled | NoWebhookProvided, _) => false,
        };
        if legal {
            Ok(to)
        } else {
            Err(IllegalTransition { machine: "webhook_status", from: self.as_str(), to: to.as_str() })
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::Canceled => "CANCELED",
            Self::NoWebhookProvided => "NO_WEBHOOK_PROVIDED",
        }
    }
}

/// Baseten's async error codes, plus whatever the upstream reports.
pub mod codes {
    pub const MODEL_DOES_NOT_EXIST: &str = "MODEL_DOES_NOT_EXIST";
    pub const MODEL_INVALID_INPUT: &str = "MODEL_INVALID_INPUT";
    pub const MODEL_PREDICT_ERROR: &str = "MODEL_PREDICT_ERROR";
    pub const MODEL_UNAVAILABLE: &str = "MODEL_UNAVAILABLE";
    pub const MODEL_PREDICT_TIMEOUT: &str = "MODEL_PREDICT_TIMEOUT";
    pub const INTERNAL_SERVER_ERROR: &str = "INTERNAL_SERVER_ERROR";
    /// The gateway's own (a precise code beside `INTERNAL_SERVER_ERROR`): the model's output
    /// is larger than `output_limit_bytes`.
    pub const OUTPUT_TOO_LARGE: &str = "OUTPUT_TOO_LARGE";

    /// Baseten's `AsyncRequestError.code` enum: every `code` a job error carries is one of these.
    pub const BASETEN: [&str; 8] = [
        MODEL_PREDICT_ERROR,
        MODEL_PREDICT_TIMEOUT,
        "MODEL_NOT_READY",
        MODEL_DOES_NOT_EXIST,
        MODEL_UNAVAILABLE,
        MODEL_INVALID_INPUT,
        "ASYNC_REQUEST_NOT_SUPPORTED",
        INTERNAL_SERVER_ERROR,
    ];

    pub fn is_baseten(code: &str) -> bool {
        BASETEN.contains(&code)
    }
}

/// One of a job's `errors`: Baseten's `code` (always one of its enum), its message, and for
/// an error of the gateway's own making the gateway's precise code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_code: Option<String>,
}

impl JobError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self { code: code.to_owned(), message: message.into(), gateway_code: None }
    }

    /// An error of the gateway's own kind: Baseten's `code`, and the gateway's precise one.
    pub fn gateway(code: &str, gateway_code: &str, message: impl Into<String>) -> Self {
        Self { gateway_code: Some(gateway_code.to_owned()), ..Self::new(code, message) }
    }
}

/// What the upstream is to run, kept only until the upstream has accepted it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    pub model_input: Value,
    pub priority: u8,
    pub retry: RetryConfig,
}

/// Where the job stands with the upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Upstream {
    /// Not yet accepted. `next_at` is also a lease: a submission in flight (`in_flight`) pushes
    /// it forward, so a crash mid-call is retried after it and two workers do not submit
    /// together; after a failed attempt it is the next retry.
    Pending {
        input: Submission,
        attempts: u32,
        next_at: Timestamp,
        #[serde(default)]
        in_flight: bool,
    },
    /// Accepted; results arrive at the inbox under our id, status is reconciled with the
    /// upstream's id (`None` if its answer carried none: the inbox delivery then supplies it).
    Submitted {
        upstream_id: Option<String>,
        attempts: u32,
        checked_at: Timestamp,
        /// Since when the gateway has been unable to learn how the job ends, and why; it ends
        /// FAILED once that has lasted [`STALL_GRACE_MS`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stalled: Option<Stall>,
    },
    /// Never sent and never will be (canceled or refused before the upstream took it).
    Abandoned { attempts: u32 },
}

/// A submitted job whose end the gateway cannot learn (see [`Upstream::Submitted`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stall {
    pub since: Timestamp,
    pub reason: StallReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StallReason {
    /// The upstream reports it finished (`SUCCEEDED`, `WEBHOOK_FAILED`), and its result has not
    /// reached the inbox.
    ResultNotDelivered,
    /// The upstream answers 404 for its own request id.
    UpstreamForgot,
    /// The upstream accepted it without a request id: it cannot be asked, only the inbox
    /// delivery can end it.
    NoUpstreamId,
    /// Its model or chain, or the target, is no longer in the gateway's configuration.
    NotConfigured,
}

impl StallReason {
    /// The error the job ends with: Baseten's code, the gateway's precise one, and why.
    pub fn error(self, waited_ms: u64) -> JobError {
        let waited = waited_ms / 1000;
        let (code, gateway_code, message) = match self {
            Self::ResultNotDelivered => (
                codes::INTERNAL_SERVER_ERROR,
                "RESULT_LOST",
                format!("the upstream reports the request finished, but its result never reached the gateway (waited {waited} s)"),
            ),
            Self::UpstreamForgot => (
                codes::INTERNAL_SERVER_ERROR,
                "UPSTREAM_REQUEST_GONE",
                format!("the upstream no longer knows this request (asked for {waited} s); how it ended cannot be learned"),
            ),
            Self::NoUpstreamId => (
                codes::INTERNAL_SERVER_ERROR,
                "UPSTREAM_REQUEST_UNTRACKED",
                "the upstream accepted the request without a request id, and no result arrived".to_owned(),
            ),
            Self::NotConfigured => (
                codes::MODEL_DOES_NOT_EXIST,
                "MODEL_NOT_CONFIGURED",
                format!("the model is no longer configured at this gateway (for {waited} s); how the request ended cannot be learned"),
            ),
        };
        JobError::gateway(code, gateway_code, message)
    }
}

/// How long a stalled job waits before it ends FAILED: a result already in flight to the
/// inbox, a configuration being rolled out, an upstream briefly confused.
pub const STALL_GRACE_MS: u64 = 5 * 60_000;

impl Upstream {
    pub fn attempts(&self) -> u32 {
        match self {
            Self::Pending { attempts, .. } | Self::Submitted { attempts, .. } | Self::Abandoned { attempts } => {
                *attempts
            }
        }
    }
}

/// One delivery attempt to the caller's `webhook_endpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    pub at: Timestamp,
    /// The receiver's HTTP status, if it answered.
    pub status_code: Option<u16>,
    /// Why it failed without an answer (timeout, refused).
    pub error: Option<String>,
}

/// The caller's webhook and its delivery history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    pub endpoint: String,
    pub attempts: Vec<DeliveryAttempt>,
    /// When the next attempt is due; `None` when none is scheduled.
    pub next_at: Option<Timestamp>,
}

/// How long a claim on a job's outbound work (a submission, a webhook attempt) lasts: the
/// claimer owns that work until then, and a claimer that died is taken over after it. It
/// must outlast [`OUTBOUND_TIMEOUT_MS`](crate::engine::OUTBOUND_TIMEOUT_MS), which every adapter
/// enforces, so a slow answer is never sent twice; the margin covers the store writes around
/// the call and clocks that differ between hosts.
pub const CLAIM_LEASE_MS: u64 = crate::engine::OUTBOUND_TIMEOUT_MS + 60_000;
/// How often a non-terminal job is checked against the upstream by the sweep.
pub const RECONCILE_EVERY_MS: u64 = 60_000;
/// A status read asks the upstream at most this often per job.
pub const RECONCILE_ON_READ_MS: u64 = 1000;

/// A large output kept beside its record: `count` chunks at `{prefix}/{i}`, `bytes` of JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputChunks {
    pub prefix: String,
    pub count: u32,
    pub bytes: u64,
}

/// The durable job record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    /// The gateway key that created it (its id, never the key).
    pub key_id: String,
    /// The idempotency record pointing here, deleted with the job.
    pub idempotency_record: Option<String>,
    pub subject: Subject,
    pub target: Target,
    pub deployment_id: Option<String>,
    pub status: Status,
    pub webhook_status: WebhookStatus,
    pub created_at: Timestamp,
    pub status_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub max_time_in_queue_seconds: u64,
    pub errors: Vec<JobError>,
    /// The output, when small enough to live in the record.
    pub output: Option<Value>,
    /// Where a larger output lives instead (see `output.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_chunks: Option<OutputChunks>,
    pub upstream: Upstream,
    pub cancel_requested: bool,
    pub webhook: Option<Webhook>,
    /// The trace of the request that submitted it: the job's upstream calls and webhook
    /// deliveries carry it (W3C `traceparent`, the submitting request's span as the parent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<Trace>,
}

impl Job {
    /// This job, in `trace`.
    pub fn with_trace(mut self, trace: Option<Trace>) -> Self {
        self.trace = trace;
        self
    }

    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        key_id: String,
        idempotency_record: Option<String>,
        subject: Subject,
        target: Target,
        input: Submission,
        max_time_in_queue_seconds: u64,
        webhook_endpoint: Option<String>,
        now: Timestamp,
    ) -> Self {
        let webhook_status =
            if webhook_endpoint.is_some() { WebhookStatus::Pending } else { WebhookStatus::NoWebhookProvided };
        Self {
            id,
            key_id,
            idempotency_record,
            subject,
            target,
            deployment_id: None,
            status: Status::Queued,
            webhook_status,
            created_at: now,
            status_at: now,
            started_at: None,
            finished_at: None,
            max_time_in_queue_seconds,
            errors: Vec::new(),
            output: None,
            output_chunks: None,
            // Created already leased: the creating request submits it right away.
            upstream: Upstream::Pending {
                input,
                attempts: 0,
                next_at: now.plus_millis(CLAIM_LEASE_MS),
                in_flight: true,
            },
            cancel_requested: false,
            webhook: webhook_endpoint.map(|endpoint| Webhook { endpoint, attempts: Vec::new(), next_at: None }),
            trace: None,
        }
    }

    /// Moves the request status; on reaching an end, stops any pending submission and
    /// schedules the caller's webhook (or cancels it, for CANCELED).
    pub fn move_to(&mut self, to: Status, now: Timestamp) -> Result<(), IllegalTransition> {
        self.status = self.status.transition(to)?;
        self.status_at = now;
        if to.is_terminal() && to != Status::WebhookFailed {
            self.finished_at = Some(now);
            if let Upstream::Pending { attempts, .. } = self.upstream {
                self.upstream = Upstream::Abandoned { attempts };
            }
            if let Some(webhook) = &mut self.webhook {
                if to == Status::Canceled {
                    self.webhook_status = self.webhook_status.transition(WebhookStatus::Canceled)?;
                } else {
                    webhook.next_at = Some(now);
                }
            }
        }
        Ok(())
    }

    /// Moves the request status if the move is legal; otherwise leaves it (a stale or
    /// duplicate message, never an error).
    pub fn move_if_legal(&mut self, to: Status, now: Timestamp) -> Result<(), IllegalTransition> {
        if self.status.transition(to).is_ok() {
            self.move_to(to, now)?;
        }
        Ok(())
    }

    /// A QUEUED job past its `max_time_in_queue_seconds` becomes EXPIRED. Returns whether it did.
    pub fn expire_if_due(&mut self, now: Timestamp) -> Result<bool, IllegalTransition> {
        if self.status != Status::Queued || now < self.queue_deadline() {
            return Ok(false);
        }
        self.move_to(Status::Expired, now)?;
        self.errors.push(JobError::new(
            codes::MODEL_PREDICT_TIMEOUT,
            format!("request expired after {} s in queue", self.max_time_in_queue_seconds),
        ));
        Ok(true)
    }

    /// When a stalled job ends: after the grace, and one without an upstream id no earlier
    /// than its queue deadline (the upstream may still run it and deliver).
    pub fn stall_deadline(&self, stall: &Stall) -> Timestamp {
        let end = stall.since.plus_millis(STALL_GRACE_MS);
        if stall.reason == StallReason::NoUpstreamId {
            end.max(self.queue_deadline())
        } else {
            end
        }
    }

    pub fn queue_deadline(&self) -> Timestamp {
        self.created_at.plus_secs(self.max_time_in_queue_seconds)
    }

    /// Records one delivery attempt's result and schedules the next, or ends the webhook.
    pub fn record_delivery(
        &mut self,
        attempt: DeliveryAttempt,
        delivered: bool,
        policy: &DeliveryPolicy,
    ) -> Result<(), IllegalTransition> {
        let now = attempt.at;
        let Some(webhook) = &mut self.webhook else { return Ok(()) };
        webhook.attempts.push(attempt);
        let n = u32::try_from(webhook.attempts.len()).unwrap_or(u32::MAX);
        if delivered {
            webhook.next_at = None;
            self.webhook_status = self.webhook_status.transition(WebhookStatus::Succeeded)?;
        } else if n >= policy.max_attempts {
            webhook.next_at = None;
            self.webhook_status = self.webhook_status.transition(WebhookStatus::Failed)?;
            if self.status == Status::Succeeded {
                self.status = self.status.transition(Status::WebhookFailed)?;
                self.status_at = now;
            }
        } else {
            webhook.next_at = Some(now.plus_millis(retry_delay_ms(&self.id, n, policy)));
        }
        Ok(())
    }

    /// When the record next needs the sweep: submission retry, queue expiry, reconciliation,
    /// a webhook attempt, or deletion at the end of retention.
    pub fn next_due(&self, retention_seconds: u64) -> Timestamp {
        let mut due = Vec::with_capacity(4);
        if !self.status.is_terminal() {
            match &self.upstream {
                Upstream::Pending { next_at, .. } => due.push(*next_at),
                Upstream::Submitted { checked_at, stalled, .. } => {
                    due.push(checked_at.plus_millis(RECONCILE_EVERY_MS));
                    if let Some(stall) = stalled {
                        due.push(self.stall_deadline(stall));
                    }
                }
                Upstream::Abandoned { .. } => {}
            }
            // The queue deadline, until the upstream has been asked after it (expiry waits for
            // the upstream's answer; then the reconcile interval paces the asking).
            let asked_after_deadline = matches!(&self.upstream, Upstream::Submitted { checked_at, .. } if *checked_at >= self.queue_deadline());
            if self.status == Status::Queued && !asked_after_deadline {
                due.push(self.queue_deadline());
            }
        }
        if let Some(at) = self.webhook.as_ref().and_then(|w| w.next_at) {
            due.push(at);
        }
        if due.is_empty() {
            due.push(self.retained_until(retention_seconds));
        }
        due.into_iter().min().unwrap_or(self.created_at)
    }

    /// Whether all that is left is deletion at the end of retention: the job has ended and no
    /// webhook attempt is due. Nothing gives such a job work again (terminal states never
    /// move; a delivered or given-up webhook is not resumed), so the sweep parks it.
    pub fn only_retention_left(&self) -> bool {
        self.status.is_terminal() && self.webhook.as_ref().is_none_or(|w| w.next_at.is_none())
    }

    /// Kept until retention after the end, and never while a webhook is still being delivered.
    pub fn retained_until(&self, retention_seconds: u64) -> Timestamp {
        match self.finished_at {
            Some(end) if self.webhook.as_ref().is_none_or(|w| w.next_at.is_none()) => end.plus_secs(retention_seconds),
            _ => Timestamp(u64::MAX),
        }
    }

    /// The deployment that runs the job, as Baseten's records give it: always a string (its
    /// clients require one). Until the upstream has reported it, the one the job was sent to
    /// if the caller named it (`deployment/{id}`), else empty.
    pub fn deployment(&self) -> String {
        match (&self.deployment_id, &self.target) {
            (Some(id), _) => id.clone(),
            (None, Target::Deployment(id)) => id.clone(),
            (None, _) => String::new(),
        }
    }
}

/// Delay before attempt `n + 1` after `n` failures: exponential from the initial delay, capped,
/// times a jitter in [0.8, 1.2) derived from the job id and `n` (deterministic, no randomness
/// needed, and different jobs spread out).
pub fn retry_delay_ms(job_id: &str, failures: u32, policy: &DeliveryPolicy) -> u64 {
    let exp = failures.saturating_sub(1).min(30);
    let base = policy.initial_delay_seconds.saturating_mul(1 << exp).min(policy.max_delay_seconds) * 1000;
    let h = sha256(format!("{job_id}/{failures}").as_bytes());
    let unit = f64::from(u16::from_be_bytes([h[0], h[1]])) / 65536.0;
    (base as f64 * (0.8 + 0.4 * unit)) as u64
}

/// A fresh job for the engine's own unit tests: QUEUED, its submission leased at `now`.
#[cfg(test)]
pub(crate) fn test_job(now: Timestamp) -> Job {
    let input = Submission { model_input: Value::Null, priority: 0, retry: Default::default() };
    let subject = Subject::Model("m".into());
    Job::new("0".repeat(32), "k".into(), None, subject, Target::Production, input, 600, None, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::*;

    const ALL: [Status; 7] = [Queued, InProgress, Succeeded, Failed, Expired, Canceled, WebhookFailed];

    #[test]
    fn only_documented_moves_are_legal() {
        let legal = [
            (Queued, InProgress),
            (Queued, Succeeded),
            (Queued, Failed),
            (Queued, Expired),
            (Queued, Canceled),
            (InProgress, Succeeded),
            (InProgress, Failed),
            (Succeeded, WebhookFailed),
        ];
        for from in ALL {
            for to in ALL {
                let result = from.transition(to);
                if legal.contains(&(from, to)) {
                    assert_eq!(result, Ok(to));
                } else {
                    let err = IllegalTransition { machine: "status", from: from.as_str(), to: to.as_str() };
                    assert_eq!(result, Err(err), "{from:?} -> {to:?}");
                }
            }
        }
        assert!(ALL.iter().filter(|s| s.is_terminal()).count() == 5);
    }

    #[test]
    fn webhook_status_moves_once_from_pending() {
        use WebhookStatus as W;
        let all = [W::Pending, W::Succeeded, W::Failed, W::Canceled, W::NoWebhookProvided];
        for from in all {
            for to in all {
                let ok = from == W::Pending && matches!(to, W::Succeeded | W::Failed | W::Canceled);
                assert_eq!(from.transition(to).is_ok(), ok, "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn retry_schedule_grows_to_the_cap_with_bounded_jitter() {
        let p = DeliveryPolicy::default();
        let mut total = 0;
        for n in 1..p.max_attempts {
            let d = retry_delay_ms("abc", n, &p);
            let base = (5u64 << (n - 1)).min(3600) * 1000;
            assert!(d >= base * 8 / 10 && d < base * 12 / 10, "attempt {n}: {d} vs {base}");
            total += d;
        }
        // Hours, not Baseten's two attempts 10 s apart.
        assert!(total > 4 * 3600 * 1000, "{total}");
        assert_ne!(retry_delay_ms("abc", 3, &p), retry_delay_ms("abd", 3, &p));
        assert_eq!(retry_delay_ms("abc", 3, &p), retry_delay_ms("abc", 3, &p));
    }
}
