//! The sync passthrough (`.../sync/{path}`: the OpenAI-compatible demo server
//! and `echo`), streaming predict, the stream test hooks, and regional hosts.
//!
//! Streams are read chunk by chunk; a held stream is observed by what has
//! arrived (never by how long it took). Reads are bounded by [`DEADLINE`] so a
//! broken hook fails the test instead of hanging it.

use axum::http::StatusCode;
use local_upstream::Config;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::{assert_is_id, config, start, Upstream, DEADLINE};

const CHAT: &str = "/models/demo/production/sync/v1/chat/completions";
const COMPLETIONS: &str = "/models/demo/production/sync/v1/completions";

/// A streamed response being read.
struct Reader {
    resp: reqwest::Response,
    text: String,
}

impl Reader {
    fn new(resp: reqwest::Response) -> Self {
        Self { resp, text: String::new() }
    }

    /// Reads until `done(text so far)` holds or the body ends; `Err` if the body broke.
    async fn read_until(&mut self, done: impl Fn(&str) -> bool) -> Result<(), reqwest::Error> {
        while !done(&self.text) {
            let chunk =
                tokio::time::timeout(DEADLINE, self.resp.chunk()).await.expect("no data before the deadline")?;
            match chunk {
                Some(bytes) => self.text.push_str(std::str::from_utf8(&bytes).unwrap()),
                None => break,
            }
        }
        Ok(())
    }

    async fn read_to_end(&mut self) -> Result<(), reqwest::Error> {
        self.read_until(|_| false).await
    }

    /// The `data:` payloads of the complete events read so far.
    fn events(&self) -> Vec<String> {
        let complete = &self.text[..self.text.rfind("\n\n").map_or(0, |i| i + 2)];
        complete
            .split_terminator("\n\n")
            .map(|event| {
                event.strip_prefix("data: ").unwrap_or_else(|| panic!("not a data event: {event:?}")).to_owned()
            })
            .collect()
    }

    /// The JSON chunks read so far (without `[DONE]`).
    fn chunks(&self) -> Vec<Value> {
        self.events().iter().filter(|e| *e != "[DONE]").map(|e| serde_json::from_str(e).unwrap()).collect()
    }
}

fn content_of(chunk: &Value) -> Option<&str> {
    chunk["choices"][0]["delta"]["content"].as_str().filter(|c| !c.is_empty())
}

async fn stream(up: &Upstream, path: &str, body: Value) -> Reader {
    let resp = up.post(path, &body).await;
    assert_eq!(resp.status(), StatusCode::OK);
    Reader::new(resp)
}

