//! The validated configuration: what the engine reads of it, its secrets' values read on
//! first use and checked as their fields require, and what is derived from it (the inbox URL
//! of a job, ids keyed by the id secret).

use std::collections::BTreeMap;

use serde::Deserialize;
use url::Url;

use super::key::ApiKey;
use super::secrets::{Secret, SecretRef, SecretRule, SecretSource};
use super::upstream::Upstream;
use crate::engine::base::crypto::hmac_sha256;
use crate::engine::base::{Error, Subject};

/// Baseten's async body limit, and ours by default.
pub const DEFAULT_ASYNC_BODY_LIMIT: usize = 256 * 1024;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the gateway is reachable from the upstream; the webhook inbox URL is built on it.
    pub public_base_url: Url,
    /// Allows `http://` webhook endpoints on loopback. Never on in production.
    pub dev_mode: bool,
    /// How long finished jobs (and their outputs) are kept, in seconds.
    pub retention_seconds: u64,
    pub async_body_limit: usize,
    /// The largest model output kept (its JSON encoding); a larger result fails its job.
    pub output_limit: usize,
    /// Keys the HMAC deriving request ids from idempotency keys.
    pub id_secret: SecretRef,
    pub keys: Vec<ApiKey>,
    pub models: BTreeMap<String, Upstream>,
    pub chains: BTreeMap<String, Upstream>,
    pub webhooks: Webhooks,
    /// `None`: minting browser tokens is off (`POST /browser_tokens` answers 404).
    pub browser_tokens: Option<BrowserTokens>,
    /// Where secrets not yet read come from ([`Config::parse_lazy`]).
    pub(super) source: SecretSource,
}

/// Short-lived browser tokens (see [`crate::engine::access::tokens`]).
#[derive(Clone)]
pub struct BrowserTokens {
    /// Signs and verifies tokens (HMAC-SHA256). Rotating it revokes every token.
    pub secret: SecretRef,
    /// The longest lifetime a token may be minted with.
    pub max_ttl_seconds: u64,
}

impl std::fmt::Debug for BrowserTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrowserTokens")
            .field("secret", &self.secret)
            .field("max_ttl_seconds", &self.max_ttl_seconds)
            .finish()
    }
}

/// Webhook secrets and the outbound delivery policy.
#[derive(Clone)]
pub struct Webhooks {
    /// Secrets the upstream signs inbox deliveries with; several during rotation.
    pub inbound_secrets: Vec<SecretRef>,
    /// How old an inbox payload's `time` may be.
    pub inbound_tolerance_seconds: u64,
    /// Signs deliveries to callers' `webhook_endpoint`s (Baseten header and Standard Webhooks).
    /// A `whsec_` secret is base64 after the prefix (Standard Webhooks); Baseten's header uses
    /// the whole string's bytes, as Baseten does with its secrets.
    pub outbound_secret: Option<SecretRef>,
    /// Per key id: the secret that signs its jobs' deliveries instead of `outbound_secret`.
    pub key_outbound_secrets: BTreeMap<String, SecretRef>,
    pub delivery: DeliveryPolicy,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("inbound_secrets", &self.inbound_secrets)
            .field("inbound_tolerance_seconds", &self.inbound_tolerance_seconds)
            .field("outbound_secret", &self.outbound_secret)
            .field("key_outbound_secrets", &self.key_outbound_secrets.keys().collect::<Vec<_>>())
            .field("delivery", &self.delivery)
            .finish()
    }
}

/// Outbound delivery retries: exponential from `initial_delay_seconds`, capped, with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryPolicy {
    pub max_attempts: u32,
    pub initial_delay_seconds: u64,
    pub max_delay_seconds: u64,
}

impl Default for DeliveryPolicy {
    /// 15 attempts over about five and a half hours: at once, then 5 s, 10 s, 20 s, ...
    /// doubling to a 1 h cap (Baseten makes two attempts, 10 s apart).
    fn default() -> Self {
        Self { max_attempts: 15, initial_delay_seconds: 5, max_delay_seconds: 3600 }
    }
}

