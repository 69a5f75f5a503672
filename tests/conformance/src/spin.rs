//! The Spin packaging on real Spin: `spin up` with the repository's own `spin.toml` (its
//! component is `make components`' Spin build), each host in its own process group.
//!
//! The test's settings reach Spin the way a deployer's would: `SPIN_VARIABLE_*` environment
//! variables for the configuration document and secrets, `--listen` for the port,
//! `--state-dir` for where the default (SQLite) key-value store lives, and
//! `--runtime-config-file` for another store (the repository's `runtime-config/redis.toml`).
//!
//! Spin has no alarms: a deployment runs `POST /_sweep` from a cron trigger or any scheduler.
//! So does [`SpinGateway`], every 250 ms, as that scheduler.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use crate::worker::repo_root;
use crate::{keys, BoxFut, Gateway, GatewaySpec};

/// How long `spin up` may take to answer after it is started.
const STARTUP_DEADLINE: Duration = Duration::from_secs(60);

/// Built by `make components`.
pub fn component_path(name: &str) -> PathBuf {
    repo_root().join("build/wasip2").join(format!("{name}.wasm"))
}

/// The `spin` binary: `$SPIN` if set, else the one on `PATH` (`make setup` installs it).
pub fn spin_binary() -> PathBuf {
    std::env::var_os("SPIN").map_or_else(|| PathBuf::from("spin"), PathBuf::from)
}

/// `SPIN_VARIABLE_*` for a spec: the configuration document, and each secret under its name
/// (Spin variables are lowercase; the environment provider takes them uppercased).
pub fn variables(spec: &GatewaySpec) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = spec
        .secrets
        .iter()
        .map(|(name, value)| (format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase()), value.clone()))
        .collect();
    vars.push(("SPIN_VARIABLE_EDGE_PREDICT_CONFIG".to_owned(), spec.config_json.clone()));
    vars
}

/// One `spin up` process (and its children), restartable on the same state.
#[derive(Debug)]
pub struct SpinHost {
    manifest: PathBuf,
    port: u16,
    state_dir: PathBuf,
    runtime_config: Option<PathBuf>,
    env: Vec<(String, String)>,
    logs: PathBuf,
    child: Mutex<Option<Child>>,
    starts: Mutex<u32>,
}

