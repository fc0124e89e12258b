//! `cargo xtask cycles`: fails when modules of a crate import each other, directly or
//! through others (a ci step, run on agora-server and agora-client).
//!
//! A module is a top-level file (`src/queue.rs`) or folder (`src/queue/…`) of the
//! crate; its imports are the `crate::<module>` paths in its code, comments left out,
//! `use crate::{a, b::c}` groups included. The crate root (`lib.rs`) and binaries
//! (`main.rs`, `bin/`) are left out: they declare and wire the modules, and nothing
//! imports them. An edge to the root's own items (`crate::Broker`) is not a module and
//! is not followed. Text-based on purpose, like the rest of xtask (std only): it reads
//! the code as written, which is what a newcomer reads too.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::process::Result;

/// Module name → the modules it imports.
pub(crate) type Graph = BTreeMap<String, BTreeSet<String>>;

/// The crates whose modules must not form a cycle.
pub(crate) const CRATES: &[&str] = &["agora-server", "agora-client"];

pub(crate) fn run() -> Result<()> {
    let mut failed = Vec::new();
    for krate in CRATES {
        let src = crate::project_root().join(krate).join("src");
        let graph = graph(&src)?;
        let cycles = cycles(&graph);
        let edges: usize = graph.values().map(BTreeSet::len).sum();
        if cycles.is_empty() {
            println!(
                "{krate}: {} modules, {edges} imports between them, no cycle",
                graph.len()
            );
        }
        for c in cycles {
            let members: BTreeSet<&String> = c.iter().collect();
            let all = component_of(&graph, &c[0]);
            let others: Vec<&str> = all
                .iter()
                .filter(|m| !members.contains(&m.to_string()))
                .copied()
                .collect();
            let also = match others.is_empty() {
                true => String::new(),
                false => format!(" (in the same knot: {})", others.join(", ")),
            };
            failed.push(format!("{krate}: {}{also}", c.join(" -> ")));
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    for f in &failed {
        eprintln!("import cycle: {f}");
    }
    Err(format!(
        "{} import cycle(s) between modules; break each by moving the shared type to a module both can import, or by handing one side a handle (a trait or a closure) instead of the other's types",
        failed.len()
    )
    .into())
}

/// Reads the modules under `src` and their `crate::` imports.
pub(crate) fn graph(src: &Path) -> Result<Graph> {
    let mut files: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in fs::read_dir(src)? {
        let path = entry?.path();
        let name = path
            .file_stem()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if path.is_dir() {
            if name != "bin" {
                files.entry(name).or_default().extend(rust_files(&path)?);
            }
        } else if path.extension().is_some_and(|e| e == "rs") && name != "lib" && name != "main" {
            files.entry(name).or_default().push(path);
        }
    }
    let modules: BTreeSet<String> = files.keys().cloned().collect();
    let mut graph = Graph::new();
    for (module, paths) in &files {
        let mut deps = BTreeSet::new();
        for p in paths {
            let code = strip_comments(&fs::read_to_string(p)?);
            for target in crate_paths(&code) {
                if modules.contains(&target) && &target != module {
                    deps.insert(target);
                }
            }
        }
        graph.insert(module.clone(), deps);
    }
    Ok(graph)
}

fn rust_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(rust_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(out)
}

/// The code without `//` and `/* */` comments (doc comments included: an intra-doc
/// link is not an import).
fn strip_comments(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let b = code.as_bytes();
    let (mut i, mut depth, mut in_str) = (0, 0usize, false);
    while i < b.len() {
        if depth > 0 {
            if b[i..].starts_with(b"*/") {
                depth -= 1;
                i += 2;
            } else if b[i..].starts_with(b"/*") {
                depth += 1;
                i += 2;
            } else {
                i += 1;
            }
            continue;
        }
        if in_str {
            if b[i] == b'\\' {
                i += 2;
                continue;
            }
            if b[i] == b'"' {
                in_str = false;
            }
            i += 1;
            continue;
        }
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            depth = 1;
            i += 2;
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            i += 3; // a char literal such as '"'
        } else if b[i] == b'\'' && b.get(i + 1) == Some(&b'\\') {
            // An escaped char literal such as '\'' or '\n'.
            i += 2;
            while i < b.len() && b[i] != b'\'' {
                i += 1;
            }
            i += 1;
        } else {
            if b[i] == b'"' {
                in_str = true;
            }
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// The first segment of every `crate::` path: `crate::queue::X` gives `queue`,
/// `crate::{a, b::c}` gives `a` and `b`.
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        // Not the tail of another identifier (`my_crate::`).
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut token = String::new();
            let mut at_start = true;
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => at_start = true,
                    c if at_start && depth == 0 && (c.is_alphanumeric() || c == '_') => {
                        token.push(c)
                    }
                    _ if !token.is_empty() => {
                        out.push(std::mem::take(&mut token));
                        at_start = false;
                    }
                    _ => {}
                }
            }
            if !token.is_empty() {
                out.push(token);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

/// Every cycle, one per strongly connected component of two or more modules, as the
/// path around it (`a -> b -> a`).
fn component_of<'a>(graph: &'a Graph, start: &'a str) -> BTreeSet<&'a str> {
    let mut c: BTreeSet<&str> = reachable(graph, start)
        .into_iter()
        .filter(|m| reachable(graph, m).contains(start))
        .collect();
    c.insert(start);
    c
}

pub(crate) fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut done: BTreeSet<&str> = BTreeSet::new();
    for start in graph.keys() {
        if done.contains(start.as_str()) {
            continue;
        }
        // The modules that reach back to `start` form its component.
        let reach = reachable(graph, start);
        let component: BTreeSet<&str> = reach
            .iter()
            .copied()
            .filter(|m| reachable(graph, m).contains(start.as_str()))
            .collect();
        done.extend(component.iter().copied());
        if component.len() > 1 {
            found.push(path_back(graph, start, &component));
        }
    }
    found
}

fn reachable<'a>(graph: &'a Graph, from: &str) -> BTreeSet<&'a str> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<&str> = graph
        .get(from)
        .map(|d| d.iter().map(String::as_str).collect())
        .unwrap_or_default();
    while let Some(m) = stack.pop() {
        if let Some((name, deps)) = graph.get_key_value(m) {
            if seen.insert(name.as_str()) {
                stack.extend(deps.iter().map(String::as_str));
            }
        }
    }
    seen
}

