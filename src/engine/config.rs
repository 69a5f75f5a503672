//! The configuration document (DESIGN §5), parsed and validated by the adapter (once per
//! isolate on Workers, once per request on Spin).
//!
//! It is one JSON document (a Spin variable or a Worker var). Secrets are not in it: it names
//! them, and the adapter's secret lookup resolves the names: all of them while parsing
//! ([`Config::parse`], where a parse serves many requests), or each the first time a request
//! needs it ([`Config::parse_lazy`], where every request parses and each read costs). Unknown fields are
//! errors, so a typo fails loudly instead of silently doing nothing; every error names its field.

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use serde::Deserialize;
use url::Url;

use crate::engine::base::crypto::hmac_sha256;
use crate::engine::base::{Error, Operation, Subject, Target};

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
    source: SecretSource,
}

/// One upstream deployment family (a Baseten model or chain, or anything speaking its API).
#[derive(Clone)]
pub struct Upstream {
    /// E.g. `https://model-abcd1234.api.baseten.co` (target and endpoint paths are appended),
    /// or a regional environment's host with `{env}` in it,
    /// `https://model-abcd1234-{env}.api.baseten.co` (bare endpoint paths).
    base: String,
    /// The API key the upstream gets ([`Config::secret`]).
    pub api_key: SecretRef,
    /// For the usage cost estimate: price of one second of compute, in `currency`.
    pub price_per_second: f64,
    /// The `model` name of OpenAI-compatible requests to the gateway's `/v1/...` that this
    /// model serves, and the OpenAI-compatible base URL they go to.
    pub openai: Option<OpenAi>,
}

/// Where a model's OpenAI-compatible API is.
#[derive(Debug, Clone)]
pub struct OpenAi {
    pub model: String,
    /// E.g. `https://model-abcd1234.api.baseten.co/environments/production/sync/v1`, or
    /// Baseten's Model APIs, `https://inference.baseten.co/v1`.
    pub base_url: Url,
}

impl Upstream {
    /// The URL of `path` on `target`: `{base}/{target}/{path}`, or on a regional upstream
    /// `{base for the environment}/{path}`. `under_target: false` is a path beside the
    /// targets (`async_request/{id}`). Checked once built ([`within`]): it stays under
    /// `{base}/{target}/` (or `{base}/`) as a fetch would resolve it.
    pub fn url(&self, target: &Target, path: &str, under_target: bool) -> Result<String, Error> {
        let prefix = self.prefix(target, under_target)?;
        within(&prefix, format!("{prefix}{path}"))
    }

    /// The URL of a model server's own route, `{target}/sync/{route}{query}`: checked once built
    /// to stay under `{target}/sync/`, so no dot-segment or encoded separator reaches another
    /// endpoint of the upstream with the gateway's key.
    pub fn sync_url(&self, target: &Target, route: &str, query: Option<&str>) -> Result<String, Error> {
        let prefix = format!("{}sync/", self.prefix(target, true)?);
        let query = query.map(|q| format!("?{q}")).unwrap_or_default();
        within(&prefix, format!("{prefix}{route}{query}"))
    }

    /// Everything of a URL on `target` before its endpoint's path, ending in `/`.
    fn prefix(&self, target: &Target, under_target: bool) -> Result<String, Error> {
        let base = self.base.trim_end_matches('/');
        if !self.is_regional() {
            return Ok(if under_target { format!("{base}/{}/", target.path()) } else { format!("{base}/") });
        }
        match target {
            Target::Environment(env) => Ok(format!("{}/", base.replace(ENV_PLACEHOLDER, env))),
            _ => {
                Err(Error::NotFound { what: "this model's upstream serves its regional environments only".to_owned() })
            }
        }
    }

    fn is_regional(&self) -> bool {
        self.base.contains(ENV_PLACEHOLDER)
    }
}

/// `url` as a fetch sends it (parsed, dot-segments resolved, as WHATWG URL parsers do), if it
/// is still on `prefix`'s origin and under its path; otherwise a 400, and nothing is sent.
fn within(prefix: &str, url: String) -> Result<String, Error> {
    let escaped = || Error::invalid("path", "the route leaves its place on the upstream");
    let (Ok(parsed), Ok(resolved)) = (Url::parse(&url), Url::parse(prefix)) else { return Err(escaped()) };
    // The prefix itself (base and target) must mean what it says: a target `..` would not.
    if resolved.as_str() != prefix
        || parsed.origin() != resolved.origin()
        || !parsed.path().starts_with(resolved.path())
    {
        return Err(escaped());
    }
    Ok(parsed.into())
}

