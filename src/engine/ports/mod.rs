//! What an adapter implements for the engine: storage and outbound HTTP, with the
//! in-memory store every other store is checked against, and the claim protocol that builds a
//! store on a key-value store with only an atomic increment (Spin's).

pub mod claimed_kv;
pub mod http_client;
pub mod store;
pub mod store_contract;
