//! The scale-out path on real Spin: two `spin up` hosts of the repository's `spin.toml`
//! sharing one key-value store, as several hosts (or SpinKube replicas) behind one address do.
//!
//! Two stores: Redis (Debian's `redis-server` on a free loopback port, through the
//! repository's `runtime-config/redis.toml` with only its `url` changed), and one SQLite file
//! (both hosts on one `--state-dir`). The same scenarios on each:
//! - concurrent submits with one `Idempotency-Key`, spread over both hosts, give one job and
//!   one upstream submission (counted by the local upstream);
//! - a job submitted on one host is read, canceled and completed through the other (the
//!   upstream delivers results to the other host's inbox);
//! - sweeps running on both hosts deliver each webhook once;
//! - (Redis) a version claimed by a host that died before writing it is claimed anew;
//! - a key's `requests_per_minute` holds across both hosts: of a burst spread over them,
//!   exactly the quota passes;
//! - the shared store keeps the engine's store contract (`POST /_store_check` on both hosts).
//!
//! Needs `make components`, `spin` and `redis-server` on PATH (`make setup`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use conformance::client::{eventually, Api, Body};
use conformance::receiver::Receiver;
use conformance::scenarios::store_keeps_its_contract;
use conformance::spin::{variables, SpinHost, Sweeper};
use conformance::worker::repo_root;
use conformance::{config_document, free_port, keys, kill_group, secrets, GatewaySpec};
use serde_json::json;

/// `redis-server` on a free loopback port, no persistence, in its own process group.
struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    async fn start(logs: &Path) -> Self {
        let port = free_port();
        let log = std::fs::File::create(logs.join("redis.log")).unwrap();
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().expect("redis-server on PATH (`make setup` installs it)");
        eventually("redis-server to listen", Duration::from_secs(20), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map(drop).map_err(|e| e.to_string())
        })
        .await;
        Self { port, child: Some(child) }
    }
}

impl Redis {
    /// Runs `redis-cli` against this server; its standard output.
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli").args(["-p", &self.port.to_string()]).args(args).output().unwrap();
        assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            kill_group(child);
        }
    }
}

/// Two hosts, the upstream they share, a webhook receiver, and a scheduler per host.
struct Cluster {
    hosts: [SpinHost; 2],
    apis: [Api; 2],
    upstream: local_upstream::ServerHandle,
    receiver: Receiver,
    sweepers: Vec<Sweeper>,
    run: String,
    redis: Option<Redis>,
    _dir: tempfile::TempDir,
}

enum SharedStore {
    Redis,
    SqliteFile,
}

impl Cluster {
    async fn start(store: SharedStore) -> Self {
        let dir = tempfile::Builder::new().prefix("spin-cluster-").tempdir().unwrap();
        let upstream = local_upstream::start(
            "127.0.0.1:0",
            local_upstream::Config {
                api_key: secrets::UPSTREAM_API_KEY.to_owned(),
                webhook_secrets: vec![secrets::BASETEN_WEBHOOK_SECRET.to_owned()],
                concurrency: 1,
                log_requests: false,
                ..local_upstream::Config::default()
            },
        )
        .await
        .unwrap();
        let receiver = Receiver::start().await.unwrap();
        let ports = [free_port(), free_port()];
        // Results are delivered to the second host's inbox, whichever host took the job.
        let mut spec = GatewaySpec::for_upstream(&upstream.url(), free_port());
        spec.config_json = config_document(ports[1], &upstream.url(), free_port());
        let (redis, runtime_config) = match store {
            SharedStore::Redis => {
                let redis = Redis::start(dir.path()).await;
                let text = std::fs::read_to_string(repo_root().join("runtime-config/redis.toml")).unwrap();
                let mut doc: toml::Table = text.parse().unwrap();
                let url = format!("redis://127.0.0.1:{}", redis.port);
                doc["key_value_store"]["default"].as_table_mut().unwrap().insert("url".into(), url.into());
                let file = dir.path().join("redis.toml");
                std::fs::write(&file, toml::to_string(&doc).unwrap()).unwrap();
                (Some(redis), Some(file))
            }
            SharedStore::SqliteFile => (None, None),
        };
        let manifest = repo_root().join("spin.toml");
        let state = dir.path().join("state");
        let mut hosts = Vec::new();
        for port in ports {
            let host =
                SpinHost::start(&manifest, port, &state, runtime_config.as_deref(), variables(&spec), dir.path())
                    .await
                    .unwrap();
            hosts.push(host);
        }
        let hosts: [SpinHost; 2] = hosts.try_into().unwrap();
        let apis = [Api::new(hosts[0].base_url()), Api::new(hosts[1].base_url())];
        let sweepers = hosts.iter().map(|h| Sweeper::start(h.base_url())).collect();
        let run =
            format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
        Self { hosts, apis, upstream, receiver, sweepers, run, redis, _dir: dir }
    }

