//! The repository's `runtime-config/production.toml` on real Spin: with it, Spin itself
//! refuses outbound connections to non-globally-routable addresses, after name resolution, so
//! a public name that resolves to a private address reaches nothing either.
//!
//! Two hosts of the repository's `spin.toml` against one local upstream on loopback (a
//! private address): one with the shipped file as it is, one without. The same calls that
//! work through the second reach nothing through the first, and the upstream never sees them.
//!
//! Needs `make components` and `spin` on PATH (`make setup`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use conformance::client::{Api, Body};
use conformance::spin::{variables, SpinHost};
use conformance::worker::repo_root;
use conformance::{free_port, keys, secrets, GatewaySpec};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_shipped_production_runtime_config_blocks_private_networks() {
    let dir = tempfile::Builder::new().prefix("spin-egress-").tempdir().unwrap();
    let upstream = local_upstream::start(
        "127.0.0.1:0",
        local_upstream::Config {
            api_key: secrets::UPSTREAM_API_KEY.to_owned(),
            webhook_secrets: vec![secrets::BASETEN_WEBHOOK_SECRET.to_owned()],
            log_requests: false,
            ..local_upstream::Config::default()
        },
    )
    .await
    .unwrap();
    let spec = GatewaySpec::for_upstream(&upstream.url(), free_port());
    let manifest = repo_root().join("spin.toml");
    let production = repo_root().join("runtime-config/production.toml");
    let start = |name: &str, runtime_config: Option<&std::path::Path>| {
        let state = dir.path().join(name);
        let (manifest, vars, logs) = (manifest.clone(), variables(&spec), dir.path().to_owned());
        let runtime_config = runtime_config.map(std::path::Path::to_owned);
        async move { SpinHost::start(&manifest, free_port(), &state, runtime_config.as_deref(), vars, &logs).await.unwrap() }
    };
    let open = start("open", None).await;
    let blocked = start("blocked", Some(&production)).await;

    for (host, reachable) in [(&open, true), (&blocked, false)] {
        let api = Api::new(host.base_url());
        let dep = format!("egress-{}", host.base_url().rsplit(':').next().unwrap());
        // Sync: the upstream answers, or the gateway says it could not be reached.
        let path = format!("/models/demo/deployment/{dep}/predict");
        let answer = api.send("POST", &path, Some(keys::FULL), &[], Body::Json(json!({"hello": 1}))).await;
        if reachable {
            assert_eq!(answer.expect(200).json(), json!({"hello": 1}));
        } else {
            let body = answer.expect_error(502, "UPSTREAM_UNREACHABLE");
            assert!(!body.to_string().contains("127.0.0.1"), "no network detail for the caller: {body}");
        }
        // Async: accepted and kept either way; only the open host's reaches the upstream.
        let id = api.submit(&format!("deployment/{dep}"), json!({"model_input": {"n": 1}})).await;
        let s = api
            .status_until(&id, Duration::from_secs(20), "a submission attempt", |s| {
                s["usage"]["attempts"].as_u64() >= Some(1)
            })
            .await;
        assert_eq!(upstream.accepted(&dep), usize::from(reachable), "{s}");
        if !reachable {
            assert_eq!(s["status"], "QUEUED", "kept, to be retried until its time in queue runs out: {s}");
        }
    }
    open.kill();
    blocked.kill();
}
