//! Signed webhook delivery, as Baseten does it.
//!
//! The body is POSTed with `Content-Type: application/json`,
//! `X-BASETEN-REQUEST-ID: <request_id>` and
//! `X-BASETEN-SIGNATURE: v1=<hex HMAC-SHA256(secret, raw body)>`, one `v1=`
//! per configured secret joined by commas. Two attempts in total, each with a
//! timeout; any 2xx answer is a success.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The `X-BASETEN-SIGNATURE` value for `body`: `v1=<sig>` per secret, comma-joined.
pub fn signature_header(secrets: &[String], body: &[u8]) -> String {
    secrets.iter().map(|secret| format!("v1={}", sign(secret, body))).collect::<Vec<_>>().join(",")
}

/// Lowercase hex HMAC-SHA256 of `body` keyed with the secret's bytes.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// How deliveries are made.
#[derive(Debug, Clone)]
pub(crate) struct Deliverer {
    pub client: reqwest::Client,
    pub secrets: Vec<String>,
    pub timeout: Duration,
    pub retry_gap: Duration,
    pub log: bool,
}

impl Deliverer {
    /// Delivers `body` to `url`; `true` once an attempt got a 2xx answer.
    pub async fn deliver(&self, url: &str, request_id: &str, body: Vec<u8>) -> bool {
        let signature = signature_header(&self.secrets, &body);
        for attempt in 1..=2 {
            if attempt > 1 {
                tokio::time::sleep(self.retry_gap).await;
            }
            let result = self
                .client
                .post(url)
                .timeout(self.timeout)
                .header("content-type", "application/json")
                .header("x-baseten-request-id", request_id)
                .header("x-baseten-signature", &signature)
                .body(body.clone())
                .send()
                .await;
            let outcome = match &result {
                Ok(resp) => resp.status().to_string(),
                Err(e) => format!("error: {e}"),
            };
            if self.log {
                eprintln!("local-upstream: webhook {request_id} attempt {attempt} -> {url}: {outcome}");
            }
            if result.is_ok_and(|resp| resp.status().is_success()) {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_rfc_4231_case_2() {
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn one_v1_per_secret_in_order() {
        let header = signature_header(&["new".into(), "old".into()], b"{}");
        assert_eq!(header, format!("v1={},v1={}", sign("new", b"{}"), sign("old", b"{}")));
    }
}
