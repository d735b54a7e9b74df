//! Invariants of ARCHITECTURE.md that reading the source can check:
//!
//! - only the graph store (`src/graph/store.rs` and `src/graph/store/`)
//!   builds the names of graph and operation keys, so only it reads or
//!   writes them;
//! - the only transactions (`MULTI`) are the graph store's reads within one
//!   graph: every other atomic change is one Lua script.
//!
//! The checks match text in the Rust files under `src/` and `workers/`; they
//! skip comment lines. Each failure names the file and line.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The graph store: the only code that may name graph keys, and the only
/// code that may send transactions (reads).
const STORE_FILES: [&str; 2] = ["src/graph/store.rs", "src/graph/store/"];

fn in_store(path: &str) -> bool {
    STORE_FILES.iter().any(|f| path.starts_with(f))
}

/// Key builders used outside the graph store on purpose, with the reason.
const ALLOWED: [(&str, &str, &str); 1] = [(
    "workers/src/bench/jobs.rs",
    "graph",
    "bench.apply keeps its own `bench:*` keys under a graph's hash tag so its \
     script is valid on a cluster; no graph script or store method reads them",
)];

/// Commands a transaction of the store may hold: reads only.
const READ_COMMANDS: [&str; 12] = [
    "GET", "HGET", "HMGET", "HGETALL", "HVALS", "HKEYS", "HLEN", "HEXISTS", "XLEN", "XRANGE",
    "EXISTS", "TTL",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `src/` and `workers/`, as (path relative to the
/// crate with `/` separators, text).
fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|x| x == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    for dir in ["src", "workers"] {
        walk(&root().join(dir), &mut files);
    }
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let relative = path
                .strip_prefix(root())
                .expect("under the crate")
                .to_string_lossy()
                .replace('\\', "/");
            (relative, text)
        })
        .collect()
}

/// Names of the functions `text` declares `pub` (`pub fn` / `pub async fn`).
fn pub_fns(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix("pub ")?;
            let rest = rest.strip_prefix("async ").unwrap_or(rest);
            let rest = rest.strip_prefix("fn ")?;
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            Some(name)
        })
        .collect()
}

/// The builders of graph and operation keys in src/keys.rs. Channels
/// (`*_channel`) are left out: nothing is stored under a channel name, and
/// the broadcaster subscribes to graph channels by design.
fn graph_key_builders(keys_rs: &str) -> BTreeSet<String> {
    pub_fns(keys_rs)
        .into_iter()
        .filter(|name| {
            let graph = name == "graph" || name.starts_with("graph_");
            let operation = name == "operation" || name.starts_with("op_");
            (graph || operation) && !name.ends_with("_channel")
        })
        .collect()
}

/// Lines that are code, numbered from 1: comment lines are blanked out.
fn code_lines(text: &str) -> Vec<(usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let code = if line.trim_start().starts_with("//") {
                ""
            } else {
                line
            };
            (i + 1, code)
        })
        .collect()
}

/// The receiver chain just before byte `at` of `line` (`state.store.keys()`
/// in `state.store.keys().operation(`), or the end of the previous code line
/// when the call starts its own line.
fn receiver<'a>(line: &'a str, at: usize, previous: &'a str) -> &'a str {
    let is_chain = |c: char| c.is_alphanumeric() || "_.()&".contains(c);
    let before = &line[..at];
    let start = before
        .char_indices()
        .rev()
        .find(|(_, c)| !is_chain(*c))
        .map_or(0, |(i, c)| i + c.len_utf8());
    let chain = &before[start..];
    if chain.trim().is_empty() {
        previous.trim_end()
    } else {
        chain
    }
}

/// Variables a file binds to key builders (`let k = self.store.keys();`).
fn keys_bindings(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| {
            let (name, value) = line.trim_start().strip_prefix("let ")?.split_once('=')?;
            let name = name
                .split(':')
                .next()?
                .trim()
                .trim_start_matches("mut ")
                .trim();
            let value = value
                .trim()
                .trim_end_matches(';')
                .trim_end_matches(".clone()");
            (value.ends_with("keys()") || value.ends_with("keys")).then(|| name.to_string())
        })
        .collect()
}

