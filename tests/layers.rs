//! The engine's layers, written down and checked: a module imports only from its own layer or
//! lower ones, and no imports close a circle. Layer 0, `base/`, imports nothing else from the
//! engine. `engine/mod.rs` (the engine's API types) is left out: every module uses them; a
//! folder's `mod.rs` only declares its files.
//!
//! `KNOWN` lists any edge that still breaks the rule, with how it goes away; the test also
//! fails when a listed edge no longer exists, so the list only shrinks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every engine module (`folder/file`, or a file at the engine's root) and its layer: what it
/// may import is at its own layer or below. A folder's `mod.rs` only declares its files.
const LAYERS: &[(&str, u8)] = &[
    // Leaves: errors, time, the API's nouns, ids, hashing.
    ("base/error", 0),
    ("base/time", 0),
    ("base/names", 0),
    ("base/ids", 0),
    ("base/crypto", 0),
    ("base/trace", 0),
    // What adapters implement.
    ("ports/store", 1),
    ("ports/http_client", 1),
    ("ports/store_contract", 1),
    ("ports/kv", 1),
    ("ports/claimed_kv", 1),
    ("ports/counters", 1),
    // Vocabulary and policy: the configuration (which checks secrets' formats), who may do
    // what, what a request is, the record, the webhook formats.
    ("config/secrets", 2),
    ("config/limits", 2),
    ("config/key", 2),
    ("config/upstream", 2),
    ("config/gateway", 2),
    ("config/document", 2),
    ("config/parse", 2),
    ("config/cache", 2),
    ("access/keys", 2),
    ("access/tokens", 2),
    ("access/limits", 2),
    ("surface/route", 2),
    ("webhooks/signature", 2),
    ("webhooks/endpoint", 2),
    ("jobs/record", 2),
    ("jobs/request", 2),
    ("jobs/view", 2),
    // Reading and writing records, relayed calls, webhooks in and out.
    ("jobs/persist", 3),
    ("jobs/output", 3),
    ("jobs/reconcile", 3),
    ("webhooks/inbox", 3),
    ("webhooks/delivery", 3),
    ("sync/relay", 3),
    ("sync/openai", 3),
    // The commands over jobs.
    ("jobs/submit", 4),
    ("jobs/cancel", 4),
    ("jobs/sweep", 4),
    // One request through the engine: admission and dispatch, CORS, and the held long-poll.
    ("surface/cors", 5),
    ("surface/log", 5),
    ("surface/pipeline", 5),
    ("surface/long_poll", 6),
];

/// Edges that break the rule today, and how each goes away. None left: an edge added here
/// must say how it will go, and the test fails once it has.
const KNOWN: &[(&str, &str, &str)] = &[];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// The code of a file above its tests, without comment lines (doc links are not imports).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let above_tests = text.split("#[cfg(test)]").next().unwrap_or_default();
    above_tests.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// The names a folder's `mod.rs` re-exports (`pub use self::file::{A, B}`), each with the
/// module that defines it: `folder/Name` → `folder/file`.
fn reexports() -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/engine");
    let mut names = BTreeMap::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let folder = entry.unwrap().path();
        let Ok(text) = std::fs::read_to_string(folder.join("mod.rs")) else { continue };
        let folder = folder.file_name().unwrap().to_string_lossy().into_owned();
        for line in text.lines().filter(|l| l.contains("use ")) {
            let Some(rest) = line.split("use ").nth(1) else { continue };
            let rest = rest.trim_start_matches("self::");
            let Some((file, items)) = rest.split_once("::") else { continue };
            let items = items.trim_end_matches(';').trim_matches(|c| c == '{' || c == '}');
            for item in items.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                names.insert(format!("{folder}/{item}"), format!("{folder}/{file}"));
            }
        }
    }
    names
}

/// What `path` (the segments after `crate::engine::`, or after `super::` from within
/// `folder`) names: an engine module of [`LAYERS`] (a name a folder re-exports counts as the
/// module that defines it), or `None` (the engine's own API in `mod.rs`).
fn resolve(reexports: &BTreeMap<String, String>, folder: Option<&str>, first: &str, second: &str) -> Option<String> {
    let known = |m: &str| layer(m).map(|_| m.to_owned()).or_else(|| reexports.get(m).cloned());
    match folder {
        Some(folder) => known(&format!("{folder}/{first}")),
        None => known(first).or_else(|| known(&format!("{first}/{second}"))),
    }
}

