//! Outbound webhooks to a caller's `webhook_endpoint`: Baseten's payload and signature plus
//! Standard Webhooks headers. `webhook-id` is the same on every attempt, so receivers can
//! drop duplicates (delivery is at least once). The schedule lives on the job record
//! ([`Job::record_delivery`]); this file makes and sends one attempt.

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request};
use serde_json::{json, Value};

use crate::engine::base::{Error, Timestamp};
use crate::engine::jobs::record::{DeliveryAttempt, Job, CLAIM_LEASE_MS};
use crate::engine::webhooks::signature::{baseten_sign, standard_key, standard_sign};
use crate::engine::{Engine, HttpClient, Store};

/// The signed delivery request for `job` at `now`.
pub(crate) fn delivery_request(
    job: &Job,
    output: Option<Value>,
    endpoint: &str,
    secret: Option<&str>,
    now: Timestamp,
) -> Request<Bytes> {
    let mut payload = json!({
        "request_id": job.id,
        "model_id": job.subject.id(),
        "deployment_id": job.deployment(),
        "type": "async_request_completed",
        "time": now.rfc3339(),
        "data": output,
        "errors": job.errors,
    });
    if job.subject.id_field() != "model_id" {
        payload[job.subject.id_field()] = job.subject.id().into();
    }
    let body = payload.to_string().into_bytes();
    let msg_id = format!("msg_{}", job.id);
    let mut request = Request::new(Bytes::new());
    *request.method_mut() = Method::POST;
    *request.uri_mut() = endpoint.parse().unwrap_or_default();
    let h = request.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    set("x-baseten-request-id", job.id.clone());
    set("webhook-id", msg_id.clone());
    set("webhook-timestamp", now.secs().to_string());
    if let Some(secret) = secret {
        set("x-baseten-signature", baseten_sign(secret, &body));
        if let Some(key) = standard_key(secret) {
            set("webhook-signature", standard_sign(&key, &msg_id, now.secs(), &body));
        }
    }
    if let Some(trace) = &job.trace {
        trace.add_to(request.headers_mut());
    }
    *request.body_mut() = Bytes::from(body);
    request
}

impl<S: Store, H: HttpClient> Engine<'_, S, H> {
    /// One delivery attempt if one is due: claimed on the record first (the attempt's slot is
    /// pushed to [`CLAIM_LEASE_MS`] from the claim's time, so no other sweep makes it
    /// meanwhile), then sent, then recorded if the claim still stands. Each step takes its
    /// time from `clock` when it happens: the claim, the attempt's signed time.
    pub(crate) async fn deliver(&self, id: &str, clock: &dyn Fn() -> Timestamp) -> Result<Job, Error> {
        let now = clock();
        let claim = now.plus_millis(CLAIM_LEASE_MS);
        let (job, won) = self
            .update(id, |j| match &mut j.webhook {
                Some(w) if w.next_at.is_some_and(|at| at <= now) => {
                    w.next_at = Some(claim);
                    Ok(true)
                }
                _ => Ok(false),
            })
            .await?;
        let Some(webhook) = job.webhook.as_ref().filter(|_| won) else { return Ok(job) };
        let output = self.output_of(&job).await?;
        let now = clock();
        let secret = self.config.outbound_secret_for(&job.key_id).map(|s| self.config.secret(s)).transpose()?;
        let request = delivery_request(&job, output, &webhook.endpoint, secret, now);
        let (attempt, delivered) = match self.http.send(request).await {
            Ok(response) => {
                let status = response.status();
                // The receiver's body is not read: only its status counts, and a body that never
                // ends must not hold the sweep.
                drop(response);
                // 2xx only: a redirect is a failure, as in the Standard Webhooks guidance.
                (DeliveryAttempt { at: now, status_code: Some(status.as_u16()), error: None }, status.is_success())
            }
            // A category (connect, tls, timeout, body), not the platform's text: a caller must
            // not learn from its webhook record what lies behind an address.
            Err(e) => (DeliveryAttempt { at: now, status_code: None, error: Some(e.category().to_owned()) }, false),
        };
        let policy = self.config.webhooks.delivery;
        let (job, ()) = self
            .update(id, |j| {
                // Only while the claim stands: a claimer that outlived it was taken over.
                if j.webhook.as_ref().and_then(|w| w.next_at) == Some(claim) {
                    j.record_delivery(attempt.clone(), delivered, &policy)?;
                }
                Ok(())
            })
            .await?;
        Ok(job)
    }
}
