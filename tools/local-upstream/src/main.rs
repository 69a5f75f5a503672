//! `local-upstream` binary: parses flags, starts the server, prints
//! `local-upstream listening on http://<addr>` and runs until Ctrl-C / SIGTERM.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use local_upstream::config::Args;

#[tokio::main]
async fn main() -> ExitCode {
    let (addr, config) = match Args::parse().resolve() {
        Ok(resolved) => resolved,
        Err(message) => {
            eprintln!("local-upstream: {message}");
            return ExitCode::from(2);
        }
    };
    let server = match local_upstream::start(addr, config).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("local-upstream: cannot start on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    // A harness may close our stdout after reading the address; that is fine.
    let _ = writeln!(stdout, "local-upstream listening on {}", server.url());
    let _ = stdout.flush();
    drop(stdout);

    shutdown_signal().await;
    eprintln!("local-upstream: shutting down");
    match server.shutdown().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("local-upstream: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