impl SpinHost {
    /// Starts `spin up -f manifest` on 127.0.0.1:`port` and waits until it answers.
    pub async fn start(
        manifest: &Path,
        port: u16,
        state_dir: &Path,
        runtime_config: Option<&Path>,
        env: Vec<(String, String)>,
        logs: &Path,
    ) -> Result<Self, String> {
        let host = Self {
            manifest: manifest.to_owned(),
            port,
            state_dir: state_dir.to_owned(),
            runtime_config: runtime_config.map(Path::to_owned),
            env,
            logs: logs.to_owned(),
            child: Mutex::new(None),
            starts: Mutex::new(0),
        };
        host.launch().await?;
        Ok(host)
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_path(&self, n: u32) -> PathBuf {
        self.logs.join(format!("spin-{}-{n}.log", self.port))
    }

    /// What Spin and the components printed: Spin's own output, and the components'
    /// standard output and error it keeps in its log directory.
    pub fn output(&self) -> String {
        let mut text = String::new();
        for entry in std::fs::read_dir(&self.logs).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("spin-{}-", self.port)) || name.ends_with(".txt") {
                text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        text
    }

    async fn launch(&self) -> Result<(), String> {
        let n = {
            let mut starts = self.starts.lock().unwrap();
            *starts += 1;
            *starts
        };
        let log = File::create(self.log_path(n)).map_err(|e| e.to_string())?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;
        let mut command = Command::new(spin_binary());
        command
            .arg("up")
            .arg("-f")
            .arg(&self.manifest)
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--log-dir")
            .arg(&self.logs)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        if let Some(file) = &self.runtime_config {
            command.arg("--runtime-config-file").arg(file);
        }
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().map_err(|e| format!("cannot run spin: {e} (`make setup` installs it)"))?;
        *self.child.lock().unwrap() = Some(child);

        let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().unwrap();
        let url = format!("{}/", self.base_url());
        // Any HTTP answer: Spin is serving the app (a preflight touches no state).
        let ready = || async { client.request(reqwest::Method::OPTIONS, &url).send().await.is_ok() };
        if let Err(why) = crate::wait_until_ready(&self.child, STARTUP_DEADLINE, ready).await {
            self.kill();
            let text = std::fs::read_to_string(self.log_path(n)).unwrap_or_default();
            return Err(format!("spin {why}; {}:\n{text}", self.log_path(n).display()));
        }
        Ok(())
    }

    /// The process group of `spin up` and its trigger (the group leader's pid).
    pub fn process_group(&self) -> Option<u32> {
        self.child.lock().unwrap().as_ref().map(Child::id)
    }

    /// SIGKILL to the whole process group, then reap: no graceful shutdown.
    pub fn kill(&self) {
        if let Some(child) = self.child.lock().unwrap().take() {
            crate::kill_group(child);
        }
    }

    /// Kills the host and starts it again on the same port, state and settings.
    pub async fn restart_hard(&self) -> Result<(), String> {
        self.kill();
        self.launch().await
    }
}

impl Drop for SpinHost {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The scheduler a Spin deployment points at `POST /_sweep`: every 250 ms until dropped.
#[derive(Debug)]
pub struct Sweeper(tokio::task::JoinHandle<()>);

impl Sweeper {
    pub fn start(base_url: String) -> Self {
        Self(tokio::spawn(async move {
            let client = reqwest::Client::new();
            loop {
                let _ = client.post(format!("{base_url}/_sweep")).bearer_auth(keys::FULL).send().await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }))
    }
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The gateway as a Spin user runs it: the repository's `spin.toml` on `spin up`, with the
/// default key-value store (SQLite, under a temporary state directory).
#[derive(Debug)]
pub struct SpinGateway {
    host: SpinHost,
    sweeper: Mutex<Option<Sweeper>>,
    _dir: tempfile::TempDir,
}

impl SpinGateway {
    pub async fn start(spec: GatewaySpec) -> Result<Self, String> {
        let component = repo_root().join("target/wasm32-wasip2/release/edge_predict.wasm");
        if !component.exists() {
            return Err(format!("{} is missing: run `make components` first", component.display()));
        }
        let dir = tempfile::Builder::new().prefix("conformance-spin-").tempdir().map_err(|e| e.to_string())?;
        let state = dir.path().join("state");
        let host =
            SpinHost::start(&repo_root().join("spin.toml"), spec.port, &state, None, variables(&spec), dir.path())
                .await?;
        let sweeper = Sweeper::start(host.base_url());
        Ok(Self { host, sweeper: Mutex::new(Some(sweeper)), _dir: dir })
    }
}

impl Drop for SpinGateway {
    fn drop(&mut self) {
        self.host.kill();
        if std::env::var_os("CONFORMANCE_KEEP_LOGS").is_some() {
            let kept = std::mem::replace(&mut self._dir, tempfile::TempDir::new().unwrap()).keep();
            eprintln!("conformance: spin logs and state kept in {}", kept.display());
        }
    }
}

impl Gateway for SpinGateway {
    fn packaging(&self) -> crate::Packaging {
        crate::Packaging::Spin
    }

    fn base_url(&self) -> String {
        self.host.base_url()
    }

    fn restart_hard(&self) -> BoxFut<'_, Result<(), String>> {
        Box::pin(self.host.restart_hard())
    }

    fn stop(&self) {
        drop(self.sweeper.lock().unwrap().take());
        self.host.kill();
    }

    fn process_group(&self) -> Option<u32> {
        self.host.process_group()
    }

    fn logs(&self) -> String {
        self.host.output()
    }
}