impl Config {
    /// The secret that signs deliveries of a job created by `key_id` (a key, or one of its
    /// browser tokens, `{key}~{token}`): the key's own if it has one, else the global one.
    pub fn outbound_secret_for(&self, key_id: &str) -> Option<&SecretRef> {
        let key = key_id.split_once('~').map_or(key_id, |(parent, _)| parent);
        self.webhooks.key_outbound_secrets.get(key).or(self.webhooks.outbound_secret.as_ref())
    }

    /// The upstream configured for a subject, or `UnknownSubject`.
    pub fn upstream(&self, subject: &Subject) -> Result<&Upstream, Error> {
        let map = match subject {
            Subject::Model(_) => &self.models,
            Subject::Chain(_) => &self.chains,
        };
        map.get(subject.id()).ok_or_else(|| Error::UnknownSubject { kind: subject.kind(), id: subject.id().to_owned() })
    }

    /// Where the upstream must deliver the result of our job `request_id`: its own inbox URL,
    /// `/webhooks/baseten/{request_id}/{token}`, which no other job's result can use.
    pub fn inbox_url(&self, request_id: &str) -> Result<String, Error> {
        let base = self.public_base_url.as_str().trim_end_matches('/');
        Ok(format!("{base}/webhooks/baseten/{request_id}/{}", self.inbox_token(request_id)?))
    }

    /// The token binding an inbox URL to its job: an HMAC of the request id under the id
    /// secret (128 bits, hex). Derived, never stored, so it is checked before any store is.
    pub fn inbox_token(&self, request_id: &str) -> Result<String, Error> {
        self.derived_id("inbox", &[request_id])
    }

    /// 128 bits derived from the id secret for `label` and `parts` (hex): request ids from an
    /// `Idempotency-Key`, inbox tokens. The label keeps each use's values apart.
    pub(crate) fn derived_id(&self, label: &str, parts: &[&str]) -> Result<String, Error> {
        let message = std::iter::once(label).chain(parts.iter().copied()).collect::<Vec<_>>().join("\n");
        Ok(hex::encode(&hmac_sha256(self.secret(&self.id_secret)?.as_bytes(), message.as_bytes())[..16]))
    }

    /// A secret's value, read on first use (or at parse) and checked as its field requires.
    pub fn secret<'c>(&'c self, secret: &'c SecretRef) -> Result<&'c str, Error> {
        let source = |name: &str| self.source.0.as_ref().and_then(|read| read(name));
        let value = secret.value.get_or_init(|| self.read_secret(secret, &source));
        value.as_ref().map(Secret::expose).map_err(Clone::clone)
    }

    pub(super) fn read_secret(
        &self,
        secret: &SecretRef,
        source: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Secret, Error> {
        let value = match source(&secret.name) {
            Some(value) if !value.is_empty() => value,
            // Not the name: an operator who pasted a secret's value here would publish it.
            _ => return Err(Error::config(&secret.field, "the secret this names is not set")),
        };
        match secret.rule {
            SecretRule::Any => {}
            SecretRule::AtLeast32Bytes if value.len() < 32 => {
                return Err(Error::config(&secret.field, "the secret must be at least 32 bytes"));
            }
            SecretRule::AtLeast32Bytes => {}
            SecretRule::OutboundGlobal | SecretRule::Outbound => {
                if secret.rule == SecretRule::OutboundGlobal
                    && value.starts_with("whsec_")
                    && crate::engine::webhooks::signature::standard_key(&value).is_none()
                {
                    return Err(Error::config(&secret.field, "a whsec_ secret must be base64 after the prefix"));
                }
                // Every webhook receiver holds an outbound secret: if it also signed inbound
                // results, any receiver could forge a result for any job.
                for inbound in &self.webhooks.inbound_secrets {
                    let same = match inbound.value.get() {
                        Some(read) => read.as_ref().is_ok_and(|v| v.expose() == value),
                        None => self.secret(inbound).is_ok_and(|v| v == value),
                    };
                    if same {
                        return Err(Error::config(
                            &secret.field,
                            "must name a different secret than every inbound one (receivers hold the outbound secret)",
                        ));
                    }
                }
            }
        }
        Ok(Secret(value))
    }
}
