//! Webhooks in and out: signature formats, which endpoints may receive, the inbox that
//! keeps the upstream's results, and deliveries to callers.

pub(crate) mod delivery;
pub mod endpoint;
pub(crate) mod inbox;
pub mod signature;
