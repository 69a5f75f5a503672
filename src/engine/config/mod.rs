//! The configuration document (DESIGN §5), parsed and validated by the adapter (once per
//! isolate on Workers, once per request on Spin).
//!
//! It is one JSON document (a Spin variable or a Worker var). Secrets are not in it: it names
//! them, and the adapter's secret lookup resolves the names: all of them while parsing
//! ([`Config::parse`], where a parse serves many requests), or each the first time a request
//! needs it ([`Config::parse_lazy`], where every request parses and each read costs). Unknown
//! fields are errors, so a typo fails loudly instead of silently doing nothing; every error
//! names its field.
//!
//! - `gateway`: [`Config`] and its parts, its secrets read, and what is derived from it
//!   (inbox URLs, ids);
//! - `key`: a configured [`ApiKey`], its [`Scope`]s and which jobs it sees; `limits`: what it
//!   may spend ([`Limits`]);
//! - `upstream`: a configured deployment ([`Upstream`]) and the URLs built on it;
//! - `secrets`: a secret as the document names it and as it is read, never shown;
//! - `document`: the JSON's shape and its defaults; `parse`: the document checked and turned
//!   into a [`Config`]; `cache`: one parse kept for the requests of an isolate.

mod cache;
mod document;
mod gateway;
mod key;
mod limits;
mod parse;
mod secrets;
mod upstream;

pub use self::cache::ConfigCache;
pub use self::gateway::{BrowserTokens, Config, DeliveryPolicy, Webhooks, DEFAULT_ASYNC_BODY_LIMIT};
pub(crate) use self::key::is_safe_name;
pub use self::key::{ApiKey, Scope, TokenBinding};
pub use self::limits::Limits;
pub use self::secrets::{Secret, SecretReader, SecretRef};
pub use self::upstream::{OpenAi, Upstream};