/// Calls of graph-key builders in one file outside the graph store. A
/// builder whose name the store also uses for a method (`operation`: the
/// key, and the status query) counts only when called on key builders.
fn key_builder_calls(
    path: &str,
    text: &str,
    builders: &BTreeSet<String>,
    store_methods: &BTreeSet<String>,
) -> Vec<String> {
    if in_store(path) || path == "src/keys.rs" {
        return Vec::new();
    }
    let bound = keys_bindings(text);
    let lines = code_lines(text);
    let mut found = Vec::new();
    for (n, (number, line)) in lines.iter().enumerate() {
        let previous = n.checked_sub(1).map_or("", |p| lines[p].1);
        for builder in builders {
            if ALLOWED.iter().any(|(p, b, _)| *p == path && b == builder) {
                continue;
            }
            let call = format!(".{builder}(");
            for (at, _) in line.match_indices(&call) {
                if store_methods.contains(builder) {
                    let chain = receiver(line, at, previous);
                    let last = chain.rsplit('.').next().unwrap_or(chain);
                    let on_keys = chain.ends_with("keys()")
                        || chain.ends_with("keys")
                        || bound.contains(last.trim_start_matches('&'));
                    if !on_keys {
                        continue;
                    }
                }
                found.push(format!(
                    "{path}:{number}: calls the key builder `{builder}`; only the graph store \
                     may name graph and operation keys (add a GraphStore method)\n    {}",
                    line.trim()
                ));
            }
        }
    }
    found
}

