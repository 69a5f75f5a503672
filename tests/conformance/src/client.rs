//! The caller's side: a small HTTP client for the gateway, answers with their raw bytes, and
//! [`eventually`], the only way the suite waits.

use std::future::Future;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::Value;

/// A gateway answer, read whole.
#[derive(Debug, Clone)]
pub struct Answer {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics (naming the request) if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{} {} -> {}: body is not JSON ({e}): {}", self.method, self.path, self.status, self.text())
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every answer the gateway makes is one a client generated from Baseten's spec parses:
    /// its error bodies (those with the gateway's `code`) and its status records.
    fn check_against_basetens_schemas(&self) {
        let Ok(body) = serde_json::from_slice::<Value>(&self.body) else { return };
        let what = format!("{} {} -> {}", self.method, self.path, self.status);
        if self.status >= 400 && body.get("code").is_some() {
            crate::baseten_schema::error_response(&body).unwrap_or_else(|e| panic!("{what}: {e}"));
        }
        let path = self.path.split('?').next().unwrap_or_default();
        let is_status_read = self.method == "GET" && path.contains("/async_request/") && !path.ends_with("/usage");
        if self.status == 200 && is_status_read && body.get("status").is_some() {
            crate::baseten_schema::status_record(&body).unwrap_or_else(|e| panic!("{what}: {e}"));
        }
    }

    /// Asserts the status, naming the request and showing the body when it differs.
    pub fn expect(&self, status: u16) -> &Self {
        assert_eq!(
            self.status,
            status,
            "{} {}: expected {status}, got {}: {}",
            self.method,
            self.path,
            self.status,
            self.text()
        );
        self
    }

    /// Asserts a platform error: `status`, JSON `code` and a non-empty `message`, with
    /// `error` / `error_code` mirroring them (for Baseten SDK clients).
    pub fn expect_error(&self, status: u16, code: &str) -> Value {
        self.expect(status);
        let body = self.json();
        let what = format!("{} {} -> {}: {body}", self.method, self.path, self.status);
        assert_eq!(body["code"], code, "{what}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "message missing: {what}");
        assert_eq!(body["error"], body["message"], "error mirrors message: {what}");
        let baseten = body["error_code"].as_str().unwrap_or_default();
        assert!(crate::baseten_schema::ERROR_CODES.contains(&baseten), "error_code is Baseten's: {what}");
        body
    }

    /// The `request_id` of a 201 submit answer.
    pub fn request_id(&self) -> String {
        self.expect(201);
        let id = self.json()["request_id"].as_str().unwrap_or_default().to_owned();
        assert!(is_request_id(&id), "request_id must be 32 lowercase hex characters: {}", self.text());
        id
    }
}

pub fn is_request_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A request body: none, JSON, or exact bytes.
#[derive(Debug, Clone)]
pub enum Body {
    None,
    Json(Value),
    Raw(Vec<u8>),
}

/// The gateway's HTTP client.
#[derive(Debug, Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(base: String) -> Self {
        let http =
            reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(60)).build().expect("an HTTP client");
        Self { base, http }
    }

    /// Sends one request: `key` becomes `Authorization: Bearer <key>`; `headers` are added.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Answer {
        let Streamed { response, .. } = self.open(method, path, key, headers, body).await;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap_or_else(|e| panic!("{method} {path}: body: {e}")).to_vec();
        let answer = Answer { method: method.to_owned(), path: path.to_owned(), status, headers, body };
        answer.check_against_basetens_schemas();
        answer
    }

    /// Sends one request like [`Api::send`] and returns once the head has arrived; the body is
    /// read as it comes with [`Streamed`].
    pub async fn open(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Streamed {
        let response = self.request(method, path, key, headers, body).send().await;
        let response = response.unwrap_or_else(|e| panic!("{method} {path}: no answer: {e}"));
        Streamed { what: format!("{method} {path}"), response, received: Vec::new() }
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Body,
    ) -> reqwest::RequestBuilder {
        let url = format!("{}{path}", self.base);
        let m = Method::from_bytes(method.as_bytes()).expect("a valid method");
        let mut req = self.http.request(m, &url);
        if let Some(key) = key {
            req = req.header("authorization", format!("Bearer {key}"));
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        match body {
            Body::None => req,
            Body::Json(v) => req.header("content-type", "application/json").body(v.to_string()),
            Body::Raw(bytes) => req.header("content-type", "application/json").body(bytes),
        }
    }

    /// POST JSON with the full-scope key.
    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.send("POST", path, Some(crate::keys::FULL), &[], Body::Json(body)).await
    }

    /// GET with the full-scope key.
    pub async fn get(&self, path: &str) -> Answer {
        self.send("GET", path, Some(crate::keys::FULL), &[], Body::None).await
    }

    /// Async submit to `/models/demo/{target}/async_predict`; returns the request id.
    pub async fn submit(&self, target: &str, body: Value) -> String {
        self.post(&format!("/models/demo/{target}/async_predict"), body).await.request_id()
    }

    /// The status record of `id` (200 asserted).
    pub async fn status(&self, id: &str) -> Value {
        self.get(&format!("/async_request/{id}")).await.expect(200).json()
    }

    /// Queue counts of model `demo` at `target` (200 asserted).
    pub async fn queue(&self, target: &str) -> Value {
        self.get(&format!("/models/demo/{target}/async_queue_status")).await.expect(200).json()
    }

    /// Polls the status of `id` until `done` holds for it; returns that record.
    pub async fn status_until(&self, id: &str, timeout: Duration, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        eventually(what, timeout, || async {
            let s = self.status(id).await;
            if done(&s) {
                Ok(s)
            } else {
                Err(format!("status record: {s}"))
            }
        })
        .await
    }
}

