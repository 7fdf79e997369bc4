//! A training run killed after a checkpoint and resumed ends with the same adapter bytes as an
//! uninterrupted one, and the same step log (metrics to 1e-12 relative).
//!
//! This test has a binary of its own: cargo runs test binaries one after another but the tests of
//! one binary in parallel, and Flex's parallel reductions may split work differently when other
//! tests compete for the thread pool, which moves results in the last bit. Alone (as a training run
//! is), the computation is repeatable and the bytes are equal.

mod common;

use std::path::Path;

use common::*;
use mmedpo_core::record::read_records;
use mmedpo_dpo::train::TrainSettings;

#[test]
fn a_killed_and_resumed_run_ends_with_the_same_adapter_bytes() {
    let recs = read_records(&root().join("data/default/pairs.json")).unwrap();
    let s = TrainSettings {
        max_steps: Some(6),
        save_steps: 2,
        batch_size: 2,
        grad_accum: 2,
        ..settings()
    };
    let (a, b) = (tmp("whole"), tmp("killed"));
    run_training(&recs, &s, &a, false);
    // Killed during step 5 (after checkpoint 4): emulate by stopping after 5 steps of this process.
    let killed = TrainSettings {
        stop_after: Some(5),
        ..s.clone()
    };
    let partial = run_training(&recs, &killed, &b, false);
    assert!(
        !partial.adapter_dir.exists(),
        "a killed run has no final adapter"
    );
    let resumed = run_training(&recs, &s, &b, true);
    assert_eq!(resumed.resumed_from, 4);
    let bytes = |d: &Path| std::fs::read(d.join("adapter/adapter_model.safetensors")).unwrap();
    assert!(bytes(&a) == bytes(&b), "final adapters differ");
    let (la, lb) = (
        std::fs::read_to_string(a.join("log.jsonl")).unwrap(),
        std::fs::read_to_string(b.join("log.jsonl")).unwrap(),
    );
    assert_eq!(la.lines().count(), 6);
    assert_eq!(lb.lines().count(), 6);
    // Metrics are f64 means of f32 log-probs; compare them to 1e-12 relative, not as text.
    for (x, y) in la.lines().zip(lb.lines()) {
        let (x, y): (serde_json::Value, serde_json::Value) = (
            serde_json::from_str(x).unwrap(),
            serde_json::from_str(y).unwrap(),
        );
        for (k, v) in x.as_object().unwrap() {
            let (p, q) = (v.as_f64().unwrap(), y[k].as_f64().unwrap());
            assert!(
                (p - q).abs() <= 1e-12 * p.abs().max(1e-300),
                "{k}: {p} vs {q}"
            );
        }
    }
}
