//! One parse kept for the requests of an isolate.

use std::cell::RefCell;
use std::rc::Rc;

use super::gateway::Config;
use crate::engine::base::Error;

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
    config: Rc<Config>,
}

impl ConfigCache {
    /// [`Config::parse`], or the configuration parsed from the same document and secrets.
    pub fn get(&mut self, document: &str, secret: &dyn Fn(&str) -> Option<String>) -> Result<Rc<Config>, Error> {
        if let Some(last) = &self.last {
            if last.document == document && last.secrets.iter().all(|(name, value)| secret(name) == *value) {
                return Ok(Rc::clone(&last.config));
            }
        }
        let seen = RefCell::new(Vec::new());
        let recording = |name: &str| {
            let value = secret(name);
            seen.borrow_mut().push((name.to_owned(), value.clone()));
            value
        };
        let config = Rc::new(Config::parse(document, &recording)?);
        self.last =
            Some(Parsed { document: document.to_owned(), secrets: seen.into_inner(), config: Rc::clone(&config) });
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::base::Subject;
    use crate::engine::config::parse::tests::{doc, secrets};

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
}