#[tokio::test]
async fn chat_completion_json() {
    let up = start(config()).await;
    let body = json!({
        "model": "any/name",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "hello big world"},
        ],
    });
    let resp = up.post(CHAT, &body).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_is_id(resp.headers()["x-baseten-request-id"].to_str().unwrap());
    let reply: Value = resp.json().await.unwrap();
    let id = reply["id"].as_str().unwrap();
    assert_is_id(id.strip_prefix("chatcmpl-").unwrap());
    assert_eq!(reply["object"], "chat.completion");
    assert!(reply["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(reply["model"], "any/name");
    assert_eq!(
        reply["choices"],
        json!([{
            "index": 0,
            "message": {"role": "assistant", "content": "echo: hello big world"},
            "logprobs": null,
            "finish_reason": "stop",
        }])
    );
    // 2 + 2 + 1 + 3 words in, "echo: " "hello " "big " "world" out.
    assert_eq!(reply["usage"], json!({"prompt_tokens": 8, "completion_tokens": 4, "total_tokens": 12}));

    // max_tokens caps the answer; the model defaults to the route's.
    let body = json!({"messages": [{"role": "user", "content": "a b c"}], "max_tokens": 2});
    let reply: Value = up.post(CHAT, &body).await.json().await.unwrap();
    assert_eq!(reply["model"], "demo");
    assert_eq!(reply["choices"][0]["message"]["content"], "echo: a ");
    assert_eq!(reply["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn chat_errors_have_openai_shape() {
    let up = start(config()).await;
    for (body, param) in [
        (json!({"model": "m"}), json!("messages")),
        (json!({"messages": []}), json!("messages")),
        (json!({"messages": "hi"}), json!("messages")),
        (json!({"messages": [1]}), json!("messages")),
        (json!({"messages": [{"role": "user", "content": "x"}], "stream": "yes"}), json!("stream")),
        (json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}), json!("max_tokens")),
        (json!({"messages": [{"role": "user", "content": "x"}], "cut_after": -1}), json!("cut_after")),
        (json!([1]), Value::Null),
    ] {
        let resp = up.post(CHAT, &body).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body}");
        let err: Value = resp.json().await.unwrap();
        let err = &err["error"];
        assert!(err["message"].is_string(), "{err}");
        assert_eq!(err["type"], "invalid_request_error", "{body}");
        assert_eq!(err["param"], param, "{body}");
        assert!(err.get("code").is_some(), "{err}");
    }
    let resp = up.req(reqwest::Method::POST, CHAT).body("{nope").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn chat_stream_sends_sse_chunks_in_order() {
    let up = start(config()).await;
    let body = json!({
        "model": "m",
        "messages": [{"role": "user", "content": "hello big world"}],
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let resp = up.post(CHAT, &body).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["cache-control"], "no-cache");
    assert!(resp.headers().get("content-length").is_none());
    let mut reader = Reader::new(resp);
    reader.read_to_end().await.unwrap();
    assert!(reader.text.ends_with("data: [DONE]\n\n"), "{}", reader.text);
    let events = reader.events();
    assert_eq!(events.iter().filter(|e| *e == "[DONE]").count(), 1);

    let chunks = reader.chunks();
    assert_eq!(chunks.len(), 1 + 4 + 1 + 1, "{chunks:?}");
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-"), "{id}");
    for chunk in &chunks {
        assert_eq!(chunk["id"], id);
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "m");
        assert_eq!(chunk["created"], chunks[0]["created"]);
    }
    let choice = |i: usize| &chunks[i]["choices"][0];
    assert_eq!(choice(0)["delta"], json!({"role": "assistant", "content": ""}));
    let contents: Vec<&str> = chunks.iter().filter_map(content_of).collect();
    assert_eq!(contents, ["echo: ", "hello ", "big ", "world"]);
    for chunk in &chunks[..5] {
        assert_eq!(chunk["choices"][0]["finish_reason"], Value::Null);
        assert_eq!(chunk["usage"], Value::Null);
    }
    assert_eq!(choice(5)["delta"], json!({}));
    assert_eq!(choice(5)["finish_reason"], "stop");
    assert_eq!(chunks[5]["usage"], Value::Null);
    assert_eq!(chunks[6]["choices"], json!([]));
    assert_eq!(chunks[6]["usage"], json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}));

    // Without include_usage: no usage chunk.
    let body = json!({"messages": [{"role": "user", "content": "x"}], "stream": true});
    let mut reader = stream(&up, CHAT, body).await;
    reader.read_to_end().await.unwrap();
    let chunks = reader.chunks();
    assert_eq!(chunks.len(), 4, "{chunks:?}");
    assert!(chunks.iter().all(|c| c["usage"].is_null() && c["choices"].as_array().unwrap().len() == 1));
    assert_eq!(reader.events().last().unwrap(), "[DONE]");
}

#[tokio::test]
async fn paced_streams_still_send_everything() {
    let up = start(Config { token_interval: std::time::Duration::from_millis(1), ..config() }).await;
    let body = json!({"messages": [{"role": "user", "content": "one two three"}], "stream": true});
    let mut reader = stream(&up, CHAT, body).await;
    reader.read_to_end().await.unwrap();
    assert_eq!(reader.chunks().iter().filter_map(content_of).collect::<String>(), "echo: one two three");
}

