//! Short-lived browser tokens: a server key mints one (`POST /browser_tokens`) for a page;
//! the page sends it as `Authorization: Bearer ept_…`. A token carries its own scope (a
//! subset of its key's models and operations, and the exact browser origins it may be used
//! from), an expiry, and optionally the one job it is bound to. It sees only the jobs it
//! created (or that one job). The upstream key never leaves the gateway.
//!
//! Format: `ept_<base64url(claims JSON)>.<base64url(HMAC-SHA256(secret, "ept_<claims>"))>`.
//! Stateless: nothing is stored; removing the minting key, or rotating the secret, revokes.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{Request, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;
use url::Url;

use crate::engine::base::crypto::{self, sha256};
use crate::engine::base::{is_request_id, json_response, Error, Operation, Subject, Timestamp};
use crate::engine::config::{is_safe_name, ApiKey, BrowserTokens, Config, Limits, Scope, TokenBinding};
use crate::engine::{Engine, HttpClient, Store};

pub const TOKEN_PREFIX: &str = "ept_";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// The minting key's id.
    kid: String,
    /// This token's id.
    jti: String,
    /// Expiry, milliseconds since the epoch.
    exp: u64,
    models: Vec<String>,
    chains: Vec<String>,
    ops: Vec<Operation>,
    origins: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rid: Option<String>,
    /// The page's session or user, chosen by the backend: tokens minted with the same one
    /// own the same jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ses: Option<String>,
    /// What the token may spend (within its key's, which count it too).
    #[serde(default, skip_serializing_if = "is_unlimited")]
    lim: Limits,
}

fn is_unlimited(limits: &Limits) -> bool {
    *limits == Limits::default()
}

impl Claims {
    /// The id the token acts as: `{key}~s.{session}` when minted with a session, so every
    /// token of that session owns the same jobs; else `{key}~{token id}`.
    fn caller_id(&self) -> String {
        match &self.ses {
            Some(session) => format!("{}~s.{session}", self.kid),
            None => format!("{}~{}", self.kid, self.jti),
        }
    }
}

fn mac(secret: &str, signed: &str) -> Hmac<Sha256> {
    let mut m = crypto::mac(secret.as_bytes());
    m.update(signed.as_bytes());
    m
}

/// The key a valid, unexpired token stands for. 401 for anything else.
pub fn verify(config: &Config, token: &str, now: Timestamp) -> Result<ApiKey, Error> {
    let invalid = || Error::Unauthorized { message: "invalid browser token".to_owned() };
    let settings = config.browser_tokens.as_ref().ok_or_else(invalid)?;
    let (signed, signature) = token.rsplit_once('.').ok_or_else(invalid)?;
    let signature = B64.decode(signature).map_err(|_| invalid())?;
    mac(config.secret(&settings.secret)?, signed).verify_slice(&signature).map_err(|_| invalid())?;
    let claims = signed.strip_prefix(TOKEN_PREFIX).ok_or_else(invalid)?;
    let claims: Claims = B64.decode(claims).ok().and_then(|c| serde_json::from_slice(&c).ok()).ok_or_else(invalid)?;
    if now.millis() >= claims.exp {
        return Err(Error::Unauthorized { message: "browser token expired; mint a new one".to_owned() });
    }
    // Revoked with its key: a token outlives neither the key nor the key's scope.
    let parent = config.keys.iter().find(|k| k.id == claims.kid).ok_or_else(invalid)?;
    let id = claims.caller_id();
    // Within the key's origins, where the key lists any (a server key lists none).
    let origins =
        claims.origins.into_iter().filter(|o| parent.origins.is_empty() || parent.origins.allows(o)).collect();
    Ok(ApiKey {
        sha256: sha256(id.as_bytes()),
        id,
        models: intersect(&parent.models, claims.models),
        chains: intersect(&parent.chains, claims.chains),
        operations: Some(claims.ops.into_iter().filter(|op| parent.allows_operation(*op)).collect()),
        origins: Scope::from_list(origins),
        all_jobs: false,
        limits: claims.lim,
        token: Some(TokenBinding {
            request_id: claims.rid,
            parent: parent.id.clone(),
            parent_all_jobs: parent.all_jobs,
            parent_limits: parent.limits,
        }),
    })
}

fn intersect(parent: &Scope, names: Vec<String>) -> Scope {
    Scope::from_list(names.into_iter().filter(|n| n != "*" && parent.allows(n)).collect())
}

/// The job a mint request binds its token to, if it names one: the job's place is where the
/// mint runs ([`Engine::placement`]), so the binding can be checked against the job itself.
pub(crate) fn bound_request_id(body: &[u8]) -> Option<String> {
    let body: Value = serde_json::from_slice(body).ok()?;
    body.get("request_id")?.as_str().filter(|id| is_request_id(id)).map(str::to_owned)
}

