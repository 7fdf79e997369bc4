//! `mmedpo score` and `mmedpo generate --image` end to end on the tiny LLaVA fixtures and real scans.

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{mmedpo, root, stderr, tmp};

fn golden() -> PathBuf {
    root().join("crates/lvlm/tests/golden")
}

fn score(model: &str, data: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "score",
        "--model",
        model,
        "--tokenizer",
        "models/mistral-tokenizer/tokenizer.json",
        "--data",
        data.to_str().unwrap(),
        "--image-root",
        "data/images",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    mmedpo(&args)
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn score_writes_one_line_per_pair_and_resumes_after_a_kill() {
    let dir = tmp("resume");
    let out = dir.join("scores.jsonl");
    let model = golden().join("tiny-llava-hf");
    let data = golden().join("pairs.json");
    let o = score(model.to_str().unwrap(), &data, &out, &["--batch-size", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let full = lines(&out);
    assert_eq!(full.len(), 3);
    // Golden values from make_llava_goldens.py (pair 0: -33.8684 / -162.7318).
    assert!((full[0]["chosen_logp"].as_f64().unwrap() + 33.8684).abs() < 1e-3);
    assert!((full[0]["rejected_logp"].as_f64().unwrap() + 162.7318).abs() < 1e-3);
    assert_eq!(full[1]["id"], "report-1");
    assert_eq!(full[0]["chosen_tokens"], 3);
    // Simulate a kill after one pair and a half-written line.
    let text = std::fs::read_to_string(&out).unwrap();
    let first = text.lines().next().unwrap();
    std::fs::write(&out, format!("{first}\n{{\"id\": 2, \"chos")).unwrap();
    let o = score(model.to_str().unwrap(), &data, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let resumed = lines(&out);
    assert_eq!(resumed.len(), 3);
    let key = |v: &Vec<serde_json::Value>| {
        let mut k: Vec<String> = v.iter().map(|x| x.to_string()).collect();
        k.sort();
        k
    };
    assert_eq!(key(&resumed), key(&full));
    // Another model with the same --out is refused (stale cache).
    let o = score(
        golden().join("tiny-llava-med").to_str().unwrap(),
        &data,
        &out,
        &[],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("scored with other inputs") && stderr(&o).contains(": model "),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_items_are_named_or_skipped() {
    let dir = tmp("bad");
    let mut items: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(golden().join("pairs.json")).unwrap())
            .unwrap();
    items[1]["image"] = "missing.png".into();
    items[2]["conversations"][0]["value"] = "What organ is shown?".into();
    let data = dir.join("pairs.json");
    std::fs::write(&data, serde_json::to_string(&items).unwrap()).unwrap();
    let model = golden().join("tiny-llava-hf");
    let o = score(model.to_str().unwrap(), &data, &dir.join("a.jsonl"), &[]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("item id 2") && stderr(&o).contains("no <image> placeholder"),
        "{}",
        stderr(&o)
    );
    let out = dir.join("b.jsonl");
    let o = score(model.to_str().unwrap(), &data, &out, &["--skip-bad"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(lines(&out).len(), 1);
    let rejects = std::fs::read_to_string(dir.join("b.jsonl.rejects.jsonl")).unwrap();
    assert!(
        rejects.contains("missing.png") && rejects.contains("report-1"),
        "{rejects}"
    );
    assert!(rejects.contains("no <image> placeholder"), "{rejects}");
}

#[test]
fn generate_with_an_image_answers_and_a_missing_tower_is_explained() {
    let o = mmedpo(&[
        "generate",
        "--model",
        golden().join("tiny-llava-med").to_str().unwrap(),
        "--tokenizer",
        "models/mistral-tokenizer/tokenizer.json",
        "--image",
        "data/images/chest-xray-pa-nodules.png",
        "--prompt",
        "Is there a nodule?",
        "--max-new-tokens",
        "5",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8(o.stdout).unwrap();
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["ids"].as_array().unwrap().len(), 5);
    // The original layout without its tower directory.
    let dir = tmp("notower");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(golden().join("tiny-llava-med").join(f), dir.join(f)).unwrap();
    }
    let o = mmedpo(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--tokenizer",
        "models/mistral-tokenizer/tokenizer.json",
        "--image",
        "data/images/ct-small.png",
        "--prompt",
        "What is it?",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--vision-tower"), "{}", stderr(&o));
    let o = mmedpo(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--tokenizer",
        "models/mistral-tokenizer/tokenizer.json",
        "--vision-tower",
        golden().join("tiny-clip-336").to_str().unwrap(),
        "--image",
        "data/images/ct-small.png",
        "--prompt",
        "What is it?",
        "--max-new-tokens",
        "3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}
