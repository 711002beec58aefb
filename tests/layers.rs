//! The layers of `src/` as folders, checked: imports point one way only (model ← policy ←
//! decide ← io ← service ← cli), no two modules import each other through any path, and the
//! pure layers do no I/O. The compiler cannot see folders; this test can.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const LAYERS: [&str; 6] = ["model", "policy", "decide", "io", "service", "cli"];

/// What the pure layers must never touch.
const IO: [&str; 6] = [
    "std::fs",
    "std::net",
    "std::process",
    "tokio::",
    "bollard",
    "reqwest",
];

fn rank(layer: &str) -> usize {
    LAYERS.iter().position(|l| *l == layer).unwrap()
}

/// Every `.rs` file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The module a file belongs to, as `layer::module` (`layer` for the layer's own mod.rs).
fn module_of(src: &Path, file: &Path) -> String {
    let parts: Vec<String> = file
        .strip_prefix(src)
        .unwrap()
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    match parts.as_slice() {
        [layer, m] if m == "mod" => layer.clone(),
        [layer, m, ..] => format!("{layer}::{m}"),
        [only] => only.clone(),
        [] => String::new(),
    }
}

/// The code a file contributes outside its unit tests: a `tests.rs` (or `*_tests.rs`) file is
/// all tests, and a file's `#[cfg(test)] mod tests` block ends it. Test code may reach across (a test sets up a
/// session to drive a pruner); the architecture is the code that ships.
fn shipped(file: &Path, text: &str) -> String {
    if file.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
        n == "tests.rs" || n.ends_with("_tests.rs") || n == "fake.rs" || n == "fuzz.rs"
    }) {
        return String::new();
    }
    let end = text.find("#[cfg(test)]\nmod tests").unwrap_or(text.len());
    text[..end].to_owned()
}

/// The modules a piece of code names: `crate::layer::module` paths, whether in `use` lines or
/// inline, and braced groups such as `crate::layer::{a, b}`.
fn imports(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let layer: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !LAYERS.contains(&layer.as_str()) {
            continue;
        }
        let after = &rest[layer.len()..];
        let Some(after) = after.strip_prefix("::") else {
            out.insert(layer);
            continue;
        };
        if let Some(group) = after.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(format!("{layer}::{name}"));
                }
            }
            continue;
        }
        let module: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        out.insert(format!("{layer}::{module}"));
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files(&src) {
        let from = module_of(&src, &file);
        if !LAYERS.contains(&from.split("::").next().unwrap()) {
            continue; // lib.rs, main.rs
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let code = shipped(&file, &text);
        let edges = graph.entry(from.clone()).or_default();
        edges.extend(imports(&code).into_iter().filter(|to| *to != from));
    }
    graph
}

#[test]
fn imports_point_down_the_layers() {
    let mut upward = Vec::new();
    for (from, edges) in graph() {
        let from_layer = from.split("::").next().unwrap();
        for to in edges {
            let to_layer = to.split("::").next().unwrap();
            if rank(to_layer) > rank(from_layer) {
                upward.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports pointing up the layers: {upward:#?}"
    );
}

#[test]
fn no_two_modules_import_each_other_through_any_path() {
    let graph = graph();
    // Depth-first search; a grey node met again closes a cycle.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_owned(), 1);
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(1) => {
                    let start = path.iter().position(|p| p == next).unwrap();
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(next, graph, state, path) {
                        return Some(c);
                    }
                }
            }
        }
        path.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if !state.contains_key(node) {
            let cycle = visit(node, &graph, &mut state, &mut Vec::new());
            assert!(
                cycle.is_none(),
                "an import cycle: {}",
                cycle.unwrap().join(" -> ")
            );
        }
    }
}

#[test]
fn the_pure_layers_do_no_io() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    for layer in ["model", "decide"] {
        for file in files(&src.join(layer)) {
            let text = std::fs::read_to_string(&file).unwrap();
            let code = shipped(&file, &text);
            for io in IO {
                if code.contains(io) {
                    found.push(format!("{}: {io}", file.display()));
                }
            }
        }
    }
    assert!(found.is_empty(), "I/O in a pure layer: {found:#?}");
}

#[test]
fn the_checker_sees_paths_in_every_shape() {
    let code = "use crate::model::{failure::Failure, image};\n\
                let x = crate::policy::state::State::load(p);\n\
                use crate::decide::pin;";
    let found: Vec<String> = imports(code).into_iter().collect();
    assert_eq!(
        found,
        [
            "decide::pin",
            "model::failure",
            "model::image",
            "policy::state"
        ]
    );
}
