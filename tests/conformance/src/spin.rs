//! The Spin component (`build/wasip2/spin.wasm`, `make components`) in the in-process
//! wasi:http test host (`wasi-host`: wasmtime with Spin's variables and wasi:keyvalue backed
//! by a file), as a [`Gateway`].
//!
//! Spin has no alarms: the deployment runs `POST /_sweep` from a cron trigger or any
//! scheduler. So does this harness, every 250 ms, as that scheduler.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use crate::worker::repo_root;
use crate::{keys, BoxFut, Gateway, GatewaySpec};

#[derive(Debug)]
pub struct SpinGateway {
    config: wasi_host::HostConfig,
    server: Mutex<Option<wasi_host::Server>>,
    sweeper: tokio::task::JoinHandle<()>,
    _state: tempfile::TempDir,
}

/// Built by `make components`.
pub fn component_path(name: &str) -> PathBuf {
    repo_root().join("build/wasip2").join(format!("{name}.wasm"))
}

/// Spin variables from a spec: the document, and each secret under its lowercased name.
pub fn variables(spec: &GatewaySpec) -> BTreeMap<String, String> {
    let mut vars: BTreeMap<String, String> =
        spec.secrets.iter().map(|(name, value)| (name.to_ascii_lowercase(), value.clone())).collect();
    vars.insert("edge_predict_config".to_owned(), spec.config_json.clone());
    vars
}

impl SpinGateway {
    pub async fn start(spec: GatewaySpec) -> Result<Self, String> {
        let component = component_path("spin");
        if !component.exists() {
            return Err(format!("{} is missing: run `make components` first", component.display()));
        }
        let state = tempfile::tempdir().map_err(|e| e.to_string())?;
        let config = wasi_host::HostConfig {
            component,
            addr: SocketAddr::from(([127, 0, 0, 1], spec.port)),
            kv_path: state.path().join("kv.json"),
            variables: variables(&spec),
        };
        let server = wasi_host::serve(config.clone()).await.map_err(|e| format!("wasi-host: {e:#}"))?;
        let url = server.url();
        let sweeper = tokio::spawn(async move {
            let client = reqwest::Client::new();
            loop {
                let _ = client.post(format!("{url}/_sweep")).bearer_auth(keys::FULL).send().await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Ok(Self { config, server: Mutex::new(Some(server)), sweeper, _state: state })
    }
}

impl Gateway for SpinGateway {
    fn base_url(&self) -> String {
        format!("http://{}", self.config.addr)
    }

    fn restart_hard(&self) -> BoxFut<'_, Result<(), String>> {
        Box::pin(async move {
            let old = self.server.lock().unwrap().take();
            if let Some(server) = old {
                // Drops every in-flight call and instance; the store keeps its last write.
                server.shutdown().await;
            }
            let server = wasi_host::serve(self.config.clone()).await.map_err(|e| format!("wasi-host: {e:#}"))?;
            *self.server.lock().unwrap() = Some(server);
            Ok(())
        })
    }

    fn stop(&self) {
        self.sweeper.abort();
        drop(self.server.lock().unwrap().take());
    }
}
