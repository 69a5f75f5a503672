//! # edge-predict
//!
//! A Baseten-compatible inference gateway for serverless edges, written once in Rust and
//! shipped as WebAssembly: a Spin / wasi:http component, a Cloudflare Worker, and a WIT
//! interface for other components. Existing Baseten clients change only their base URL.
//!
//! What it adds to Baseten's inference API: a job record that is durable before the caller
//! gets its `request_id`, idempotent submits (`Idempotency-Key`), a signature-checked inbox
//! for upstream webhooks that keeps results, results by polling, signed and retried webhook
//! fan-out, usage on every record, and browser-safe access (CORS, scoped keys).
//!
//! What it does not do: run models, queue work itself (the upstream queues), or hold
//! secrets in its configuration document (it names them; the platform stores them).
//!
//! ```text
//!  client ──HTTP──▶ platform adapter ──http::Request + Ctx{now, entropy}──▶ engine
//!                   (worker | spin)     ◀── Outcome{response, wake_at} ───┘  │
//!                        │                                                   │ Store (versioned
//!                        └── at wake_at: Engine::sweep ──────────────────────┘ get, conditional
//!                                                                              put), HttpClient
//! ```
//!
//! Modules:
//! - [`engine`]: all product logic, sans-IO, in layers that import only down
//!   (`tests/layers.rs` checks it): [`engine::base`] (errors, time, the API's nouns, ids,
//!   hashing; imports nothing else), [`engine::ports`] (the store and HTTP client adapters
//!   implement, and the claim protocol that makes a store of Spin's key-value store),
//!   [`engine::config`], [`engine::access`] (keys, browser tokens),
//!   [`engine::surface`] (the route, the request pipeline, CORS, the long-poll),
//!   `engine::sync` (predict and `sync/{path}` relayed, the OpenAI-compatible front door),
//!   [`engine::webhooks`] (signatures, allowed endpoints, the inbox, deliveries) and
//!   [`engine::jobs`] (the record and its state machines, the status view, submit, cancel, reconcile, sweep).
//! - `platform`: thin adapters, each compiled only for its target: `cloudflare` (Cloudflare
//!   Workers, jobs in a fixed set of Durable Objects), `spin` (wasi:http component, feature `spin`),
//!   `component` (the `inference` WIT export, feature `component`), and `wasi`, what the last
//!   two share (wasi:keyvalue under the claim protocol, wasi:http client, Spin variables).

#![deny(unsafe_code)]

pub mod engine;
mod platform;
