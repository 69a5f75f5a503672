//! What a key may spend, and a browser token within its key's: requests and async submits
//! per minute. A token is minted with limits no higher than its key's, and what it spends
//! counts against its key too.

use serde::{Deserialize, Serialize};

/// A caller's limits (`"limits"` of a key in the document, or of a token's mint request).
/// A limit not set is not counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Requests of every kind, per minute of the clock (a fixed 60 s window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u64>,
    /// Async submits (`async_predict`), per minute of the clock; each is a request too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submits_per_minute: Option<u64>,
}

impl Limits {
    /// Every limit, by name, with its value if set.
    pub fn each(&self) -> [(&'static str, Option<u64>); 2] {
        [("requests_per_minute", self.requests_per_minute), ("submits_per_minute", self.submits_per_minute)]
    }

    /// The limit `self` sets higher than `bound` sets it, if any: a token may be minted with
    /// lower limits than its key's, never higher. (A limit only one of them sets is no
    /// conflict: the key's counts what its tokens spend anyway.)
    pub fn above(&self, bound: &Limits) -> Option<&'static str> {
        self.each().into_iter().zip(bound.each()).find_map(|((name, own), (_, bound))| match (own, bound) {
            (Some(own), Some(bound)) if own > bound => Some(name),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Limits;

    #[test]
    fn a_token_may_ask_for_less_than_its_key_never_more() {
        let key = Limits { requests_per_minute: Some(10), submits_per_minute: None };
        let lower = Limits { requests_per_minute: Some(5), submits_per_minute: Some(1) };
        assert_eq!(lower.above(&key), None);
        assert_eq!(Limits::default().above(&key), None, "the key's own limit still counts the token");
        let higher = Limits { requests_per_minute: Some(11), ..lower };
        assert_eq!(higher.above(&key), Some("requests_per_minute"));
    }
}
