//! The `local-upstream` binary: startup line, `--config`, clean SIGTERM exit.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use axum::http::StatusCode;
use serde_json::json;

#[cfg(unix)]
#[tokio::test]
async fn binary_prints_its_address_reads_config_and_stops_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("local-upstream-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.json");
    std::fs::write(
        &config,
        json!({"addr": "127.0.0.1:8788", "api_key": "from-file", "model": ["m1"], "quiet": true}).to_string(),
    )
    .unwrap();

    // The flag wins over the file's addr, so port 0 is used.
    let mut child = Command::new(env!("CARGO_BIN_EXE_local-upstream"))
        .arg("--config")
        .arg(&config)
        .args(["--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line
        .trim_end()
        .strip_prefix("local-upstream listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:") && !url.ends_with(":0"), "{url}");

    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{url}/models/m1/production/predict"))
        .header("authorization", "Bearer from-file")
        .json(&json!({"ok": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = client
        .post(format!("{url}/models/demo/production/predict"))
        .header("authorization", "Bearer from-file")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND, "the file replaced the model list");

    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert!(status.success(), "exit status {status:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
