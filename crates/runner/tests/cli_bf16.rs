//! `--dtype bf16 --device cpu`: the mixed-precision path of every model command runs in CI.
//! bf16 weights on the Flex backend; adapters f32; log-probs near the f32 ones.

use std::path::Path;
use std::process::Output;

mod common;
use common::{mmedpo, stderr, tiny_llava, tmp};

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "{}", stderr(&o));
    o
}

fn logps(path: &Path) -> Vec<(f64, f64)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["chosen_logp"].as_f64().unwrap(),
                v["rejected_logp"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn train_score_generate_and_eval_run_in_bf16_on_the_cpu() {
    let model = tiny_llava("bf16-model");
    let m = model.to_str().unwrap();
    let out = tmp("bf16-train");
    let o = ok(mmedpo(&[
        "train",
        "--model",
        m,
        "--data",
        "data/default/pairs.json",
        "--image-root",
        "data/images",
        "--out",
        out.to_str().unwrap(),
        "--lora-r",
        "4",
        "--lora-alpha",
        "8",
        "--learning-rate",
        "1e-3",
        "--batch-size",
        "2",
        "--max-steps",
        "2",
        "--device",
        "cpu",
        "--dtype",
        "bf16",
    ]));
    assert!(stderr(&o).contains("trained 2 step(s)"), "{}", stderr(&o));
    let log = std::fs::read_to_string(out.join("log.jsonl")).unwrap();
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let loss = v["loss"].as_f64().unwrap();
        // An f32 loss: a bf16 one reads 0.69141 flat (bf16 spacing near ln 2 is 2^-8).
        assert!(loss.is_finite() && loss != 0.69140625, "{line}");
    }
    // The adapter leaves in f32 (saved from the masters).
    let adapter = out.join("adapter");
    let ck = mmedpo::core::checkpoint::Checkpoint::open(&adapter.join("adapter_model.safetensors"))
        .unwrap();
    for k in ck.keys() {
        assert_eq!(
            ck.raw(k).unwrap().dtype,
            mmedpo::core::checkpoint::Dtype::F32,
            "{k}"
        );
    }
    // score: bf16 near f32, with the adapter.
    let score = |dtype: &str| {
        let path = tmp(&format!("bf16-score-{dtype}")).join("s.jsonl");
        ok(mmedpo(&[
            "score",
            "--model",
            m,
            "--adapter",
            adapter.to_str().unwrap(),
            "--data",
            "data/default/pairs.json",
            "--image-root",
            "data/images",
            "--out",
            path.to_str().unwrap(),
            "--dtype",
            dtype,
        ]));
        (logps(&path), path)
    };
    let ((full, scored), (half, _)) = (score("f32"), score("bf16"));
    assert_eq!(full.len(), 8);
    let worst = full
        .iter()
        .zip(&half)
        .map(|(f, h)| ((f.0 - h.0).abs() / f.0.abs()).max((f.1 - h.1).abs() / f.1.abs()))
        .fold(0f64, f64::max);
    println!("score bf16 vs f32: max relative |Δ logp| = {worst:.2e}");
    assert!(worst > 0.0 && worst < 1e-2, "{worst}");
    // A score file records its adapter and dtype: rescoring into it without the adapter, or in
    // another dtype, is refused; as a DPO reference (base model, no adapter) it is refused too.
    let rescore = |extra: &[&str]| {
        let mut a = vec![
            "score",
            "--model",
            m,
            "--data",
            "data/default/pairs.json",
            "--image-root",
            "data/images",
            "--out",
            scored.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        mmedpo(&a)
    };
    let e = stderr(&rescore(&[]));
    assert!(
        e.contains("scored with other inputs") && e.contains("adapter "),
        "{e}"
    );
    let e = stderr(&rescore(&[
        "--adapter",
        adapter.to_str().unwrap(),
        "--dtype",
        "bf16",
    ]));
    assert!(e.contains("dtype f32 vs bf16"), "{e}");
    let cfg = tmp("bf16-ref").join("ref.toml");
    std::fs::write(
        &cfg,
        format!("[dpo]\nreference = {:?}\n", scored.to_str().unwrap()),
    )
    .unwrap();
    let o = mmedpo(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--model",
        m,
        "--data",
        "data/default/pairs.json",
        "--image-root",
        "data/images",
        "--out",
        tmp("bf16-ref-out").to_str().unwrap(),
        "--max-steps",
        "1",
    ]);
    let e = stderr(&o);
    assert!(
        !o.status.success() && e.contains("adapter ") && e.contains("without --adapter"),
        "{e}"
    );
    // generate with an image, and eval.
    let o = ok(mmedpo(&[
        "generate",
        "--model",
        m,
        "--image",
        "data/images/chest-xray-pa-nodules.png",
        "--prompt",
        "Is there a nodule?",
        "--max-new-tokens",
        "3",
        "--json",
        "--dtype",
        "bf16",
    ]));
    let stdout = String::from_utf8(o.stdout).unwrap();
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["ids"].as_array().unwrap().len(), 3);
    let eval = tmp("bf16-eval");
    let o = ok(mmedpo(&[
        "eval",
        "--model",
        m,
        "--adapter",
        adapter.to_str().unwrap(),
        "--data",
        "data/default/vqa_test.json",
        "--image-root",
        "data/images",
        "--task",
        "vqa",
        "--out",
        eval.to_str().unwrap(),
        "--max-new-tokens",
        "3",
        "--batch-size",
        "3",
        "--dtype",
        "bf16",
    ]));
    assert!(String::from_utf8_lossy(&o.stdout).contains("| Open (recall) | Closed (accuracy) |"));
    let preds = std::fs::read_to_string(eval.join("predictions.jsonl")).unwrap();
    assert_eq!(preds.lines().count(), 6);
}
