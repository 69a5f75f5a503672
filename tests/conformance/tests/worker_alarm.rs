//! A Durable Object's alarm that meets a configuration it cannot use (a bad deploy) keeps the
//! job's schedule: once the configuration is fixed, the job's due work still happens. Runs the
//! built Worker in `wrangler dev` (workerd), like the conformance suite.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use conformance::client::{eventually, Api};
use conformance::receiver::Receiver;
use conformance::worker::WorkerGateway;
use conformance::{free_port, secrets, Gateway, GatewaySpec};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_alarm_under_a_broken_configuration_keeps_the_jobs_schedule() {
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
    let receiver = Receiver::start().await.unwrap();
    let mut spec = GatewaySpec::for_upstream(&upstream.url(), free_port());
    // The second delivery attempt comes 15 s (± 20 %) after the first: time to deploy a
    // broken configuration before its alarm fires.
    let mut doc: Value = serde_json::from_str(&spec.config_json).unwrap();
    doc["webhooks"]["delivery"] = json!({"max_attempts": 4, "initial_delay_seconds": 15, "max_delay_seconds": 15});
    spec.config_json = doc.to_string();
    let gateway = WorkerGateway::start(spec.clone()).await.unwrap();
    let api = Api::new(gateway.base_url());

    receiver.fail_first("alarm", 1);
    let id = api.submit("production", json!({"model_input": 1, "webhook_endpoint": receiver.url("alarm")})).await;
    eventually("the first (failed) delivery", Duration::from_secs(20), || async {
        if receiver.deliveries("alarm").len() == 1 {
            Ok(())
        } else {
            Err("none yet".to_owned())
        }
    })
    .await;

    // A bad deploy: the retry's alarm fires while the configuration cannot be used.
    gateway.redeploy(r#"{"public_base_url": 42}"#).await.unwrap();
    eventually("the retry's alarm to meet the broken configuration", Duration::from_secs(40), || async {
        if gateway.logged("alarm: ") {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    })
    .await;
    assert_eq!(receiver.deliveries("alarm").len(), 1, "nothing delivered under a broken configuration");

    // Fixed: the job's schedule is still there, and the retry is delivered.
    gateway.redeploy(&spec.config_json).await.unwrap();
    eventually("the retry after the fix", Duration::from_secs(40), || async {
        if receiver.deliveries("alarm").len() == 2 {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    })
    .await;
    let s = api.status(&id).await;
    assert_eq!(s["webhook_status"], "SUCCEEDED", "{s}");
}
