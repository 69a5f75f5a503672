//! The conformance suite against the Cloudflare Worker in `wrangler dev` (workerd).
//!
//! Needs the built Worker (`make build-worker`) and `npm install` (wrangler). Run with
//! `cargo test -p conformance --test worker`; one scenario: `... -- worker::sync_predict`.

use conformance::worker::WorkerGateway;
use conformance::{run_suite, Gateway};

fn main() {
    run_suite(
        "worker",
        Box::new(|spec| {
            Box::pin(async move { WorkerGateway::start(spec).await.map(|g| Box::new(g) as Box<dyn Gateway>) })
        }),
    )
}