/// The first two path segments of each item a `use` tree (or a path) names, from just after
/// its prefix.
fn heads(rest: &str) -> Vec<(String, String)> {
    let ident = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    let pair = |s: &str| {
        let s = s.trim();
        let first = ident(s);
        let after = s[first.len()..].strip_prefix("::").unwrap_or_default();
        (first, ident(after))
    };
    if !rest.starts_with('{') {
        return vec![pair(rest)];
    }
    let (mut depth, mut item, mut out) = (0, String::new(), Vec::new());
    for c in rest.chars() {
        match c {
            '{' => {
                depth += 1;
                if depth > 1 {
                    item.push(c);
                }
            }
            '}' if depth == 1 => {
                out.push(pair(&item));
                break;
            }
            '}' => {
                depth -= 1;
                item.push(c);
            }
            ',' if depth == 1 => out.push(pair(&std::mem::take(&mut item))),
            _ => item.push(c),
        }
    }
    out
}

/// Module → the engine modules it imports.
fn edges() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/engine");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            for inner in std::fs::read_dir(&path).unwrap() {
                let inner = inner.unwrap().path();
                let file = inner.file_stem().unwrap().to_string_lossy().into_owned();
                if file != "mod" {
                    files.push((format!("{name}/{file}"), Some(name.clone()), inner));
                }
            }
        } else if name != "mod" {
            files.push((name, None, path));
        }
    }
    let reexports = reexports();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, folder, path) in files {
        assert!(layer(&module).is_some(), "{module}: every engine module has a layer in LAYERS");
        let code = code(&path);
        let targets = graph.entry(module.clone()).or_default();
        for (prefix, within) in [("super::", folder.as_deref()), ("crate::engine::", None)] {
            // From a root file, `super::` is the engine's own API (mod.rs): not counted.
            if prefix == "super::" && within.is_none() {
                continue;
            }
            for (at, _) in code.match_indices(prefix) {
                for (first, second) in heads(&code[at + prefix.len()..]) {
                    if let Some(to) = resolve(&reexports, within, &first, &second).filter(|to| *to != module) {
                        targets.insert(to);
                    }
                }
            }
        }
    }
    graph
}

#[test]
fn engine_imports_point_down_the_layers() {
    let graph = edges();
    let known = |a: &str, b: &str| KNOWN.iter().any(|(x, y, _)| *x == a && *y == b);
    let mut wrong = Vec::new();
    for (from, targets) in &graph {
        for to in targets {
            if layer(to) > layer(from) && !known(from, to) {
                wrong.push(format!("{from} (layer {:?}) -> {to} (layer {:?})", layer(from), layer(to)));
            }
        }
    }
    assert!(wrong.is_empty(), "imports that point up a layer:\n{}", wrong.join("\n"));
}

#[test]
fn engine_imports_close_no_circle() {
    let graph = edges();
    let known = |a: &str, b: &str| KNOWN.iter().any(|(x, y, _)| *x == a && *y == b);
    // Depth-first from every module over the edges not yet known to be wrong.
    fn visit<'g>(
        at: &'g str,
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        known: &dyn Fn(&str, &str) -> bool,
        path: &mut Vec<&'g str>,
        done: &mut BTreeSet<&'g str>,
    ) -> Option<String> {
        if let Some(i) = path.iter().position(|m| *m == at) {
            return Some(format!("{} -> {at}", path[i..].join(" -> ")));
        }
        if !done.insert(at) {
            return None;
        }
        path.push(at);
        for to in graph.get(at).into_iter().flatten() {
            if !known(at, to) {
                if let Some(circle) = visit(to, graph, known, path, done) {
                    return Some(circle);
                }
            }
        }
        path.pop();
        None
    }
    for module in graph.keys() {
        let circle = visit(module, &graph, &known, &mut Vec::new(), &mut BTreeSet::new());
        assert!(circle.is_none(), "imports close a circle: {}", circle.unwrap_or_default());
    }
}

#[test]
fn every_known_wrong_edge_still_exists() {
    let graph = edges();
    for (from, to, fix) in KNOWN {
        assert!(
            graph.get(*from).is_some_and(|t| t.contains(*to)),
            "{from} -> {to} is gone ({fix}): take it out of KNOWN"
        );
    }
}

#[test]
fn base_imports_nothing_else_of_the_engine() {
    for (module, targets) in edges().iter().filter(|(m, _)| m.starts_with("base/")) {
        let outside: Vec<_> = targets.iter().filter(|t| !t.starts_with("base/")).collect();
        assert!(outside.is_empty(), "{module} imports {outside:?}");
    }
}
