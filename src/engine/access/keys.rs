//! Gateway API keys: `Authorization: Bearer <key>` or Baseten's legacy `Api-Key <key>`,
//! looked up by SHA-256 digest in constant time, then checked against the key's scope.

use http::{header, HeaderMap};
use subtle::ConstantTimeEq;

use crate::engine::access::tokens::{self, TOKEN_PREFIX};
use crate::engine::base::crypto::sha256;
use crate::engine::base::{Error, Operation, Subject, Timestamp};
use crate::engine::config::{ApiKey, Config};
use crate::engine::jobs::record::Job;

/// Finds the key the request presents: a configured key, or a browser token
/// ([`crate::engine::access::tokens`]) standing for a scoped-down copy of one. 401 when absent, malformed,
/// unknown or expired.
pub fn authenticate(config: &Config, headers: &HeaderMap, now: Timestamp) -> Result<ApiKey, Error> {
    let unauthorized = |message: &str| Error::Unauthorized { message: message.to_owned() };
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("missing Authorization header; send 'Authorization: Bearer <key>'"))?
        .to_str()
        .map_err(|_| unauthorized("Authorization header is not valid text"))?;
    let (scheme, key) = value
        .split_once(' ')
        .ok_or_else(|| unauthorized("Authorization header must be 'Bearer <key>' or 'Api-Key <key>'"))?;
    let key = key.trim();
    if !(scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("api-key")) || key.is_empty() {
        return Err(unauthorized("Authorization header must be 'Bearer <key>' or 'Api-Key <key>'"));
    }
    if key.starts_with(TOKEN_PREFIX) {
        return tokens::verify(config, key, now);
    }
    let digest = sha256(key.as_bytes());
    // Compare against every configured key, without stopping at a match.
    let mut found = None;
    for candidate in &config.keys {
        if bool::from(candidate.sha256.ct_eq(&digest)) {
            found = Some(candidate);
        }
    }
    found.cloned().ok_or_else(|| unauthorized("invalid API key"))
}

/// Which jobs a caller sees: a key, the jobs it created and those its browser tokens created
/// (unless configured with `"jobs": "all"`); a browser token, the jobs it created and the one
/// job it is bound to, if its key can see that job (a binding narrows, it never widens). Any
/// other job is answered exactly as one that does not exist (404), so a caller cannot even
/// learn that another's job is there.
pub fn authorize_job(key: &ApiKey, job: &Job) -> Result<(), Error> {
    if key.sees_job(&job.id, &job.key_id) {
        Ok(())
    } else {
        Err(Error::RequestNotFound { request_id: job.id.clone() })
    }
}

/// 403 unless `key` may perform `op` from `origin` (the `Origin` header, if any).
pub fn authorize_operation(key: &ApiKey, op: Operation, origin: Option<&str>) -> Result<(), Error> {
    if !key.allows_operation(op) {
        return Err(Error::Forbidden { message: format!("this key may not use the {op:?} operation") });
    }
    match origin {
        Some(origin) if !key.origins.allows(origin) => {
            Err(Error::Forbidden { message: format!("this key may not be used from origin '{origin}'") })
        }
        _ => Ok(()),
    }
}

/// 403 unless `key` may perform `op` on `subject` from `origin`.
pub fn authorize(key: &ApiKey, op: Operation, subject: &Subject, origin: Option<&str>) -> Result<(), Error> {
    authorize_operation(key, op, origin)?;
    if !key.allows_subject(subject) {
        return Err(Error::Forbidden {
            message: format!("this key may not use {} '{}'", subject.kind(), subject.id()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn config() -> Config {
        let doc = serde_json::json!({
            "public_base_url": "https://gw.example",
            "keys": [
                {"id": "backend", "sha256": hex::encode(sha256(b"secret-1")), "models": ["demo"], "operations": ["predict"]},
                {"id": "browser", "sha256": hex::encode(sha256(b"secret-2")), "models": ["*"], "chains": ["c"], "origins": ["https://app.example"]}
            ],
            "id_secret_name": "IDS"
        });
        Config::parse(&doc.to_string(), &|_| Some("request-id-secret-0123456789abcdef0123".to_owned())).unwrap()
    }

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn bearer_and_api_key_schemes_find_the_key() {
        let c = config();
        assert_eq!(authenticate(&c, &headers("Bearer secret-1"), Timestamp(0)).unwrap().id, "backend");
        assert_eq!(authenticate(&c, &headers("Api-Key secret-2"), Timestamp(0)).unwrap().id, "browser");
        assert_eq!(authenticate(&c, &headers("bearer secret-2"), Timestamp(0)).unwrap().id, "browser");
    }

    #[test]
    fn missing_malformed_and_unknown_keys_are_401() {
        let c = config();
        assert!(matches!(authenticate(&c, &HeaderMap::new(), Timestamp(0)), Err(Error::Unauthorized { .. })));
        for bad in ["secret-1", "Basic secret-1", "Bearer ", "Bearer nope", "Token secret-1"] {
            assert!(matches!(authenticate(&c, &headers(bad), Timestamp(0)), Err(Error::Unauthorized { .. })), "{bad}");
        }
    }

    #[test]
    fn scope_limits_operations_subjects_and_origins() {
        let c = config();
        let demo = Subject::Model("demo".into());
        let (backend, browser) = (&c.keys[0], &c.keys[1]);
        assert!(authorize(backend, Operation::Predict, &demo, None).is_ok());
        assert!(matches!(authorize(backend, Operation::Wake, &demo, None), Err(Error::Forbidden { .. })));
        assert!(matches!(
            authorize(backend, Operation::Predict, &Subject::Model("other".into()), None),
            Err(Error::Forbidden { .. })
        ));
        assert!(matches!(
            authorize(backend, Operation::Predict, &demo, Some("https://app.example")),
            Err(Error::Forbidden { .. })
        ));
        assert!(authorize(browser, Operation::Cancel, &demo, Some("https://app.example")).is_ok());
        assert!(authorize(browser, Operation::Cancel, &Subject::Chain("c".into()), None).is_ok());
        assert!(matches!(
            authorize(browser, Operation::Cancel, &demo, Some("https://evil.example")),
            Err(Error::Forbidden { .. })
        ));
    }
}
