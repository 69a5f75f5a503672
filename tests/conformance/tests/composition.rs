//! The composed component: `examples/consumer` (imports `inference`) plugged with the gateway's
//! `inference` component by `wac plug` (`make components` → build/wasip2/composed.wasm), served
//! by real `spin up` from its own manifest (`examples/consumer/spin.toml`). A person's HTTP call
//! to the consumer reaches the local upstream through the gateway in-process and returns the
//! model's output.

use std::time::{Duration, Instant};

use conformance::spin::{component_path, variables, SpinHost};
use conformance::worker::repo_root;
use conformance::{free_port, keys, secrets, GatewaySpec};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_calls_the_gateway_in_process_and_gets_the_models_output() {
    let component = component_path("composed");
    assert!(component.exists(), "{} is missing: run `make components` first", component.display());
    let upstream_config = local_upstream::Config {
        api_key: secrets::UPSTREAM_API_KEY.to_owned(),
        webhook_secrets: vec![secrets::BASETEN_WEBHOOK_SECRET.to_owned()],
        log_requests: false,
        ..local_upstream::Config::default()
    };
    let upstream = local_upstream::start("127.0.0.1:0", upstream_config).await.unwrap();
    let spec = GatewaySpec::for_upstream(&upstream.url(), free_port());
    let mut env = variables(&spec);
    // In-process calls are authenticated with a gateway key, scoped like any other.
    env.push(("SPIN_VARIABLE_COMPONENT_API_KEY".to_owned(), keys::FULL.to_owned()));
    let dir = tempfile::tempdir().unwrap();
    let manifest = repo_root().join("examples/consumer/spin.toml");
    let host = SpinHost::start(&manifest, spec.port, &dir.path().join("state"), None, env, dir.path()).await.unwrap();
    let base = host.base_url();
    let client = reqwest::Client::new();

    // Sync: the model's output, unchanged.
    let input = json!({"hello": "composed", "n": [1, 2, 3]});
    let r = client.post(format!("{base}/predict/demo")).json(&input).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), input);

    // A gateway refusal comes back as a typed error: unknown model → 404 MODEL_DOES_NOT_EXIST.
    let r = client.post(format!("{base}/predict/nope")).json(&input).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "MODEL_DOES_NOT_EXIST");

    // Async: a durable job; the upstream delivers its result to the consumer's
    // /webhooks/baseten/{id}, which hands it to the gateway (signature checked), so polling
    // the status returns the output.
    let r = client.post(format!("{base}/submit/demo")).json(&json!({"x": 1})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["request_id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s: Value = client.get(format!("{base}/status/{id}")).send().await.unwrap().json().await.unwrap();
        assert_eq!(s["request_id"], id.as_str(), "{s}");
        if s["status"] == "SUCCEEDED" {
            assert_eq!(s["output"], json!({"x": 1}), "{s}");
            break;
        }
        assert!(matches!(s["status"].as_str(), Some("QUEUED" | "IN_PROGRESS")), "{s}");
        assert!(Instant::now() < deadline, "the job never succeeded: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
