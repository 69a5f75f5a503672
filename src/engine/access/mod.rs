//! Who may do what: gateway keys and their scopes, the browser tokens minted from them, and
//! what a request spends of its caller's limits. Scopes only narrow: a token sees at most
//! what its key sees, and spends from its key's limits as well as its own.

pub mod keys;
pub mod limits;
pub mod tokens;
