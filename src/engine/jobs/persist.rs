//! Reading and writing job records: load, the conditional update every change goes through,
//! and what a caller may see. The rest of `jobs/` changes records only through [`Engine::update`].
//!
//! Store layout: `job/{id}` the record, `due/{id}` the sweep's index of live records,
//! `kept/{end of retention}/{id}` finished ones with only deletion left (`sweep.rs`),
//! `idem/{sha256(key id, Idempotency-Key)}` → `{request_id, body_sha256}` (`submit.rs`),
//! `out/{id}/{delivery}/{n}` large outputs (`output.rs`), `sweep/lease/{window}` and
//! `sweep/next` (`sweep.rs`).
//!
//! Every write of a record is conditional on the version read ([`Engine::update`]): a request
//! that lost a race re-reads and re-applies its change, so a result the inbox stored meanwhile
//! is never overwritten by a stale copy; terminal states never move again (see
//! [`Status::transition`]).

use crate::engine::access::keys;
use crate::engine::base::{is_request_id, Error, Operation, Subject, Timestamp};
use crate::engine::config::ApiKey;
use crate::engine::jobs::record::Job;
use crate::engine::{Engine, HttpClient, Store, Version};

/// How often an update re-reads and re-applies after losing a race before giving up (503).
const UPDATE_ATTEMPTS: usize = 16;

pub(crate) fn job_key(id: &str) -> String {
    format!("job/{id}")
}

pub(crate) fn due_key(id: &str) -> String {
    format!("due/{id}")
}

/// The log lines of what a written change did to a job (`before` it, `None` for a job just
/// created): a status moved, a webhook attempt made. Never the job's input, output or webhook
/// endpoint (which may hold a secret).
pub(crate) fn job_events(before: Option<&Job>, after: &Job) -> Vec<String> {
    let mut lines = Vec::new();
    let common = |event: &str, time: Timestamp| {
        let mut fields = serde_json::Map::new();
        fields.insert("time".into(), time.rfc3339().into());
        fields.insert("event".into(), event.into());
        fields.insert("job_id".into(), after.id.clone().into());
        fields.insert("key_id".into(), after.key_id.clone().into());
        fields.insert(after.subject.kind().into(), after.subject.id().into());
        fields.insert("trace_id".into(), after.trace.as_ref().map(|t| t.trace_id.clone()).into());
        fields
    };
    if before.map(|b| b.status) != Some(after.status) {
        let mut fields = common("job_status", after.status_at);
        fields.insert("from".into(), serde_json::to_value(before.map(|b| b.status)).unwrap_or_default());
        fields.insert("to".into(), serde_json::to_value(after.status).unwrap_or_default());
        fields.insert("errors".into(), after.errors.iter().map(|e| e.code.clone()).collect::<Vec<_>>().into());
        lines.push(serde_json::Value::Object(fields).to_string());
    }
    let attempts = |job: Option<&Job>| job.and_then(|j| j.webhook.as_ref()).map_or(0, |w| w.attempts.len());
    if let Some(webhook) = after.webhook.as_ref().filter(|_| attempts(Some(after)) > attempts(before)) {
        for (n, attempt) in webhook.attempts.iter().enumerate().skip(attempts(before)) {
            let mut fields = common("webhook_attempt", attempt.at);
            fields.insert("attempt".into(), (n + 1).into());
            fields.insert("status_code".into(), attempt.status_code.into());
            fields.insert("error".into(), attempt.error.clone().into());
            fields.insert("webhook_status".into(), serde_json::to_value(after.webhook_status).unwrap_or_default());
            lines.push(serde_json::Value::Object(fields).to_string());
        }
    }
    lines
}

impl<S: Store, H: HttpClient> Engine<'_, S, H> {
    pub(crate) async fn load(&self, id: &str) -> Result<Option<Job>, Error> {
        Ok(self.load_versioned(id).await?.map(|(job, _)| job))
    }

    async fn load_versioned(&self, id: &str) -> Result<Option<(Job, Version)>, Error> {
        let Some((bytes, version)) = self.store.get_versioned(&job_key(id)).await? else { return Ok(None) };
        serde_json::from_slice(&bytes)
            .map(|job| Some((job, version)))
            .map_err(|e| Error::Store(crate::engine::StoreError::new(format!("corrupt record {id}: {e}"))))
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
            if job == before {
                return Ok((job, out));
            }
            if self.store.put_if_version(&job_key(id), to_bytes(&job), version).await? {
                if let Some(log) = self.log {
                    for line in job_events(Some(&before), &job) {
                        (log.0)(&line);
                    }
                }
                return Ok((job, out));
            }
        }
        Err(Error::Store(crate::engine::StoreError::new(format!(
            "record {id} kept changing under {UPDATE_ATTEMPTS} updates"
        ))))
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

    /// The job a caller names, if it may act on it with `op`. What the key may do at all
    /// first, so that the answer is the same whether or not the job exists; then whether it
    /// may see this job (404 if not, as for no job); then the job's model or chain.
    pub(crate) async fn load_for_caller(
        &self,
        key: &ApiKey,
        op: Operation,
        origin: Option<&str>,
        subject: Option<&Subject>,
        id: &str,
        now: Timestamp,
    ) -> Result<Job, Error> {
        keys::authorize_operation(key, op, origin)?;
        let job = self.load_visible(id, subject, now).await?;
        keys::authorize_job(key, &job)?;
        keys::authorize(key, op, &job.subject, origin)?;
        Ok(job)
    }

    pub(crate) fn price(&self, subject: &Subject) -> f64 {
        self.config.upstream(subject).map_or(0.0, |u| u.price_per_second)
    }
}

pub(crate) fn to_bytes<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Serializing our own plain data structures cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}
