//! The house rule of `pipeline/`: imports run one way. No module of the `herald` binary, the
//! store or the HTTP crate imports a module that imports it back, directly or around a longer
//! circle. (Between crates, Cargo already forbids cycles; this checks inside each one.)
//!
//! A module is a file; an import is a `crate::…` or `super::…` path naming another module of
//! the same crate. The crate root only declares and re-exports its modules, so references to
//! it are not counted as a module's dependency.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`cli::client`) → file, for every `.rs` file under `src`.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if parts.last().is_some_and(|l| l == "mod") {
                parts.pop();
            }
            let name = parts.join("::");
            if name != "lib" && name != "main" {
                found.insert(name, path);
            }
        }
    }
    found
}

/// The modules `module` names through `crate::` and `super::` paths (comments skipped).
fn imports(module: &str, file: &Path, known: &BTreeMap<String, PathBuf>) -> BTreeSet<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let parent: Vec<&str> = {
        let mut parts: Vec<&str> = module.split("::").collect();
        let is_dir_module = file.file_name().is_some_and(|f| f == "mod.rs");
        if !is_dir_module {
            parts.pop();
        }
        parts
    };
    let mut found = BTreeSet::new();
    for line in text.lines().map(str::trim).filter(|l| !l.starts_with("//")) {
        for (marker, base) in [("crate::", Vec::new()), ("super::", parent.clone())] {
            let mut rest = line;
            while let Some(at) = rest.find(marker) {
                rest = &rest[at + marker.len()..];
                let path: Vec<&str> =
                    rest.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).next().unwrap_or("").split("::").collect();
                // The longest prefix that is a module of this crate.
                let mut full: Vec<String> = base.iter().map(|s| (*s).to_owned()).collect();
                let mut best = None;
                for segment in path.iter().filter(|s| !s.is_empty()) {
                    full.push((*segment).to_owned());
                    let candidate = full.join("::");
                    if known.contains_key(&candidate) {
                        best = Some(candidate);
                    }
                }
                if marker == "super::" && best.is_none() && !base.is_empty() {
                    best = Some(base.join("::")).filter(|b| known.contains_key(b));
                }
                if let Some(target) = best
                    && target != module
                {
                    found.insert(target);
                }
            }
        }
    }
    found
}

/// A circle of imports, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

fn graph_of(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let known = modules(src);
    known.iter().map(|(module, file)| (module.clone(), imports(module, file, &known))).collect()
}

#[test]
fn no_module_of_pipeline_imports_one_that_imports_it_back() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for src in [root.join("src"), root.join("store/src"), root.join("http/src")] {
        let graph = graph_of(&src);
        assert!(graph.len() >= 4, "{} has modules: {graph:?}", src.display());
        if let Some(cycle) = find_cycle(&graph) {
            panic!("{}: imports run in a circle: {}", src.display(), cycle.join(" → "));
        }
    }
}

#[test]
fn the_checker_sees_a_circle() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("cli")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\npub mod cli;\n").unwrap();
    std::fs::write(src.join("a.rs"), "use crate::b::Thing;\n").unwrap();
    std::fs::write(src.join("b.rs"), "// use crate::a would be a circle, but this is a comment\npub struct Thing;\n").unwrap();
    std::fs::write(src.join("cli/mod.rs"), "pub mod x;\n").unwrap();
    std::fs::write(src.join("cli/x.rs"), "use super::super::a;\nuse crate::a::f;\n").unwrap();
    assert_eq!(find_cycle(&graph_of(src)), None, "a → b and cli::x → a run one way");
    std::fs::write(src.join("b.rs"), "use crate::cli::x::run;\n").unwrap();
    let cycle = find_cycle(&graph_of(src)).expect("a → b → cli::x → a is a circle");
    assert_eq!(cycle.first(), cycle.last());
    assert!(cycle.len() == 4, "{cycle:?}");
}
