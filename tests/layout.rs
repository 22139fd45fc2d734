//! The crate's modules form a hierarchy: no top-level module names another
//! that names it back, directly or through others. Read from the sources:
//! every `crate::<module>` path in a module's code (imports and paths; not
//! comments or doc links), and every `crate::<Item>` the root re-exports,
//! is an edge from that module to the one that defines it. The same holds
//! for the modules of the command-line tool, whose root (`main.rs`) only
//! runs the commands: no module takes anything from it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

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

/// The top-level module of a file under `src/`: `src/hub/driver.rs` is
/// `hub`, `src/query.rs` is `query`; the crate root and the binary are none.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    match first.as_str() {
        "lib.rs" | "bin" => None,
        name => Some(name.trim_end_matches(".rs").to_owned()),
    }
}

/// The items the crate root re-exports, by the module that defines them:
/// `pub use crate::error::{BoxError, Error};` maps `Error` to `error`.
fn root_reexports(src: &Path) -> BTreeMap<String, String> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let mut names = BTreeMap::new();
    for line in lib.lines() {
        let Some(rest) = line.trim().strip_prefix("pub use crate::") else {
            continue;
        };
        let (module, items) = rest.split_once("::").unwrap();
        let items = items
            .trim_end_matches(';')
            .trim_matches(|c| c == '{' || c == '}');
        // `pub use crate::auth::layer::AuthLayer;` names `AuthLayer`.
        for item in items.split(',') {
            let name = item.trim().rsplit("::").next().unwrap();
            names.insert(name.to_owned(), module.to_owned());
        }
    }
    names
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let files: Vec<(String, PathBuf)> = files
        .into_iter()
        .filter_map(|f| Some((module_of(&src, &f)?, f)))
        .collect();
    edges_of(&files, &root_reexports(&src), None)
}

/// The modules of the command-line tool and what each takes from the
/// others; an item of `main.rs` is an edge to `main`.
fn cli_graph() -> BTreeMap<String, BTreeSet<String>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bin/goenhance-jobs");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    let files: Vec<(String, PathBuf)> = files
        .into_iter()
        .map(|f| (f.file_stem().unwrap().to_str().unwrap().to_owned(), f))
        .collect();
    edges_of(&files, &BTreeMap::new(), Some("main"))
}

/// The edges between `files` (module name, path): a `crate::<name>` path
/// names a module, an item the root re-exports, or (when `root_items` is
/// given) an item of that root module.
fn edges_of(
    files: &[(String, PathBuf)],
    reexports: &BTreeMap<String, String>,
    root_items: Option<&str>,
) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<String> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, file) in files {
        // Code only: a doc link up the hierarchy is not a dependency.
        let text: String = std::fs::read_to_string(file)
            .unwrap()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let deps = edges.entry(from.clone()).or_default();
        for (i, _) in text.match_indices("crate::") {
            // Not part of a longer name (`goenhance_jobs::…` has no
            // `crate::` in it, but `my_crate::` would).
            if text[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &text[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            // A module by name, or an item through the root's re-export.
            let target = if modules.contains(&name) {
                Some(name)
            } else {
                reexports
                    .get(&name)
                    .cloned()
                    .or(root_items.map(str::to_owned))
            };
            if let Some(target) = target.filter(|t| t != from) {
                deps.insert(target);
            }
        }
    }
    edges
}

/// A cycle through `start`, if any, as the list of modules on it.
fn cycle_from(
    edges: &BTreeMap<String, BTreeSet<String>>,
    start: &str,
    at: &str,
    path: &mut Vec<String>,
    seen: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    for next in edges.get(at).into_iter().flatten() {
        if next == start {
            let mut cycle = path.clone();
            cycle.push(start.to_owned());
            return Some(cycle);
        }
        if seen.insert(next.clone()) {
            path.push(next.clone());
            if let Some(c) = cycle_from(edges, start, next, path, seen) {
                return Some(c);
            }
            path.pop();
        }
    }
    None
}

#[test]
fn no_module_depends_on_one_that_depends_on_it() {
    let edges = graph();
    // The graph is read, not empty: the client depends on the hub.
    assert!(edges["client"].contains("hub"), "{edges:?}");
    assert!(edges["hub"].contains("stack"), "{edges:?}");
    // Through a re-export at the root: `crate::Error` is the error module's.
    assert!(edges["transport"].contains("error"), "{edges:?}");
    for start in edges.keys() {
        let mut path = vec![start.clone()];
        let cycle = cycle_from(&edges, start, start, &mut path, &mut BTreeSet::new());
        assert!(
            cycle.is_none(),
            "module cycle: {}",
            cycle.unwrap().join(" → ")
        );
    }
}

#[test]
fn no_module_of_the_cli_depends_on_one_that_depends_on_it() {
    let edges = cli_graph();
    // The graph is read, not empty.
    assert!(edges["main"].contains("waits"), "{edges:?}");
    assert!(edges["download"].contains("report"), "{edges:?}");
    for (module, deps) in &edges {
        assert!(
            module == "main" || !deps.contains("main"),
            "{module} takes an item of main.rs: {deps:?}"
        );
    }
    for start in edges.keys() {
        let mut path = vec![start.clone()];
        let cycle = cycle_from(&edges, start, start, &mut path, &mut BTreeSet::new());
        assert!(
            cycle.is_none(),
            "module cycle in the cli: {}",
            cycle.unwrap().join(" → ")
        );
    }
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    edges.entry("a".into()).or_default().insert("b".into());
    edges.entry("b".into()).or_default().insert("c".into());
    edges.entry("c".into()).or_default().insert("a".into());
    let cycle = cycle_from(
        &edges,
        "a",
        "a",
        &mut vec!["a".into()],
        &mut BTreeSet::new(),
    );
    assert_eq!(cycle.unwrap(), ["a", "b", "c", "a"]);
}
