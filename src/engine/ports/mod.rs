//! What an adapter implements for the engine: storage and outbound HTTP, with the
//! in-memory store every other store is checked against.

pub mod http_client;
pub mod store;
pub mod store_contract;
