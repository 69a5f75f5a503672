//! End-to-end tests: each test starts its own server on 127.0.0.1:0 and drives
//! it over real HTTP; webhooks go to a tiny in-test receiver.
#![allow(clippy::unwrap_used)]

mod support;

mod api;
mod binary;
mod queue;
mod sync;
mod webhooks;