#[tokio::test]
async fn hold_waits_for_release_after_the_first_token() {
    let up = start(config()).await;
    let body = json!({
        "messages": [{"role": "user", "content": "hello big world"}],
        "stream": true,
        "hold": "chat-1",
    });
    let mut reader = stream(&up, CHAT, body).await;
    reader.read_until(|text| text.contains("\"content\":\"echo: \"")).await.unwrap();
    reader.read_until(|text| text.ends_with("\n\n")).await.unwrap();
    // The first token was flushed only once the stream stopped at the gate.
    assert_eq!(up.handle.held("chat-1"), 1);
    assert_eq!(up.handle.held("other"), 0);
    let contents: Vec<String> = reader.chunks().iter().filter_map(content_of).map(str::to_owned).collect();
    assert_eq!(contents, ["echo: "]);

    up.handle.release("chat-1");
    reader.read_to_end().await.unwrap();
    assert_eq!(up.handle.held("chat-1"), 0);
    let contents: Vec<String> = reader.chunks().iter().filter_map(content_of).map(str::to_owned).collect();
    assert_eq!(contents, ["echo: ", "hello ", "big ", "world"]);
    assert!(reader.text.ends_with("data: [DONE]\n\n"));

    // A release before the hold counts: the stream runs straight through.
    up.handle.release("early");
    let body = json!({"prompt": "a b", "stream": true, "hold": "early"});
    let mut reader = stream(&up, COMPLETIONS, body).await;
    reader.read_to_end().await.unwrap();
    assert!(reader.text.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn cut_after_breaks_the_body_mid_stream() {
    let up = start(config()).await;
    let body = json!({
        "messages": [{"role": "user", "content": "one two three four"}],
        "stream": true,
        "cut_after": 2,
    });
    let mut reader = stream(&up, CHAT, body).await;
    let result = reader.read_to_end().await;
    assert!(result.is_err(), "the body ended cleanly: {}", reader.text);
    let contents: Vec<String> = reader.chunks().iter().filter_map(content_of).map(str::to_owned).collect();
    assert_eq!(contents, ["echo: ", "one "]);
    assert!(!reader.text.contains("[DONE]"));
    assert!(!reader.text.contains("finish_reason\":\"stop"));

    // cut_after 0 cuts before the first token (after the role event).
    let body = json!({"messages": [{"role": "user", "content": "x"}], "stream": true, "cut_after": 0});
    let mut reader = stream(&up, CHAT, body).await;
    assert!(reader.read_to_end().await.is_err());
    assert!(reader.chunks().iter().all(|c| content_of(c).is_none()), "{}", reader.text);
}

#[tokio::test]
async fn shutdown_ends_a_held_stream() {
    let up = start(config()).await;
    let body = json!({"messages": [{"role": "user", "content": "a b"}], "stream": true, "hold": "never-released"});
    let mut reader = stream(&up, CHAT, body).await;
    reader.read_until(|text| text.contains("\"content\":\"echo: \"")).await.unwrap();
    assert_eq!(up.handle.held("never-released"), 1);
    tokio::time::timeout(DEADLINE, up.handle.shutdown()).await.expect("shutdown waited for the held stream").unwrap();
    assert!(reader.read_to_end().await.is_err());
}

#[tokio::test]
async fn legacy_completions_and_embeddings() {
    let up = start(config()).await;
    let reply: Value = up.post(COMPLETIONS, &json!({"model": "m", "prompt": "say this"})).await.json().await.unwrap();
    assert!(reply["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(reply["object"], "text_completion");
    assert_eq!(reply["model"], "m");
    assert_eq!(
        reply["choices"],
        json!([{"index": 0, "text": "echo: say this", "logprobs": null, "finish_reason": "stop"}])
    );
    assert_eq!(reply["usage"], json!({"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}));

    let body = json!({"prompt": "say this", "stream": true, "stream_options": {"include_usage": true}});
    let mut reader = stream(&up, COMPLETIONS, body).await;
    reader.read_to_end().await.unwrap();
    let chunks = reader.chunks();
    let texts: Vec<&str> = chunks.iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect();
    assert_eq!(texts, ["echo: ", "say ", "this", ""]);
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[4]["choices"], json!([]));
    assert_eq!(chunks[4]["usage"]["completion_tokens"], 3);
    assert!(reader.text.ends_with("data: [DONE]\n\n"));

    let resp = up.post(COMPLETIONS, &json!({"messages": []})).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["param"], "prompt");

    let path = "/models/demo/production/sync/v1/embeddings";
    let reply: Value = up.post(path, &json!({"model": "e", "input": ["a b", "c"]})).await.json().await.unwrap();
    assert_eq!(reply["object"], "list");
    assert_eq!(reply["model"], "e");
    assert_eq!(reply["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));
    let data = reply["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for (i, item) in data.iter().enumerate() {
        assert_eq!(item["object"], "embedding");
        assert_eq!(item["index"], i);
        assert_eq!(item["embedding"].as_array().unwrap().len(), 8);
    }
    let single: Value = up.post(path, &json!({"input": "c"})).await.json().await.unwrap();
    assert_eq!(single["data"][0]["embedding"], data[1]["embedding"], "deterministic per input");
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);
    for bad in [json!({}), json!({"input": []}), json!({"input": [1]})] {
        let resp = up.post(path, &bad).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(resp.json::<Value>().await.unwrap()["error"]["param"], "input");
    }
}

#[tokio::test]
async fn models_health_and_fastapi_errors() {
    let up = start(Config { models: vec!["demo".into(), "llama".into()], ..config() }).await;
    let (code, body) = up.get_json("/models/llama/environments/eu/sync/v1/models").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["object"], "list");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["id"], "llama");
    assert_eq!(data[0]["object"], "model");
    assert_eq!(data[0]["owned_by"], "local-upstream");
    assert!(data[0]["created"].as_u64().unwrap() > 1_700_000_000);

    let resp = up.req(reqwest::Method::GET, "/models/demo/development/sync/health").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_is_id(resp.headers()["x-baseten-request-id"].to_str().unwrap());
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"status": "ok"}));

    for path in ["/models/demo/production/sync/nope", "/models/demo/production/sync/", "/models/demo/production/sync"] {
        let (code, body) = up.get_json(path).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body, json!({"detail": "Not Found"}), "{path}");
    }
    let (code, body) = up.get_json(CHAT).await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body, json!({"detail": "Method Not Allowed"}));
    // Auth and the model list apply as everywhere.
    let resp = up.client.get(format!("{}/models/demo/production/sync/health", up.url)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let (code, body) = up.get_json("/models/nope/production/sync/health").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "NOT_FOUND");
}