/// An answer whose body is read as it arrives.
#[derive(Debug)]
pub struct Streamed {
    what: String,
    response: reqwest::Response,
    /// Everything read so far.
    pub received: Vec<u8>,
}

/// How a streamed body ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The body was complete (for chunked bodies: the terminating chunk arrived).
    Complete,
    /// The connection broke off mid-body; the error as the client saw it.
    Broken(String),
}

impl Streamed {
    pub fn status(&self) -> u16 {
        self.response.status().as_u16()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.response.headers().get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.received).into_owned()
    }

    /// Reads until what was received contains `needle`; panics if the body ends first or
    /// nothing completes it within `deadline` (a bound, not a timing assertion).
    pub async fn read_until(&mut self, needle: &str, deadline: Duration) {
        let read = async {
            while !self.text().contains(needle) {
                match self.response.chunk().await {
                    Ok(Some(chunk)) => self.received.extend_from_slice(&chunk),
                    Ok(None) => return Err("the body ended".to_owned()),
                    Err(e) => return Err(format!("the body broke off: {e}")),
                }
            }
            Ok(())
        };
        match tokio::time::timeout(deadline, read).await {
            Ok(Ok(())) => {}
            Ok(Err(why)) => panic!("{}: {why} before {needle:?} arrived; received: {}", self.what, self.text()),
            Err(_) => panic!(
                "{}: {needle:?} did not arrive within {:.0} s; received: {}",
                self.what,
                deadline.as_secs_f64(),
                self.text()
            ),
        }
    }

    /// Reads the rest of the body; how it ended.
    pub async fn read_to_end(&mut self) -> End {
        loop {
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.received.extend_from_slice(&chunk),
                Ok(None) => return End::Complete,
                Err(e) => return End::Broken(format!("{e:?}")),
            }
        }
    }
}

/// Sends `bytes` as they are on a new connection to `base` (`http://host:port`) and returns
/// everything the server answers until it closes the connection.
pub async fn raw_exchange(base: &str, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("a connection to the gateway");
    stream.write_all(bytes).await.expect("the request head is sent");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// Polls `f` every 100 ms until it returns `Ok`, or panics after `timeout` with the last error.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {:.1} s waiting for {what}; last: {last}", timeout.as_secs_f64())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
