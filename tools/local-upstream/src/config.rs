//! Command-line flags and the optional `--config <file.json>`.
//!
//! Precedence: a flag given on the command line, else the file's field, else
//! the default. The file's fields mirror the flags (snake_case); repeatable
//! flags are arrays there.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::Config;

/// Default listen address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8788";

/// A native local stand-in for Baseten's model inference API.
#[derive(Debug, Default, Parser)]
#[command(name = "local-upstream", version, about)]
pub struct Args {
    /// JSON file whose fields mirror these flags (flags win over the file).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Listen address; port 0 picks a free port [default: 127.0.0.1:8788].
    #[arg(long)]
    pub addr: Option<SocketAddr>,
    /// API key accepted as `Bearer <key>` or `Api-Key <key>` [default: upstream-dev-key].
    #[arg(long)]
    pub api_key: Option<String>,
    /// Webhook signing secret, repeatable, newest first [default: local-upstream-webhook-secret].
    #[arg(long = "webhook-secret", value_name = "SECRET")]
    pub webhook_secrets: Vec<String>,
    /// Known model id, repeatable [default: demo].
    #[arg(long = "model", value_name = "ID")]
    pub models: Vec<String>,
    /// Known chain id, repeatable [default: demo-chain].
    #[arg(long = "chain", value_name = "ID")]
    pub chains: Vec<String>,
    /// Async requests each deployment runs at once [default: 1].
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Timeout of one webhook delivery attempt, in ms [default: 10000].
    #[arg(long)]
    pub webhook_timeout_ms: Option<u64>,
    /// Pause between the two webhook delivery attempts, in ms [default: 1000].
    #[arg(long)]
    pub webhook_retry_gap_ms: Option<u64>,
    /// Real ms per second of `max_time_in_queue_seconds` (time scale for expiry tests) [default: 1000].
    #[arg(long)]
    pub queue_second_ms: Option<u64>,
    /// Pause before each token of a streamed answer, in ms (e.g. 20 to watch streams in dev) [default: 0].
    #[arg(long)]
    pub token_interval_ms: Option<u64>,
    /// Do not log requests and webhook attempts to stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// The `--config` file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub addr: Option<SocketAddr>,
    pub api_key: Option<String>,
    #[serde(default, alias = "webhook_secrets")]
    pub webhook_secret: Vec<String>,
    #[serde(default, alias = "models")]
    pub model: Vec<String>,
    #[serde(default, alias = "chains")]
    pub chain: Vec<String>,
    pub concurrency: Option<usize>,
    pub webhook_timeout_ms: Option<u64>,
    pub webhook_retry_gap_ms: Option<u64>,
    pub queue_second_ms: Option<u64>,
    pub token_interval_ms: Option<u64>,
    pub quiet: Option<bool>,
}

impl Args {
    /// Reads the `--config` file (if any) and merges it with the flags.
    pub fn resolve(self) -> Result<(SocketAddr, Config), String> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                serde_json::from_str(&text).map_err(|e| format!("invalid config file {}: {e}", path.display()))?
            }
            None => FileConfig::default(),
        };
        Ok(self.merge(file))
    }

    /// Flags win over the file, the file over the defaults.
    pub fn merge(self, file: FileConfig) -> (SocketAddr, Config) {
        fn list(flag: Vec<String>, file: Vec<String>, default: Vec<String>) -> Vec<String> {
            [flag, file].into_iter().find(|l| !l.is_empty()).unwrap_or(default)
        }
        let d = Config::default();
        let ms = |flag: Option<u64>, file: Option<u64>, default: Duration| {
            flag.or(file).map_or(default, Duration::from_millis)
        };
        let addr = self
            .addr
            .or(file.addr)
            .unwrap_or_else(|| DEFAULT_ADDR.parse().expect("the default address is a valid socket address"));
        let config = Config {
            api_key: self.api_key.or(file.api_key).unwrap_or(d.api_key),
            webhook_secrets: list(self.webhook_secrets, file.webhook_secret, d.webhook_secrets),
            models: list(self.models, file.model, d.models),
            chains: list(self.chains, file.chain, d.chains),
            concurrency: self.concurrency.or(file.concurrency).unwrap_or(d.concurrency),
            webhook_timeout: ms(self.webhook_timeout_ms, file.webhook_timeout_ms, d.webhook_timeout),
            webhook_retry_gap: ms(self.webhook_retry_gap_ms, file.webhook_retry_gap_ms, d.webhook_retry_gap),
            queue_second: ms(self.queue_second_ms, file.queue_second_ms, d.queue_second),
            log_requests: !(self.quiet || file.quiet.unwrap_or(false)),
            token_interval: ms(self.token_interval_ms, file.token_interval_ms, d.token_interval),
        };
        (addr, config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let (addr, c) = Args::parse_from(["local-upstream"]).merge(FileConfig::default());
        assert_eq!(addr.to_string(), DEFAULT_ADDR);
        assert_eq!(c.api_key, "upstream-dev-key");
        assert_eq!(c.webhook_secrets, ["local-upstream-webhook-secret"]);
        assert_eq!(c.models, ["demo"]);
        assert_eq!(c.chains, ["demo-chain"]);
        assert_eq!(c.concurrency, 1);
        assert_eq!(c.webhook_timeout, Duration::from_secs(10));
        assert_eq!(c.webhook_retry_gap, Duration::from_secs(1));
        assert_eq!(c.token_interval, Duration::ZERO);
        assert!(c.log_requests);
    }

    #[test]
    fn flags_win_over_file() {
        let file: FileConfig = serde_json::from_str(
            r#"{"addr":"127.0.0.1:0","api_key":"file","webhook_secret":["f1","f2"],
                "model":["m1"],"concurrency":4,"token_interval_ms":7,"quiet":true}"#,
        )
        .expect("valid file");
        let args = Args::parse_from([
            "local-upstream",
            "--api-key",
            "flag",
            "--model",
            "a",
            "--model",
            "b",
            "--webhook-retry-gap-ms",
            "5",
            "--token-interval-ms",
            "20",
        ]);
        let (addr, c) = args.merge(file);
        assert_eq!(addr.port(), 0);
        assert_eq!(c.api_key, "flag");
        assert_eq!(c.webhook_secrets, ["f1", "f2"]);
        assert_eq!(c.models, ["a", "b"]);
        assert_eq!(c.concurrency, 4);
        assert_eq!(c.webhook_retry_gap, Duration::from_millis(5));
        assert_eq!(c.token_interval, Duration::from_millis(20));
        assert!(!c.log_requests);
    }

    #[test]
    fn unknown_file_fields_are_rejected() {
        assert!(serde_json::from_str::<FileConfig>(r#"{"modle":["x"]}"#).is_err());
    }
}