    fn unique(&self, what: &str) -> String {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        format!("{what}-{}-{}", self.run, N.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }

    /// 50 concurrent submits with one key, alternating hosts, in 4 rounds: one request id, and
    /// the upstream accepted exactly one job per round.
    async fn same_key_submits_across_hosts(&self) {
        for _ in 0..4 {
            let dep = self.unique("dep");
            let key = self.unique("idem");
            let path = format!("/models/demo/deployment/{dep}/async_predict");
            let body = json!({"model_input": {"same": "key"}});
            let calls: Vec<_> = (0..50)
                .map(|i| {
                    let (api, path, key, body) = (self.apis[i % 2].clone(), path.clone(), key.clone(), body.clone());
                    tokio::spawn(async move {
                        api.send("POST", &path, Some(keys::FULL), &[("idempotency-key", &key)], Body::Json(body)).await
                    })
                })
                .collect();
            let mut ids = Vec::new();
            for call in calls {
                ids.push(call.await.unwrap().request_id());
            }
            assert!(ids.iter().all(|i| *i == ids[0]), "one request_id for one key: {ids:?}");
            assert_eq!(self.upstream.accepted(&dep), 1, "one upstream submission for {} same-key submits", ids.len());
            let s = self.apis[1].status(&ids[0]).await;
            assert_eq!(s["usage"]["attempts"], 1, "{s}");
        }
    }

    /// Submitted on host 0; read, canceled and completed through host 1.
    async fn a_job_moves_between_hosts(&self) {
        let dep = self.unique("dep");
        let target = format!("deployment/{dep}");
        let [a, b] = &self.apis;
        // A blocker keeps what follows QUEUED (the upstream runs one job per deployment).
        let blocker = a.submit(&target, json!({"model_input": {"sleep_ms": 1500}})).await;
        let queued = a.submit(&target, json!({"model_input": {"to": "cancel"}})).await;
        assert_eq!(b.status(&queued).await["status"], "QUEUED");
        let answer = b.send("DELETE", &format!("/async_request/{queued}"), Some(keys::FULL), &[], Body::None).await;
        assert_eq!(answer.expect(200).json()["canceled"], true);
        assert_eq!(a.status(&queued).await["status"], "CANCELED");
        // The blocker's result reaches host 1's inbox; host 0 reads it.
        let s = a
            .status_until(&blocker, Duration::from_secs(30), "the blocker to succeed", |s| s["status"] == "SUCCEEDED")
            .await;
        assert_eq!(s["output"], json!({"sleep_ms": 1500}), "{s}");
        assert_eq!(self.upstream.accepted(&dep), 2);
    }

    /// Jobs with webhooks submitted on both hosts while both sweep: one delivery each.
    async fn sweeps_on_both_hosts_deliver_once(&self) {
        let mut jobs = Vec::new();
        for i in 0..12 {
            let hook = self.unique("hook");
            let body = json!({"model_input": {"n": i}, "webhook_endpoint": self.receiver.url(&hook)});
            let id = self.apis[i % 2].submit("production", body).await;
            jobs.push((id, hook));
        }
        for (id, _) in &jobs {
            self.apis[0]
                .status_until(id, Duration::from_secs(60), "the webhook to be delivered", |s| {
                    s["webhook_status"] == "SUCCEEDED"
                })
                .await;
        }
        // Let every sweep in flight finish: a sweep that runs (holds the lease) on each host
        // means no other holds it any more.
        for api in &self.apis {
            eventually("a sweep that holds the lease", Duration::from_secs(60), || async {
                let r = api.post("/_sweep", json!({})).await.expect(200).json();
                if r["ran"] == true {
                    Ok(())
                } else {
                    Err(r.to_string())
                }
            })
            .await;
        }
        for (id, hook) in &jobs {
            let deliveries = self.receiver.deliveries(hook);
            assert_eq!(deliveries.len(), 1, "job {id}: one delivery, got {}", deliveries.len());
            assert_eq!(deliveries[0].json()["request_id"], id.as_str());
        }
    }

    /// A host died between claiming a record's next version and writing it (Spin also drops
    /// an instance whose client went away): a claim in Redis with no value behind it. A write
    /// to that record answers 503 while the claim is fresh, and succeeds once it is stale.
    async fn a_dead_claimers_version_is_claimed_anew(&self, redis: &Redis) {
        let dep = self.unique("dep");
        let target = format!("deployment/{dep}");
        let [a, b] = &self.apis;
        a.submit(&target, json!({"model_input": {"sleep_ms": 20_000}})).await;
        let queued = a.submit(&target, json!({"model_input": {"dead": "claimer"}})).await;
        let claims = redis.cli(&["--scan", "--pattern", &format!("claim/job/{queued}@*")]);
        let version = claims.lines().filter_map(|k| k.rsplit('@').next()?.split('.').next()?.parse::<u64>().ok()).max();
        let next = version.expect("the record's claims are in Redis") + 1;
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
        redis.cli(&["INCRBY", &format!("claim/job/{queued}@{next}.0"), &now_ms.to_string()]);
        let path = format!("/async_request/{queued}");
        let cancel = || b.send("DELETE", &path, Some(keys::FULL), &[], Body::None);
        cancel().await.expect_error(503, "STORE_UNAVAILABLE");
        let answer = eventually("the dead claim to go stale", Duration::from_secs(30), || async {
            let answer = cancel().await;
            if answer.status == 200 {
                Ok(answer.json())
            } else {
                Err(answer.text())
            }
        })
        .await;
        assert_eq!(answer["canceled"], true, "{answer}");
        assert_eq!(a.status(&queued).await["status"], "CANCELED");
    }

    /// A burst of a limited key's requests, alternating hosts: exactly its quota passes (a
    /// burst that straddles two windows of the clock is run again).
    async fn a_keys_limit_holds_across_hosts(&self) {
        let minute = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 60;
        for _ in 0..3 {
            let began = minute();
            let calls: Vec<_> = (0..24)
                .map(|i| {
                    let api = self.apis[i % 2].clone();
                    tokio::spawn(async move {
                        let body = Body::Json(json!({"n": i}));
                        api.send("POST", "/models/demo/production/predict", Some(keys::LIMITED), &[], body).await
                    })
                })
                .collect();
            let mut statuses = Vec::new();
            for call in calls {
                statuses.push(call.await.unwrap().status);
            }
            if minute() != began {
                continue;
            }
            let passed = statuses.iter().filter(|s| **s == 200).count() as u64;
            assert_eq!(passed, conformance::LIMITED_PER_MINUTE, "{statuses:?}");
            assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
            return;
        }
        panic!("three bursts in a row each straddled a minute");
    }

    async fn run_all(self) {
        let began = Instant::now();
        // The shared store keeps the engine's store contract, checked from both hosts at once.
        let (a, b) = (&self.apis[0], &self.apis[1]);
        tokio::join!(store_keeps_its_contract(a), store_keeps_its_contract(b));
        self.same_key_submits_across_hosts().await;
        self.a_job_moves_between_hosts().await;
        self.sweeps_on_both_hosts_deliver_once().await;
        self.a_keys_limit_holds_across_hosts().await;
        if let Some(redis) = &self.redis {
            self.a_dead_claimers_version_is_claimed_anew(redis).await;
        }
        eprintln!("spin cluster: scenarios took {:.1} s", began.elapsed().as_secs_f64());
        drop(self.sweepers);
        for host in &self.hosts {
            host.kill();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_spin_hosts_sharing_redis() {
    Cluster::start(SharedStore::Redis).await.run_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_spin_hosts_sharing_one_sqlite_file() {
    Cluster::start(SharedStore::SqliteFile).await.run_all().await;
}