/// The methods called at the top level of a pipeline chain that starts at
/// `chain` (after `.atomic()`) and ends at its `.query_async(`; `cmd("X")`
/// is reported as `X`.
fn chained_commands(chain: &str) -> Vec<String> {
    let bytes = chain.as_bytes();
    let mut depth = 0usize;
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'(' => depth += 1,
            b')' => depth = depth.saturating_sub(1),
            b';' if depth == 0 => break,
            b'.' if depth == 0 => {
                let name: String = chain[i + 1..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if name == "query_async" {
                    break;
                }
                let after = i + 1 + name.len();
                if name == "cmd" {
                    let arg = chain[after..]
                        .trim_start_matches('(')
                        .split(')')
                        .next()
                        .unwrap_or("");
                    found.push(arg.trim().trim_matches('"').to_uppercase());
                } else if !["arg", "ignore"].contains(&name.as_str()) {
                    found.push(name.to_uppercase());
                }
                i = after;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// Transactions in one file: anywhere but the store they are refused; in
/// the store, one that holds anything but a read is refused.
fn transactions(path: &str, text: &str) -> Vec<String> {
    let store = in_store(path);
    let mut found = Vec::new();
    let code: String = code_lines(text)
        .iter()
        .map(|(_, line)| format!("{line}\n"))
        .collect();
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut refuse = |at: usize, what: &str| {
        found.push(format!(
            "{path}:{}: {what}; the only transactions are the graph store's reads within one \
             graph (a change that must be atomic is one Lua script in lua/)",
            line_of(at)
        ));
    };
    for (at, _) in code.match_indices(".atomic()") {
        if !store {
            refuse(at, "a MULTI pipeline (`.atomic()`)");
            continue;
        }
        let commands = chained_commands(&code[at + ".atomic()".len()..]);
        if let Some(write) = commands
            .iter()
            .find(|c| !READ_COMMANDS.contains(&c.as_str()))
        {
            refuse(at, &format!("a MULTI pipeline that sends {write}"));
        }
    }
    for (at, _) in code.match_indices("cmd(\"MULTI\")") {
        refuse(at, "a MULTI command");
    }
    for (at, _) in code.match_indices("[b\"MULTI\"]") {
        if !store {
            refuse(at, "a raw MULTI");
            continue;
        }
        let rest = &code[at..];
        let body = &rest[..rest.find("[b\"EXEC\"]").unwrap_or(rest.len())];
        let commands: Vec<&str> = body
            .split("[b\"")
            .skip(2)
            .filter_map(|s| s.split('"').next())
            .collect();
        if let Some(write) = commands.iter().find(|c| !READ_COMMANDS.contains(c)) {
            refuse(at, &format!("a raw MULTI that sends {write}"));
        }
    }
    found
}

fn builders_and_store_methods() -> (BTreeSet<String>, BTreeSet<String>) {
    let keys_rs = std::fs::read_to_string(root().join("src/keys.rs")).expect("src/keys.rs");
    let builders = graph_key_builders(&keys_rs);
    let store_methods: BTreeSet<String> = sources()
        .iter()
        .filter(|(path, _)| in_store(path))
        .flat_map(|(_, text)| pub_fns(text))
        .collect();
    (builders, store_methods)
}

#[test]
fn only_the_graph_store_names_graph_and_operation_keys() {
    let (builders, store_methods) = builders_and_store_methods();
    for expected in ["graph_meta", "graph_op", "operation", "graph_progress"] {
        assert!(
            builders.contains(expected),
            "src/keys.rs no longer has `{expected}`: update this test ({builders:?})"
        );
    }
    let found: Vec<String> = sources()
        .iter()
        .flat_map(|(path, text)| key_builder_calls(path, text, &builders, &store_methods))
        .collect();
    assert!(
        found.is_empty(),
        "ARCHITECTURE.md: only graph/store.rs and the graph scripts read or write graph \
         keys.\n{}",
        found.join("\n")
    );
}

#[test]
fn the_only_transactions_are_graph_store_reads() {
    let found: Vec<String> = sources()
        .iter()
        .flat_map(|(path, text)| transactions(path, text))
        .collect();
    assert!(
        found.is_empty(),
        "ARCHITECTURE.md: no MULTI across hash tags; the only transactions are reads within \
         one graph.\n{}",
        found.join("\n")
    );
}

/// The checks above find what they look for (they would pass on any tree
/// if they did not).
#[test]
fn the_checks_catch_what_they_look_for() {
    let (builders, store_methods) = builders_and_store_methods();
    let calls = |path: &str, text: &str| key_builder_calls(path, text, &builders, &store_methods);
    let worker = "fn f(s: &GraphStore) {\n    let k = s.keys();\n    let a = k.graph_meta(g);\n    \
                  let b = k.operation(op);\n    let c = s.keys().operation(op);\n    \
                  let d = s\n        .keys()\n        .operation(op);\n}\n";
    let found = calls("workers/x.rs", worker);
    assert_eq!(found.len(), 4, "{found:#?}");
    assert!(found[0].starts_with("workers/x.rs:3: calls the key builder `graph_meta`"));
    assert!(calls("src/graph/store.rs", worker).is_empty());
    // The store's status query shares the name of the index key's builder.
    let status =
        "let s = state\n    .store\n    .operation(&id)\n    .await?;\n// keys.graph_log(g)\n";
    assert!(calls("src/gateway/http.rs", status).is_empty());
    assert!(calls("workers/src/bench/jobs.rs", "k.graph(g, \"bench:meta\")").is_empty());

    let multi = "let _: () = redis::pipe()\n    .atomic()\n    .del(&key)\n    .query_async(c);\n";
    let found = transactions("workers/jobs.rs", multi);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].starts_with("workers/jobs.rs:2: a MULTI pipeline"));
    assert_eq!(
        transactions("src/graph/store.rs", multi),
        [
            "src/graph/store.rs:2: a MULTI pipeline that sends DEL; the only transactions are the \
          graph store's reads within one graph (a change that must be atomic is one Lua script \
          in lua/)"
        ]
    );
    let read = "redis::pipe()\n    .atomic()\n    .hgetall(k.graph_meta(g))\n    .cmd(\"XRANGE\")\n    \
                .arg(k.graph_log(g))\n    .query_async(c)\n";
    assert!(transactions("src/graph/store.rs", read).is_empty());
    let raw = "conn.send(&[&[b\"MULTI\"], &[b\"HVALS\", n], &[b\"DEL\", n], &[b\"EXEC\"]])";
    assert_eq!(transactions("src/graph/store.rs", raw).len(), 1);
    assert_eq!(transactions("src/gateway/mod.rs", raw).len(), 1);
}