impl<S: Store, H: HttpClient> Engine<'_, S, H> {
    /// `POST /browser_tokens`: the requested scope checked against the minting key, the job it
    /// binds to checked against what the key can see, then signed.
    pub(crate) async fn mint_token(
        &self,
        key: &ApiKey,
        request: &Request<Bytes>,
        now: Timestamp,
        entropy: [u8; 16],
    ) -> Result<http::Response<Bytes>, Error> {
        let (settings, claims) = claims(self.config, key, request.body(), now, entropy)?;
        if let Some(id) = &claims.rid {
            // A token bound to a job its key cannot see would be refused at every use; it is
            // refused here too, as that job is (404, as for a job that does not exist).
            let job = self.load_visible(id, None, now).await?;
            if !key.sees_job(&job.id, &job.key_id) {
                return Err(Error::RequestNotFound { request_id: id.clone() });
            }
        }
        let signed = format!("{TOKEN_PREFIX}{}", B64.encode(serde_json::to_vec(&claims).unwrap_or_default()));
        let signature = B64.encode(mac(self.config.secret(&settings.secret)?, &signed).finalize().into_bytes());
        let body = json!({
            "token": format!("{signed}.{signature}"),
            "token_id": format!("{}~{}", claims.kid, claims.jti),
            "expires_at": Timestamp::from_millis(claims.exp).rfc3339(),
        });
        Ok(json_response(StatusCode::CREATED, &body))
    }
}

/// The claims of the token a mint request asks for, each within the minting key's scope.
fn claims<'c>(
    config: &'c Config,
    key: &ApiKey,
    body: &[u8],
    now: Timestamp,
    entropy: [u8; 16],
) -> Result<(&'c BrowserTokens, Claims), Error> {
    let settings: &BrowserTokens =
        config.browser_tokens.as_ref().ok_or_else(|| Error::NotFound { what: "POST /browser_tokens".to_owned() })?;
    if key.token.is_some() {
        return Err(Error::Forbidden { message: "a browser token cannot mint tokens".to_owned() });
    }
    let body: Value = serde_json::from_slice(body)
        .map_err(|e| Error::MalformedJson { message: format!("request body is not valid JSON: {e}") })?;
    let Value::Object(obj) = body else {
        return Err(Error::MalformedJson { message: "request body must be a JSON object".to_owned() });
    };
    const FIELDS: [&str; 8] =
        ["models", "chains", "operations", "origins", "ttl_seconds", "request_id", "session", "limits"];
    if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(Error::invalid(k.clone(), format!("unknown field; expected one of {}", FIELDS.join(", "))));
    }
    let list = |field: &str| -> Result<Vec<String>, Error> {
        match obj.get(field) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_owned).ok_or_else(|| Error::invalid(field, "must be a list of strings"))
                })
                .collect(),
            Some(_) => Err(Error::invalid(field, "must be a list of strings")),
        }
    };
    let models = list("models")?;
    let chains = list("chains")?;
    for (kind, names) in [("models", &models), ("chains", &chains)] {
        for name in names {
            let subject = if kind == "models" { Subject::Model(name.clone()) } else { Subject::Chain(name.clone()) };
            if name == "*" || !key.allows_subject(&subject) {
                return Err(Error::invalid(kind, format!("'{name}' is not within this key's scope (no wildcards)")));
            }
        }
    }
    if models.is_empty() && chains.is_empty() {
        return Err(Error::invalid("models", "name at least one model or chain"));
    }
    let ops = list("operations")?
        .into_iter()
        .map(|op| {
            let parsed: Option<Operation> = serde_json::from_value(Value::String(op.clone())).ok();
            match parsed {
                None => Err(Error::invalid("operations", format!("unknown operation '{op}'"))),
                Some(Operation::Sweep | Operation::MintToken) => {
                    Err(Error::invalid("operations", format!("'{op}' cannot be given to a browser token")))
                }
                Some(o) if !key.allows_operation(o) => {
                    Err(Error::invalid("operations", format!("'{op}' is not within this key's scope")))
                }
                Some(o) => Ok(o),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    if ops.is_empty() {
        return Err(Error::invalid("operations", "name at least one operation"));
    }
    let origins = list("origins")?;
    if origins.is_empty() {
        return Err(Error::invalid("origins", "name the browser origins the token may be used from"));
    }
    for origin in &origins {
        let ok = Url::parse(origin).ok().is_some_and(|u| {
            matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.origin().ascii_serialization() == *origin
        });
        if !ok {
            return Err(Error::invalid("origins", format!("'{origin}' is not an origin like https://app.example.com")));
        }
        if !(key.origins.is_empty() || key.origins.allows(origin)) {
            return Err(Error::invalid("origins", format!("'{origin}' is not among this key's origins")));
        }
    }
    let ttl = match obj.get("ttl_seconds") {
        None | Some(Value::Null) => 600.min(settings.max_ttl_seconds),
        Some(v) => v.as_u64().filter(|t| (1..=settings.max_ttl_seconds).contains(t)).ok_or_else(|| {
            Error::invalid("ttl_seconds", format!("must be between 1 and {}", settings.max_ttl_seconds))
        })?,
    };
    let rid = match obj.get("request_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if is_request_id(id) => Some(id.clone()),
        Some(_) => return Err(Error::invalid("request_id", "must be a request id (32 lowercase hex)")),
    };
    let ses = match obj.get("session") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if is_safe_name(s) => Some(s.clone()),
        Some(_) => return Err(Error::invalid("session", "must be 1 to 64 letters, digits, '-', '_' or '.'")),
    };
    let lim = match obj.get("limits") {
        None | Some(Value::Null) => Limits::default(),
        Some(v) => Limits::deserialize(v).map_err(|e| Error::invalid("limits", e.to_string()))?,
    };
    if let Some(name) = lim.above(&key.limits) {
        return Err(Error::invalid(format!("limits.{name}"), "must not be above the minting key's"));
    }
    let exp = now.plus_secs(ttl).millis();
    let jti = hex::encode(entropy);
    Ok((settings, Claims { kid: key.id.clone(), jti, exp, models, chains, ops, origins, rid, ses, lim }))
}
