//! The async request store and one priority queue per deployment.
//!
//! Lower `priority` runs first, FIFO within a priority; each deployment runs at
//! most `concurrency` requests at once. All state sits behind one mutex that
//! is never held across an `.await`.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::route::Owner;
use crate::stream::Streams;
use crate::webhook::Deliverer;
use crate::{demo, new_id, rfc3339, Config};

/// A validated async submission.
#[derive(Debug, Clone)]
pub(crate) struct Submission {
    pub model_input: Value,
    pub webhook_endpoint: Option<String>,
    pub priority: u8,
    pub max_time_in_queue_seconds: u64,
    pub retry: RetryConfig,
}

/// `inference_retry_config`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryConfig {
    pub max_attempts: u32,
    pub initial_delay_ms: u64,
    pub max_delay_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum Status {
    Queued,
    InProgress,
    Succeeded,
    Failed,
    Expired,
    Canceled,
    WebhookFailed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum WebhookStatus {
    Pending,
    Succeeded,
    Failed,
    Canceled,
    NoWebhookProvided,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct JobError {
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug)]
struct Job {
    request_id: String,
    owner: Owner,
    deployment_id: String,
    submission: Submission,
    status: Status,
    webhook_status: WebhookStatus,
    created_at: OffsetDateTime,
    status_at: OffsetDateTime,
    started_at: Option<OffsetDateTime>,
    attempts: u32,
    errors: Vec<JobError>,
}

impl Job {
    fn set_status(&mut self, status: Status) {
        self.status = status;
        self.status_at = OffsetDateTime::now_utc();
    }

    /// The status record (`GET .../async_request/{id}`); never includes the output.
    fn record(&self) -> Value {
        let mut map = Map::new();
        map.insert("request_id".into(), json!(self.request_id));
        map.insert(self.owner.id_field().into(), json!(self.owner.id));
        map.insert("deployment_id".into(), json!(self.deployment_id));
        map.insert("status".into(), json!(self.status));
        map.insert("webhook_status".into(), json!(self.webhook_status));
        map.insert("created_at".into(), json!(rfc3339(self.created_at)));
        map.insert("status_at".into(), json!(rfc3339(self.status_at)));
        map.insert("errors".into(), json!(self.errors));
        // Extensions (not in Baseten's API), documented in the README.
        map.insert("attempts".into(), json!(self.attempts));
        map.insert("started_at".into(), json!(self.started_at.map(rfc3339)));
        Value::Object(map)
    }
}

/// A queued request's place: lower priority first, then lower sequence number.
#[derive(Debug, PartialEq, Eq)]
struct Waiting {
    priority: u8,
    seq: u64,
    request_id: String,
}

impl Ord for Waiting {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap pops the greatest: make "runs first" the greatest.
        other.priority.cmp(&self.priority).then(other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for Waiting {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Debug, Default)]
struct Queue {
    waiting: BinaryHeap<Waiting>,
    in_progress: usize,
}

#[derive(Debug, Default)]
struct State {
    jobs: HashMap<String, Job>,
    queues: HashMap<String, Queue>,
    next_seq: u64,
    /// Async requests ever accepted, per deployment (tests count upstream submissions).
    accepted: HashMap<String, usize>,
    /// The W3C `traceparent` of every request that carried one, oldest first (the last
    /// [`TRACEPARENTS_KEPT`]): what a test reads to see a caller's trace reach the model.
    traceparents: std::collections::VecDeque<String>,
}

/// How many `traceparent`s are kept.
const TRACEPARENTS_KEPT: usize = 10_000;

/// What a cancel request did.
#[derive(Debug)]
pub(crate) struct CancelOutcome {
    pub canceled: bool,
    pub message: String,
}

/// Everything the handlers share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: Config,
    /// Token pacing and hold gates of streamed answers.
    pub streams: Streams,
    state: Mutex<State>,
    deliverer: Deliverer,
    token: CancellationToken,
}

impl Shared {
    pub fn new(config: Config, token: CancellationToken) -> std::io::Result<Self> {
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| std::io::Error::other(format!("cannot build the webhook client: {e}")))?;
        let deliverer = Deliverer {
            client,
            secrets: config.webhook_secrets.clone(),
            timeout: config.webhook_timeout,
            retry_gap: config.webhook_retry_gap,
            log: config.log_requests,
        };
        let streams = Streams::new(config.token_interval, token.clone());
        Ok(Self { config, streams, state: Mutex::default(), deliverer, token })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `fut` in the background until it ends or the server shuts down.
    fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let token = self.token.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = fut => {}
                () = token.cancelled() => {}
            }
        });
    }

    /// Queues a request and returns its id.
    pub fn submit(self: &Arc<Self>, owner: Owner, deployment_id: String, sub: Submission) -> String {
        let request_id = new_id();
        let now = OffsetDateTime::now_utc();
        let expires_after =
            self.config.queue_second.saturating_mul(u32::try_from(sub.max_time_in_queue_seconds).unwrap_or(u32::MAX));
        {
            let mut state = self.lock();
            let seq = state.next_seq;
            state.next_seq += 1;
            *state.accepted.entry(deployment_id.clone()).or_default() += 1;
            let queue = state.queues.entry(deployment_id.clone()).or_default();
            queue.waiting.push(Waiting { priority: sub.priority, seq, request_id: request_id.clone() });
            let webhook_status =
                if sub.webhook_endpoint.is_some() { WebhookStatus::Pending } else { WebhookStatus::NoWebhookProvided };
            state.jobs.insert(
                request_id.clone(),
                Job {
                    request_id: request_id.clone(),
                    owner,
                    deployment_id: deployment_id.clone(),
                    submission: sub,
                    status: Status::Queued,
                    webhook_status,
                    created_at: now,
                    status_at: now,
                    started_at: None,
                    attempts: 0,
                    errors: Vec::new(),
                },
            );
        }
        let this = Arc::clone(self);
        let id = request_id.clone();
        self.spawn(async move {
            tokio::time::sleep(expires_after).await;
            this.expire(&id);
        });
        self.pump(&deployment_id);
        request_id
    }

    /// Starts queued requests while the deployment has free slots.
    fn pump(self: &Arc<Self>, deployment_id: &str) {
        let mut started = Vec::new();
        {
            let mut state = self.lock();
            let State { jobs, queues, .. } = &mut *state;
            let Some(queue) = queues.get_mut(deployment_id) else {
                return;
            };
            while queue.in_progress < self.config.concurrency {
                let Some(next) = queue.waiting.pop() else {
                    break;
                };
                let Some(job) = jobs.get_mut(&next.request_id) else {
                    continue;
                };
                job.set_status(Status::InProgress);
                job.started_at = Some(job.status_at);
                queue.in_progress += 1;
                started.push((next.request_id, job.submission.clone()));
            }
        }
        for (request_id, submission) in started {
            let this = Arc::clone(self);
            self.spawn(async move { this.run(request_id, submission).await });
        }
    }

    /// Calls the model, retrying 500/502/503/504 per the retry config.
    async fn run(self: Arc<Self>, request_id: String, sub: Submission) {
        let retry = sub.retry;
        let mut delay = retry.initial_delay_ms;
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            if let Some(job) = self.lock().jobs.get_mut(&request_id) {
                job.attempts = attempt;
            }
            match demo::run(&sub.model_input).await {
                Ok(output) => break Ok(output),
                Err(f) if demo::is_retryable(f.status) && attempt < retry.max_attempts => {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    delay = delay.saturating_mul(2).min(retry.max_delay_ms);
                }
                Err(f) => {
                    let tries = if attempt > 1 { format!(" after {attempt} attempts") } else { String::new() };
                    break Err(format!("model returned HTTP {}{tries}: {}", f.status, f.body));
                }
            }
        };
        let (data, errors, status) = match result {
            Ok(output) => (output, Vec::new(), Status::Succeeded),
            Err(message) => (Value::Null, vec![JobError { code: "MODEL_PREDICT_ERROR", message }], Status::Failed),
        };
        let deployment_id = {
            let mut state = self.lock();
            let State { jobs, queues, .. } = &mut *state;
            let Some(job) = jobs.get_mut(&request_id) else {
                return;
            };
            job.errors.clone_from(&errors);
            job.set_status(status);
            if let Some(queue) = queues.get_mut(&job.deployment_id) {
                queue.in_progress = queue.in_progress.saturating_sub(1);
            }
            job.deployment_id.clone()
        };
        self.pump(&deployment_id);
        self.notify(&request_id, data, &errors).await;
    }

    /// Expires a request that is still queued.
    fn expire(self: &Arc<Self>, request_id: &str) {
        let errors = {
            let mut state = self.lock();
            let State { jobs, queues, .. } = &mut *state;
            let Some(job) = jobs.get_mut(request_id) else {
                return;
            };
            if job.status != Status::Queued {
                return;
            }
            if let Some(queue) = queues.get_mut(&job.deployment_id) {
                queue.waiting.retain(|w| w.request_id != request_id);
            }
            job.errors = vec![JobError {
                code: "MODEL_PREDICT_TIMEOUT",
                message: format!(
                    "request expired after waiting {} s in queue",
                    job.submission.max_time_in_queue_seconds
                ),
            }];
            job.set_status(Status::Expired);
            job.errors.clone()
        };
        let this = Arc::clone(self);
        let id = request_id.to_owned();
        self.spawn(async move { this.notify(&id, Value::Null, &errors).await });
    }

    /// Delivers the completion webhook (if any) and records how it went.
    async fn notify(&self, request_id: &str, data: Value, errors: &[JobError]) {
        let (url, payload) = {
            let state = self.lock();
            let Some(job) = state.jobs.get(request_id) else {
                return;
            };
            let Some(url) = job.submission.webhook_endpoint.clone() else {
                return;
            };
            let mut payload = Map::new();
            payload.insert("request_id".into(), json!(job.request_id));
            payload.insert("model_id".into(), json!(job.owner.id));
            if job.owner.id_field() != "model_id" {
                payload.insert(job.owner.id_field().into(), json!(job.owner.id));
            }
            payload.insert("deployment_id".into(), json!(job.deployment_id));
            payload.insert("type".into(), json!("async_request_completed"));
            payload.insert("time".into(), json!(rfc3339(OffsetDateTime::now_utc())));
            payload.insert("data".into(), data);
            payload.insert("errors".into(), json!(errors));
            (url, Value::Object(payload))
        };
        let body = serde_json::to_vec(&payload).expect("a JSON value always serializes");
        let delivered = self.deliverer.deliver(&url, request_id, body).await;
        let mut state = self.lock();
        if let Some(job) = state.jobs.get_mut(request_id) {
            if delivered {
                job.webhook_status = WebhookStatus::Succeeded;
            } else {
                job.webhook_status = WebhookStatus::Failed;
                if job.status == Status::Succeeded {
                    job.set_status(Status::WebhookFailed);
                }
            }
        }
    }

    /// The status record of a request owned by `owner`.
    pub fn status(&self, owner: &Owner, request_id: &str) -> Option<Value> {
        let state = self.lock();
        let job = state.jobs.get(request_id).filter(|j| &j.owner == owner)?;
        Some(job.record())
    }

    /// Cancels a request owned by `owner` if it is still queued.
    pub fn cancel(&self, owner: &Owner, request_id: &str) -> Option<CancelOutcome> {
        let mut state = self.lock();
        let State { jobs, queues, .. } = &mut *state;
        let job = jobs.get_mut(request_id).filter(|j| &j.owner == owner)?;
        if job.status != Status::Queued {
            let status = serde_json::to_value(job.status).expect("a status always serializes");
            let status = status.as_str().unwrap_or_default();
            return Some(CancelOutcome {
                canceled: false,
                message: format!("request is {status} and cannot be canceled"),
            });
        }
        if let Some(queue) = queues.get_mut(&job.deployment_id) {
            queue.waiting.retain(|w| w.request_id != request_id);
        }
        job.set_status(Status::Canceled);
        job.webhook_status = WebhookStatus::Canceled;
        Some(CancelOutcome { canceled: true, message: "request canceled".to_owned() })
    }

    /// The webhook endpoints of every async request accepted since the server started.
    pub fn webhook_endpoints(&self) -> Vec<String> {
        self.lock().jobs.values().filter_map(|j| j.submission.webhook_endpoint.clone()).collect()
    }

    /// Notes a request's `traceparent`.
    pub fn note_traceparent(&self, value: &str) {
        let mut state = self.lock();
        if state.traceparents.len() == TRACEPARENTS_KEPT {
            state.traceparents.pop_front();
        }
        state.traceparents.push_back(value.to_owned());
    }

    /// The `traceparent`s of requests received, oldest first.
    pub fn traceparents(&self) -> Vec<String> {
        self.lock().traceparents.iter().cloned().collect()
    }

    /// How many async requests a deployment has accepted since the server started.
    pub fn accepted(&self, deployment_id: &str) -> usize {
        self.lock().accepted.get(deployment_id).copied().unwrap_or_default()
    }

    /// `(num_queued_requests, num_in_progress_requests)` of a deployment.
    pub fn queue_counts(&self, deployment_id: &str) -> (usize, usize) {
        self.lock().queues.get(deployment_id).map_or((0, 0), |q| (q.waiting.len(), q.in_progress))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_pops_lowest_priority_then_fifo() {
        let mut heap = BinaryHeap::new();
        for (seq, priority) in [2u8, 0, 1, 1, 0].into_iter().enumerate() {
            heap.push(Waiting { priority, seq: seq as u64, request_id: seq.to_string() });
        }
        let order: Vec<String> = std::iter::from_fn(|| heap.pop().map(|w| w.request_id)).collect();
        assert_eq!(order, ["1", "4", "2", "3", "0"]);
    }
}
