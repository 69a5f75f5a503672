//! What the two wasm32-wasip2 packagings share (the Spin HTTP component and the `inference`
//! library component): clock, randomness, configuration from Spin variables, outbound HTTP
//! through `wasi:http`, and job records in `wasi:keyvalue`.
//!
//! - `kv`: job records in the `default` bucket of `wasi:keyvalue` ([`KvStore`], the engine's
//!   claim protocol on Spin's store);
//! - `http`: outbound requests with deadlines, size caps and a known `Content-Length`
//!   ([`WasiHttp`]).

mod http;
mod kv;

pub(super) use self::http::WasiHttp;
#[cfg(feature = "spin")]
pub(super) use self::http::{respond_bytes, WasiBody, WasiStream};
#[cfg(feature = "spin")]
pub(super) use self::kv::open_bucket;
pub(super) use self::kv::{open as open_store, KvStore};

use crate::engine::{Config, Engine, Error, HttpClient, SweepReport, Timer, Timestamp};

/// The Spin variable holding the configuration document. Secrets it names are Spin
/// variables too (lowercased, as Spin requires).
pub(super) const CONFIG_VARIABLE: &str = "edge_predict_config";

pub(super) fn now() -> Timestamp {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    Timestamp::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// The wall clock and a blocking sleep: an instance serves one request, so blocking it holds
/// up no one else. For held long-polls and the store's claim protocol.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WasiTimer;

impl Timer for WasiTimer {
    fn now(&self) -> Timestamp {
        now()
    }

    async fn sleep_until(&self, at: Timestamp) {
        std::thread::sleep(std::time::Duration::from_millis(at.millis_since(now())));
    }
}

pub(super) fn entropy() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    // wasi:random cannot fail for 16 bytes; zeros would only cost uniqueness.
    let _ = getrandom::fill(&mut bytes);
    bytes
}

/// The configuration, its secrets read when first needed ([`Config::parse_lazy`]): a secret
/// that is not set is the 500 of the requests that need it, and its variable is named in the log.
pub(super) fn load_config() -> Result<Config, Error> {
    let doc = spin_sdk::variables::get(CONFIG_VARIABLE).map_err(|e| Error::Config {
        field: CONFIG_VARIABLE.to_owned(),
        message: format!("variable not available: {e}"),
    })?;
    // Parsed for every request (an instance serves one), so each secret is read only when the
    // request needs it: every variable read is a host call (~11 µs).
    let secret = |name: &str| {
        let variable = name.to_ascii_lowercase();
        // The operator's log names the variable (never a value); the caller gets a 500.
        spin_sdk::variables::get(&variable).map_err(|e| eprintln!("secret variable {variable}: {e}")).ok()
    };
    Config::parse_lazy(&doc, std::rc::Rc::new(secret))
}

/// After an answer has gone (there is no background work on these hosts): notes when the
/// engine wants to run next and runs what is due now. A sweep's failures go to the log, the
/// only place left to tell; the jobs stay due and are tried again.
pub(crate) async fn after_response<H: HttpClient>(engine: &Engine<'_, KvStore, H>, wake_at: Option<Timestamp>) {
    engine.note_wake(wake_at).await;
    if let Some(SweepReport { failed: 1.., first_error, .. }) = engine.sweep_if_due(&now).await {
        eprintln!("sweep: job(s) failed and stay due; first: {}", first_error.unwrap_or_default());
    }
}
