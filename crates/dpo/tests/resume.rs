//! A training run killed after a checkpoint and resumed ends with the same adapter bytes as an
//! uninterrupted one, and the same step log (metrics to 1e-12 relative).
//!
//! This test has a binary of its own: cargo runs test binaries one after another but the tests of
//! one binary in parallel, and Flex's parallel reductions may split work differently when other
//! tests compete for the thread pool, which moves results in the last bit. Alone (as a training run
//! is), the computation is repeatable and the bytes are equal.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use mmedpo_core::backend::CpuAutodiff;
use mmedpo_core::record::read_records;
use mmedpo_dpo::data::{WeightMode, WeightStats};
use mmedpo_dpo::loss::LossType;
use mmedpo_dpo::optim::AdamW;
use mmedpo_dpo::train::{train, Reference, TrainSettings};
use mmedpo_lora::LoraConfig;
use mmedpo_lvlm::score::PairSettings;
use mmedpo_lvlm::{Layout, LlavaConfig, LlavaForConditionalGeneration, Tokenizer};

type B = CpuAutodiff;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
fn tok() -> Tokenizer {
    Tokenizer::from_file(&root().join("models/mistral-tokenizer/tokenizer.json")).unwrap()
}
/// The tiny model with weights drawn once from seed 0 and saved (Burn initialises parameters
/// lazily, so only a saved model gives every run the same base weights).
fn model() -> LlavaForConditionalGeneration<B> {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let device = Default::default();
    let dir = DIR.get_or_init(|| {
        let dir = tmp("base-model");
        let config = LlavaConfig::from_file(&root().join("models/tiny-llava/config.json")).unwrap();
        mmedpo_core::backend::Cpu::seed(&Default::default(), 0);
        let m = config.init::<mmedpo_core::backend::Cpu>(&Default::default());
        mmedpo_lvlm::save_llava(&m, &config, &dir).unwrap();
        dir
    });
    mmedpo_lvlm::load_llava::<B>(dir, None, &device)
        .unwrap()
        .model
}
fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mmedpo-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn settings() -> TrainSettings {
    TrainSettings {
        lora: LoraConfig::new(8, 16.0),
        beta: 0.1,
        loss_type: LossType::Sigmoid,
        weight_mode: WeightMode::Raw,
        weight_stats: WeightStats::Global,
        learning_rate: 5e-3,
        projector_lr: None,
        adamw: AdamW::default(),
        warmup_ratio: 0.1,
        epochs: 1,
        max_steps: None,
        batch_size: 4,
        grad_accum: 1,
        max_grad_norm: 1.0,
        seed: 3,
        save_steps: 0,
        pairs: PairSettings {
            template: mmedpo_llm::Template::VicunaV1,
            image_root: root().join("data/images"),
            aspect: mmedpo_vision::AspectRatio::Pad,
            image_size: 56,
        },
        reference: Reference::AdapterOff,
        layout: Layout::Hf,
        stop_after: None,
    }
}

#[test]
fn a_killed_and_resumed_run_ends_with_the_same_adapter_bytes() {
    let device = Default::default();
    let recs = read_records(&root().join("data/default/pairs.json")).unwrap();
    let s = TrainSettings {
        max_steps: Some(6),
        save_steps: 2,
        batch_size: 2,
        grad_accum: 2,
        ..settings()
    };
    let (a, b) = (tmp("whole"), tmp("killed"));
    train(
        model(),
        &tok(),
        &recs,
        None,
        &s,
        &a,
        false,
        &device,
        &mut |_, _| {},
    )
    .unwrap();
    // Killed during step 5 (after checkpoint 4): emulate by stopping after 5 steps of this process.
    let killed = TrainSettings {
        stop_after: Some(5),
        ..s.clone()
    };
    let partial = train(
        model(),
        &tok(),
        &recs,
        None,
        &killed,
        &b,
        false,
        &device,
        &mut |_, _| {},
    )
    .unwrap();
    assert!(
        !partial.adapter_dir.exists(),
        "a killed run has no final adapter"
    );
    let resumed = train(
        model(),
        &tok(),
        &recs,
        None,
        &s,
        &b,
        true,
        &device,
        &mut |_, _| {},
    )
    .unwrap();
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
