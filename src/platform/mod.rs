//! Platform adapters: each reads the clock, randomness and configuration of its platform,
//! builds the store and HTTP client, calls the engine and runs its [`Outcome`](crate::engine::Outcome).
//! Each is compiled only for its target; none makes a product decision.
//!
//! - `cloudflare`: Cloudflare Workers (`wasm32-unknown-unknown`, workers-rs), job records in a
//!   fixed set of Durable Objects (the one `cloudflare::job_object` names).
//! - `spin`: Spin / wasi:http (`wasm32-wasip2`, spin-sdk, feature `spin`), job records in
//!   wasi:keyvalue.
//! - `component`: the `inference` WIT export (`wasm32-wasip2`, feature `component`) for other
//!   components, on the same store and HTTP client as `spin` (`wasi`).

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
mod cloudflare;

#[cfg(all(target_arch = "wasm32", target_os = "wasi", any(feature = "spin", feature = "component")))]
mod wasi;

#[cfg(all(target_arch = "wasm32", target_os = "wasi", feature = "spin"))]
#[allow(unsafe_code)] // `#[http_component]` expands to the component's unsafe export glue
mod spin;

#[cfg(all(target_arch = "wasm32", target_os = "wasi", feature = "component"))]
#[allow(unsafe_code)] // wit-bindgen's `export!` expands to the component's unsafe export glue
mod component;
