//! Model-based property test: random command sequences from three users over
//! a small id space go to the real store (`lua/apply_command.lua` in a private
//! redis-server) and to the plain-Rust reference model (`tests/graph_model`),
//! and after every step the two must agree on the outcome, on every stored
//! byte, the version and the epoch; the stored checksum must match the
//! entities.
//!
//! The cases and the commands they send come from `tests/graph_cases`.
//!
//! `PROPTEST_CASES=N` overrides the number of cases (default 256, a few seconds). A failure
//! is shrunk and reported with the whole trace of commands that led to it.

mod common;
mod graph_cases;
mod graph_model;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::TestEnv;
use graph_cases::{Case, Now, Sent, USERS, World, case, command_text};
use graph_model::Model;
use graphq::graph::command::parse;
use graphq::graph::{ApplyContext, Command, GraphStore, Outcome, checksum_of};
use graphq::keys::Keys;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// How the commands reach the store.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    /// One at a time, each through the apply function.
    Apply,
    /// In batches, as the worker sends them: node moves decided in Rust and
    /// committed by `lua/commit_node.lua`, the rest through the apply function.
    Batches,
}

impl Path {
    fn tag(self) -> &'static str {
        match self {
            Path::Apply => "a",
            Path::Batches => "b",
        }
    }
}

/// Batch sizes for `Path::Batches`, in turn.
const BATCH_SIZES: [usize; 5] = [1, 3, 2, 6, 1];

fn outcome_json(o: &Outcome) -> String {
    serde_json::to_string_pretty(o).unwrap_or_else(|e| format!("{o:?} (not serializable: {e})"))
}

