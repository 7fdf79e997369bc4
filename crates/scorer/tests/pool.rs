//! `score_file` and `AgentSpec` as a library caller uses them: in-process agents, no server.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use mmedpo_core::manifest::Manifest;
use mmedpo_scorer::prompts::Prompts;
use mmedpo_scorer::{score_file, Agent, AgentSpec, Message, Protocol};

/// Replies `reply` and counts its calls.
struct Fixed {
    reply: &'static str,
    calls: AtomicUsize,
}

impl Agent for Fixed {
    fn name(&self) -> String {
        "fixed".into()
    }
    fn complete(&self, _: &[Message]) -> Result<String, String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(self.reply.into())
    }
}

fn pairs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/default/pairs.json")
}

fn protocol() -> Protocol {
    Protocol {
        max_rounds: 5,
        max_retries: 1,
        prompts: Prompts::builtin(),
        pair_budget: None,
    }
}

#[test]
fn a_file_is_scored_resumed_and_refused_with_other_agents() {
    let dir = std::env::temp_dir().join(format!("mmedpo-scorer-pool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("scored.json");
    let (a, b) = (
        Fixed {
            reply: "{\"score\": 0.6}",
            calls: AtomicUsize::new(0),
        },
        Fixed {
            reply: "0.6",
            calls: AtomicUsize::new(0),
        },
    );
    let agents: Vec<&dyn Agent> = vec![&a, &b];
    let inputs = || Manifest::new("x").value("agents", "fixed 0.6 twice");
    let seen = AtomicUsize::new(0);
    let report = score_file(
        &pairs(),
        &out,
        &agents,
        inputs(),
        &protocol(),
        3,
        false,
        &|d, _| {
            seen.fetch_max(d, Ordering::SeqCst);
        },
    )
    .unwrap();
    assert_eq!(
        (report.pairs, report.consensus, report.failed.len()),
        (8, 8, 0)
    );
    assert_eq!(report.histogram[6], 8);
    assert_eq!(seen.load(Ordering::SeqCst), 8);
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text.matches("\"weighted_score\": 0.6").count(), 8);
    let calls = a.calls.load(Ordering::SeqCst) + b.calls.load(Ordering::SeqCst);
    assert_eq!(calls, 16, "one round of two agents per pair");
    // The same inputs again: every pair is done, no agent is asked, the file is the same.
    score_file(
        &pairs(),
        &out,
        &agents,
        inputs(),
        &protocol(),
        3,
        false,
        &|_, _| {},
    )
    .unwrap();
    assert_eq!(
        a.calls.load(Ordering::SeqCst) + b.calls.load(Ordering::SeqCst),
        16
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), text);
    // Other agents: refused, naming what changed.
    let other = Manifest::new("x").value("agents", "something else");
    let e = score_file(
        &pairs(),
        &out,
        &agents,
        other,
        &protocol(),
        3,
        false,
        &|_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("agents"), "{e}");
    // No usable reply anywhere: an error, and no weight survives.
    let bad = Fixed {
        reply: "no idea",
        calls: AtomicUsize::new(0),
    };
    let e = score_file(
        &pairs(),
        &dir.join("bad.json"),
        &[&bad],
        inputs(),
        &protocol(),
        2,
        false,
        &|_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("every pair failed (8)"), "{e}");
    assert!(!std::fs::read_to_string(dir.join("bad.json"))
        .unwrap()
        .contains("weighted_score"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn specs_are_checked_before_any_request() {
    assert_eq!(
        AgentSpec::parse("openai=http://127.0.0.1:8001/v1@m42-health/Llama3-Med42-8B").unwrap(),
        AgentSpec::OpenAi {
            base_url: "http://127.0.0.1:8001/v1".into(),
            model: "m42-health/Llama3-Med42-8B".into()
        }
    );
    for (spec, want) in [
        ("openai=localhost:1/v1@m", "needs a scheme"),
        ("openai=http://x/v1", "expected openai=BASE_URL@MODEL"),
        (
            "gpt-4o",
            "expected openai=BASE_URL@MODEL or local=MODEL_DIR",
        ),
        ("local=/surely/not/here", "is not a model directory"),
    ] {
        let e = AgentSpec::parse(spec).unwrap_err().to_string();
        assert!(e.contains(want) && e.contains(spec), "{spec}: {e}");
    }
    let m = AgentSpec::parse("openai=http://a:1/v1@m")
        .unwrap()
        .record(Manifest::new("x"), "agent[0]")
        .unwrap();
    assert_eq!(
        m.inputs["agent[0]"], "openai model m",
        "a server is its model, not its port"
    );
}
