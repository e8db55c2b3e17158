//! The source layout's promise: layers point one way, and no module imports one that imports it
//! back. Reads `src/` (every `crate::` path, grouped imports included) and fails naming the
//! offending import when a lower layer reaches up or two modules form a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The top-level modules from the bottom up; a module may use its own layer's modules only
/// when the module graph stays acyclic, and lower layers freely.
const LAYERS: &[&[&str]] = &[
    &["protocol", "runtime"],
    &["config"],
    &["observe"],
    &["upstream"],
    &["exchange"],
    &["routing"],
    &["frontend"],
    &["worker", "warming"],
    &["admin"],
    &["app", "sim"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        panic!("cannot read {}", dir.display());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a source file (`src/routing/plan/mod.rs` is `routing::plan`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let Ok(relative) = file.strip_prefix(src) else {
        panic!("{} is not under {}", file.display(), src.display());
    };
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.last_mut() {
        *last = last.trim_end_matches(".rs").to_string();
    }
    if parts
        .last()
        .is_some_and(|l| l == "mod" || l == "lib" || l == "main")
    {
        parts.pop();
    }
    parts
}

/// The code of a file without its comments (doc links name modules without using them).
fn code_of(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Every path that follows `crate::` in `code`, a grouped import `crate::{a::b, c}` giving
/// each of its members.
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(found) = code[from..].find("crate::") {
        let start = from + found;
        from = start + 7;
        if start > 0 && (is_ident(bytes[start - 1]) || bytes[start - 1] == b'$') {
            continue;
        }
        let rest = &code[from..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(group.len(), |(i, _)| i);
            for member in group[..end].split(',') {
                let path: Vec<String> = member
                    .trim()
                    .split("::")
                    .map(|s| s.trim().to_string())
                    .take_while(|s| !s.is_empty() && s.bytes().all(is_ident))
                    .collect();
                if !path.is_empty() {
                    out.push(path);
                }
            }
        } else {
            let end = rest
                .bytes()
                .position(|b| !(is_ident(b) || b == b':'))
                .unwrap_or(rest.len());
            let path: Vec<String> = rest[..end]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            // `crate::name!` is a macro, not a module.
            let macro_call = rest[end..].starts_with('!');
            if !path.is_empty() && !macro_call {
                out.push(path);
            }
        }
    }
    out
}

struct Graph {
    /// Module path -> modules it uses (longest prefix that is a module), with one example
    /// import each.
    edges: BTreeMap<String, BTreeMap<String, String>>,
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .map(|f| module_of(&src, f).join("::"))
        .collect();
    let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for file in &files {
        let me = module_of(&src, file);
        if me.is_empty() {
            continue; // lib.rs, main.rs
        }
        let Ok(text) = fs::read_to_string(file) else {
            panic!("cannot read {}", file.display());
        };
        for path in crate_paths(&code_of(&text)) {
            let mut target = path.clone();
            while target.len() > 1 && !modules.contains(&target.join("::")) {
                target.pop();
            }
            let target = target.join("::");
            let mine = me.join("::");
            // A module and its own submodules are one unit.
            if target == mine
                || mine.starts_with(&format!("{target}::"))
                || target.starts_with(&format!("{mine}::"))
            {
                continue;
            }
            edges
                .entry(mine.clone())
                .or_default()
                .entry(target)
                .or_insert_with(|| format!("{}: crate::{}", file.display(), path.join("::")));
        }
    }
    Graph { edges }
}

#[test]
fn lower_layers_never_use_higher_ones() {
    let graph = graph();
    let mut wrong = Vec::new();
    for (from, targets) in &graph.edges {
        let top = from.split("::").next().unwrap_or_default();
        for (to, example) in targets {
            let to_top = to.split("::").next().unwrap_or_default();
            if top == to_top {
                continue;
            }
            match (layer_of(top), layer_of(to_top)) {
                (Some(a), Some(b)) if a < b => wrong.push(format!("{from} -> {to} ({example})")),
                (None, _) => wrong.push(format!("{top} is in no layer: add it to LAYERS")),
                (_, None) => wrong.push(format!("{to_top} is in no layer: add it to LAYERS")),
                _ => {}
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that point up:\n{}",
        wrong.join("\n")
    );
    assert!(
        graph.edges.len() > 20,
        "the scan found too few modules to mean anything"
    );
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let graph = graph();
    // Top-level modules, then every module: each graph must be acyclic.
    for depth in [1, usize::MAX] {
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (from, targets) in &graph.edges {
            let cut = |m: &str| m.split("::").take(depth).collect::<Vec<_>>().join("::");
            for to in targets.keys() {
                let (a, b) = (cut(from), cut(to));
                if a != b {
                    edges.entry(a).or_default().insert(b);
                }
            }
        }
        if let Some(cycle) = find_cycle(&edges) {
            let examples: Vec<String> = cycle
                .windows(2)
                .map(|w| {
                    let example = graph
                        .edges
                        .iter()
                        .filter(|(from, _)| from.starts_with(w[0].as_str()))
                        .flat_map(|(_, t)| t.iter())
                        .find(|(to, _)| to.starts_with(w[1].as_str()))
                        .map_or(String::new(), |(_, e)| e.clone());
                    format!("{} -> {} ({example})", w[0], w[1])
                })
                .collect();
            panic!("an import cycle:\n{}", examples.join("\n"));
        }
    }
}

/// A cycle of `edges` as the list of its modules, the first repeated at the end.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(node.to_string(), Mark::Open);
        stack.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            match marks.get(next.as_str()) {
                Some(Mark::Open) => {
                    let at = stack.iter().position(|m| m == next).unwrap_or(0);
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(Mark::Done) => {}
                None => {
                    if let Some(cycle) = visit(next, edges, marks, stack) {
                        return Some(cycle);
                    }
                }
            }
        }
        stack.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in edges.keys() {
        if !marks.contains_key(node.as_str()) {
            let mut stack = Vec::new();
            if let Some(cycle) = visit(node, edges, &mut marks, &mut stack) {
                return Some(cycle);
            }
        }
    }
    None
}

#[test]
fn the_scanner_reads_plain_and_grouped_imports() {
    let code = "use crate::a::b;\nuse crate::{c::d, e};\nlet x = crate::f::g(1);\n$crate::h::i!();\ncrate::m!(x);";
    let paths = crate_paths(code);
    let names: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(names, vec!["a::b", "c::d", "e", "f::g"]);
}
