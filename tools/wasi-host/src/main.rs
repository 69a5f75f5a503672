//! `wasi-host --component X.wasm --addr 127.0.0.1:0 --kv FILE --var name=value...`
//!
//! Serves the component until SIGINT or SIGTERM. The first line on stdout is
//! `wasi-host listening on http://ADDR` (flushed); the guest's own stdout follows it.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// Serve a wasi:http component (Spin, spin-sdk 5.x) over HTTP with Spin variables and a file-backed key-value store.
#[derive(Debug, Parser)]
#[command(name = "wasi-host")]
struct Args {
    /// The component exporting wasi:http/incoming-handler@0.2.x.
    #[arg(long)]
    component: PathBuf,
    /// Listen address; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// The key-value file backing the "default" store (created on first write).
    #[arg(long)]
    kv: PathBuf,
    /// A Spin variable, `name=value` (repeatable; names are lowercase snake_case).
    #[arg(long = "var", value_parser = parse_var)]
    vars: Vec<(String, String)>,
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    let (name, value) = s.split_once('=').ok_or_else(|| format!("expected name=value, got {s:?}"))?;
    wasi_host::check_variable_name(name)?;
    Ok((name.to_owned(), value.to_owned()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let variables: BTreeMap<String, String> = args.vars.into_iter().collect();
    let server = wasi_host::serve(wasi_host::HostConfig {
        component: args.component,
        addr: args.addr,
        kv_path: args.kv,
        variables,
    })
    .await?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "wasi-host listening on {}", server.url())?;
    stdout.flush()?;
    drop(stdout);

    wait_for_signal().await?;
    server.shutdown().await;
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for SIGINT"),
        _ = term.recv() => Ok(()),
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> anyhow::Result<()> {
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")
}
