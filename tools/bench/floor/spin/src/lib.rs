//! The Spin floor for `make bench`: the caller's method, path, query, content type,
//! authorization and body, sent to the same path on the `upstream` variable's base, and the
//! upstream's status, content type, length and body returned. Nothing is parsed or checked.
//!
//! Written on wasi:http directly, as the gateway's component is, and like it: each body goes
//! into its message before the message is handed to the host, so head and body leave in one
//! segment (sent after the head, a small body waits out Nagle and the peer's delayed ACK, 40 ms).
//! Bodies are small here (one read); this is a floor, not a proxy.

use spin_sdk::http::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse, ResponseOutparam, Scheme,
};
use spin_sdk::http_component;
use spin_sdk::wit::wasi::http0_2_0::outgoing_handler;

fn read_all(body: &spin_sdk::wit::wasi::http0_2_0::types::IncomingBody) -> Vec<u8> {
    let mut bytes = Vec::new();
    if let Ok(stream) = body.stream() {
        while let Ok(chunk) = stream.blocking_read(64 * 1024) {
            bytes.extend_from_slice(&chunk);
        }
    }
    bytes
}

fn write_all(body: &OutgoingBody, bytes: &[u8]) {
    if let Ok(stream) = body.write() {
        for chunk in bytes.chunks(4096) {
            let _ = stream.blocking_write_and_flush(chunk);
        }
    }
}

fn keep(headers: &Fields, names: &[&str], length: usize) -> Fields {
    let mut entries: Vec<(String, Vec<u8>)> =
        headers.entries().into_iter().filter(|(n, _)| names.contains(&n.to_ascii_lowercase().as_str())).collect();
    entries.push(("content-length".to_owned(), length.to_string().into_bytes()));
    Fields::from_list(&entries).unwrap_or_else(|_| Fields::new())
}

#[http_component]
fn handle(request: IncomingRequest, out: ResponseOutparam) {
    let upstream = spin_sdk::variables::get("upstream").unwrap_or_default();
    let authority = upstream.trim_start_matches("http://").to_owned();
    let body = request.consume().map(|b| read_all(&b)).unwrap_or_default();
    let outgoing = OutgoingRequest::new(keep(&request.headers(), &["content-type", "authorization"], body.len()));
    let method = request.method();
    let _ = outgoing.set_method(&method);
    let _ = outgoing.set_scheme(Some(&Scheme::Http));
    let _ = outgoing.set_authority(Some(&authority));
    let _ = outgoing.set_path_with_query(request.path_with_query().as_deref());
    if let Ok(sink) = outgoing.body() {
        if !(body.is_empty() && matches!(method, Method::Get)) {
            write_all(&sink, &body);
        }
        let _ = OutgoingBody::finish(sink, None);
    }
    let (status, headers, answer) = match outgoing_handler::handle(outgoing, None) {
        Ok(future) => {
            future.subscribe().block();
            match future.get() {
                Some(Ok(Ok(response))) => {
                    let bytes = response.consume().map(|b| read_all(&b)).unwrap_or_default();
                    (response.status(), keep(&response.headers(), &["content-type"], bytes.len()), bytes)
                }
                _ => (502, keep(&Fields::new(), &[], 0), Vec::new()),
            }
        }
        Err(_) => (502, keep(&Fields::new(), &[], 0), Vec::new()),
    };
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    if let Ok(sink) = response.body() {
        write_all(&sink, &answer);
        out.set(response);
        let _ = OutgoingBody::finish(sink, None);
    }
}
