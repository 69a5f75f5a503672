//! Secrets the document names: each read once (at parse, or when a request first needs it),
//! checked as its field requires, and never shown by `Debug`.

use std::cell::OnceCell;
use std::rc::Rc;

use crate::engine::base::Error;

/// A secret value: its `Debug` never shows it, so it cannot reach a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub(super) String);

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
    pub(super) field: String,
    pub(super) name: String,
    pub(super) rule: SecretRule,
    pub(super) value: OnceCell<Result<Secret, Error>>,
}

/// What a secret's value must be, checked when it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SecretRule {
    Any,
    /// A key for an HMAC that guards ids or tokens: at least 32 bytes.
    AtLeast32Bytes,
    /// Signs outbound deliveries, which every receiver can check: never an inbound secret.
    Outbound,
    /// The global outbound secret: also, a `whsec_` secret is base64 after the prefix.
    OutboundGlobal,
}

impl SecretRef {
    pub(super) fn new(field: impl Into<String>, name: &str, rule: SecretRule) -> Self {
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
pub(super) struct SecretSource(pub(super) Option<SecretReader>);

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "SecretSource(lazy)" } else { "SecretSource(read at parse)" })
    }
}
