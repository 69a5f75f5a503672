//! A configured API key: its scopes, its operations, and which jobs it (or a browser token
//! minted from it) sees.

use super::limits::Limits;
use crate::engine::base::{Operation, Subject};

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
    /// What this caller may spend (a token's: its own, within its key's).
    pub limits: Limits,
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
    /// The minting key's limits: what the token spends counts against them too.
    pub parent_limits: Limits,
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
