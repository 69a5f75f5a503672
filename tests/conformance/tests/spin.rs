//! The conformance suite against the Spin component on real `spin up`: the repository's own
//! `spin.toml`, Spin's default (SQLite) key-value store.
//!
//! Needs `make components` and a `spin` on PATH (`make setup`). Run with
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