#[tokio::test]
async fn echo_describes_the_request() {
    let up = start(config()).await;
    let resp = up
        .req(reqwest::Method::PUT, "/models/demo/production/sync/echo?status=418&x=y%20z")
        .header("content-type", "application/octet-stream")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::IM_A_TEAPOT);
    let sha = hex::encode(Sha256::digest(b"hello"));
    assert_eq!(resp.headers()["cache-control"], "max-age=60");
    assert_eq!(resp.headers()["etag"].to_str().unwrap(), format!("\"{}\"", &sha[..16]));
    assert_is_id(resp.headers()["x-baseten-request-id"].to_str().unwrap());
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({
            "method": "PUT",
            "path": "echo",
            "query": "status=418&x=y%20z",
            "content_type": "application/octet-stream",
            "content_length": "5",
            "transfer_encoding": null,
            "body_bytes": 5,
            "body_sha256": sha,
        })
    );

    let (code, body) = up.get_json("/models/demo/production/sync/echo/a/b").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["method"], "GET");
    assert_eq!(body["path"], "echo/a/b");
    assert_eq!(body["query"], Value::Null);
    assert_eq!(body["body_bytes"], 0);
    assert_eq!(body["body_sha256"], hex::encode(Sha256::digest(b"")));

    for bad in ["status=101", "status=600", "status=x"] {
        let (code, body) = up.get_json(&format!("/models/demo/production/sync/echo?{bad}")).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{bad}");
        assert!(body["detail"].is_string());
    }
}

#[tokio::test]
async fn echo_streams_a_large_chunked_body() {
    let up = start(config()).await;
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 160; // 10 MiB
    let chunk_of = |i: usize| vec![u8::try_from(i % 251).unwrap(); CHUNK];
    let mut want = Sha256::new();
    for i in 0..CHUNKS {
        want.update(chunk_of(i));
    }
    let body = futures_util::stream::iter((0..CHUNKS).map(move |i| Ok::<_, std::io::Error>(chunk_of(i))));
    let resp = up
        .req(reqwest::Method::POST, "/models/demo/production/sync/echo")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["transfer_encoding"], "chunked");
    assert_eq!(body["content_length"], Value::Null);
    assert_eq!(body["body_bytes"], CHUNK * CHUNKS);
    assert_eq!(body["body_sha256"], hex::encode(want.finalize()));
}

