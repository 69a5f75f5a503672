//! Test harness: an in-process server, an HTTP client and a webhook receiver.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use local_upstream::{Config, ServerHandle};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

pub const KEY: &str = "upstream-dev-key";
pub const SECRET: &str = "local-upstream-webhook-secret";
/// How long any poll waits before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A quiet configuration with fast webhook retries.
pub fn config() -> Config {
    Config {
        webhook_retry_gap: Duration::from_millis(10),
        webhook_timeout: Duration::from_secs(5),
        log_requests: false,
        ..Config::default()
    }
}

pub struct Upstream {
    pub url: String,
    pub client: reqwest::Client,
    pub handle: ServerHandle,
}

pub async fn start(config: Config) -> Upstream {
    let handle = local_upstream::start("127.0.0.1:0", config).await.unwrap();
    Upstream { url: handle.url(), client: reqwest::Client::new(), handle }
}

impl Upstream {
    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.url)).header("authorization", format!("Api-Key {KEY}"))
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.req(reqwest::Method::POST, path).json(body).send().await.unwrap()
    }

    pub async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let resp = self.req(reqwest::Method::GET, path).send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap())
    }

    /// Submits to `/models/demo/production/async_predict`; returns the request id.
    pub async fn submit(&self, body: Value) -> String {
        self.submit_to("/models/demo/production/async_predict", body).await
    }

    pub async fn submit_to(&self, path: &str, body: Value) -> String {
        let resp = self.post(path, &body).await;
        assert_eq!(resp.status(), StatusCode::CREATED, "{path} {body}");
        let json: Value = resp.json().await.unwrap();
        let id = json["request_id"].as_str().unwrap().to_owned();
        assert_is_id(&id);
        id
    }

    /// The status record of a request of model `demo`.
    pub async fn status(&self, request_id: &str) -> Value {
        let (code, json) = self.get_json(&format!("/models/demo/async_request/{request_id}")).await;
        assert_eq!(code, StatusCode::OK, "{json}");
        json
    }

    pub async fn cancel(&self, request_id: &str) -> (StatusCode, Value) {
        let resp = self
            .req(reqwest::Method::DELETE, &format!("/models/demo/async_request/{request_id}"))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap())
    }

    /// Polls the status record until `done` holds (fails after [`DEADLINE`]).
    pub async fn wait_for(&self, request_id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let record = self.status(request_id).await;
            if done(&record) {
                return record;
            }
            assert!(Instant::now() < deadline, "timed out; last record: {record}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `status` equals `want`.
    pub async fn wait_status(&self, request_id: &str, want: &str) -> Value {
        self.wait_for(request_id, |r| r["status"] == want).await
    }

    /// Waits until the request's webhook outcome is settled (not PENDING) and
    /// its status is past QUEUED/IN_PROGRESS.
    pub async fn wait_settled(&self, request_id: &str) -> Value {
        self.wait_for(request_id, |r| {
            r["webhook_status"] != "PENDING" && r["status"] != "QUEUED" && r["status"] != "IN_PROGRESS"
        })
        .await
    }
}

pub fn assert_is_id(id: &str) {
    assert_eq!(id.len(), 32, "{id}");
    assert!(id.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')), "{id}");
}

/// One webhook delivery attempt as the receiver saw it.
#[derive(Debug)]
pub struct Delivery {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Delivery {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).unwrap().to_str().unwrap()
    }
}

/// How the receiver answers.
#[derive(Debug, Default, Clone, Copy)]
pub struct Behavior {
    /// Answer 500 to this many first attempts.
    pub fail_first: usize,
    /// Hang (longer than the test's webhook timeout) on this many first attempts.
    pub hang_first: usize,
}

/// A webhook receiver on 127.0.0.1:0 that records every attempt.
pub struct Receiver {
    pub url: String,
    rx: mpsc::UnboundedReceiver<Delivery>,
}

impl Receiver {
    pub async fn start(behavior: Behavior) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let seen = Arc::new(AtomicUsize::new(0));
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let tx = tx.clone();
                let seen = Arc::clone(&seen);
                async move {
                    let n = seen.fetch_add(1, Ordering::SeqCst);
                    tx.send(Delivery { headers, body }).unwrap();
                    if n < behavior.hang_first {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    if n < behavior.fail_first {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, rx }
    }

    /// The next delivery attempt (fails after [`DEADLINE`]).
    pub async fn next(&mut self) -> Delivery {
        tokio::time::timeout(DEADLINE, self.rx.recv()).await.expect("no webhook delivery before the deadline").unwrap()
    }

    /// Asserts nothing else was delivered so far.
    pub fn assert_empty(&mut self) {
        if let Ok(d) = self.rx.try_recv() {
            panic!("unexpected delivery: {}", String::from_utf8_lossy(&d.body));
        }
    }
}
