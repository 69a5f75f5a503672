//! A configured deployment family (a Baseten model or chain) and the URLs built on it, each
//! checked once built: it stays where it was meant to go.

use url::Url;

use super::secrets::SecretRef;
use crate::engine::base::{Error, Target};

/// One upstream deployment family (a Baseten model or chain, or anything speaking its API).
#[derive(Clone)]
pub struct Upstream {
    /// E.g. `https://model-abcd1234.api.baseten.co` (target and endpoint paths are appended),
    /// or a regional environment's host with `{env}` in it,
    /// `https://model-abcd1234-{env}.api.baseten.co` (bare endpoint paths).
    pub(super) base: String,
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
pub(super) const ENV_PLACEHOLDER: &str = "{env}";

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

#[cfg(test)]
mod tests {
    use crate::engine::base::Target;
    use crate::engine::config::parse::tests::{doc, error_field, secrets};
    use crate::engine::config::Config;

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
}
