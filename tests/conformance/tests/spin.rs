//! The conformance suite against the Spin component in the wasmtime test host.
//!
//! Needs `make components` (build/wasip2/spin.wasm). Run with
//! `cargo test -p conformance --test spin`.

use conformance::spin::SpinGateway;
use conformance::{run_suite, Gateway};

fn main() {
    run_suite(
        "spin",
        Box::new(|spec| {
            Box::pin(async move { SpinGateway::start(spec).await.map(|g| Box::new(g) as Box<dyn Gateway>) })
        }),
    )
}