/// Marks a regional upstream's environment in its URL.
const ENV_PLACEHOLDER: &str = "{env}";

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("base", &self.base)
            .field("api_key", &self.api_key)
            .field("price_per_second", &self.price_per_second)
            .field("openai", &self.openai)
            .finish()
    }
}

/// A secret value: its `Debug` never shows it, so it cannot reach a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A secret the document names, by the field that names it; its value is read once, at parse
/// or when first needed ([`Config::secret`]). Its `Debug` shows the field, never the value.
#[derive(Clone)]
pub struct SecretRef {
    field: String,
    name: String,
    rule: SecretRule,
    value: OnceCell<Result<Secret, Error>>,
}

/// What a secret's value must be, checked when it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SecretRule {
    Any,
    /// A key for an HMAC that guards ids or tokens: at least 32 bytes.
    AtLeast32Bytes,
    /// Signs outbound deliveries, which every receiver can check: never an inbound secret.
    Outbound,
    /// The global outbound secret: also, a `whsec_` secret is base64 after the prefix.
    OutboundGlobal,
}

impl SecretRef {
    fn new(field: impl Into<String>, name: &str, rule: SecretRule) -> Self {
        Self { field: field.into(), name: name.to_owned(), rule, value: OnceCell::new() }
    }
}

impl std::fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.value.get() {
            None => "<not read>",
            Some(Ok(_)) => "<redacted>",
            Some(Err(_)) => "<not set>",
        };
        f.debug_struct("SecretRef").field("field", &self.field).field("value", &state).finish()
    }
}

/// Reads a secret's value by its name (`None`: not set), for [`Config::parse_lazy`].
pub type SecretReader = Rc<dyn Fn(&str) -> Option<String>>;

/// Where a lazily parsed configuration reads its secrets.
#[derive(Clone, Default)]
struct SecretSource(Option<SecretReader>);

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "SecretSource(lazy)" } else { "SecretSource(read at parse)" })
    }
}

/// A gateway API key: stored as its SHA-256, with its scope.
#[derive(Debug, Clone)]
pub struct ApiKey {
    /// A name for logs, usage and idempotency scoping. Never the key itself.
    pub id: String,
    pub sha256: [u8; 32],
    pub models: Scope,
    pub chains: Scope,
    /// `None` means every operation but `sweep` and `mint_token` (see [`ApiKey::allows_operation`]).
    pub operations: Option<Vec<Operation>>,
    /// Browser origins allowed to use this key. Empty: no browser use.
    pub origins: Scope,
    /// Sees (reads, cancels) every job, not only its own and its tokens' (`"jobs": "all"`).
    pub all_jobs: bool,
    /// Set when the caller is a browser token minted from a key: it may only see the jobs it
    /// created itself (or the one job it is bound to, if its key can see that job).
    pub token: Option<TokenBinding>,
}

/// What a browser token is bound to, beyond its scope, and what its key could see: a binding
/// only ever narrows the minting key's view, never widens it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBinding {
    /// The one job this token may read and cancel, besides those it created.
    pub request_id: Option<String>,
    /// The minting key's id.
    pub parent: String,
    /// Whether the minting key sees every job (`"jobs": "all"`).
    pub parent_all_jobs: bool,
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

/// A list of allowed names, where `"*"` allows all.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    any: bool,
    names: Vec<String>,
}

impl Scope {
    pub fn allows(&self, name: &str) -> bool {
        self.any || self.names.iter().any(|n| n == name)
    }

    pub(crate) fn from_list(names: Vec<String>) -> Self {
        Self { any: names.iter().any(|n| n == "*"), names }
    }

