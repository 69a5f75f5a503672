//! The callers' webhook receiver: `POST /hook/{name}` on 127.0.0.1, recording every delivery
//! (headers and raw body). Per name it can fail the first N deliveries with 500, or always
//! answer 503. (An endpoint that never answers is a closed port: see `World::closed_port`.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// One delivery as it arrived.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub headers: HeaderMap,
    pub body: Bytes,
    /// What the receiver answered.
    pub answered: u16,
    pub at: Instant,
}

impl Delivery {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a webhook body is JSON")
    }

    /// Checks both signatures independently of the gateway's code; panics naming what is wrong.
    pub fn assert_signed(&self, secret: &str) {
        let body = &self.body[..];
        // Baseten: v1=<hex HMAC-SHA256(secret string bytes, raw body)>.
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        let want = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
        let got = self.header("x-baseten-signature");
        assert!(got.split(',').any(|v| v.trim() == want), "X-BASETEN-SIGNATURE {got:?} does not match {want}");
        // Standard Webhooks: v1,<base64 HMAC-SHA256(base64-decoded key, "{id}.{ts}.{body}")>.
        let key = BASE64.decode(secret.strip_prefix("whsec_").expect("a whsec_ secret")).unwrap();
        let (id, ts) = (self.header("webhook-id"), self.header("webhook-timestamp"));
        assert!(!id.is_empty() && ts.parse::<u64>().is_ok(), "webhook-id {id:?} / webhook-timestamp {ts:?}");
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{id}.{ts}.").as_bytes());
        mac.update(body);
        let want = format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()));
        let got = self.header("webhook-signature");
        assert!(got.split(' ').any(|v| v == want), "webhook-signature {got:?} does not match {want}");
    }
}

#[derive(Debug, Default)]
struct Hook {
    fail_first: usize,
    always: Option<u16>,
    deliveries: Vec<Delivery>,
}

type Hooks = Arc<Mutex<HashMap<String, Hook>>>;

/// A running receiver.
#[derive(Debug)]
pub struct Receiver {
    port: u16,
    hooks: Hooks,
}

impl Receiver {
    pub async fn start() -> Result<Self, String> {
        let hooks: Hooks = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        // Deliveries carry whole outputs: allow up to the gateway's own inbox limit.
        let app = Router::new()
            .route("/hook/{name}", post(deliver))
            .layer(axum::extract::DefaultBodyLimit::max(32 * 1024 * 1024))
            .with_state(Arc::clone(&hooks));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { port, hooks })
    }

    /// `http://127.0.0.1:<port>/hook/{name}`.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/hook/{name}", self.port)
    }

    /// The first `n` deliveries to `name` get a 500.
    pub fn fail_first(&self, name: &str, n: usize) {
        self.hooks.lock().unwrap().entry(name.to_owned()).or_default().fail_first = n;
    }

    /// Every delivery to `name` gets `status`.
    pub fn always(&self, name: &str, status: u16) {
        self.hooks.lock().unwrap().entry(name.to_owned()).or_default().always = Some(status);
    }

    pub fn deliveries(&self, name: &str) -> Vec<Delivery> {
        self.hooks.lock().unwrap().get(name).map(|h| h.deliveries.clone()).unwrap_or_default()
    }
}

async fn deliver(State(hooks): State<Hooks>, Path(name): Path<String>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut hooks = hooks.lock().unwrap();
    let hook = hooks.entry(name).or_default();
    let status = match hook.always {
        Some(s) => s,
        None if hook.deliveries.len() < hook.fail_first => 500,
        None => 200,
    };
    hook.deliveries.push(Delivery { headers, body, answered: status, at: Instant::now() });
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
