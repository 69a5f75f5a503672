//! The status record callers see, typed: Baseten's fields (`AsyncRequestStatusResponse`), then
//! the gateway's additions (output, usage, the cancel wish, the webhook's deliveries). The HTTP
//! answer is its JSON; the WIT adapter reads the same type back, so there is one shape.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::base::{Subject, Timestamp};
use crate::engine::jobs::record::{Job, JobError, Status, Upstream, WebhookStatus};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusRecord {
    pub request_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<String>,
    /// Always a string, as Baseten's clients require (see [`Job::deployment`]).
    pub deployment_id: String,
    pub status: Status,
    pub webhook_status: WebhookStatus,
    pub created_at: String,
    pub status_at: String,
    pub errors: Vec<JobError>,
    /// Present (possibly null) once SUCCEEDED or WEBHOOK_FAILED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    pub usage: Usage,
    pub cancel_requested: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookView>,
}

/// Time queued and in progress, attempts, and a cost estimate. When the start was never
/// observed (the result arrived first), compute is counted from submission: an upper bound.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub time_queued_ms: u64,
    pub time_in_progress_ms: u64,
    pub attempts: u32,
    pub start_observed: bool,
    pub price_per_second: f64,
    pub cost_estimate: f64,
}

/// The caller's webhook and every delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookView {
    /// `None` to a browser token: it may carry a secret in its path or query.
    pub endpoint: Option<String>,
    pub attempts: Vec<AttemptView>,
    pub next_attempt_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptView {
    pub at: String,
    pub status_code: Option<u16>,
    pub error: Option<String>,
}

impl Job {
    /// Usage: time queued and in progress, attempts, and a cost estimate. When the start was
    /// never observed (the result arrived first), compute is counted from submission: an upper bound.
    pub fn usage(&self, now: Timestamp, price_per_second: f64) -> Usage {
        let end = self.finished_at.unwrap_or(now);
        let ran_unobserved = matches!(self.upstream, Upstream::Submitted { .. })
            && matches!(self.status, Status::Succeeded | Status::Failed | Status::WebhookFailed);
        let start = self.started_at.or(ran_unobserved.then_some(self.created_at));
        let queued_ms = start.unwrap_or(end).millis_since(self.created_at);
        let in_progress_ms = start.map_or(0, |s| end.millis_since(s));
        let cost = in_progress_ms as f64 / 1000.0 * price_per_second;
        Usage {
            time_queued_ms: queued_ms,
            time_in_progress_ms: in_progress_ms,
            attempts: self.upstream.attempts(),
            start_observed: self.started_at.is_some(),
            price_per_second,
            cost_estimate: (cost * 1e9).round() / 1e9,
        }
    }

    /// The status record as callers see it, with the output (read from wherever it is kept).
    /// `show_endpoint`: whether the caller may see the webhook's endpoint, which may carry a
    /// secret in its path or query (a browser token may not).
    pub fn view(
        &self,
        now: Timestamp,
        price_per_second: f64,
        output: Option<Value>,
        show_endpoint: bool,
    ) -> StatusRecord {
        let (model_id, chain_id) = match &self.subject {
            Subject::Model(id) => (Some(id.clone()), None),
            Subject::Chain(id) => (None, Some(id.clone())),
        };
        StatusRecord {
            request_id: self.id.clone(),
            model_id,
            chain_id,
            deployment_id: self.deployment(),
            status: self.status,
            webhook_status: self.webhook_status,
            created_at: self.created_at.rfc3339(),
            status_at: self.status_at.rfc3339(),
            errors: self.errors.clone(),
            output: matches!(self.status, Status::Succeeded | Status::WebhookFailed)
                .then(|| output.unwrap_or(Value::Null)),
            usage: self.usage(now, price_per_second),
            cancel_requested: self.cancel_requested,
            webhook: self.webhook.as_ref().map(|w| WebhookView {
                endpoint: show_endpoint.then(|| w.endpoint.clone()),
                attempts: w
                    .attempts
                    .iter()
                    .map(|a| AttemptView { at: a.at.rfc3339(), status_code: a.status_code, error: a.error.clone() })
                    .collect(),
                next_attempt_at: w.next_at.map(Timestamp::rfc3339),
            }),
        }
    }
}
