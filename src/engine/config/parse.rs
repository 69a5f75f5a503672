//! The document checked and turned into a [`Config`]; every error names its field and never
//! echoes a value (a value in the wrong field may be a secret).

use std::collections::BTreeMap;

use url::Url;

use super::document::{BrowserTokensDoc, Document, JobsDoc, KeyDoc, UpstreamDoc, WebhooksDoc};
use super::gateway::{BrowserTokens, Config, Webhooks};
use super::key::{is_safe_name, ApiKey, Scope};
use super::secrets::{SecretReader, SecretRef, SecretRule, SecretSource};
use super::upstream::{OpenAi, Upstream, ENV_PLACEHOLDER};
use crate::engine::base::Error;

/// A parser's message with every quoted value elided: `invalid type: string "…"`. A value in
/// the wrong field may be a secret; the field's name is what the operator needs.
fn without_values(message: &str) -> String {
    let parts: Vec<&str> = message.split('"').enumerate().map(|(i, p)| if i % 2 == 1 { "…" } else { p }).collect();
    parts.join("\"")
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

    /// The document parsed and validated, its secrets named and not yet read.
    fn parse_document(json: &str) -> Result<Self, Error> {
        let de = &mut serde_json::Deserializer::from_str(json);
        let doc: Document = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            Error::config(
                if path == "." { "(document)".to_owned() } else { path },
                without_values(&e.inner().to_string()),
            )
        })?;
        let public_base_url = parse_base_url("public_base_url", &doc.public_base_url)?;
        let id_secret = SecretRef::new("id_secret_name", &doc.id_secret_name, SecretRule::AtLeast32Bytes);
        if doc.retention_seconds == 0 {
            return Err(Error::config("retention_seconds", "must be at least 1"));
        }
        // In the document's order, so the first error reported is the first one in it.
        let (keys, key_outbound_secrets) = parse_keys(doc.keys)?;
        let models = parse_upstreams("models", doc.models)?;
        let chains = parse_upstreams("chains", doc.chains)?;
        let webhooks = parse_webhooks(doc.webhooks, key_outbound_secrets)?;
        let browser_tokens = doc.browser_tokens.map(parse_browser_tokens).transpose()?;
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
            webhooks,
            source: SecretSource::default(),
        })
    }
}

/// The keys, and the outbound secrets of those that sign their own deliveries (by key id).
fn parse_keys(docs: Vec<KeyDoc>) -> Result<(Vec<ApiKey>, BTreeMap<String, SecretRef>), Error> {
    let mut keys = Vec::with_capacity(docs.len());
    let mut outbound_secrets = BTreeMap::new();
    for (i, key) in docs.into_iter().enumerate() {
        let digest = hex::decode(&key.sha256).ok().and_then(|d| <[u8; 32]>::try_from(d).ok()).ok_or_else(|| {
            Error::config(format!("keys[{i}].sha256"), "must be 64 hex characters (SHA-256 of the key)")
        })?;
        if !is_safe_name(&key.id) || keys.iter().any(|other: &ApiKey| other.id == key.id) {
            return Err(Error::config(
                format!("keys[{i}].id"),
                "must be unique, 1 to 64 letters, digits, '-', '_' or '.'",
            ));
        }
        if let Some(name) = &key.outbound_secret_name {
            let secret = SecretRef::new(format!("keys[{i}].outbound_secret_name"), name, SecretRule::Outbound);
            outbound_secrets.insert(key.id.clone(), secret);
        }
        keys.push(ApiKey {
            id: key.id,
            sha256: digest,
            models: Scope::from_list(key.models),
            chains: Scope::from_list(key.chains),
            operations: key.operations,
            origins: Scope::from_list(key.origins),
            all_jobs: key.jobs == JobsDoc::All,
            limits: key.limits,
            token: None,
        });
    }
    Ok((keys, outbound_secrets))
}