/// A shortest path from `start` back to itself inside `component`.
fn path_back(graph: &Graph, start: &str, component: &BTreeSet<&str>) -> Vec<String> {
    let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(m) = queue.pop_front() {
        for d in graph.get(m).into_iter().flatten() {
            let d = d.as_str();
            if !component.contains(d) {
                continue;
            }
            if d == start {
                let mut back = Vec::new();
                let mut at = m;
                while at != start {
                    back.push(at.to_owned());
                    at = prev[at];
                }
                back.reverse();
                let mut path = vec![start.to_owned()];
                path.extend(back);
                path.push(start.to_owned());
                return path;
            }
            if !prev.contains_key(d) {
                prev.insert(d, m);
                queue.push_back(d);
            }
        }
    }
    vec![start.to_owned()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    #[test]
    fn finds_a_cycle_added_on_purpose_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("xtask-cycles-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        write(&dir, "lib.rs", "mod a; mod b; mod c; use crate::a::A;");
        write(&dir, "a.rs", "use crate::b::B;\n/// See [`crate::c`].\n");
        write(&dir, "b/mod.rs", "mod inner;");
        write(&dir, "b/inner.rs", "use crate::{c::C, Broker};");
        write(
            &dir,
            "c.rs",
            "// use crate::a;\nfn f() { let q = '\"'; let s = \"crate::a\"; let e = '\\''; }\n",
        );
        let g = graph(&dir).unwrap();
        assert_eq!(g["a"], BTreeSet::from(["b".to_owned()]));
        assert_eq!(g["b"], BTreeSet::from(["c".to_owned()]));
        assert!(g["c"].is_empty(), "comments and strings are not imports");
        assert!(cycles(&g).is_empty());
        // The cycle, on purpose: c imports a, through a group.
        write(&dir, "c.rs", "use crate::{ a::{self, A}, };");
        let found = cycles(&graph(&dir).unwrap());
        assert_eq!(found, vec![vec!["a", "b", "c", "a"]]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
