//! Dependencies point one way: Redis primitives (`db`, `keys`, `scripts`,
//! `resp`) ← queue engine ← graph store ← workers / gateway ← composition
//! root ← CLI. This reads the sources and fails when a module names a layer
//! above its own through a `crate::` path (`use crate::queue::…`,
//! `crate::metrics::install()`, `use crate::{graph, …}`).

use std::path::{Path, PathBuf};

/// A layer: the source files it is made of, and the modules it must not name.
struct Layer {
    name: &'static str,
    sources: &'static [&'static str],
    forbidden: &'static [&'static str],
}

const LAYERS: &[Layer] = &[
    Layer {
        name: "Redis primitives",
        sources: &["src/db", "src/keys.rs", "src/scripts.rs", "src/resp.rs"],
        forbidden: &[
            "queue", "graph", "gateway", "metrics", "workers", "cli", "bench",
        ],
    },
    Layer {
        name: "queue engine",
        sources: &["src/queue"],
        forbidden: &["graph", "gateway", "metrics", "workers", "cli", "bench"],
    },
    Layer {
        name: "graph store",
        sources: &["src/graph"],
        forbidden: &["queue", "gateway", "workers", "cli", "bench"],
    },
];

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .map(|e| e.expect("directory entry").path())
            .collect();
        entries.sort();
        for entry in entries {
            rust_files(&entry, out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// Every module named right after `crate::` in `source`, with its line
/// number; `crate::{a, b::c}` names `a` and `b`.
fn crate_paths(source: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in source.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            // A group may run over several lines; the first module is on this one,
            // and rustfmt puts each further one at the start of a line.
            let group = rest.strip_prefix('{');
            let names = group.unwrap_or(rest);
            for part in names.split(',') {
                let ident: String = part
                    .trim_start()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !ident.is_empty() {
                    out.push((n + 1, ident));
                }
                if group.is_none() {
                    break;
                }
            }
        }
    }
    // Modules of a `use crate::{` group continued on the following lines.
    let lines: Vec<&str> = source.lines().collect();
    for (n, line) in lines.iter().enumerate() {
        if !line.trim_end().ends_with("crate::{") {
            continue;
        }
        for (m, next) in lines.iter().enumerate().skip(n + 1) {
            let next = next.trim();
            if next.starts_with('}') {
                break;
            }
            let ident: String = next
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !ident.is_empty() {
                out.push((m + 1, ident));
            }
        }
    }
    out
}

#[test]
fn no_layer_imports_one_above_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut back_edges = Vec::new();
    for layer in LAYERS {
        let mut files = Vec::new();
        for source in layer.sources {
            let path = root.join(source);
            assert!(path.exists(), "{} is gone; update LAYERS", path.display());
            rust_files(&path, &mut files);
        }
        for file in files {
            let text = std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            for (line, module) in crate_paths(&text) {
                if layer.forbidden.contains(&module.as_str()) {
                    back_edges.push(format!(
                        "{}:{line}: the {} names crate::{module}",
                        file.strip_prefix(root).unwrap_or(&file).display(),
                        layer.name,
                    ));
                }
            }
        }
    }
    assert!(
        back_edges.is_empty(),
        "lower layers import higher ones:\n{}",
        back_edges.join("\n")
    );
}

#[test]
fn the_check_sees_every_form_of_a_crate_path() {
    let source = "use crate::queue::Priority;\n\
                  let m = crate::metrics::JobMetrics::new(q); // crate::cli in a comment\n\
                  use crate::{db::Redis, graph};\n\
                  use crate::{\n    keys::Keys,\n    gateway::AppState,\n};\n";
    let found: Vec<(usize, String)> = crate_paths(source);
    let names: Vec<&str> = found.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(
        names,
        ["queue", "metrics", "db", "graph", "keys", "gateway"],
        "{found:?}"
    );
    assert_eq!(found[5].0, 6, "line numbers count from 1");
}