/// The `models` or `chains` (`kind`) of the document.
fn parse_upstreams(kind: &str, docs: BTreeMap<String, UpstreamDoc>) -> Result<BTreeMap<String, Upstream>, Error> {
    // A loop, not `collect::<BTreeMap<_, _>>()`: collecting sorts its items first, and that
    // stable sort was 3.4 KB of the Worker's wasm (the keys arrive sorted anyway).
    let mut parsed = BTreeMap::new();
    for (id, doc) in docs {
        let field = |name: &str| format!("{kind}.{id}.{name}");
        // A regional template is checked as the URL it becomes for an environment.
        let base = parse_base_url(&field("upstream"), &doc.upstream.replace(ENV_PLACEHOLDER, "env"))
            .map(|_| doc.upstream.clone())?;
        let api_key = SecretRef::new(field("api_key_secret_name"), &doc.api_key_secret_name, SecretRule::Any);
        if !(doc.price_per_second.is_finite() && doc.price_per_second >= 0.0) {
            return Err(Error::config(field("price_per_second"), "must be a non-negative number"));
        }
        let openai = match (doc.openai_model, doc.openai_base_url) {
            (None, None) => None,
            (Some(model), _) if model.is_empty() || kind == "chains" => {
                return Err(Error::config(field("openai_model"), "must be a non-empty name, on models only"));
            }
            (None, Some(_)) => return Err(Error::config(field("openai_model"), "is required with openai_base_url")),
            (Some(model), Some(url)) => {
                Some(OpenAi { model, base_url: parse_base_url(&field("openai_base_url"), &url)? })
            }
            (Some(model), None) if !base.contains(ENV_PLACEHOLDER) => {
                let url = format!("{}/production/sync/v1", base.trim_end_matches('/'));
                Some(OpenAi { model, base_url: parse_base_url(&field("upstream"), &url)? })
            }
            (Some(_), None) => {
                return Err(Error::config(field("openai_base_url"), "is required for a regional upstream"));
            }
        };
        parsed.insert(id, Upstream { base, api_key, price_per_second: doc.price_per_second, openai });
    }
    Ok(parsed)
}

fn parse_webhooks(doc: WebhooksDoc, key_outbound_secrets: BTreeMap<String, SecretRef>) -> Result<Webhooks, Error> {
    let inbound_secrets = doc
        .inbound_secret_names
        .iter()
        .enumerate()
        .map(|(i, name)| SecretRef::new(format!("webhooks.inbound_secret_names[{i}]"), name, SecretRule::Any))
        .collect();
    let outbound_secret = doc
        .outbound_secret_name
        .as_deref()
        .map(|name| SecretRef::new("webhooks.outbound_secret_name", name, SecretRule::OutboundGlobal));
    let delivery = doc.delivery;
    if !(1..=50).contains(&delivery.max_attempts) {
        return Err(Error::config("webhooks.delivery.max_attempts", "must be between 1 and 50"));
    }
    if delivery.initial_delay_seconds == 0 || delivery.max_delay_seconds < delivery.initial_delay_seconds {
        return Err(Error::config(
            "webhooks.delivery.max_delay_seconds",
            "initial_delay_seconds must be at least 1 and max_delay_seconds at least initial_delay_seconds",
        ));
    }
    Ok(Webhooks {
        inbound_secrets,
        inbound_tolerance_seconds: doc.inbound_tolerance_seconds,
        outbound_secret,
        key_outbound_secrets,
        delivery,
    })
}

fn parse_browser_tokens(doc: BrowserTokensDoc) -> Result<BrowserTokens, Error> {
    let secret = SecretRef::new("browser_tokens.secret_name", &doc.secret_name, SecretRule::AtLeast32Bytes);
    if !(1..=86_400).contains(&doc.max_ttl_seconds) {
        return Err(Error::config("browser_tokens.max_ttl_seconds", "must be between 1 and 86400"));
    }
    Ok(BrowserTokens { secret, max_ttl_seconds: doc.max_ttl_seconds })
}

fn parse_base_url(field: &str, value: &str) -> Result<Url, Error> {
    let url = Url::parse(value).map_err(|e| Error::config(field, format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(Error::config(field, "must be an http(s) URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Error::config(field, "must not have a query or fragment"));
    }
    Ok(url)
}

#[cfg(test)]
pub(super) mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::engine::base::{Operation, Subject};
    use crate::engine::config::DeliveryPolicy;

    pub(in crate::engine::config) fn secrets(name: &str) -> Option<String> {
        match name {
            "UP" => Some("upstream-key".into()),
            "IN" => Some("inbound".into()),
            "OUT" => Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
            "IDS" => Some("request-id-secret-0123456789abcdef0123".into()),
            _ => None,
        }
    }

    pub(in crate::engine::config) fn doc() -> serde_json::Value {
        serde_json::json!({
            "public_base_url": "https://gw.example",
            "keys": [{"id": "backend", "sha256": "0".repeat(64), "models": ["*"], "operations": ["predict", "status"]}],
            "models": {"demo": {"upstream": "https://model-abc.api.baseten.co", "api_key_secret_name": "UP", "price_per_second": 0.001}},
            "webhooks": {"inbound_secret_names": ["IN"], "outbound_secret_name": "OUT"},
            "id_secret_name": "IDS"
        })
    }

    pub(in crate::engine::config) fn error_field(doc: serde_json::Value) -> String {
        match Config::parse(&doc.to_string(), &secrets) {
            Err(Error::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        }
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
