//! Spin / wasi:http adapter (spin-sdk 5.2, WASIp2). Compiled for `wasm32-wasip2` with the
//! `spin` feature; exports `wasi:http/incoming-handler@0.2.0`.
//!
//! Spin has no alarms and no work after a request, so the response is sent first and then, in
//! the same invocation, the engine's sweep runs if one is due ([`Engine::sweep_if_due`]) after
//! a request that used the store; `POST /_sweep` (a key with the `sweep` operation) runs it on
//! demand for a cron trigger or any scheduler. A request refused, or placed stateless, opens
//! no store and runs no sweep.

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response};
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

use super::wasi::{
    after_response, entropy, load_config, now, open_bucket, open_store, respond_bytes, WasiBody, WasiHttp, WasiStream,
    WasiTimer,
};
use crate::engine::ports::http_client::Timed;
use crate::engine::surface::log::{body_size, content_length, refusal_line};
use crate::engine::{Admission, Admitted, Body, Ctx, Engine, Error, Measured, NoStore, Note, Placement, Timestamp};

/// The request's head (method, URI, headers, Host), with an empty body.
fn request_head(incoming: &IncomingRequest) -> Request<Bytes> {
    let mut request = Request::new(Bytes::new());
    *request.method_mut() = incoming.method().into();
    *request.uri_mut() = incoming.path_with_query().unwrap_or_default().parse().unwrap_or_default();
    for (name, value) in incoming.headers().entries() {
        if let (Ok(name), Ok(value)) = (http::HeaderName::try_from(name), http::HeaderValue::from_bytes(&value)) {
            request.headers_mut().append(name, value);
        }
    }
    // wasi:http carries the Host in the request's authority, not among its headers; the
    // engine reads it for the host form (`model-{id}.<gateway-host>`).
    if let Some(authority) = incoming.authority() {
        if let Ok(host) = http::HeaderValue::from_str(&authority) {
            request.headers_mut().entry(http::header::HOST).or_insert(host);
        }
    }
    request
}

/// The body, read chunk by chunk up to `limit` bytes.
async fn read_body(incoming: IncomingRequest, limit: usize) -> Result<Bytes, Error> {
    let mut body = Vec::new();
    let mut stream = std::pin::pin!(incoming.into_body_stream());
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| Error::MalformedJson { message: format!("request body could not be read: {e}") })?;
        if body.len() + chunk.len() > limit {
            return Err(Error::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

/// The caller sees the whole response before the sweep that may follow.
fn send_response(out: ResponseOutparam, response: Response<Bytes>) {
    let (parts, body) = response.into_parts();
    respond_bytes(out.into_inner(), &parts, &body);
}

/// Answers the caller: a body in hand at once, an upstream's as it arrives.
fn respond(out: ResponseOutparam, response: Response<Body<WasiBody>>) {
    let (parts, body) = response.into_parts();
    match body {
        Body::Full(bytes) => send_response(out, Response::from_parts(parts, bytes)),
        Body::Upstream(body) => body.respond(out.into_inner(), &parts),
    }
}

/// One request's clock, and what it measured so far: its log line and `Server-Timing`.
struct Meter<'c> {
    began: std::time::Instant,
    received_at: Timestamp,
    http: &'c Timed<'c, WasiHttp>,
    bytes_in: Option<u64>,
}

impl Meter<'_> {
    /// Sends the answer with its `Server-Timing`, then prints the request's log line.
    fn send(
        &self,
        out: ResponseOutparam,
        mut response: Response<Body<WasiBody>>,
        line: impl FnOnce(&Measured) -> String,
    ) {
        let bytes_out = body_size(&response);
        let measured = Measured {
            received_at: self.received_at,
            duration_ms: self.began.elapsed().as_secs_f64() * 1000.0,
            upstream_ms: self.http.waited_ms(),
            upstream_status: self.http.status(),
            bytes_in: self.bytes_in,
            bytes_out,
        };
        response.headers_mut().insert("server-timing", measured.server_timing());
        respond(out, response);
        println!("{}", line(&measured));
    }

    /// An answer to an admitted request refused with `e`.
    fn refuse(&self, out: ResponseOutparam, admitted: &Admitted, e: &Error) {
        let note = Note { error_code: Some(e.code()), ..Note::default() };
        let response = admitted.refusal(e).map(Body::Full);
        let status = response.status();
        self.send(out, response, |m| admitted.log_line(status, &note, m));
    }
}

