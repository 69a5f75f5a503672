//! Who may do what: gateway keys and their scopes, and the browser tokens minted from them.
//! Scopes only narrow: a token sees at most what its key sees.

pub mod keys;
pub mod tokens;
