//! `mmedpo metrics`, `mmedpo eval` and `mmedpo eval --compare` end to end.

use std::process::Output;

mod common;
use common::{mmedpo, stderr, tmp};

/// The WordNet subset committed for the metric goldens (holds every word these tests score).
fn wordnet_subset() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../eval/tests/golden/wordnet-subset")
}

fn json_out(o: Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn metrics_scores_vqa_and_reports_and_never_crashes_on_empty_predictions() {
    let dir = tmp("metrics");
    let vqa = dir.join("vqa.jsonl");
    std::fs::write(
        &vqa,
        [
            r#"{"id": 1, "prediction": "Yes, there are nodules.", "reference": "yes", "answer_type": "CLOSED"}"#,
            r#"{"id": 2, "prediction": "", "reference": "no", "answer_type": "CLOSED"}"#,
            r#"{"id": 3, "prediction": "The left lung", "reference": "left lung nodule", "answer_type": "OPEN"}"#,
            r#"{"id": 4, "prediction": "?!", "reference": "liver", "answer_type": "OPEN"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let m = json_out(mmedpo(&[
        "metrics",
        "--task",
        "vqa",
        "--predictions",
        vqa.to_str().unwrap(),
    ]));
    assert_eq!(m["closed_accuracy"], 50.0);
    assert!(
        (m["open_recall"].as_f64().unwrap() - 100.0 / 3.0).abs() < 1e-9,
        "{m}"
    );
    let rep = dir.join("report.jsonl");
    std::fs::write(
        &rep,
        [
            r#"{"id": "a", "prediction": "The lungs are clear. No effusion.", "reference": "The lungs are clear. No pleural effusion."}"#,
            r#"{"id": "b", "prediction": "", "reference": "Normal chest."}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let m = json_out(mmedpo(&[
        "metrics",
        "--task",
        "report",
        "--predictions",
        rep.to_str().unwrap(),
        "--wordnet",
        wordnet_subset().to_str().unwrap(),
    ]));
    let wn = mmedpo_eval::wordnet::WordNet::open(Some(&wordnet_subset())).unwrap();
    let s = mmedpo_eval::report_scores(
        "The lungs are clear. No effusion.",
        "The lungs are clear. No pleural effusion.",
        &wn,
    );
    assert!(
        (m["meteor"].as_f64().unwrap() - 100.0 * s.meteor / 2.0).abs() < 1e-9,
        "{m}"
    );
    assert!(
        (m["bleu"].as_f64().unwrap() - 100.0 * s.bleu.iter().sum::<f64>() / 8.0).abs() < 1e-9,
        "{m}"
    );
    assert!(
        (m["rouge_l"].as_f64().unwrap() - 100.0 * s.rouge_l / 2.0).abs() < 1e-9,
        "{m}"
    );
    let bad = dir.join("bad.jsonl");
    std::fs::write(
        &bad,
        r#"{"id": 1, "prediction": "x", "reference": "y", "answer_type": "MAYBE"}"#,
    )
    .unwrap();
    let o = mmedpo(&[
        "metrics",
        "--task",
        "vqa",
        "--predictions",
        bad.to_str().unwrap(),
    ]);
    assert!(
        !o.status.success() && stderr(&o).contains("MAYBE"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn eval_generates_scores_resumes_and_compares() {
    let dir = tmp("eval");
    let model = dir.join("model");
    let o = mmedpo(&[
        "init-model",
        "--config",
        "models/tiny-llava/config.json",
        "--out",
        model.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = dir.join("out");
    let rerun = |extra: &[&str]| {
        let mut a = vec![
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--tokenizer",
            "models/mistral-tokenizer/tokenizer.json",
            "--data",
            "data/default/vqa_test.json",
            "--image-root",
            "data/images",
            "--task",
            "vqa",
            "--out",
            out.to_str().unwrap(),
            "--max-new-tokens",
            "4",
            "--batch-size",
            "4",
        ];
        a.extend_from_slice(extra);
        mmedpo(&a)
    };
    let run = || rerun(&[]);
    let o = run();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("| Open (recall) | Closed (accuracy) |"));
    let preds = std::fs::read_to_string(out.join("predictions.jsonl")).unwrap();
    assert_eq!(preds.lines().count(), 6);
    // Kill emulation: drop two answers and cut one line; the rerun redoes exactly those.
    let lines: Vec<&str> = preds.lines().collect();
    std::fs::write(
        out.join("predictions.jsonl"),
        format!(
            "{}\n{}\n{}",
            lines[..3].join("\n"),
            lines[3],
            &lines[4][..10]
        ),
    )
    .unwrap();
    let o = run();
    assert!(o.status.success(), "{}", stderr(&o));
    let again = std::fs::read_to_string(out.join("predictions.jsonl")).unwrap();
    let sorted = |s: &str| {
        let mut v: Vec<String> = s.lines().map(String::from).collect();
        v.sort();
        v
    };
    assert_eq!(
        sorted(&again),
        sorted(&preds),
        "a resumed run must give the same answers"
    );
    // The folder holds the base model's answers: another temperature, an adapter or other data
    // is refused, naming what changed; --overwrite starts over; a second writer is kept off.
    let e = stderr(&rerun(&["--temperature", "0"]));
    assert!(
        e.contains("other inputs (temperature 0.2 → 0") && e.contains("--overwrite"),
        "{e}"
    );
    let adapter = dir.join("adapter");
    let o = mmedpo(&[
        "train",
        "--model",
        model.to_str().unwrap(),
        "--tokenizer",
        "models/mistral-tokenizer/tokenizer.json",
        "--data",
        "data/default/pairs.json",
        "--image-root",
        "data/images",
        "--out",
        dir.join("t").to_str().unwrap(),
        "--max-steps",
        "1",
        "--lora-r",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::rename(dir.join("t/adapter"), &adapter).unwrap();
    let e = stderr(&rerun(&["--adapter", adapter.to_str().unwrap()]));
    assert!(e.contains("adapter none → "), "{e}");
    std::fs::write(out.join(".lock"), "1\n").unwrap(); // pid 1 is alive
    let e = stderr(&rerun(&[]));
    assert!(e.contains("being written by another mmedpo (pid 1"), "{e}");
    std::fs::remove_file(out.join(".lock")).unwrap();
    let o = rerun(&["--adapter", adapter.to_str().unwrap(), "--overwrite"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let with_adapter = std::fs::read_to_string(out.join("manifest.json")).unwrap();
    assert!(
        !with_adapter.contains("\"adapter\": \"none\""),
        "{with_adapter}"
    );
    assert!(!out.join(".lock").exists());
    let o = rerun(&["--overwrite"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = out.join("metrics.json");
    let o = mmedpo(&[
        "eval",
        "--compare",
        m.to_str().unwrap(),
        m.to_str().unwrap(),
    ]);
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("| closed_accuracy |")
    );
    // Ids are unique; an item without one is named by its index and collides with no real id.
    let dup = dir.join("dup.json");
    std::fs::write(
        &dup,
        r#"[{"question_id": 0, "image": "ct-small.png", "question": "Q?", "answer": "x", "answer_type": "OPEN"},
            {"question_id": 0, "image": "ct-small.png", "question": "R?", "answer": "y", "answer_type": "OPEN"},
            {"image": "ct-small.png", "question": "S?", "answer": "z", "answer_type": "OPEN"}]"#,
    )
    .unwrap();
    let o = mmedpo(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--tokenizer",
        "models/mistral-tokenizer/tokenizer.json",
        "--data",
        dup.to_str().unwrap(),
        "--image-root",
        "data/images",
        "--task",
        "vqa",
        "--out",
        dir.join("o3").to_str().unwrap(),
    ]);
    let e = stderr(&o);
    assert!(
        !o.status.success() && e.contains("id 0 is used by items 0 and 1"),
        "{e}"
    );
    // A test item without answer_type is named.
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        r#"[{"question_id": 9, "image": "ct-small.png", "question": "Q?", "answer": "x"}]"#,
    )
    .unwrap();
    let o = mmedpo(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--tokenizer",
        "models/mistral-tokenizer/tokenizer.json",
        "--data",
        bad.to_str().unwrap(),
        "--image-root",
        "data/images",
        "--task",
        "vqa",
        "--out",
        dir.join("o2").to_str().unwrap(),
    ]);
    assert!(
        !o.status.success() && stderr(&o).contains("item 9") && stderr(&o).contains("answer_type"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn metrics_refuse_nothing_and_huge_reports_and_leave_absent_kinds_null() {
    let dir = tmp("metrics-edge");
    let empty = dir.join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let o = mmedpo(&[
        "metrics",
        "--task",
        "vqa",
        "--predictions",
        empty.to_str().unwrap(),
    ]);
    assert!(
        !o.status.success() && stderr(&o).contains("no predictions"),
        "{}",
        stderr(&o)
    );
    let closed = dir.join("closed.jsonl");
    std::fs::write(
        &closed,
        r#"{"id": 1, "prediction": "yes", "reference": "yes", "answer_type": "CLOSED"}"#,
    )
    .unwrap();
    let m = json_out(mmedpo(&[
        "metrics",
        "--task",
        "vqa",
        "--predictions",
        closed.to_str().unwrap(),
    ]));
    assert_eq!(m["closed_accuracy"], 100.0);
    assert!(m["open_recall"].is_null(), "{m}");
    // 30,000 words: refused by item and field, in bounded time and memory.
    let huge = dir.join("huge.jsonl");
    let text = vec!["lung"; 30_000].join(" ");
    std::fs::write(
        &huge,
        serde_json::json!({"id": "r7", "prediction": "ok", "reference": text}).to_string(),
    )
    .unwrap();
    let o = mmedpo(&[
        "metrics",
        "--task",
        "report",
        "--predictions",
        huge.to_str().unwrap(),
        "--wordnet",
        wordnet_subset().to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("item \"r7\": reference has 30000 words"), "{e}");
}

#[test]
fn a_bad_answer_type_is_named_as_bad_not_missing() {
    let dir = tmp("eval-maybe");
    let test = dir.join("test.json");
    std::fs::write(
        &test,
        r#"[{"question_id": 1, "image": "ct-small.png", "question": "Is it?", "answer": "yes", "answer_type": "maybe"},
            {"question_id": 2, "image": "ct-small.png", "question": "Is it?", "answer": "yes"}]"#,
    )
    .unwrap();
    let o = mmedpo(&[
        "eval",
        "--model",
        "crates/lvlm/tests/golden/tiny-llava-hf",
        "--tokenizer",
        "models/mistral-tokenizer/tokenizer.json",
        "--data",
        test.to_str().unwrap(),
        "--image-root",
        "data/images",
        "--task",
        "vqa",
        "--out",
        dir.join("o").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains(r#"item 1 (index 0): answer_type "maybe" is not CLOSED or OPEN"#),
        "{e}"
    );
    assert!(e.contains("item 2 (index 1): missing answer_type"), "{e}");
}
