//! The webhook inbox: `POST /webhooks/baseten/{our request id}/{token}`, where the upstream
//! delivers async results. The URL's token first (it binds the URL to its job, so a signed
//! result for one job cannot complete another), then the signature, both without a store;
//! then the payload's age, then the result is folded into the job, whose upstream id must
//! match the payload's once known. Duplicate deliveries are answered 200 and change nothing.

use bytes::Bytes;
use http::{Request, StatusCode};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use crate::engine::base::{json_response, Error, Timestamp};
use crate::engine::config::Config;
use crate::engine::jobs::output::Stored;
use crate::engine::jobs::reconcile::upstream_errors;
use crate::engine::jobs::record::{codes, Job, JobError, Status, Upstream};
use crate::engine::webhooks::signature::baseten_verify;
use crate::engine::{full, header_str, Ctx, Engine, HttpClient, Outcome, Store};

impl<S: Store, H: HttpClient> Engine<'_, S, H> {
    pub(crate) async fn inbox(&self, id: &str, request: &Request<Bytes>, ctx: Ctx) -> Result<Outcome<H::Body>, Error> {
        // Its URL was checked at admission and its signature with its body
        // (`Engine::check_body`), before this place's store was touched.
        let now = ctx.now;
        let payload: Value = serde_json::from_slice(request.body())
            .map_err(|e| Error::MalformedJson { message: format!("webhook payload is not JSON: {e}") })?;
        let sent_at = payload["time"]
            .as_str()
            .and_then(Timestamp::parse_rfc3339)
            .ok_or_else(|| Error::invalid("time", "must be an RFC 3339 timestamp"))?;
        let tolerance_ms = self.config.webhooks.inbound_tolerance_seconds * 1000;
        if sent_at.max(now).millis_since(sent_at.min(now)) > tolerance_ms {
            return Err(Error::StaleWebhook);
        }
        let upstream_id =
            payload["request_id"].as_str().ok_or_else(|| Error::invalid("request_id", "is required"))?.to_owned();
        // A large output is written beside the record first, under this delivery's own name,
        // so the record's one conditional write refers to it whole or not at all.
        let stored = if upstream_errors(&payload["errors"]).is_empty() {
            self.store_output(id, &hex::encode(ctx.entropy), &payload["data"]).await?
        } else {
            Stored::None
        };
        let result = self.update(id, |job| apply_result(job, &upstream_id, &payload, &stored, now)).await;
        if let (false, Stored::Chunked(chunks)) = (matches!(result, Ok((_, true))), &stored) {
            // Not this delivery's result (the first one won, or it failed): its chunks belong
            // to no record.
            self.delete_output(chunks).await?;
        }
        let (job, _) = result?;
        let body = json!({ "request_id": job.id, "status": job.status.as_str() });
        Ok(Outcome::new(full(json_response(StatusCode::OK, &body)), Some(job.next_due(self.config.retention_seconds))))
    }
}

/// The inbox URL names a job this gateway could have made, with that job's token (compared in
/// constant time). Needs neither the body nor a store.
pub(crate) fn check_inbox_url(config: &Config, id: &str, token: Option<&str>) -> Result<(), Error> {
    if !crate::engine::base::is_request_id(id) {
        // For no job this gateway could have made: the upstream must not retry.
        return Err(Error::RequestNotFound { request_id: id.to_owned() });
    }
    let expected = config.inbox_token(id)?;
    if !token.is_some_and(|t| bool::from(t.as_bytes().ct_eq(expected.as_bytes()))) {
        return Err(Error::BadSignature { message: "this is not the inbox URL given for this job".to_owned() });
    }
    Ok(())
}

/// `X-BASETEN-SIGNATURE` against the inbound secrets; no store is involved.
pub(crate) fn verify_signature(config: &Config, request: &Request<Bytes>) -> Result<(), Error> {
    let secrets = config.webhooks.inbound_secrets.iter().map(|s| config.secret(s).map(str::to_owned));
    let secrets = secrets.collect::<Result<Vec<_>, _>>()?;
    let bad = |message: &str| Error::BadSignature { message: message.to_owned() };
    if secrets.is_empty() {
        return Err(bad("the webhook inbox is disabled: no inbound secret is configured"));
    }
    let signature = header_str(request.headers(), "x-baseten-signature")
        .ok_or_else(|| bad("missing X-BASETEN-SIGNATURE header"))?;
    if !baseten_verify(&secrets, signature, request.body()) {
        return Err(bad("X-BASETEN-SIGNATURE does not match the body"));
    }
    Ok(())
}

/// Folds a signed result into the job. The first result wins; later ones change nothing.
/// Returns whether this one was taken.
fn apply_result(
    job: &mut Job,
    upstream_id: &str,
    payload: &Value,
    output: &Stored,
    now: Timestamp,
) -> Result<bool, Error> {
    if job.status.is_terminal() {
        return Ok(false);
    }
    match &mut job.upstream {
        Upstream::Submitted { upstream_id: Some(known), .. } if known != upstream_id => {
            return Err(Error::invalid("request_id", "does not belong to the job this inbox URL names"));
        }
        Upstream::Submitted { upstream_id: known @ None, .. } => *known = Some(upstream_id.to_owned()),
        // Submitted, but the crash came before the record said so: adopt the upstream's id.
        Upstream::Pending { attempts, .. } | Upstream::Abandoned { attempts } => {
            job.upstream = Upstream::Submitted {
                upstream_id: Some(upstream_id.to_owned()),
                attempts: (*attempts).max(1),
                checked_at: now,
                stalled: None,
            };
        }
        Upstream::Submitted { .. } => {}
    }
    if let (None, Some(dep)) = (&job.deployment_id, payload["deployment_id"].as_str()) {
        job.deployment_id = Some(dep.to_owned());
    }
    let errors = upstream_errors(&payload["errors"]);
    if let Stored::TooLarge(bytes) = output {
        job.move_to(Status::Failed, now)?;
        job.errors = vec![JobError::gateway(
            codes::INTERNAL_SERVER_ERROR,
            codes::OUTPUT_TOO_LARGE,
            format!("the model's output is {bytes} bytes; this gateway keeps outputs up to output_limit_bytes"),
        )];
    } else if errors.is_empty() {
        match output {
            Stored::Inline(data) => job.output = Some(data.clone()),
            Stored::Chunked(chunks) => job.output_chunks = Some(chunks.clone()),
            Stored::None | Stored::TooLarge(_) => {}
        }
        job.move_to(Status::Succeeded, now)?;
    } else {
        // An error for a job never seen starting, after its time in queue ran out, is the
        // upstream's expiry arriving before ours: EXPIRED, and no compute was used.
        let expired = job.status == Status::Queued && now >= job.queue_deadline();
        job.move_to(if expired { Status::Expired } else { Status::Failed }, now)?;
        job.errors = errors;
    }
    Ok(true)
}
