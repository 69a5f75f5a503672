//! The configurations the repository ships (the local quick start in wrangler.toml + dev.env,
//! and spin.toml's defaults) are valid: a typo there would only show at the first request.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use edge_predict::engine::Config;

fn read(name: &str) -> String {
    std::fs::read_to_string(format!("{}/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn the_workers_local_configuration_parses_with_dev_env() {
    let manifest: toml::Table = read("wrangler.toml").parse().unwrap();
    let doc = manifest["vars"]["EDGE_PREDICT_CONFIG"].as_str().unwrap();
    let secrets: BTreeMap<String, String> = read("dev.env")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let config = Config::parse(doc, &|name| secrets.get(name).cloned()).unwrap();
    assert!(config.dev_mode && config.models.contains_key("demo") && config.chains.contains_key("demo-chain"));
    assert!(config.browser_tokens.is_some() && config.webhooks.outbound_secret.is_some());
}

#[test]
fn spins_default_configuration_parses_with_its_default_variables() {
    let manifest: toml::Table = read("spin.toml").parse().unwrap();
    let variables = manifest["variables"].as_table().unwrap();
    let default =
        |name: &str| variables.get(name).and_then(|v| v.get("default")).and_then(|d| d.as_str()).map(str::to_owned);
    let doc = default("edge_predict_config").unwrap();
    // Spin variable names are lowercase; the adapter looks secret names up lowercased.
    let config = Config::parse(&doc, &|name| default(&name.to_ascii_lowercase())).unwrap();
    assert_eq!(config.public_base_url.as_str(), "http://127.0.0.1:3000/");
    assert!(config.models.contains_key("demo") && config.browser_tokens.is_some());
    // Every variable the component reads is passed to it.
    let component_vars = manifest["component"]["edge-predict"]["variables"].as_table().unwrap();
    for name in variables.keys() {
        assert!(component_vars.contains_key(name), "{name} is not passed to the component");
    }
}
