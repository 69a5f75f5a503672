//! What an adapter implements for the engine: storage and outbound HTTP, with the
//! in-memory store every other store is checked against; and what the engine builds on a
//! key-value store whose one atomic operation is `increment` (`kv`): a store, by the claim
//! protocol (`claimed_kv`, Spin's), and the counters that limit what a caller spends
//! (`counters`).

pub mod claimed_kv;
pub mod counters;
pub mod http_client;
pub mod kv;
pub mod store;
pub mod store_contract;