#[tokio::test]
async fn streaming_predict_sends_lines() {
    let up = start(config()).await;
    let resp = up.post("/models/demo/production/predict", &json!({"stream": true, "chunks": 3})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert!(resp.headers().get("content-length").is_none());
    assert_eq!(resp.headers()["transfer-encoding"], "chunked");
    assert_is_id(resp.headers()["x-baseten-request-id"].to_str().unwrap());
    assert_eq!(resp.text().await.unwrap(), "chunk 0\nchunk 1\nchunk 2\n");

    let resp = up.post("/chains/demo-chain/production/run_remote", &json!({"stream": true})).await;
    assert_eq!(resp.text().await.unwrap(), (0..5).map(|i| format!("chunk {i}\n")).collect::<String>());

    // hold after the first line, then release.
    let body = json!({"stream": true, "chunks": 4, "hold": "predict-1"});
    let mut reader = stream(&up, "/models/demo/production/predict", body).await;
    reader.read_until(|text| text.ends_with("chunk 0\n")).await.unwrap();
    assert_eq!(reader.text, "chunk 0\n");
    assert_eq!(up.handle.held("predict-1"), 1);
    up.handle.release("predict-1");
    reader.read_to_end().await.unwrap();
    assert_eq!(reader.text, "chunk 0\nchunk 1\nchunk 2\nchunk 3\n");

    // cut_after breaks the body after that many lines.
    let body = json!({"stream": true, "chunks": 4, "cut_after": 2});
    let mut reader = stream(&up, "/models/demo/production/predict", body).await;
    assert!(reader.read_to_end().await.is_err());
    assert_eq!(reader.text, "chunk 0\nchunk 1\n");

    // Failures still win; bad hook fields are 400s.
    let resp = up.post("/models/demo/production/predict", &json!({"stream": true, "fail_status": 500})).await;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    for bad in [json!({"stream": true, "chunks": "3"}), json!({"stream": true, "hold": 1})] {
        let resp = up.post("/models/demo/production/predict", &bad).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    // `stream` other than true is a plain echo.
    let resp = up.post("/models/demo/production/predict", &json!({"stream": false})).await;
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"stream": false}));
}

#[tokio::test]
async fn regional_hosts_and_the_host_prefix() {
    let up = start(Config { chains: vec!["demo-chain".into(), "c1".into()], ..config() }).await;
    let host_req = |method: reqwest::Method, host: &str, path: &str| up.req(method, path).header("host", host);

    // Host header form.
    let resp = host_req(reqwest::Method::POST, "model-demo-staging.api.example.test", "/predict")
        .json(&json!({"via": "regional"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"via": "regional"}));
    let resp =
        host_req(reqwest::Method::GET, "model-demo-staging.localhost:8788", "/sync/v1/models").send().await.unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap()["data"][0]["id"], "demo");

    // The same through `/_host/{label}/...`.
    let resp = up.post("/_host/model-demo-staging/predict", &json!([1])).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let rid = up.submit_to("/_host/model-demo-staging/async_predict", json!({"model_input": 1})).await;
    assert_eq!(up.wait_status(&rid, "SUCCEEDED").await["deployment_id"], "dep-demo-staging");
    let (code, body) = up.get_json("/_host/model-demo-staging/async_queue_status").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["deployment_id"], "dep-demo-staging");
    let resp = up.req(reqwest::Method::POST, "/_host/model-demo-staging/wake").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let (code, body) = up.get_json("/_host/model-demo-staging/sync/health").await;
    assert_eq!((code, body), (StatusCode::OK, json!({"status": "ok"})));
    let body = json!({"messages": [{"role": "user", "content": "hi"}]});
    let reply: Value = up.post("/_host/model-demo-prod/sync/v1/chat/completions", &body).await.json().await.unwrap();
    assert_eq!(reply["choices"][0]["message"]["content"], "echo: hi");
    // A plain model host through the prefix, and chains.
    let resp = up.post("/_host/model-demo/development/predict", &json!({})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = up.post("/_host/chain-c1-staging/run_remote", &json!({})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let (code, body) = up.get_json("/_host/chain-c1-staging/async_queue_status").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["chain_id"], "c1");
    assert_eq!(body["deployment_id"], "dep-c1-staging");
    let resp = up.post("/_host/chain-demo-chain/production/run_remote", &json!({})).await;
    assert_eq!(resp.status(), StatusCode::OK);

    // Not routes: a target path on a regional host, a bare path on a plain one, unknown ids.
    for path in [
        "/_host/model-demo-staging/production/predict",
        "/_host/model-demo/predict",
        "/_host/model-nope-staging/predict",
        "/_host/localhost/production/predict",
    ] {
        let resp = up.post(path, &json!({})).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
    }
}
