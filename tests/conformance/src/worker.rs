//! The Cloudflare Worker packaging: the built Worker (build/index.js + wasm) in `wrangler dev`
//! (workerd), with a generated wrangler.toml.
//!
//! The generated config is the repository's wrangler.toml (so its Durable Object bindings and
//! migrations are what is tested) minus `[build]` (no rebuild at each start), with `main` made
//! absolute and `vars.EDGE_PREDICT_CONFIG` replaced by the test's document. Secrets go to an
//! env file. wrangler runs in its own process group; stopping kills the group, and a
//! [`Drop`] guard makes sure no workerd survives the test.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use crate::{BoxFut, Gateway, GatewaySpec};

/// How long `wrangler dev` may take to answer after it is started.
const STARTUP_DEADLINE: Duration = Duration::from_secs(120);

/// The repository root (this crate is tests/conformance).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the repository root")
}

/// A running `wrangler dev` serving the built Worker.
#[derive(Debug)]
pub struct WorkerGateway {
    port: u16,
    dir: tempfile::TempDir,
    /// The repository's wrangler.toml, adapted for the test; its config var is written per start.
    toml: toml::Table,
    child: Mutex<Option<Child>>,
    starts: Mutex<u32>,
}

impl WorkerGateway {
    /// Writes the config and secrets to a temporary directory, starts wrangler, waits until ready.
    pub async fn start(spec: GatewaySpec) -> Result<Self, String> {
        let root = repo_root();
        let main = root.join("build/index.js");
        if !main.is_file() || !root.join("build/index_bg.wasm").is_file() {
            return Err(format!("{} is missing: run `make build-worker` first", main.display()));
        }
        let dir = tempfile::Builder::new().prefix("conformance-worker-").tempdir().map_err(|e| e.to_string())?;
        let toml_text = std::fs::read_to_string(root.join("wrangler.toml")).map_err(|e| e.to_string())?;
        let mut doc: toml::Table = toml_text.parse().map_err(|e| format!("wrangler.toml: {e}"))?;
        doc.remove("build");
        doc.insert("main".to_owned(), toml::Value::String(main.display().to_string()));
        if let Some(assets) = doc.get_mut("assets").and_then(|a| a.as_table_mut()) {
            if let Some(dir) = assets.get("directory").and_then(|d| d.as_str()) {
                let absolute = root.join(dir).display().to_string();
                assets.insert("directory".to_owned(), toml::Value::String(absolute));
            }
        }
        let gateway = Self { port: spec.port, dir, toml: doc, child: Mutex::new(None), starts: Mutex::new(0) };
        gateway.write_config(&spec.config_json)?;
        let env: String = spec.secrets.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        std::fs::write(gateway.dir.path().join("secrets.env"), env).map_err(|e| e.to_string())?;
        gateway.launch().await?;
        Ok(gateway)
    }

    /// Writes the generated wrangler.toml with `config_json` as `EDGE_PREDICT_CONFIG`.
    fn write_config(&self, config_json: &str) -> Result<(), String> {
        let mut doc = self.toml.clone();
        let vars = doc.entry("vars").or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let vars = vars.as_table_mut().ok_or("wrangler.toml: vars is not a table")?;
        vars.insert("EDGE_PREDICT_CONFIG".to_owned(), toml::Value::String(config_json.to_owned()));
        let config = toml::to_string(&doc).map_err(|e| e.to_string())?;
        std::fs::write(self.dir.path().join("wrangler.toml"), config).map_err(|e| e.to_string())
    }

    /// A deploy of another configuration document: the gateway restarts on the same state.
    pub async fn redeploy(&self, config_json: &str) -> Result<(), String> {
        self.write_config(config_json)?;
        self.kill();
        self.launch().await
    }

    /// Whether any of the gateway's logs so far contains `text` (its `console.error` lines).
    pub fn logged(&self, text: &str) -> bool {
        self.output().contains(text)
    }

    /// What wrangler and workerd printed, every start's.
    fn output(&self) -> String {
        let starts = *self.starts.lock().unwrap();
        (1..=starts).filter_map(|n| std::fs::read_to_string(self.log_path(n)).ok()).collect()
    }

    fn log_path(&self, n: u32) -> PathBuf {
        self.dir.path().join(format!("wrangler-{n}.log"))
    }

    /// Starts wrangler and polls `OPTIONS /` until 204.
    async fn launch(&self) -> Result<(), String> {
        let root = repo_root();
        let n = {
            let mut starts = self.starts.lock().unwrap();
            *starts += 1;
            *starts
        };
        let log = File::create(self.log_path(n)).map_err(|e| e.to_string())?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;
        let bin = root.join("node_modules/.bin");
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
        let dir = self.dir.path();
        let mut command = Command::new(bin.join("wrangler"));
        command
            .args(["dev", "-c"])
            .arg(dir.join("wrangler.toml"))
            .args(["--ip", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--inspector-port", &crate::free_port().to_string()])
            .arg("--persist-to")
            .arg(dir.join("state"))
            .arg("--env-file")
            .arg(dir.join("secrets.env"))
            .arg("--show-interactive-dev-session=false")
            .current_dir(dir)
            .env("PATH", path)
            .env("WRANGLER_SEND_METRICS", "false")
            .env("CI", "true")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().map_err(|e| format!("cannot run wrangler: {e} (npm install first)"))?;
        *self.child.lock().unwrap() = Some(child);

        let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().unwrap();
        let url = format!("http://127.0.0.1:{}/", self.port);
        // The gateway's own answer to a preflight: 204, or its error for a configuration it
        // cannot use (a test may deploy one on purpose).
        let ready = || async {
            match client.request(reqwest::Method::OPTIONS, &url).send().await {
                Ok(r) if r.status() == 204 => true,
                Ok(r) if r.status() == 500 => r.text().await.is_ok_and(|t| t.contains("GATEWAY_MISCONFIGURED")),
                _ => false,
            }
        };
        if let Err(why) = crate::wait_until_ready(&self.child, STARTUP_DEADLINE, ready).await {
            self.kill();
            return Err(format!("wrangler {why}; last lines of {}:\n{}", self.log_path(n).display(), self.log_tail(n)));
        }
        Ok(())
    }

    fn log_tail(&self, n: u32) -> String {
        let text = std::fs::read_to_string(self.log_path(n)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGKILL to the whole process group (wrangler, workerd, esbuild), then reap.
    fn kill(&self) {
        if let Some(child) = self.child.lock().unwrap().take() {
            crate::kill_group(child);
        }
    }
}

impl Gateway for WorkerGateway {
    fn packaging(&self) -> crate::Packaging {
        crate::Packaging::Worker
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn restart_hard(&self) -> BoxFut<'_, Result<(), String>> {
        Box::pin(async move {
            self.kill();
            self.launch().await
        })
    }

    fn stop(&self) {
        self.kill();
    }

    fn process_group(&self) -> Option<u32> {
        self.child.lock().unwrap().as_ref().map(std::process::Child::id)
    }

    fn logs(&self) -> String {
        self.output()
    }
}

impl Drop for WorkerGateway {
    fn drop(&mut self) {
        self.kill();
        if std::env::var_os("CONFORMANCE_KEEP_LOGS").is_some() {
            let kept = self.dir.path().to_path_buf();
            eprintln!("conformance: wrangler logs kept in {}", kept.display());
            std::mem::forget(std::mem::replace(&mut self.dir, tempfile::TempDir::new().unwrap()));
        }
    }
}