    /// Whether it allows nothing at all (no names listed).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Names that travel inside ids and keys (key ids, token sessions): 1 to 64 ASCII letters,
/// digits, `-`, `_` and `.`. Never `~`, which separates a key's id from its tokens'.
pub(crate) fn is_safe_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl ApiKey {
    /// The configured key this caller is, or minted it: idempotency keys and outbound secrets
    /// belong to it, so a page that re-mints its token still reaches the same jobs' ids.
    pub fn tenant(&self) -> &str {
        self.token.as_ref().map_or(self.id.as_str(), |t| t.parent.as_str())
    }

    /// Whether this caller may see a job created by `creator` (a key id, or a token's
    /// `{key}~{token}`), before any binding: a key sees its own and its tokens' jobs (or every
    /// job, configured so), a token the jobs it created.
    pub fn created(&self, creator: &str) -> bool {
        match &self.token {
            Some(_) => creator == self.id,
            None => sees(&self.id, self.all_jobs, creator),
        }
    }

    /// Whether this caller may see job `job_id`, created by `creator`: one it created (see
    /// [`ApiKey::created`]), or the one a token is bound to if the token's key could see it.
    pub fn sees_job(&self, job_id: &str, creator: &str) -> bool {
        let bound = self
            .token
            .as_ref()
            .is_some_and(|t| t.request_id.as_deref() == Some(job_id) && sees(&t.parent, t.parent_all_jobs, creator));
        self.created(creator) || bound
    }

    pub fn allows_subject(&self, subject: &Subject) -> bool {
        match subject {
            Subject::Model(id) => self.models.allows(id),
            Subject::Chain(id) => self.chains.allows(id),
        }
    }

    /// Whether the key may use `op`. Without an `operations` list: every operation a tenant
    /// uses, but not the operator's `sweep` and `mint_token`, which are granted only by name.
    pub fn allows_operation(&self, op: Operation) -> bool {
        match &self.operations {
            Some(ops) => ops.contains(&op),
            None => !matches!(op, Operation::Sweep | Operation::MintToken),
        }
    }
}

/// Whether key `key_id` (seeing every job if `all_jobs`) sees a job created by `creator`.
fn sees(key_id: &str, all_jobs: bool, creator: &str) -> bool {
    all_jobs || creator == key_id || creator.strip_prefix(key_id).is_some_and(|token| token.starts_with('~'))
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    public_base_url: String,
    #[serde(default)]
    dev_mode: bool,
    #[serde(default = "default_retention")]
    retention_seconds: u64,
    #[serde(default = "default_body_limit")]
    async_body_limit_bytes: usize,
    #[serde(default = "default_output_limit")]
    output_limit_bytes: usize,
    /// Keys the HMAC that turns an `Idempotency-Key` into a request id.
    id_secret_name: String,
    keys: Vec<KeyDoc>,
    #[serde(default)]
    models: BTreeMap<String, UpstreamDoc>,
    #[serde(default)]
    chains: BTreeMap<String, UpstreamDoc>,
    #[serde(default)]
    webhooks: WebhooksDoc,
    #[serde(default)]
    browser_tokens: Option<BrowserTokensDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BrowserTokensDoc {
    secret_name: String,
    #[serde(default = "default_token_ttl")]
    max_ttl_seconds: u64,
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
struct KeyDoc {
    id: String,
    /// Lowercase hex SHA-256 of the key. `printf %s "$KEY" | sha256sum`.
    sha256: String,
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    chains: Vec<String>,
    #[serde(default)]
    operations: Option<Vec<Operation>>,
    #[serde(default)]
    origins: Vec<String>,
    #[serde(default)]
    jobs: JobsDoc,
    /// Signs this key's (and its tokens') webhook deliveries instead of the global secret, so
    /// one tenant's receivers cannot forge deliveries to another's.
    #[serde(default)]
    outbound_secret_name: Option<String>,
}

/// Which jobs a key sees: its own (and its browser tokens'), or every job (an operator's key).
#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum JobsDoc {
    #[default]
    Own,
    All,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamDoc {
    upstream: String,
    api_key_secret_name: String,
    #[serde(default)]
    price_per_second: f64,
    #[serde(default)]
    openai_model: Option<String>,
    #[serde(default)]
    openai_base_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhooksDoc {
    #[serde(default)]
    inbound_secret_names: Vec<String>,
    #[serde(default = "default_tolerance")]
    inbound_tolerance_seconds: u64,
    #[serde(default)]
    outbound_secret_name: Option<String>,
    #[serde(default)]
    delivery: DeliveryPolicy,
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

/// A parser's message with every quoted value elided: `invalid type: string "…"`. A value in
/// the wrong field may be a secret; the field's name is what the operator needs.
fn without_values(message: &str) -> String {
    let parts: Vec<&str> = message.split('"').enumerate().map(|(i, p)| if i % 2 == 1 { "…" } else { p }).collect();
    parts.join("\"")
}

fn config_error(field: impl Into<String>, message: impl Into<String>) -> Error {
    Error::Config { field: field.into(), message: message.into() }
}

impl Config {
    /// Parses and validates the document and reads every secret it names now: `secret`
    /// resolves a secret's name to its value. For hosts where one parse serves many requests.
    pub fn parse(json: &str, secret: &dyn Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let config = Self::parse_document(json)?;
        for s in config.secrets() {
            let value = config.read_secret(s, secret)?;
            // Each cell is filled once, here: `set` cannot find one already read.
            let _ = s.value.set(Ok(value));
        }
        Ok(config)
    }

    /// Parses and validates the document, and reads each secret it names only when a request
    /// first needs it ([`Config::secret`]): for hosts that parse once per request (Spin), where
    /// every read costs and a request uses few of them. A secret that is not set, or not as its
    /// field requires, is then the error of the requests that need it.
    pub fn parse_lazy(json: &str, secret: SecretReader) -> Result<Self, Error> {
        let mut config = Self::parse_document(json)?;
        config.source = SecretSource(Some(secret));
        Ok(config)
    }

    /// Every secret the configuration names, in the order [`Config::parse`] reads them: an
    /// outbound secret after the inbound ones it must differ from.
    fn secrets(&self) -> impl Iterator<Item = &SecretRef> {
        let upstreams = self.models.values().chain(self.chains.values()).map(|u| &u.api_key);
        std::iter::once(&self.id_secret)
            .chain(upstreams)
            .chain(&self.webhooks.inbound_secrets)
            .chain(&self.webhooks.outbound_secret)
            .chain(self.webhooks.key_outbound_secrets.values())
            .chain(self.browser_tokens.as_ref().map(|t| &t.secret))
    }

    /// A secret's value, read on first use (or at parse) and checked as its field requires.
    pub fn secret<'c>(&'c self, secret: &'c SecretRef) -> Result<&'c str, Error> {
        let source = |name: &str| self.source.0.as_ref().and_then(|read| read(name));
        let value = secret.value.get_or_init(|| self.read_secret(secret, &source));
        value.as_ref().map(Secret::expose).map_err(Clone::clone)
    }

    fn read_secret(&self, secret: &SecretRef, source: &dyn Fn(&str) -> Option<String>) -> Result<Secret, Error> {
        let value = match source(&secret.name) {
            Some(value) if !value.is_empty() => value,
            // Not the name: an operator who pasted a secret's value here would publish it.
            _ => return Err(config_error(&secret.field, "the secret this names is not set")),
        };
        match secret.rule {
            SecretRule::Any => {}
            SecretRule::AtLeast32Bytes if value.len() < 32 => {
                return Err(config_error(&secret.field, "the secret must be at least 32 bytes"));
            }
            SecretRule::AtLeast32Bytes => {}
            SecretRule::OutboundGlobal | SecretRule::Outbound => {
                if secret.rule == SecretRule::OutboundGlobal
                    && value.starts_with("whsec_")
                    && crate::engine::webhooks::signature::standard_key(&value).is_none()
                {
                    return Err(config_error(&secret.field, "a whsec_ secret must be base64 after the prefix"));
                }
                // Every webhook receiver holds an outbound secret: if it also signed inbound
                // results, any receiver could forge a result for any job.
                for inbound in &self.webhooks.inbound_secrets {
                    let same = match inbound.value.get() {
                        Some(read) => read.as_ref().is_ok_and(|v| v.expose() == value),
                        None => self.secret(inbound).is_ok_and(|v| v == value),
                    };
                    if same {
                        return Err(config_error(
                            &secret.field,
                            "must name a different secret than every inbound one (receivers hold the outbound secret)",
                        ));
                    }
                }
            }
        }
        Ok(Secret(value))
    }

    /// The document parsed and validated, its secrets named and not yet read.
    fn parse_document(json: &str) -> Result<Self, Error> {
        let de = &mut serde_json::Deserializer::from_str(json);
        let doc: Document = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            config_error(
                if path == "." { "(document)".to_owned() } else { path },
                without_values(&e.inner().to_string()),
            )
        })?;
        let public_base_url = parse_base_url("public_base_url", &doc.public_base_url)?;
        let id_secret = SecretRef::new("id_secret_name", &doc.id_secret_name, SecretRule::AtLeast32Bytes);
        if doc.retention_seconds == 0 {
            return Err(config_error("retention_seconds", "must be at least 1"));
        }
        let mut keys = Vec::with_capacity(doc.keys.len());
        let mut key_outbound_secrets = BTreeMap::new();
        for (i, k) in doc.keys.into_iter().enumerate() {
            let field = format!("keys[{i}].sha256");
            let digest = hex::decode(&k.sha256)
                .ok()
                .and_then(|d| <[u8; 32]>::try_from(d).ok())
                .ok_or_else(|| config_error(field, "must be 64 hex characters (SHA-256 of the key)"))?;
            if !is_safe_name(&k.id) || keys.iter().any(|other: &ApiKey| other.id == k.id) {
                return Err(config_error(
                    format!("keys[{i}].id"),
                    "must be unique, 1 to 64 letters, digits, '-', '_' or '.'",
                ));
            }
            if let Some(name) = &k.outbound_secret_name {
                let secret = SecretRef::new(format!("keys[{i}].outbound_secret_name"), name, SecretRule::Outbound);
                key_outbound_secrets.insert(k.id.clone(), secret);
            }
            keys.push(ApiKey {
                id: k.id,
                sha256: digest,
                models: Scope::from_list(k.models),
                chains: Scope::from_list(k.chains),
                operations: k.operations,
                origins: Scope::from_list(k.origins),
                all_jobs: k.jobs == JobsDoc::All,
                token: None,
            });
        }
        // A loop, not `collect::<BTreeMap<_, _>>()`: collecting sorts its items first, and that
        // stable sort was 3.4 KB of the Worker's wasm (the keys arrive sorted anyway).
        let upstreams = |kind: &str,
                         docs: BTreeMap<String, UpstreamDoc>|
         -> Result<BTreeMap<String, Upstream>, Error> {
            let mut parsed = BTreeMap::new();
            for (id, u) in docs {
                let field = |name: &str| format!("{kind}.{id}.{name}");
                // A regional template is checked as the URL it becomes for an environment.
                let base = parse_base_url(&field("upstream"), &u.upstream.replace(ENV_PLACEHOLDER, "env"))
                    .map(|_| u.upstream.clone())?;
                let api_key = SecretRef::new(field("api_key_secret_name"), &u.api_key_secret_name, SecretRule::Any);
                if !(u.price_per_second.is_finite() && u.price_per_second >= 0.0) {
                    return Err(config_error(field("price_per_second"), "must be a non-negative number"));
                }
                let openai = match (u.openai_model, u.openai_base_url) {
                    (None, None) => None,
                    (Some(model), _) if model.is_empty() || kind == "chains" => {
                        return Err(config_error(field("openai_model"), "must be a non-empty name, on models only"));
                    }
                    (None, Some(_)) => {
                        return Err(config_error(field("openai_model"), "is required with openai_base_url"))
                    }
                    (Some(model), Some(url)) => {
                        Some(OpenAi { model, base_url: parse_base_url(&field("openai_base_url"), &url)? })
                    }
                    (Some(model), None) if !base.contains(ENV_PLACEHOLDER) => {
                        let url = format!("{}/production/sync/v1", base.trim_end_matches('/'));
                        Some(OpenAi { model, base_url: parse_base_url(&field("upstream"), &url)? })
                    }
                    (Some(_), None) => {
                        return Err(config_error(field("openai_base_url"), "is required for a regional upstream"));
                    }
                };
                parsed.insert(id, Upstream { base, api_key, price_per_second: u.price_per_second, openai });
            }
            Ok(parsed)
        };
        let models = upstreams("models", doc.models)?;
        let chains = upstreams("chains", doc.chains)?;

        let w = doc.webhooks;
        let inbound_secrets = w
            .inbound_secret_names
            .iter()
            .enumerate()
            .map(|(i, name)| SecretRef::new(format!("webhooks.inbound_secret_names[{i}]"), name, SecretRule::Any))
            .collect();
        let outbound_secret = w
            .outbound_secret_name
            .as_deref()
            .map(|name| SecretRef::new("webhooks.outbound_secret_name", name, SecretRule::OutboundGlobal));
        let d = w.delivery;
        if !(1..=50).contains(&d.max_attempts) {
            return Err(config_error("webhooks.delivery.max_attempts", "must be between 1 and 50"));
        }
        if d.initial_delay_seconds == 0 || d.max_delay_seconds < d.initial_delay_seconds {
            return Err(config_error(
                "webhooks.delivery.max_delay_seconds",
                "initial_delay_seconds must be at least 1 and max_delay_seconds at least initial_delay_seconds",
            ));
        }

        let browser_tokens = match doc.browser_tokens {
            None => None,
            Some(t) => {
                let secret = SecretRef::new("browser_tokens.secret_name", &t.secret_name, SecretRule::AtLeast32Bytes);
                if !(1..=86_400).contains(&t.max_ttl_seconds) {
                    return Err(config_error("browser_tokens.max_ttl_seconds", "must be between 1 and 86400"));
                }
                Some(BrowserTokens { secret, max_ttl_seconds: t.max_ttl_seconds })
            }
        };

        Ok(Self {
            browser_tokens,
            public_base_url,
            dev_mode: doc.dev_mode,
            retention_seconds: doc.retention_seconds,
            async_body_limit: doc.async_body_limit_bytes,
            output_limit: doc.output_limit_bytes,
            id_secret,
            keys,
            models,
            chains,
            webhooks: Webhooks {
                inbound_secrets,
                inbound_tolerance_seconds: w.inbound_tolerance_seconds,
                outbound_secret,
                key_outbound_secrets,
                delivery: d,
            },
            source: SecretSource::default(),
        })
    }

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
}

fn parse_base_url(field: &str, value: &str) -> Result<Url, Error> {
    let url = Url::parse(value).map_err(|e| config_error(field, format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(config_error(field, "must be an http(s) URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(config_error(field, "must not have a query or fragment"));
    }
    Ok(url)
}

/// The configuration of the last request, kept for the next ones where a runtime serves many
/// requests from one instance (a Worker's isolate): parsed and validated again only when the
/// document, or the value of a secret it names, is not what it was.
#[derive(Debug, Default)]
pub struct ConfigCache {
    last: Option<Parsed>,
}

#[derive(Debug)]
struct Parsed {
    document: String,
    /// Every secret the parse looked up, with what it found.
    secrets: Vec<(String, Option<String>)>,
    config: std::rc::Rc<Config>,
}

impl ConfigCache {
    /// [`Config::parse`], or the configuration parsed from the same document and secrets.
    pub fn get(
        &mut self,
        document: &str,
        secret: &dyn Fn(&str) -> Option<String>,
    ) -> Result<std::rc::Rc<Config>, Error> {
        if let Some(last) = &self.last {
            if last.document == document && last.secrets.iter().all(|(name, value)| secret(name) == *value) {
                return Ok(std::rc::Rc::clone(&last.config));
            }
        }
        let seen = std::cell::RefCell::new(Vec::new());
        let recording = |name: &str| {
            let value = secret(name);
            seen.borrow_mut().push((name.to_owned(), value.clone()));
            value
        };
        let config = std::rc::Rc::new(Config::parse(document, &recording)?);
        self.last = Some(Parsed {
            document: document.to_owned(),
            secrets: seen.into_inner(),
            config: std::rc::Rc::clone(&config),
        });
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(name: &str) -> Option<String> {
        match name {
            "UP" => Some("upstream-key".into()),
            "IN" => Some("inbound".into()),
            "OUT" => Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
            "IDS" => Some("request-id-secret-0123456789abcdef0123".into()),
            _ => None,
        }
    }

    fn doc() -> serde_json::Value {
        serde_json::json!({
            "public_base_url": "https://gw.example",
            "keys": [{"id": "backend", "sha256": "0".repeat(64), "models": ["*"], "operations": ["predict", "status"]}],
            "models": {"demo": {"upstream": "https://model-abc.api.baseten.co", "api_key_secret_name": "UP", "price_per_second": 0.001}},
            "webhooks": {"inbound_secret_names": ["IN"], "outbound_secret_name": "OUT"},
            "id_secret_name": "IDS"
        })
    }

    fn error_field(doc: serde_json::Value) -> String {
        match Config::parse(&doc.to_string(), &secrets) {
            Err(Error::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn the_cache_parses_again_only_when_the_document_or_a_secret_changes() {
        let mut cache = ConfigCache::default();
        let document = doc().to_string();
        let first = cache.get(&document, &secrets).unwrap();
        assert!(std::rc::Rc::ptr_eq(&first, &cache.get(&document, &secrets).unwrap()), "same document, same secrets");
        let rotated = |name: &str| if name == "UP" { Some("rotated-key".to_owned()) } else { secrets(name) };
        let after_rotation = cache.get(&document, &rotated).unwrap();
        assert!(!std::rc::Rc::ptr_eq(&first, &after_rotation));
        let upstream = after_rotation.upstream(&Subject::Model("demo".into())).unwrap();
        assert_eq!(after_rotation.secret(&upstream.api_key).unwrap(), "rotated-key");
        let mut changed = doc();
        changed["retention_seconds"] = serde_json::json!(60);
        assert_eq!(cache.get(&changed.to_string(), &rotated).unwrap().retention_seconds, 60);
        changed["retention_seconds"] = serde_json::json!(0);
        assert!(cache.get(&changed.to_string(), &rotated).is_err(), "a bad document is refused, never served stale");
    }

    #[test]
    fn openai_names_and_regional_upstreams_are_checked() {
        let with = |model: serde_json::Value| {
            let mut d = doc();
            d["models"]["demo"] = model;
            d
        };
        let up = |extra: serde_json::Value| {
            let mut m =
                serde_json::json!({"upstream": "https://model-abc.api.baseten.co", "api_key_secret_name": "UP"});
            m.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            m
        };
        let c = Config::parse(&with(up(serde_json::json!({"openai_model": "llm"}))).to_string(), &secrets).unwrap();
        let openai = c.models["demo"].openai.as_ref().unwrap();
        assert_eq!(openai.base_url.as_str(), "https://model-abc.api.baseten.co/production/sync/v1");
        assert_eq!(
            error_field(with(up(serde_json::json!({"openai_base_url": "https://x.example/v1"})))),
            "models.demo.openai_model"
        );
        let regional = serde_json::json!({"upstream": "https://model-abc-{env}.api.baseten.co", "api_key_secret_name": "UP", "openai_model": "llm"});
        assert_eq!(error_field(with(regional)), "models.demo.openai_base_url");
        let regional =
            serde_json::json!({"upstream": "https://model-abc-{env}.api.baseten.co", "api_key_secret_name": "UP"});
        let c = Config::parse(&with(regional).to_string(), &secrets).unwrap();
        let url = c.models["demo"].url(&Target::Environment("eu".into()), "predict", true).unwrap();
        assert_eq!(url, "https://model-abc-eu.api.baseten.co/predict");
        assert!(c.models["demo"].url(&Target::Production, "predict", true).is_err());
    }

    /// A URL built for an upstream is checked after it is built: resolved as a fetch would, it
    /// stays under its target (or its `sync/`), or nothing is sent.
    #[test]
    fn upstream_urls_stay_under_their_target_once_resolved() {
        let c = Config::parse(&doc().to_string(), &secrets).unwrap();
        let demo = &c.models["demo"];
        let production = Target::Production;
        assert_eq!(
            demo.url(&production, "predict", true).unwrap(),
            "https://model-abc.api.baseten.co/production/predict"
        );
        assert_eq!(
            demo.sync_url(&production, "v1/chat/completions", Some("a=1")).unwrap(),
            "https://model-abc.api.baseten.co/production/sync/v1/chat/completions?a=1"
        );
        for route in ["../async_predict", "%2e%2e/async_predict", "a/../../predict", "..\\x"] {
            assert!(demo.sync_url(&production, route, None).is_err(), "{route}");
        }
        assert!(demo.url(&Target::Deployment("..".into()), "predict", true).is_err());
        assert!(demo.url(&production, "../../elsewhere", true).is_err());
        // On a shared host, an upstream's base path is its own: no way out to its neighbours.
        let mut shared = doc();
        shared["models"]["demo"]["upstream"] = "https://shared.example/models/demo".into();
        let c = Config::parse(&shared.to_string(), &secrets).unwrap();
        assert!(c.models["demo"].url(&production, "async_request/../../other/x", false).is_err());
        assert!(c.models["demo"].url(&production, "async_request/abc", false).is_ok());
    }

    /// A secret pasted where its name belongs, or where any other value belongs, must not be
    /// published by the unauthenticated error every caller then gets. The caller is told the
    /// top-level field only (the full path names key and model ids); the log has the whole.
    #[test]
    fn a_misconfiguration_names_the_field_and_never_echoes_a_value() {
        const PASTED: &str = "sk-live-0123456789abcdef";
        let mut pasted_as_name = doc();
        pasted_as_name["models"]["demo"]["api_key_secret_name"] = PASTED.into();
        let mut pasted_as_value = doc();
        pasted_as_value["dev_mode"] = PASTED.into();
        for (doc, field) in [(pasted_as_name, "models.demo.api_key_secret_name"), (pasted_as_value, "dev_mode")] {
            let e = Config::parse(&doc.to_string(), &secrets).unwrap_err();
            let body = String::from_utf8(e.to_response().into_body().to_vec()).unwrap();
            assert!(!body.contains(PASTED) && !format!("{e:?}").contains(PASTED), "{body}");
            let top = field.split('.').next().unwrap();
            assert!(body.contains(&format!("'{top}'")) && body.contains("GATEWAY_MISCONFIGURED"), "{body}");
            assert!(!body.contains("demo"), "no model id for the caller: {body}");
            assert!(e.to_string().contains(field) && !e.to_string().contains(PASTED), "the log names it: {e}");
        }
    }

    #[test]
    fn the_outbound_secret_may_not_be_an_inbound_one() {
        let mut same = doc();
        same["webhooks"]["outbound_secret_name"] = "IN".into();
        assert_eq!(error_field(same), "webhooks.outbound_secret_name");
    }

    #[test]
    fn a_lazy_configuration_reads_a_secret_when_first_needed_and_checks_it_as_a_parse_does() {
        let reads = Rc::new(std::cell::RefCell::new(Vec::new()));
        let source = |missing: &'static str, same_as_inbound: bool| {
            let reads = Rc::clone(&reads);
            Rc::new(move |name: &str| {
                reads.borrow_mut().push(name.to_owned());
                match name {
                    _ if name == missing => None,
                    "OUT" if same_as_inbound => secrets("IN"),
                    _ => secrets(name),
                }
            }) as SecretReader
        };
        let c = Config::parse_lazy(&doc().to_string(), source("", false)).unwrap();
        assert!(reads.borrow().is_empty(), "nothing read at parse");
        assert_eq!(c.secret(&c.models["demo"].api_key).unwrap(), "upstream-key");
        assert_eq!(c.secret(&c.models["demo"].api_key).unwrap(), "upstream-key");
        assert_eq!(*reads.borrow(), ["UP"], "read once");

        // A secret not set is the error of what uses it, naming its field; the rest still work.
        let c = Config::parse_lazy(&doc().to_string(), source("UP", false)).unwrap();
        let missing = c.secret(&c.models["demo"].api_key).unwrap_err();
        assert!(matches!(&missing, Error::Config { field, .. } if field == "models.demo.api_key_secret_name"));
        assert!(c.inbox_token("abc").is_ok());

        // The rules a parse checks hold at first use: an outbound secret that is an inbound one.
        let c = Config::parse_lazy(&doc().to_string(), source("", true)).unwrap();
        let outbound = c.webhooks.outbound_secret.as_ref().unwrap();
        let same = c.secret(outbound).unwrap_err();
        assert!(matches!(&same, Error::Config { field, .. } if field == "webhooks.outbound_secret_name"));
        let short = |name: &str| if name == "IDS" { Some("short".to_owned()) } else { secrets(name) };
        let c = Config::parse_lazy(&doc().to_string(), Rc::new(short)).unwrap();
        assert!(matches!(c.inbox_token("abc"), Err(Error::Config { field, .. }) if field == "id_secret_name"));
    }

    #[test]
    fn a_valid_document_parses_and_resolves_secrets() {
        let c = Config::parse(&doc().to_string(), &secrets).unwrap();
        assert_eq!(c.secret(&c.models["demo"].api_key).unwrap(), "upstream-key");
        let inbound: Vec<&str> = c.webhooks.inbound_secrets.iter().map(|s| c.secret(s).unwrap()).collect();
        assert_eq!(inbound, ["inbound"]);
        assert_eq!(c.retention_seconds, 7 * 24 * 3600);
        assert_eq!(c.async_body_limit, 256 * 1024);
        assert_eq!(c.webhooks.delivery, DeliveryPolicy::default());
        assert!(c.keys[0].allows_operation(Operation::Status));
        assert!(!c.keys[0].allows_operation(Operation::Cancel));
        assert!(c.keys[0].allows_subject(&Subject::Model("anything".into())));
        assert!(!c.keys[0].allows_subject(&Subject::Chain("anything".into())));
        let url = c.inbox_url("abc").unwrap();
        let token = url.strip_prefix("https://gw.example/webhooks/baseten/abc/").expect(&url);
        assert_eq!((token.len(), token == c.inbox_token("abc").unwrap()), (32, true));
        assert_ne!(token, c.inbox_token("abd").unwrap(), "each job has its own token");
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let c = Config::parse(&doc().to_string(), &secrets).unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains("upstream-key") && !debug.contains("inbound\"") && !debug.contains("MfKQ"), "{debug}");
    }

    #[test]
    fn every_bad_document_names_its_field() {
        let mut d = doc();
        d["public_base_url"] = "not a url".into();
        assert_eq!(error_field(d), "public_base_url");
        let mut d = doc();
        d["keys"][0]["sha256"] = "abc".into();
        assert_eq!(error_field(d), "keys[0].sha256");
        // `~` separates a key's id from its tokens': key `a` would see key `a~b`'s jobs.
        for id in ["a~b", "", "with space", &"x".repeat(65)] {
            let mut d = doc();
            d["keys"][0]["id"] = id.into();
            assert_eq!(error_field(d), "keys[0].id", "{id:?}");
        }
        let mut d = doc();
        d["models"]["demo"]["api_key_secret_name"] = "MISSING".into();
        assert_eq!(error_field(d), "models.demo.api_key_secret_name");
        let mut d = doc();
        d["models"]["demo"]["price_per_second"] = (-1.0).into();
        assert_eq!(error_field(d), "models.demo.price_per_second");
        let mut d = doc();
        d["models"]["demo"]["upstrem"] = "typo".into();
        assert_eq!(error_field(d), "models.demo.upstrem");
        let mut d = doc();
        d["keys"][0]["operations"] = serde_json::json!(["predict", "launch"]);
        assert_eq!(error_field(d), "keys[0].operations[1]");
        let mut d = doc();
        d["webhooks"]["delivery"] = serde_json::json!({"max_attempts": 0});
        assert_eq!(error_field(d), "webhooks.delivery.max_attempts");
        let mut d = doc();
        d["webhooks"]["inbound_secret_names"] = serde_json::json!(["IN", "NOPE"]);
        assert_eq!(error_field(d), "webhooks.inbound_secret_names[1]");
        assert_eq!(error_field(serde_json::json!({"keys": []})), "(document)");
    }
}
