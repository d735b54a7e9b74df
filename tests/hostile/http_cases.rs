//! The HTTP table: one row per hostile request and the documented answer.
//! The command bodies are in `command_bodies`; here are the rows that vary
//! the token or the graph id in the path, the rows for the batch endpoint,
//! and the GET rows whose query or path is bad.

use std::time::Duration;

use graphq::auth::{Auth, Graphs, Role};
use serde_json::{Value, json};

use super::command_bodies::command_body_cases;
use super::{command, in_an_hour, node, signed, unsigned_token};

/// One HTTP request and the documented answer.
pub struct Case {
    pub name: String,
    pub method: reqwest::Method,
    pub path: String,
    /// The whole `Authorization` header value, if any.
    pub auth: Option<String>,
    pub body: Vec<u8>,
    pub status: u16,
    pub code: &'static str,
    pub field: Option<String>,
}

/// The whole `Authorization` header value for a bearer token.
pub fn bearer(t: &str) -> Option<String> {
    Some(format!("Bearer {t}"))
}

/// The HTTP table: (name, body, status, code, field) posted to
/// `/api/v2/graphs/g1/command` with the editor's token, then the rows that
/// vary the path, the token or the method.
pub fn http_cases(editor: &str, viewer: &str, other_graph: &str) -> Vec<Case> {
    let mut cases = command_body_cases(editor);
    cases.extend(auth_and_path_cases(editor, viewer, other_graph));
    cases.extend(batch_endpoint_cases(editor));
    cases.extend(query_cases(editor));
    cases
}

/// A valid command posted with a bad token, a token that may not write, or
/// a bad graph id in the path.
fn auth_and_path_cases(editor: &str, viewer: &str, other_graph: &str) -> Vec<Case> {
    let cmd_path = "/api/v2/graphs/g1/command".to_string();
    let good = command("o1", "CREATE_NODE", json!({"node": node("x")}))
        .to_string()
        .into_bytes();
    let batch_path = "/api/v2/graphs/g1/batch".to_string();
    let mut rows = vec![
        // Auth (docs/protocol.md, Auth).
        ("no token", cmd_path.clone(), None, 401, "UNAUTHORIZED"),
        (
            "an empty bearer",
            cmd_path.clone(),
            Some("Bearer ".into()),
            401,
            "UNAUTHORIZED",
        ),
        (
            "a garbage token",
            cmd_path.clone(),
            bearer("not.a.token"),
            401,
            "UNAUTHORIZED",
        ),
        (
            "Basic auth instead of a bearer",
            cmd_path.clone(),
            Some("Basic YWxpY2U6cGFzcw==".into()),
            401,
            "UNAUTHORIZED",
        ),
        (
            "a token signed with another secret",
            cmd_path.clone(),
            bearer(
                &Auth::new("another-secret-of-enough-length")
                    .unwrap()
                    .mint("alice", Graphs::All, Role::Editor, Duration::from_secs(600))
                    .unwrap(),
            ),
            401,
            "UNAUTHORIZED",
        ),
        (
            "an expired token",
            cmd_path.clone(),
            bearer(&signed(
                json!({"sub": "alice", "graphs": "*", "role": "editor", "exp": graphq::db::now_ms() / 1000 - 5}),
            )),
            401,
            "UNAUTHORIZED",
        ),
        (
            "an unsigned token (alg none)",
            cmd_path.clone(),
            bearer(&unsigned_token()),
            401,
            "UNAUTHORIZED",
        ),
        (
            "a token without exp",
            cmd_path.clone(),
            bearer(&signed(
                json!({"sub": "alice", "graphs": "*", "role": "editor"}),
            )),
            401,
            "UNAUTHORIZED",
        ),
        (
            "a token with role admin",
            cmd_path.clone(),
            bearer(&signed(
                json!({"sub": "alice", "graphs": "*", "role": "admin", "exp": in_an_hour()}),
            )),
            401,
            "UNAUTHORIZED",
        ),
        (
            "a token whose user id has a hash tag",
            cmd_path.clone(),
            bearer(&signed(
                json!({"sub": "{g:g1}", "graphs": "*", "role": "editor", "exp": in_an_hour()}),
            )),
            401,
            "UNAUTHORIZED",
        ),
        (
            "a token whose graphs is a glob",
            cmd_path.clone(),
            bearer(&signed(
                json!({"sub": "alice", "graphs": "g*", "role": "editor", "exp": in_an_hour()}),
            )),
            401,
            "UNAUTHORIZED",
        ),
        (
            "a token for another graph",
            cmd_path.clone(),
            bearer(other_graph),
            403,
            "FORBIDDEN",
        ),
        (
            "a viewer's command",
            cmd_path.clone(),
            bearer(viewer),
            403,
            "FORBIDDEN",
        ),
        (
            "a viewer's batch",
            batch_path.clone(),
            bearer(viewer),
            403,
            "FORBIDDEN",
        ),
        // Graph ids in the path.
        (
            "a graph id with :",
            "/api/v2/graphs/g:1/command".into(),
            bearer(editor),
            400,
            "INVALID_ID",
        ),
        (
            "a graph id with a hash tag",
            "/api/v2/graphs/%7Bg1%7D/command".into(),
            bearer(editor),
            400,
            "INVALID_ID",
        ),
        (
            "a graph id with *",
            "/api/v2/graphs/*/command".into(),
            bearer(editor),
            400,
            "INVALID_ID",
        ),
        (
            "a graph id with a space",
            "/api/v2/graphs/g%201/command".into(),
            bearer(editor),
            400,
            "INVALID_ID",
        ),
        (
            "a graph id with a newline",
            "/api/v2/graphs/g%0A1/command".into(),
            bearer(editor),
            400,
            "INVALID_ID",
        ),
        (
            "a graph id of 129 characters",
            format!("/api/v2/graphs/{}/command", "g".repeat(129)),
            bearer(editor),
            400,
            "INVALID_ID",
        ),
    ];
    let mut cases = Vec::new();
    for (name, path, auth, status, code) in rows.drain(..) {
        let field = match code {
            "INVALID_ID" => Some("graphId".to_string()),
            _ => None,
        };
        cases.push(Case {
            name: name.to_string(),
            method: reqwest::Method::POST,
            path,
            auth,
            body: good.clone(),
            status,
            code,
            field,
        });
    }
    cases
}

