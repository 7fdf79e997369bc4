//! `curate_text` as a library caller uses it: a scripted sampler and judge, no model, no server.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use mmedpo_core::manifest::Manifest;
use mmedpo_curation::{curate_text, CandidateSampler, CurateSettings, Item, JudgePrompts};
use mmedpo_scorer::{Agent, Message};

/// Answers "Answer K of ITEM" for each of the n draws.
struct Scripted {
    calls: usize,
}

impl CandidateSampler for Scripted {
    fn sample(&mut self, items: &[Item], n: usize, _: u64) -> Result<Vec<Vec<String>>, String> {
        self.calls += items.len();
        Ok(items
            .iter()
            .map(|it| (0..n).map(|k| format!("Answer {k} of {}", it.id)).collect())
            .collect())
    }
}

/// Picks candidate 2 for every item but id 3, for which it writes nothing usable.
struct Judge {
    calls: AtomicUsize,
}

impl Agent for Judge {
    fn name(&self) -> String {
        "scripted judge".into()
    }
    fn complete(&self, messages: &[Message]) -> Result<String, String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let first = &messages[0].content;
        Ok(if first.contains("Answer 0 of 3") {
            "I would rather not.".into()
        } else {
            "{\"pick\": 2}".into()
        })
    }
}

#[test]
fn items_become_text_pairs_resumably_and_failed_ones_are_retried() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = std::env::temp_dir().join(format!("mmedpo-curation-stage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = root.join("data/default/pairs.json");
    let images = root.join("data/images");
    let out = dir.join("text.json");
    let settings = CurateSettings {
        n: 3,
        seed: 7,
        max_retries: 0,
        concurrency: 4,
        overwrite: false,
    };
    let mut sampler = Scripted { calls: 0 };
    let judge = Judge {
        calls: AtomicUsize::new(0),
    };
    let prompts = JudgePrompts::builtin();
    let inputs = |judge: &str| Manifest::new("x").value("judge", judge);
    let run = |sampler: &mut Scripted, judge_name: &str| {
        curate_text(
            &data,
            &images,
            &out,
            sampler,
            &judge,
            &prompts,
            inputs(judge_name),
            &settings,
            &mut |_, _| {},
        )
    };
    let r = run(&mut sampler, "scripted").unwrap();
    assert_eq!((r.pairs, r.picked), (7, 7));
    assert_eq!(r.failed, vec!["3".to_string()]);
    let text = std::fs::read_to_string(&out).unwrap();
    // "pick": 2 is the second candidate (the prompt numbers them from 1).
    assert!(
        text.contains("Answer 1 of 1") && !text.contains(" of 3\""),
        "{text}"
    );
    assert!(!text.contains("weighted_score"), "weights are the scorer's");
    // Rerun: only the failed item is sampled and judged again.
    let r = run(&mut sampler, "scripted").unwrap();
    assert_eq!(sampler.calls, 9);
    assert_eq!(r.failed, vec!["3".to_string()]);
    // Other inputs on the same journals: refused, naming them.
    let e = run(&mut sampler, "other").unwrap_err().to_string();
    assert!(e.contains("judge scripted → other"), "{e}");
    assert_eq!(judge.calls.load(Ordering::SeqCst), 9);
    std::fs::remove_dir_all(&dir).unwrap();
}
