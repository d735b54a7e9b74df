//! Dependencies point one way: Redis primitives (`db`, `keys`, `scripts`,
//! `resp`) ← queue engine ← graph store ← workers / gateway ← composition
//! root ← CLI. This reads the sources and fails when a module names a layer
//! above its own through a path (`use crate::queue::…`,
//! `crate::metrics::install()`, `use crate::{graph, …}`; in the workers
//! crate also `graphq::gateway::…`).

use std::path::{Path, PathBuf};

/// A module path a layer must not name: its prefix (`crate::` within a
/// crate, `graphq::` for the library from the workers crate) and the module.
type Named = (&'static str, &'static str);

/// A layer: the source files it is made of, and the modules it must not name
/// (in groups, so that layers share the groups above them).
struct Layer {
    name: &'static str,
    sources: &'static [&'static str],
    forbidden: &'static [&'static [Named]],
}

/// The library's modules above the graph store, for the layers below it.
const ABOVE_GRAPH: [Named; 5] = [
    ("crate::", "gateway"),
    ("crate::", "metrics"),
    ("crate::", "protocol"),
    ("crate::", "auth"),
    ("crate::", "config"),
];

const LAYERS: &[Layer] = &[
    Layer {
        name: "Redis primitives",
        sources: &[
            "src/db",
            "src/keys.rs",
            "src/scripts.rs",
            "src/resp.rs",
            "src/os.rs",
            "src/redis_server.rs",
        ],
        forbidden: &[&[("crate::", "queue"), ("crate::", "graph")], &ABOVE_GRAPH],
    },
    Layer {
        name: "queue engine",
        sources: &["src/queue"],
        forbidden: &[&[("crate::", "graph")], &ABOVE_GRAPH],
    },
    Layer {
        name: "graph store",
        sources: &["src/graph"],
        forbidden: &[&ABOVE_GRAPH],
    },
    Layer {
        name: "metrics",
        sources: &["src/metrics.rs"],
        forbidden: &[&[
            ("crate::", "graph"),
            ("crate::", "gateway"),
            ("crate::", "protocol"),
            ("crate::", "auth"),
            ("crate::", "config"),
        ]],
    },
    Layer {
        name: "wire protocol and tokens",
        sources: &["src/protocol.rs", "src/auth.rs"],
        forbidden: &[&[
            ("crate::", "gateway"),
            ("crate::", "metrics"),
            ("crate::", "config"),
        ]],
    },
    Layer {
        name: "gateway",
        sources: &["src/gateway"],
        forbidden: &[&[("crate::", "config")]],
    },
    Layer {
        name: "processors",
        sources: &[
            "workers/src/lib.rs",
            "workers/src/commands.rs",
            "workers/src/jobs.rs",
        ],
        forbidden: &[&[
            ("crate::", "app"),
            ("crate::", "cli"),
            ("crate::", "bench"),
            ("graphq::", "gateway"),
            ("graphq::", "protocol"),
            ("graphq::", "config"),
        ]],
    },
    Layer {
        name: "composition root",
        sources: &["workers/src/app.rs"],
        forbidden: &[&[("crate::", "cli"), ("crate::", "bench")]],
    },
    Layer {
        name: "load generators",
        sources: &["workers/src/bench"],
        forbidden: &[&[("crate::", "cli")]],
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

/// Every module named right after `prefix` (`crate::`, `graphq::`) in
/// `source`, with its line number; `crate::{a, b::c}` names `a` and `b`.
fn crate_paths(source: &str, prefix: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in source.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for (at, _) in code.match_indices(prefix) {
            // `graphq::` inside `graphq_workers::` or a longer name is not a path.
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &code[at + prefix.len()..];
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
        if !line.trim_end().ends_with(&format!("{prefix}{{")) {
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
            for (prefix, module) in layer.forbidden.iter().flat_map(|g| g.iter()) {
                for (line, named) in crate_paths(&text, prefix) {
                    if named == *module {
                        back_edges.push(format!(
                            "{}:{line}: the {} names {prefix}{module}",
                            file.strip_prefix(root).unwrap_or(&file).display(),
                            layer.name,
                        ));
                    }
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
    let found: Vec<(usize, String)> = crate_paths(source, "crate::");
    let names: Vec<&str> = found.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(
        names,
        ["queue", "metrics", "db", "graph", "keys", "gateway"],
        "{found:?}"
    );
    assert_eq!(found[5].0, 6, "line numbers count from 1");
    let library = "use graphq::gateway::AppState;\nuse graphq_workers::app;\n";
    let found = crate_paths(library, "graphq::");
    assert_eq!(found, [(1, "gateway".to_string())], "{found:?}");
}

/// ARCHITECTURE.md's code map names every source file of both crates, so a
/// newcomer finds the owner of a concern there.
#[test]
fn the_code_map_names_every_source_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let map = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("workers/src"), &mut files);
    let missing: Vec<String> = files
        .iter()
        .filter_map(|f| f.strip_prefix(root).ok())
        .map(|f| f.display().to_string())
        .filter(|f| !map.contains(&format!("`{f}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md's code map does not name: {missing:?}"
    );
}
