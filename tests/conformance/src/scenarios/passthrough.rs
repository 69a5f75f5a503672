//! The sync passthrough (`{target}/sync/{path}`), streaming both ways, regional hosts, and
//! OpenAI-compatible clients, through the model's own server behind `sync/` (the local
//! upstream's demo server: `echo`, `health`, `v1/...`).

use std::sync::Arc;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::SECOND;
use crate::client::{is_request_id, Body, End};
use crate::{keys, Packaging, World};

/// `model-{id}.localhost:{port}`-style host names on the gateway's port.
fn host(w: &World, label: &str) -> String {
    let port = w.api.base.rsplit(':').next().unwrap();
    format!("{label}.localhost:{port}")
}

/// Any method, query string kept, the upstream's status, caching headers and body unchanged,
/// in both address forms; the caller's key never reaches the upstream (it accepts only its own).
pub(super) async fn sync_passthrough_get_and_post_with_query_and_status(w: Arc<World>) {
    let a = w.api.get("/models/demo/production/sync/echo/a/b?x=1&y=two%20words").await;
    let echo = a.expect(200).json();
    assert_eq!(
        (&echo["method"], &echo["path"], &echo["query"]),
        (&json!("GET"), &json!("echo/a/b"), &json!("x=1&y=two%20words")),
        "{echo}"
    );
    assert_eq!(a.header("cache-control"), Some("max-age=60"), "{:?}", a.headers);
    assert!(a.header("etag").is_some_and(|e| e.starts_with('"')), "{:?}", a.headers);
    assert!(a.header("x-baseten-request-id").is_some_and(|id| !id.is_empty()), "{:?}", a.headers);

    let body = br#"{"raw":  true}"#.to_vec();
    let a = w
        .api
        .send(
            "POST",
            "/models/demo/environments/staging/sync/echo?status=201",
            Some(keys::FULL),
            &[],
            Body::Raw(body.clone()),
        )
        .await;
    let echo = a.expect(201).json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["query"], "status=201");
    assert_eq!(echo["content_type"], "application/json");
    assert_eq!(echo["body_bytes"], body.len());
    assert_eq!(echo["body_sha256"], hex::encode(Sha256::digest(&body)), "the body arrives byte for byte");
    // An error status from the model's server is its answer, unchanged.
    let a = w.api.post("/models/demo/production/sync/echo?status=503", json!({"x": 1})).await;
    assert_eq!(a.expect(503).json()["method"], "POST", "the server's own body, not a gateway error");

    for method in ["PUT", "PATCH", "DELETE"] {
        let a = w
            .api
            .send(method, "/models/demo/deployment/dep-x/sync/echo", Some(keys::FULL), &[], Body::Json(json!([1])))
            .await;
        assert_eq!(a.expect(200).json()["method"], method);
    }
    let a = w.api.get("/models/demo/production/sync/health").await;
    assert_eq!(a.expect(200).json(), json!({"status": "ok"}));
    let a = w.api.get("/models/demo/production/sync/no/such/route").await;
    assert_eq!(a.expect(404).json(), json!({"detail": "Not Found"}), "the server's 404, unchanged");

    // Host form.
    let model_host = host(&w, "model-demo");
    let a = w.api.send("GET", "/development/sync/health", Some(keys::FULL), &[("host", &model_host)], Body::None).await;
    assert_eq!(a.expect(200).json(), json!({"status": "ok"}));
    // A key without the `sync` operation may not.
    let a = w.api.send("GET", "/models/demo/production/sync/health", Some(keys::NARROW), &[], Body::None).await;
    a.expect_error(403, "FORBIDDEN");
}