/// Bodies posted to `/api/v2/graphs/g1/batch` that the batch endpoint refuses.
fn batch_endpoint_cases(editor: &str) -> Vec<Case> {
    let batch_path = "/api/v2/graphs/g1/batch".to_string();
    let op = json!({"operationId": "b1", "type": "DELETE_NODE", "payload": {"id": "n1"}});
    let batch = |name: &str, body: Value, status: u16, code: &'static str, field: &str| Case {
        name: name.to_string(),
        method: reqwest::Method::POST,
        path: batch_path.clone(),
        auth: bearer(editor),
        body: body.to_string().into_bytes(),
        status,
        code,
        field: Some(field.to_string()),
    };
    let mut bad_third = vec![op.clone(); 5];
    bad_third[3] = json!({"operationId": "b4", "type": "DELETE_NODE", "payload": {"id": "n*"}});
    for (i, o) in bad_third.iter_mut().enumerate() {
        if i != 3 {
            o["operationId"] = json!(format!("b{i}"));
        }
    }
    vec![
        batch(
            "a batch body of 501 commands",
            json!({"operations": vec![op.clone(); 501]}),
            400,
            "TOO_MANY_OPERATIONS",
            "operations",
        ),
        batch(
            "a batch body without operations",
            json!({"ops": [op.clone()]}),
            400,
            "MISSING_FIELD",
            "operations",
        ),
        batch(
            "a batch body whose operations is an object",
            json!({"operations": {"0": op.clone()}}),
            400,
            "MISSING_FIELD",
            "operations",
        ),
        batch(
            "a non-atomic batch with one bad command",
            json!({"atomic": false, "operations": bad_third}),
            400,
            "INVALID_ID",
            "operations.3.payload.id",
        ),
        Case {
            name: "a batch body over 256 KiB".into(),
            method: reqwest::Method::POST,
            path: batch_path.clone(),
            auth: bearer(editor),
            body: json!({"operations": [op.clone()], "pad": "p".repeat(300 * 1024)})
                .to_string()
                .into_bytes(),
            status: 413,
            code: "TOO_LARGE",
            field: None,
        },
    ]
}

/// GET requests with a bad query, a bad id in the path, or a bad token.
fn query_cases(editor: &str) -> Vec<Case> {
    let get = |name: &str,
               path: &str,
               auth: Option<String>,
               status: u16,
               code: &'static str,
               field: Option<&str>| Case {
        name: name.to_string(),
        method: reqwest::Method::GET,
        path: path.to_string(),
        auth,
        body: Vec::new(),
        status,
        code,
        field: field.map(str::to_string),
    };
    vec![
        get(
            "changes since a negative version",
            "/api/v2/graphs/g1/changes?since=-1",
            bearer(editor),
            400,
            "INVALID_VALUE",
            Some("since"),
        ),
        get(
            "changes since beyond u64",
            "/api/v2/graphs/g1/changes?since=99999999999999999999999",
            bearer(editor),
            400,
            "INVALID_VALUE",
            Some("since"),
        ),
        get(
            "changes with a limit in words",
            "/api/v2/graphs/g1/changes?limit=all",
            bearer(editor),
            400,
            "INVALID_VALUE",
            Some("limit"),
        ),
        get(
            "state of a graph the token does not name",
            "/api/v2/graphs/g2/state",
            bearer(editor),
            403,
            "FORBIDDEN",
            None,
        ),
        get(
            "state without a token",
            "/api/v2/graphs/g1/state",
            None,
            401,
            "UNAUTHORIZED",
            None,
        ),
        get(
            "state with a token in the query of another secret",
            &format!(
                "/api/v2/graphs/g1/state?token={}",
                Auth::new("another-secret-of-enough-length")
                    .unwrap()
                    .mint("alice", Graphs::All, Role::Editor, Duration::from_secs(600))
                    .unwrap()
            ),
            None,
            401,
            "UNAUTHORIZED",
            None,
        ),
        get(
            "an operation id that is a glob",
            "/api/v2/operations/*",
            bearer(editor),
            404,
            "NOT_FOUND",
            None,
        ),
        get(
            "an operation id with a hash tag",
            "/api/v2/operations/%7Bg:g1%7D",
            bearer(editor),
            404,
            "NOT_FOUND",
            None,
        ),
    ]
}
