//! A workerd floor for `make bench`, in Rust: the caller's request (method, headers, body) sent
//! as it is to the same path on `UPSTREAM`, and the upstream's answer returned as it is, the
//! runtime's own objects passed through untouched. What the JavaScript floor (`../worker.js`)
//! does, compiled to wasm on the gateway's workers-rs: the difference between the two is the
//! cost of being a wasm Worker at all, before any header is read.

use worker::{event, web_sys, Context, Env, Fetch, Request, Response, Result, Url};

#[event(fetch)]
async fn fetch(raw: web_sys::Request, env: Env, _ctx: Context) -> Result<Response> {
    let url = Url::parse(&raw.url())?;
    let target = format!("{}{}", env.var("UPSTREAM")?.to_string(), &url[url::Position::BeforePath..]);
    let init = web_sys::RequestInit::new();
    init.set_method(&raw.method());
    init.set_headers(&raw.headers());
    if let Some(body) = raw.body() {
        init.set_body(&body);
    }
    let forwarded = web_sys::Request::new_with_str_and_init(&target, &init)?;
    Fetch::Request(Request::from(forwarded)).send().await
}
