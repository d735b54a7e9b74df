//! `GET /api/v2/openapi.json`: the OpenAPI 3 document against the router.
//! Every route the gateway's sources register is in the document and every
//! path of the document is one of them; every documented method answers
//! (not 404 unrouted, not 405) on a live gateway and no other method does;
//! every error code the HTTP handlers can give is in the document's enum.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{Stack, TestEnv};
use graphq::gateway::GatewaySettings;
use serde_json::Value;

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

fn source(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    // Unit tests hold strings that are not routes or codes of the product.
    match text.find("#[cfg(test)]") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// The gateway's Rust sources, with their paths.
fn gateway_sources() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src/gateway")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path
                    .strip_prefix(env!("CARGO_MANIFEST_DIR"))
                    .unwrap()
                    .display()
                    .to_string();
                out.push((rel.clone(), source(&rel)));
            }
        }
    }
    out
}

/// The string literal right after each `.route(` of a source.
fn route_literals(text: &str) -> Vec<String> {
    text.split(".route(")
        .skip(1)
        .filter_map(|rest| {
            let rest = rest.trim_start();
            let rest = rest.strip_prefix('"')?;
            Some(rest[..rest.find('"')?].to_string())
        })
        .collect()
}

/// Every path the router serves, read from the sources: `.route("…")`
/// calls, the demo's files of `web.rs`'s FILES table, and (`dev`) the
/// demo token route.
fn served_paths(dev: bool) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    for (file, text) in gateway_sources() {
        for path in route_literals(&text) {
            if path == "/api/v2/dev/token" && !dev {
                continue;
            }
            paths.insert(path);
        }
        if file.ends_with("web.rs") {
            let table = &text[text.find("const FILES").expect("the FILES table")..];
            let table = &table[..table.find("];").unwrap()];
            for line in table.lines() {
                let line = line.trim();
                if let Some(path) = line.strip_prefix("\"/") {
                    paths.insert(format!("/{}", path.trim_end_matches("\",")));
                }
            }
        }
    }
    paths
}

async fn document(base: &str) -> Value {
    let r = reqwest::get(format!("{base}/api/v2/openapi.json"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.expect("the document is JSON")
}

/// A request to `path` (parameters filled in) with `method`: whether the
/// router has a route for it. Unrouted paths answer 404 with an empty body;
/// a routed path without that method, 405.
async fn routed(base: &str, method: &str, path: &str) -> bool {
    let concrete = path
        .replace("{graph_id}", "g1")
        .replace("{operation_id}", "op1");
    let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let r = reqwest::Client::new()
        .request(method, format!("{base}{concrete}"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.bytes().await.unwrap();
    !(status == 405 || (status == 404 && body.is_empty()))
}

async fn check(dev: bool) {
    let env = TestEnv::start().await;
    let stack = Stack::start(
        &env,
        GatewaySettings {
            dev_tokens: dev,
            ..GatewaySettings::default()
        },
    )
    .await;
    let doc = document(&stack.url).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().expect("paths");
    let documented: BTreeSet<String> = paths.keys().cloned().collect();
    let served = served_paths(dev);
    assert_eq!(
        documented.difference(&served).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "documented but not routed"
    );
    assert_eq!(
        served.difference(&documented).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "routed but not documented"
    );
    for (path, item) in paths {
        for method in METHODS {
            let is_documented = item.get(method).is_some();
            assert_eq!(
                routed(&stack.url, method, path).await,
                is_documented,
                "{method} {path}: routed and documented must agree"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_documented_and_every_documented_route_answers() {
    check(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_graphq_dev_the_demo_token_route_is_documented_too() {
    check(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_statuses_and_bodies_are_documented() {
    let env = TestEnv::start().await;
    let stack = Stack::start(&env, GatewaySettings::default()).await;
    let doc = document(&stack.url).await;
    let schemas = &doc["components"]["schemas"];
    let enum_codes: BTreeSet<String> = schemas["ErrorDetail"]["properties"]["code"]["enum"]
        .as_array()
        .expect("the error code enum")
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();

    // Every code the HTTP side can answer with: the uppercase literals of
    // command validation and of the gateway's HTTP code, less command types.
    let mut literals = BTreeSet::new();
    let files = [
        "src/graph/command.rs",
        "src/graph/command/unique_keys.rs",
        "src/gateway/mod.rs",
        "src/gateway/http.rs",
        "src/gateway/limits.rs",
        "src/gateway/web.rs",
    ];
    for file in files {
        let text = source(file);
        for piece in text.split('"').skip(1).step_by(2) {
            if piece.len() > 3 && piece.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                literals.insert(piece.to_string());
            }
        }
    }
    let command_types = schemas["CommandBody"]["properties"]["type"]["enum"]
        .as_array()
        .expect("the command type enum");
    for t in command_types {
        literals.remove(t.as_str().unwrap());
    }
    literals.remove("PING"); // the readiness probe's Redis command
    literals.remove("CARGO_MANIFEST_DIR"); // where web.rs finds Datastar's script
    assert_eq!(
        literals.difference(&enum_codes).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "codes the handlers give that the document does not list"
    );
    assert_eq!(
        enum_codes.difference(&literals).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "codes the document lists that no handler gives"
    );

    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().expect("responses");
            assert!(!responses.is_empty(), "{method} {path}");
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let schema = &response["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(
                        schema, "#/components/schemas/ErrorBody",
                        "{method} {path} {status}: the error body"
                    );
                }
            }
            // Every `{name}` of the path is a documented path parameter.
            for name in path.split('{').skip(1).filter_map(|p| p.split('}').next()) {
                let documented = op["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == name && p["in"] == "path"));
                assert!(documented, "{method} {path}: parameter {name}");
            }
            // Routes behind a token say so, and document the refusal.
            if op.get("security").is_some() {
                assert!(responses.contains_key("401"), "{method} {path}: 401");
            }
            if method == "post" {
                assert!(
                    op["requestBody"]["content"]["application/json"]["schema"].is_object(),
                    "{method} {path}: a request body"
                );
            }
        }
    }
    for api in [
        "/api/v2/graphs/{graph_id}/command",
        "/api/v2/graphs/{graph_id}/batch",
        "/api/v2/graphs/{graph_id}/state",
        "/api/v2/graphs/{graph_id}/changes",
        "/api/v2/operations/{operation_id}",
    ] {
        let item = &doc["paths"][api];
        let op = item
            .get("post")
            .or_else(|| item.get("get"))
            .expect("an operation");
        assert!(op.get("security").is_some(), "{api} needs a token");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}