fn trace(sent: &[Sent]) -> String {
    sent.iter()
        .enumerate()
        .map(|(i, s)| format!("  #{i} {}: {}", USERS[s.user], s.text))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs one case against a fresh key prefix; `Err` names the first step
/// where the store and the model disagree.
async fn run_case(
    env: &TestEnv,
    case_no: usize,
    case: &Case,
    stats: &Mutex<BTreeMap<String, usize>>,
    path: Path,
) -> Result<(), String> {
    let mut settings = case.settings();
    if path == Path::Apply {
        settings.worker_cache_nodes = 0;
    }
    let keys = Keys::new(format!("{}{}c{case_no}", env.prefix, path.tag()));
    let store = GraphStore::new(env.redis.clone(), keys, settings.clone());
    let mut model = Model::new(settings);
    // Path::Batches: commands wait here until the batch is full (sizes
    // cycle through BATCH_SIZES), then go to the store in one call.
    let mut pending: Vec<(usize, usize, String, ApplyContext, Command, Outcome)> = Vec::new();
    let mut batch_no = case_no;
    let graph_id = "g";
    let epoch = format!("epoch-{case_no}");
    let mut sent: Vec<Sent> = Vec::new();

    // The last step (None) only sends what is still waiting.
    for (step_no, step) in case.steps.iter().map(Some).chain([None]).enumerate() {
        if let Some(step) = step {
            let Some((user, text)) = command_text(step_no, step, &Now::of(&model, &sent)) else {
                continue;
            };
            let command = match parse(text.as_bytes()) {
                Ok(c) => c,
                // Generated commands the parser refuses (none expected) are skipped:
                // they would never reach the store.
                Err(_) => continue,
            };
            sent.push(Sent {
                user,
                text: text.clone(),
            });
            let ctx = ApplyContext {
                graph_id: graph_id.to_string(),
                user_id: USERS[user].to_string(),
                now_ms: 1_700_000_000_000 + step_no as u64,
                new_epoch: epoch.clone(),
            };
            let expected = model.apply(&ctx, &command);
            if let Ok(mut stats) = stats.lock() {
                for kind in kinds_of(&command, &expected) {
                    *stats.entry(kind).or_default() += 1;
                }
            }
            pending.push((step_no, user, text, ctx, command, expected));
            if path == Path::Batches && pending.len() < BATCH_SIZES[batch_no % BATCH_SIZES.len()] {
                continue;
            }
        }
        if pending.is_empty() {
            continue;
        }
        batch_no += 1;
        let texts = match path {
            Path::Apply => {
                let (_, _, _, ctx, command, _) = &pending[0];
                store.apply_text(ctx, command).await.map(|t| vec![t])
            }
            Path::Batches => {
                let batch: Vec<(&ApplyContext, &Command)> =
                    pending.iter().map(|p| (&p.3, &p.4)).collect();
                store.apply_batch(&batch).await
            }
        }
        .map_err(|e| {
            format!(
                "step {step_no}: the store failed: {e}\ntrace:\n{}",
                trace(&sent)
            )
        })?;
        if texts.len() != pending.len() {
            return Err(format!(
                "step {step_no}: {} commands sent, {} answers",
                pending.len(),
                texts.len()
            ));
        }
        let mut last = None;
        for ((step_no, user, text, _, _, expected), got) in pending.drain(..).zip(texts) {
            let got: Outcome = serde_json::from_str(&got)
                .map_err(|e| format!("step {step_no}: the store answered {got}: {e}"))?;
            if got != expected {
                return Err(format!(
                    "step {step_no} ({} sends {text}): outcomes differ\n--- store:\n{}\n--- model:\n{}\ntrace:\n{}",
                    USERS[user],
                    outcome_json(&got),
                    outcome_json(&expected),
                    trace(&sent)
                ));
            }
            last = Some((user, text, got));
        }
        let Some((user, text, got)) = last else {
            return Err(format!("step {step_no}: the store answered nothing"));
        };
        let raw = store
            .raw(graph_id)
            .await
            .map_err(|e| format!("step {step_no}: reading the store failed: {e}"))?;
        let want = model.raw();
        let mut diffs = Vec::new();
        if raw.epoch != want.epoch {
            diffs.push(format!(
                "epoch: store {:?}, model {:?}",
                raw.epoch, want.epoch
            ));
        }
        if raw.version != want.version {
            diffs.push(format!(
                "version: store {}, model {}",
                raw.version, want.version
            ));
        }
        if raw.viewport != want.viewport {
            diffs.push(format!(
                "viewport: store {:?}, model {:?}",
                raw.viewport, want.viewport
            ));
        }
        for (what, s, m) in [
            ("node", &raw.nodes, &want.nodes),
            ("edge", &raw.edges, &want.edges),
        ] {
            for id in s.keys().chain(m.keys().filter(|k| !s.contains_key(*k))) {
                if s.get(id) != m.get(id) {
                    diffs.push(format!(
                        "{what} {id}:\n    store {:?}\n    model {:?}",
                        s.get(id),
                        m.get(id)
                    ));
                }
            }
        }
        if raw.checksum != checksum_of(&raw) {
            diffs.push(format!(
                "stored checksum {} but the stored entities sum to {}",
                raw.checksum,
                checksum_of(&raw)
            ));
        }
        if !diffs.is_empty() {
            return Err(format!(
                "step {step_no} ({} sends {text}): stored bytes differ (outcome {})\n{}\ntrace:\n{}",
                USERS[user],
                outcome_json(&got),
                diffs.join("\n"),
                trace(&sent)
            ));
        }
    }
    Ok(())
}

/// What a step exercised, for the coverage summary the test prints (so a
/// generator change that stops reaching conflicts or undo is noticed).
fn kinds_of(command: &Command, o: &Outcome) -> Vec<String> {
    let outcome = match o {
        Outcome::Applied { conflicts, .. } if conflicts.is_empty() => "applied",
        Outcome::Applied { .. } => "applied with conflicts",
        Outcome::Reverted { code, .. } => match code.as_str() {
            "CONFLICT" => "reverted CONFLICT",
            "NOT_FOUND" => "reverted NOT_FOUND",
            "ALREADY_EXISTS" => "reverted ALREADY_EXISTS",
            "LIMIT_EXCEEDED" => "reverted LIMIT_EXCEEDED",
            "INVALID" => "reverted INVALID",
            _ => "reverted (other code)",
        },
        Outcome::Duplicate { .. } => "duplicate",
    };
    let mut kinds = vec![format!("{} {outcome}", command.op.type_name())];
    let conflicts = match o {
        Outcome::Applied { conflicts, .. } | Outcome::Reverted { conflicts, .. } => {
            conflicts.as_slice()
        }
        Outcome::Duplicate { .. } => &[],
    };
    for c in conflicts {
        let strategy = serde_json::to_value(c.strategy).unwrap_or_default();
        let field = c.field.split('/').nth(1).unwrap_or("");
        let whole = if c.field.split('/').count() <= 3 && field != "viewport" {
            " (whole entity)"
        } else {
            ""
        };
        kinds.push(format!(
            "conflict {} on {field}{whole}",
            strategy.as_str().unwrap_or("?")
        ));
    }
    if let Outcome::Applied { change, .. } = o
        && change["removedEdges"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    {
        kinds.push("change removes edges".to_string());
    }
    kinds
}

/// Every generated command must parse: otherwise the generator wastes cases.
#[test]
fn generated_commands_are_valid() {
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&case(), |case| {
            let mut sent = Vec::new();
            for (i, step) in case.steps.iter().enumerate() {
                let now = Now {
                    version: 7,
                    world: World {
                        nodes: vec!["n1".into(), "n4".into()],
                        edges: vec!["e2".into()],
                    },
                    can_undo: vec![1],
                    can_redo: vec![],
                    sent: &sent,
                };
                if let Some((user, text)) = command_text(i, step, &now) {
                    parse(text.as_bytes())
                        .map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
                    sent.push(Sent { user, text });
                }
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn the_store_agrees_with_the_model() {
    agrees_with_the_model(Path::Apply);
}

/// The worker's way: batches, node moves decided in Rust. Every outcome and
/// stored byte must still be the model's, and moves must have been
/// committed without the apply function.
#[test]
fn the_worker_s_batches_agree_with_the_model() {
    let commits = agrees_with_the_model(Path::Batches);
    assert!(
        commits > 50,
        "only {commits} moves were committed by the worker"
    );
}

/// Runs the cases along `path`; returns how many node moves the worker sent
/// as commits (`lua/commit_node.lua` calls).
fn agrees_with_the_model(path: Path) -> u64 {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    // One redis-server for the whole test; each case gets its own prefix.
    let env = runtime.block_on(TestEnv::start());
    let config = match std::env::var("PROPTEST_CASES") {
        // Config::default() reads PROPTEST_CASES itself.
        Ok(_) => Config::default(),
        Err(_) => Config::with_cases(256),
    };
    let mut runner = TestRunner::new(Config {
        failure_persistence: None,
        max_shrink_iters: 2_000,
        max_shrink_time: 60_000,
        ..config
    });
    let case_no = AtomicUsize::new(0);
    let stats = Mutex::new(BTreeMap::new());
    let result = runner.run(&case(), |case| {
        let n = case_no.fetch_add(1, Ordering::Relaxed);
        runtime
            .block_on(run_case(&env, n, &case, &stats, path))
            .map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // Calls of lua/commit_node.lua: the only script these stores call with
    // `EVALSHA` (the apply function is called with `FCALL`).
    let commits = runtime.block_on(env.command_calls("evalsha"));
    // Shown with --nocapture: how often each command, outcome and conflict
    // strategy came up.
    if let Ok(stats) = stats.lock() {
        println!("{} cases; steps by kind:", case_no.load(Ordering::Relaxed));
        for (kind, n) in stats.iter() {
            println!("  {n:6}  {kind}");
        }
        println!("  {commits:6}  moves committed by the worker");
    }
    commits
}
