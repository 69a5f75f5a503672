//! The configuration document's JSON shape and its defaults, as serde reads it. Unknown
//! fields are refused, so a typo fails loudly.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::gateway::{DeliveryPolicy, DEFAULT_ASYNC_BODY_LIMIT};
use super::limits::Limits;
use crate::engine::base::Operation;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Document {
    pub(super) public_base_url: String,
    #[serde(default)]
    pub(super) dev_mode: bool,
    #[serde(default = "default_retention")]
    pub(super) retention_seconds: u64,
    #[serde(default = "default_body_limit")]
    pub(super) async_body_limit_bytes: usize,
    #[serde(default = "default_output_limit")]
    pub(super) output_limit_bytes: usize,
    /// Keys the HMAC that turns an `Idempotency-Key` into a request id.
    pub(super) id_secret_name: String,
    pub(super) keys: Vec<KeyDoc>,
    #[serde(default)]
    pub(super) models: BTreeMap<String, UpstreamDoc>,
    #[serde(default)]
    pub(super) chains: BTreeMap<String, UpstreamDoc>,
    #[serde(default)]
    pub(super) webhooks: WebhooksDoc,
    #[serde(default)]
    pub(super) browser_tokens: Option<BrowserTokensDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BrowserTokensDoc {
    pub(super) secret_name: String,
    #[serde(default = "default_token_ttl")]
    pub(super) max_ttl_seconds: u64,
}

/// As large as the inbox accepts: every output that reaches the gateway is kept by default.
fn default_output_limit() -> usize {
    crate::engine::MAX_REQUEST_BODY
}

fn default_token_ttl() -> u64 {
    3600
}

fn default_retention() -> u64 {
    7 * 24 * 3600
}

fn default_body_limit() -> usize {
    DEFAULT_ASYNC_BODY_LIMIT
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KeyDoc {
    pub(super) id: String,
    /// Lowercase hex SHA-256 of the key. `printf %s "$KEY" | sha256sum`.
    pub(super) sha256: String,
    #[serde(default)]
    pub(super) models: Vec<String>,
    #[serde(default)]
    pub(super) chains: Vec<String>,
    #[serde(default)]
    pub(super) operations: Option<Vec<Operation>>,
    #[serde(default)]
    pub(super) origins: Vec<String>,
    #[serde(default)]
    pub(super) jobs: JobsDoc,
    /// Signs this key's (and its tokens') webhook deliveries instead of the global secret, so
    /// one tenant's receivers cannot forge deliveries to another's.
    #[serde(default)]
    pub(super) outbound_secret_name: Option<String>,
    #[serde(default)]
    pub(super) limits: Limits,
}

/// Which jobs a key sees: its own (and its browser tokens'), or every job (an operator's key).
#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(super) enum JobsDoc {
    #[default]
    Own,
    All,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpstreamDoc {
    pub(super) upstream: String,
    pub(super) api_key_secret_name: String,
    #[serde(default)]
    pub(super) price_per_second: f64,
    #[serde(default)]
    pub(super) openai_model: Option<String>,
    #[serde(default)]
    pub(super) openai_base_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WebhooksDoc {
    #[serde(default)]
    pub(super) inbound_secret_names: Vec<String>,
    #[serde(default = "default_tolerance")]
    pub(super) inbound_tolerance_seconds: u64,
    #[serde(default)]
    pub(super) outbound_secret_name: Option<String>,
    #[serde(default)]
    pub(super) delivery: DeliveryPolicy,
}

impl Default for WebhooksDoc {
    fn default() -> Self {
        Self {
            inbound_secret_names: Vec::new(),
            inbound_tolerance_seconds: default_tolerance(),
            outbound_secret_name: None,
            delivery: DeliveryPolicy::default(),
        }
    }
}

fn default_tolerance() -> u64 {
    300
}