/// `model-{id}-{env}.<host>` with bare paths (the environment is in the host name), and a
/// model whose upstream is itself a regional host (`{env}` in its upstream URL).
pub(super) async fn regional_hosts_speak_predict_async_and_sync(w: Arc<World>) {
    let regional = host(&w, "model-demo-staging");
    let on = |path: &'static str| (path, [("host", regional.as_str())]);
    let (path, headers) = on("/predict");
    let a = w.api.send("POST", path, Some(keys::FULL), &headers, Body::Json(json!({"r": 1}))).await;
    assert_eq!(a.expect(200).json(), json!({"r": 1}));
    assert!(is_request_id(a.header("x-baseten-request-id").unwrap_or_default()), "{:?}", a.headers);

    let (path, headers) = on("/async_predict");
    let body = Body::Json(json!({"model_input": {"regional": true}}));
    let id = w.api.send("POST", path, Some(keys::FULL), &headers, body).await.request_id();
    let done = crate::client::eventually("the regional job succeeds", 30 * SECOND, || async {
        let a = w.api.send("GET", &format!("/async_request/{id}"), Some(keys::FULL), &headers, Body::None).await;
        let s = a.expect(200).json();
        if s["status"] == "SUCCEEDED" {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    })
    .await;
    assert_eq!(done["deployment_id"], "dep-demo-staging", "{done}");
    assert_eq!(done["output"], json!({"regional": true}), "{done}");

    let (path, headers) = on("/sync/health");
    let a = w.api.send("GET", path, Some(keys::FULL), &headers, Body::None).await;
    assert_eq!(a.expect(200).json(), json!({"status": "ok"}));
    let (path, headers) = on("/async_queue_status");
    let a = w.api.send("GET", path, Some(keys::FULL), &headers, Body::None).await;
    assert_eq!(a.expect(200).json()["deployment_id"], "dep-demo-staging");
    // A path-form target on a regional host is no route, as on Baseten.
    let (path, headers) = on("/production/predict");
    w.api.send("POST", path, Some(keys::FULL), &headers, Body::Json(json!(1))).await.expect_error(404, "NOT_FOUND");

    // Model `regional`'s upstream is `model-demo-{env}`: environments only, bare paths upstream.
    let a = w.api.post("/models/regional/environments/eu/predict", json!({"eu": 1})).await;
    assert_eq!(a.expect(200).json(), json!({"eu": 1}));
    let id = w.api.post("/models/regional/environments/eu/async_predict", json!({"model_input": 2})).await.request_id();
    let done = w.api.status_until(&id, 30 * SECOND, "SUCCEEDED", |s| s["status"] == "SUCCEEDED").await;
    assert_eq!(done["deployment_id"], "dep-demo-eu", "{done}");
    let a = w.api.get("/models/regional/environments/eu/sync/echo?q=1").await;
    assert_eq!(a.expect(200).json()["query"], "q=1");
    let a = w.api.post("/models/regional/production/predict", json!(1)).await;
    a.expect_error(404, "NOT_FOUND");
}

/// The text of every `choices[0].delta.content` in a Server-Sent Events body.
fn sse_content(body: &str) -> String {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect()
}

/// A streamed chat completion (and a Truss-style streamed predict) reaches the client as it
/// is made: the test upstream holds everything after the first token until the client has
/// seen that token, so a gateway that buffered would never deliver it.
pub(super) async fn sse_chat_reaches_the_client_before_the_upstream_sends_its_last_event(w: Arc<World>) {
    let cases = [
        ("/models/demo/production/sync/v1/chat/completions", "demo"),
        // The gateway's own OpenAI front door routes by `model`.
        ("/v1/chat/completions", "demo-llm"),
    ];
    for (path, model) in cases {
        let hold = w.unique("sse");
        let body = json!({"model": model, "stream": true, "hold": hold,
                          "messages": [{"role": "user", "content": "one two three"}]});
        let mut s = w.api.open("POST", path, Some(keys::FULL), &[], Body::Json(body)).await;
        assert_eq!(s.status(), 200, "{path}");
        assert!(s.header("content-type").is_some_and(|c| c.starts_with("text/event-stream")), "{path}");
        s.read_until(r#""content":"echo: ""#, 20 * SECOND).await;
        crate::client::eventually("the upstream holds the rest", 10 * SECOND, || async {
            match w.upstream.held(&hold) {
                1 => Ok(()),
                n => Err(format!("{n} held")),
            }
        })
        .await;
        assert!(!s.text().contains("[DONE]"), "{path}: {}", s.text());
        w.upstream.release(&hold);
        assert_eq!(s.read_to_end().await, End::Complete, "{path}");
        assert!(s.text().trim_end().ends_with("data: [DONE]"), "{path}: {}", s.text());
        assert_eq!(sse_content(&s.text()), "echo: one two three", "{path}");
    }

    let hold = w.unique("chunks");
    let body = json!({"stream": true, "chunks": 3, "hold": hold});
    let mut s = w.api.open("POST", "/models/demo/production/predict", Some(keys::FULL), &[], Body::Json(body)).await;
    assert_eq!(s.status(), 200);
    s.read_until("chunk 0\n", 20 * SECOND).await;
    assert!(!s.text().contains("chunk 1"), "{}", s.text());
    w.upstream.release(&hold);
    assert_eq!(s.read_to_end().await, End::Complete);
    assert_eq!(s.text(), "chunk 0\nchunk 1\nchunk 2\n");
}

/// An upstream that fails mid-stream: the client's body ends early, broken off, without the
/// end of stream (nothing is buffered to hide it, and no clean end is faked). That the first
/// events arrive while the upstream still streams is the scenario above's.
pub(super) async fn a_stream_cut_by_the_upstream_ends_early_at_the_client(w: Arc<World>) {
    let body = json!({"model": "demo", "stream": true, "cut_after": 2,
                      "messages": [{"role": "user", "content": "a b c d e f"}]});
    let path = "/models/demo/production/sync/v1/chat/completions";
    let mut s = w.api.open("POST", path, Some(keys::FULL), &[], Body::Json(body)).await;
    assert_eq!(s.status(), 200);
    let end = s.read_to_end().await;
    assert!(matches!(end, End::Broken(_)), "the client must see the body break off: {end:?}: {}", s.text());
    // What arrives is what the upstream sent before the cut, or less of it: a connection that
    // is dropped may lose what was still in flight (the upstream's own buffers included).
    let content = sse_content(&s.text());
    assert!("echo: a ".starts_with(&content), "nothing past the cut arrives: {}", s.text());
    assert!(!s.text().contains("[DONE]"), "{}", s.text());

    let body = json!({"stream": true, "chunks": 10, "cut_after": 3});
    let mut s = w.api.open("POST", "/models/demo/production/predict", Some(keys::FULL), &[], Body::Json(body)).await;
    let end = s.read_to_end().await;
    assert!(matches!(end, End::Broken(_)), "{end:?}: {}", s.text());
    assert!("chunk 0\nchunk 1\nchunk 2\n".starts_with(&s.text()), "nothing past the cut arrives: {}", s.text());
}

/// 50 MB to the model's server, with a length and chunked: it arrives whole, and the
/// gateway's resident memory (all its processes) grows by a small fraction of it.
///
/// On the Worker a body with a length is the runtime's own stream, piped natively; a chunked
/// one must be counted against the limit as it passes, by a reader in the isolate, whose
/// chunks V8 collects late (a plain JavaScript Worker counting in a `TransformStream` grows
/// the same ~115 MB for 50 MB): there, its memory is reported, not bounded.
pub(super) async fn a_50_mb_request_body_streams_through_in_bounded_memory(w: Arc<World>) {
    const SIZE: usize = 50_000_000;
    const BOUND_KIB: u64 = 20 * 1024;
    let body: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    let digest = hex::encode(Sha256::digest(&body));
    let group = w.gateway.process_group().expect("the gateway runs");
    for chunked in [false, true] {
        let (before, _) = crate::group_memory_kib(group);
        assert!(crate::reset_group_peak_memory(group), "the peak of the gateway's processes can be reset");
        let payload = if chunked {
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body.chunks(1 << 16).map(|c| Ok(c.to_vec())).collect();
            reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
        } else {
            reqwest::Body::from(body.clone())
        };
        let url = format!("{}/models/demo/production/sync/echo", w.api.base);
        let a = w.api.http.post(&url).bearer_auth(keys::FULL).body(payload).send().await.unwrap();
        assert_eq!(a.status(), 200, "chunked: {chunked}");
        let echo: Value = a.json().await.unwrap();
        assert_eq!(echo["body_bytes"], SIZE, "chunked: {chunked}: {echo}");
        assert_eq!(echo["body_sha256"], digest, "chunked: {chunked}");
        let expected_length = if chunked { Value::Null } else { json!(SIZE.to_string()) };
        assert_eq!(echo["content_length"], expected_length, "the length goes on when there is one: {echo}");
        let (_, peak) = crate::group_memory_kib(group);
        let grew = peak.saturating_sub(before);
        eprintln!(
            "50 MB body (chunked: {chunked}): gateway peak {peak} KiB, {grew} KiB over its resident {before} KiB"
        );
        if !chunked || w.gateway.packaging() == Packaging::Spin {
            assert!(grew < BOUND_KIB, "chunked: {chunked}: the gateway grew by {grew} KiB for a 48,828 KiB body");
        }
    }
    // Past the sync limit (100 MiB) by its length: refused before the body is read. (Workers:
    // Cloudflare's edge refuses bodies past the plan's limit, 100 MB on Free and Pro, before
    // the Worker runs; locally workerd never answers such a request, so this is Spin's.)
    if w.gateway.packaging() == Packaging::Spin {
        let head = format!(
            "POST /models/demo/production/sync/echo HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
             content-length: 200000000\r\nconnection: close\r\n\r\n",
            keys::FULL
        );
        let answer = tokio::time::timeout(20 * SECOND, crate::client::raw_exchange(&w.api.base, head.as_bytes()))
            .await
            .expect("an answer without the body being sent");
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("PAYLOAD_TOO_LARGE"), "{answer}");
    }
}

/// The OpenAI Python SDK, pointed at a model's `sync/v1` and at the gateway's `/v1`: models
/// list, a completion, the same streamed (with usage), and a bad request that reaches it as
/// the upstream's own error (`tests/clients/openai_sdk.py`).
pub(super) async fn the_openai_sdk_works_through_the_passthrough_and_the_v1_front_door(w: Arc<World>) {
    let root = crate::worker::repo_root();
    let python = root.join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: run `make setup`", python.display());
    let out = tokio::process::Command::new(python)
        .arg(root.join("tests/clients/openai_sdk.py"))
        .args([w.api.base.as_str(), keys::FULL, "demo-llm"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the OpenAI SDK failed:\n{stderr}");
    let lines: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    for (line, base, models) in [(&lines[0], "sync", json!(["demo"])), (&lines[1], "v1", json!(["demo-llm"]))] {
        assert_eq!(line["base"], base);
        assert_eq!(line["models"], models, "{line}");
        assert_eq!(line["content"], "echo: hello from the openai sdk", "{line}");
        assert_eq!(line["streamed"], line["content"], "{line}");
        assert!(line["stream_events"].as_u64().unwrap_or_default() >= 2, "token by token: {line}");
        assert!(line["usage"].as_u64().unwrap_or_default() > 0, "{line}");
        assert_eq!(line["stream_usage"], line["usage"], "{line}");
        assert_eq!(line["bad_request"], json!({"status": 400, "type": "invalid_request_error"}), "{line}");
    }
}

/// `{target}/websocket`: on the Worker, a WebSocket to the model's server through the gateway,
/// opened with the upstream's key (the upstream accepts no other), messages both ways; on
/// Spin, whose wasi:http 0.2 cannot upgrade, a clear 501 with `code` and `message`.
pub(super) async fn websockets_reach_the_model_on_the_worker_and_are_a_clear_501_on_spin(w: Arc<World>) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::{Error as WsError, Message};
    let ws_base = w.api.base.replace("http://", "ws://");
    let connect = |path: &str, key: Option<&str>| {
        let mut request = format!("{ws_base}{path}").into_client_request().unwrap();
        if let Some(key) = key {
            request.headers_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
        }
        tokio_tungstenite::connect_async(request)
    };
    // A refused handshake, read whole (the WebSocket client keeps no body of a refusal).
    let refused = |path: &'static str, key: Option<&'static str>| {
        let headers = [
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        let api = &w.api;
        async move { api.send("GET", path, key, &headers, Body::None).await }
    };
    let path = "/models/demo/production/websocket";
    match w.gateway.packaging() {
        Packaging::Worker => {
            for path in [path, "/chains/demo-chain/environments/staging/websocket"] {
                let (mut socket, response) = connect(path, Some(keys::FULL)).await.unwrap();
                assert_eq!(response.status().as_u16(), 101, "{path}");
                socket.send(Message::text("hello over a socket")).await.unwrap();
                let answer = socket.next().await.expect("an answer").unwrap();
                assert_eq!(answer.into_text().unwrap().as_str(), "echo: hello over a socket", "{path}");
                socket.send(Message::binary(vec![0u8, 1, 2, 255])).await.unwrap();
                let answer = socket.next().await.expect("an answer").unwrap();
                assert_eq!(answer.into_data().as_ref(), [0u8, 1, 2, 255], "{path}");
                socket.close(None).await.unwrap();
            }
            // Without the upgrade, the route says what it is.
            w.api.get(path).await.expect_error(426, "UPGRADE_REQUIRED");
        }
        Packaging::Spin => {
            assert!(matches!(connect(path, Some(keys::FULL)).await, Err(WsError::Http(r)) if r.status() == 501));
            let body = refused(path, Some(keys::FULL)).await.expect_error(501, "NOT_IMPLEMENTED");
            assert!(body["message"].as_str().unwrap_or_default().contains("WebSockets"), "{body}");
        }
    }
    assert!(matches!(connect(path, None).await, Err(WsError::Http(r)) if r.status() == 401));
    refused(path, None).await.expect_error(401, "UNAUTHORIZED");
}
