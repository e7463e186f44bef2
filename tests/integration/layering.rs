//! The modules depend one way (docs/architecture.md, "Layers"): each
//! top-level module of src/ imports only modules of its own layer or of the
//! layers after it, and no import loop exists between them. Read from the
//! `crate::` paths of the source itself (unit tests left out).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Left to right: a module may import its own layer and those after it.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "assembly",
        &["cli", "server", "app", "simulate", "replay", "fuzz_api"],
    ),
    ("front ends", &["smtp", "portal", "admin", "dovecot"]),
    ("domain", &["policy", "accounts"]),
    ("queue", &["spool", "delivery", "secrets"]),
    ("store", &["store"]),
    (
        "leaves",
        &[
            "config",
            "clock",
            "address",
            "events",
            "telemetry",
            "tls",
            "locks",
            "cms",
            "files",
            "memory",
        ],
    ),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, mods)| mods.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments and without unit-test modules (a file
/// named `tests.rs`, or an inline `#[cfg(test)] mod tests { ... }`, which
/// by convention closes a file).
fn production_code(path: &Path) -> String {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => &text[..],
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(at) => &l[..at],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every top-level module named by a `crate::` path, `use crate::{a, b}`
/// groups included.
fn imports(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        let boundary = at == 0 || {
            let c = rest.as_bytes()[at - 1] as char;
            !(c.is_alphanumeric() || c == '_')
        };
        if boundary {
            if let Some(group) = after.strip_prefix('{') {
                let (mut depth, mut item, mut end) = (0, String::new(), group.len());
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => {
                            end = i;
                            break;
                        }
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            out.extend(first_segment(&item));
                            item.clear();
                            continue;
                        }
                        _ => {}
                    }
                    item.push(c);
                }
                out.extend(first_segment(&item));
                rest = &group[end..];
                continue;
            }
            out.extend(first_segment(after));
        }
        rest = after;
    }
    out
}

fn first_segment(path: &str) -> Option<String> {
    let name: String = path
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty() && name != "self").then_some(name)
}

/// Module → the other top-level modules it imports, and from which files.
fn graph() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        let entry = edges.entry(top.clone()).or_default();
        for module in imports(&production_code(&file)) {
            if module != top {
                entry
                    .entry(module)
                    .or_default()
                    .insert(rel.display().to_string());
            }
        }
    }
    edges
}

#[test]
fn every_module_has_a_layer_and_imports_only_to_its_right() {
    let edges = graph();
    let mut wrong = Vec::new();
    for (module, deps) in &edges {
        let Some(from) = layer_of(module) else {
            wrong.push(format!(
                "{module} is in no layer (add it to LAYERS and docs/architecture.md)"
            ));
            continue;
        };
        for (dep, files) in deps {
            match layer_of(dep) {
                Some(to) if to >= from => {}
                Some(to) => wrong.push(format!(
                    "{module} ({}) imports {dep} ({}), a layer to its left, in {files:?}",
                    LAYERS[from].0, LAYERS[to].0
                )),
                None if edges.contains_key(dep) => {
                    wrong.push(format!("{dep} is in no layer"));
                }
                None => {} // not a module of ours (e.g. a macro path)
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn no_import_loop_between_modules() {
    let edges = graph();
    // Depth-first search for a back edge; reports the loop it closes.
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut cycle = path[at..].to_vec();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for dep in edges.get(m).into_iter().flat_map(|d| d.keys()) {
            if edges.contains_key(dep)
                && let Some(cycle) = visit(dep, edges, path, done)
            {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for module in edges.keys() {
        if let Some(cycle) = visit(module, &edges, &mut Vec::new(), &mut done) {
            panic!("import loop: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_reader_sees_grouped_and_inline_imports() {
    let code = "use crate::{accounts::{Account, Origin}, store};\nlet x = crate::clock::now();\nuse super::crate_thing;";
    let found: Vec<String> = imports(code).into_iter().collect();
    assert_eq!(found, ["accounts", "clock", "store"]);
}
