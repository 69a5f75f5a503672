//! Platform adapters: each reads the clock, randomness and configuration of its platform,
//! builds the store and HTTP client, calls the engine and runs its [`Outcome`](crate::engine::Outcome).
//! Each is compiled only for its target; none makes a product decision.
//!
//! - `worker`: Cloudflare Workers (`wasm32-unknown-unknown`, workers-rs), job records in a
//!   Durable Object. (Issue #3.)
//! - `spin`: Spin / wasi:http (`wasm32-wasip2`, spin-sdk), job records in Spin key-value.
//!   (Issue #4.)

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
mod worker;

#[cfg(all(target_arch = "wasm32", target_os = "wasi", feature = "spin"))]
#[allow(unsafe_code)] // `#[http_component]` expands to the component's unsafe export glue
mod spin;