#[http_component]
async fn handle(incoming: IncomingRequest, out: ResponseOutparam) {
    let began = std::time::Instant::now();
    let clock = move || began.elapsed().as_secs_f64() * 1000.0;
    let http = Timed::new(WasiHttp, &clock);
    let mut meter = Meter { began, received_at: now(), http: &http, bytes_in: None };
    let mut request = request_head(&incoming);
    meter.bytes_in = content_length(request.headers());
    let config = match load_config() {
        Ok(c) => c,
        Err(e) => {
            // The operator's log names the whole field; the caller is told its top level only.
            eprintln!("{e}");
            let response = e.to_response().map(Body::Full);
            let status = response.status();
            return meter.send(out, response, |m| refusal_line(status, e.code(), m));
        }
    };
    // Credentials and announced size first: a refused request reads no body, opens no store.
    let gate = Engine::new(&config, &NoStore, &http);
    let entropy = entropy();
    let (mut admitted, streamed) = match gate.admit(&request, now(), entropy) {
        Admission::Refuse(e) => {
            let response = gate.refusal(&request, &e, now()).map(Body::Full);
            let status = response.status();
            return meter.send(out, response, |m| refusal_line(status, e.code(), m));
        }
        Admission::Stream(admitted) => (admitted, true),
        Admission::Read(admitted) => (admitted, false),
    };
    // The caller's limits, counted in the shared store before the body is read.
    let spend = admitted.spend(now());
    if !spend.is_empty() {
        let taken = match open_bucket() {
            Ok(bucket) => spend.take(&bucket, &WasiTimer).await,
            Err(e) => Err(Error::Store(e)),
        };
        if let Err(e) = taken {
            return meter.refuse(out, &admitted, &e);
        }
    }
    if streamed {
        // A sync route: the body streams to the upstream, the answer back, neither gathered.
        let Some(body) = WasiStream::of_caller(&incoming, admitted.body_limit()) else {
            let e = Error::MalformedJson { message: "request body could not be read".to_owned() };
            return meter.refuse(out, &admitted, &e);
        };
        let outcome = gate.handle_stream(&admitted, request.map(|_| body)).await;
        let status = outcome.response.status();
        return meter.send(out, outcome.response, |m| admitted.log_line(status, &outcome.note, m));
    }
    match read_body(incoming, admitted.body_limit()).await {
        Ok(body) => {
            meter.bytes_in = Some(body.len() as u64);
            *request.body_mut() = body;
        }
        Err(e) => return meter.refuse(out, &admitted, &e),
    }
    // A forged delivery is refused before the store is opened.
    if let Err(e) = gate.check_body(&mut admitted, &request) {
        return meter.refuse(out, &admitted, &e);
    }
    if gate.placement(&admitted, &request, entropy) == Placement::Stateless {
        // A preflight, `/v1`, a token minted unbound: no store opened, no sweep run.
        let outcome = gate.handle(&admitted, request, Ctx::new(now(), entropy)).await;
        let status = outcome.response.status();
        return meter.send(out, outcome.response, |m| admitted.log_line(status, &outcome.note, m));
    }
    let store = match open_store() {
        Ok(s) => s,
        Err(e) => return meter.refuse(out, &admitted, &Error::Store(e)),
    };
    let log = |line: &str| println!("{line}");
    let engine = Engine::new(&config, &store, &http).with_log(&log);
    let outcome = engine.handle_held(&admitted, request, entropy, &WasiTimer).await;
    let status = outcome.response.status();
    meter.send(out, outcome.response, |m| admitted.log_line(status, &outcome.note, m));
    after_response(&engine, outcome.wake_at).await;
}
