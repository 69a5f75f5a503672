//! The demo page in headless Chromium (Debian's `chromium`, driven by playwright-core) against
//! the Worker in workerd with the local upstream, as in the quick start: a person loads the
//! page, runs a sync predict, watches a streamed chat answer render token by token, watches an
//! async job reach SUCCEEDED, cancels a queued job. Then
//! a page on another origin tries the gateway with a token not minted for it, and the browser's
//! own CORS check refuses it; with a token minted for it with a limit of one request a minute,
//! the page reads its 429's `Retry-After` and `RateLimit` fields through CORS. Screenshots land
//! in target/browser-artifacts/.
//!
//! Needs `make build-worker`, `npm install` and /usr/bin/chromium (`make setup` installs all).

use std::time::Duration;

use axum::response::Html;
use conformance::worker::{repo_root, WorkerGateway};
use conformance::{free_port, keys, secrets, Gateway, GatewaySpec};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_uses_the_demo_page_and_another_origin_is_refused() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(std::path::Path::new(&chromium).exists(), "{chromium} is missing: run `make setup`");
    let upstream = local_upstream::start(
        "127.0.0.1:0",
        local_upstream::Config {
            api_key: secrets::UPSTREAM_API_KEY.to_owned(),
            webhook_secrets: vec![secrets::BASETEN_WEBHOOK_SECRET.to_owned()],
            ..local_upstream::Config::default()
        },
    )
    .await
    .unwrap();
    let spec = GatewaySpec::for_upstream(&upstream.url(), free_port());
    let gateway = WorkerGateway::start(spec).await.unwrap();
    let base = gateway.base_url();

    // The backend's part: mint a browser token for the page's origin (the gateway's own).
    let mint = |body: Value| {
        let url = format!("{base}/browser_tokens");
        async move {
            let minted: Value = reqwest::Client::new()
                .post(url)
                .bearer_auth(keys::FULL)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            minted["token"].as_str().expect("a token").to_owned()
        }
    };
    let token = mint(
        json!({"models": ["demo"], "operations": ["predict", "async_predict", "status", "cancel", "wake", "sync"],
                            "origins": [base], "ttl_seconds": 300}),
    )
    .await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cross_origin = format!("http://{}", listener.local_addr().unwrap());
    let cross_url = format!("{cross_origin}/");
    // A token for that other origin, with a limit of one request a minute.
    let limited = mint(json!({"models": ["demo"], "operations": ["predict"], "origins": [cross_origin],
                              "limits": {"requests_per_minute": 1}}))
    .await;

    // Another origin's page that tries the gateway with the first token, then spends its own
    // limited one until refused (a minute that turns between two calls lets one more pass).
    let cross_page = format!(
        r#"<!doctype html><p id="result"></p><p id="limited"></p><script>
const predict = token => fetch({gateway:?} + "/models/demo/production/predict", {{ method: "POST",
  headers: {{ Authorization: "Bearer " + token, "Content-Type": "application/json" }}, body: "{{}}" }});
predict({token:?})
  .then(r => r.text()).then(t => document.getElementById("result").textContent = "read: " + t)
  .catch(e => document.getElementById("result").textContent = "blocked: " + e.name);
(async () => {{
  for (let i = 0; i < 3; i++) {{
    const r = await predict({limited:?});
    if (r.status === 429) {{
      const h = name => r.headers.get(name);
      document.getElementById("limited").textContent = `429 retry-after=${{h("retry-after")}} ` +
        `policy=${{h("ratelimit-policy")}} ratelimit=${{h("ratelimit")}} request-id=${{h("x-request-id") !== null}}`;
      return;
    }}
  }}
  document.getElementById("limited").textContent = "never refused";
}})().catch(e => document.getElementById("limited").textContent = "failed: " + e);
</script>"#,
        gateway = base,
        token = token,
        limited = limited
    );
    // The test's control: the page script asks how many streams the upstream holds at a gate
    // (the chat's first token is on screen by then), and releases it.
    let upstream = std::sync::Arc::new(upstream);
    let control = std::sync::Arc::clone(&upstream);
    let release = move |axum::extract::Path(gate): axum::extract::Path<String>| async move {
        let held = control.held(&gate);
        control.release(&gate);
        axum::Json(json!({ "held": held }))
    };
    let app = axum::Router::new()
        .route("/", axum::routing::get(move || async move { Html(cross_page) }))
        .route("/release/{gate}", axum::routing::post(release));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let root = repo_root();
    let artifacts = root.join("target/browser-artifacts");
    let node = root.join("node_modules/.bin/node");
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(&node)
            .current_dir(&root)
            .env("CHROMIUM", &chromium)
            .arg("tests/browser/demo.mjs")
            .args([&base, &token, &cross_url, &artifacts.display().to_string(), &format!("{cross_url}release/")])
            .output(),
    )
    .await
    .expect("the browser run finishes within 120 s")
    .expect("node runs");
    print!("{}", String::from_utf8_lossy(&output.stdout));
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    server.abort();
    gateway.stop();
    assert!(output.status.success(), "the browser test failed ({})", output.status);
    assert!(artifacts.join("demo.png").is_file());
}
