//! The engine's layers, written down and checked: a module imports only from its own layer or
//! lower ones, and no imports close a circle. Layer 0, `base/`, imports nothing else from the
//! engine. `engine/mod.rs` (the API types, the request pipeline for now) is left out: children
//! use its types, and it calls into them.
//!
//! `KNOWN` lists any edge that still breaks the rule, with how it goes away; the test also
//! fails when a listed edge no longer exists, so the list only shrinks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every engine module (a file, or a folder counted whole) and its layer.
const LAYERS: &[(&str, u8)] = &[
    ("base", 0),
    ("signature", 1),
    ("store", 1),
    ("upstream", 1),
    ("endpoint", 1),
    ("route", 2),
    ("config", 2),
    ("submit", 2),
    ("job", 3),
    ("auth", 4),
    ("tokens", 4),
    ("forward", 5),
    ("output", 5),
    ("delivery", 5),
    ("jobs", 6),
    ("reconcile", 6),
    ("inbox", 6),
    ("openai", 6),
    ("sweep", 6),
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

/// The first path segment of each item a `use` tree names, from just after `prefix::`.
fn heads(rest: &str) -> Vec<String> {
    let ident = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    if !rest.starts_with('{') {
        return vec![ident(rest)];
    }
    let (mut depth, mut item, mut out) = (0, String::new(), Vec::new());
    for c in rest.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth == 1 => {
                out.push(ident(item.trim()));
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 1 => out.push(ident(std::mem::take(&mut item).trim())),
            _ if depth == 1 => item.push(c),
            _ => {}
        }
    }
    out
}

/// Module → the engine modules it imports.
fn edges() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/engine");
    let modules: BTreeSet<&str> = LAYERS.iter().map(|(m, _)| *m).collect();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            for inner in std::fs::read_dir(&path).unwrap() {
                files.push((name.clone(), true, inner.unwrap().path()));
            }
        } else if name != "mod" {
            files.push((name, false, path));
        }
    }
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, in_folder, path) in files {
        assert!(layer(&module).is_some(), "{module}: every engine module has a layer in LAYERS");
        let code = code(&path);
        let targets = graph.entry(module.clone()).or_default();
        for (prefix, base) in [("super::", !in_folder), ("crate::engine::", true)] {
            for (at, _) in code.match_indices(prefix) {
                // From inside a folder, `super::` names a sibling: the same module.
                if !base {
                    continue;
                }
                for head in heads(&code[at + prefix.len()..]) {
                    if modules.contains(head.as_str()) && head != module {
                        targets.insert(head);
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
    assert!(edges()["base"].is_empty(), "{:?}", edges()["base"]);
}
