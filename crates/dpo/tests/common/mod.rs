//! Helpers shared by the training tests: the embedded tiny LLaVA with weights drawn once from
//! seed 0 and saved, the default preference set, and baseline settings.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use mmedpo_core::backend::CpuAutodiff;
use mmedpo_core::record::PreferenceRecord;
use mmedpo_dpo::data::{WeightMode, WeightStats};
use mmedpo_dpo::loss::LossType;
use mmedpo_dpo::optim::AdamW;
use mmedpo_dpo::train::{train, Reference, TrainSettings, TrainSummary};
use mmedpo_lora::LoraConfig;
use mmedpo_lvlm::score::PairSettings;
use mmedpo_lvlm::{Layout, LlavaConfig, LlavaForConditionalGeneration, Tokenizer};

pub type B = CpuAutodiff;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
pub fn tok() -> Tokenizer {
    Tokenizer::from_file(&root().join("models/mistral-tokenizer/tokenizer.json")).unwrap()
}
/// The tiny model with weights drawn once from seed 0 and saved (Burn initialises parameters
/// lazily, so only a saved model gives every run the same base weights).
pub fn model() -> LlavaForConditionalGeneration<B> {
    model_as(burn::tensor::DType::F32)
}

/// [`model`] with its weights in `dtype` (bf16: the mixed-precision path).
pub fn model_as(dtype: burn::tensor::DType) -> LlavaForConditionalGeneration<B> {
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
    mmedpo_lvlm::load_llava_as::<B>(dir, None, &device, dtype)
        .unwrap()
        .model
}
/// Serialises the tests of one binary that draw from Burn's random generator: it is one per
/// backend, seeded by `B::seed`, so tests running side by side would draw each other's numbers.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn tmp(name: &str) -> PathBuf {
    mmedpo_core::testing::scratch("mmedpo-train", name)
}

pub fn settings() -> TrainSettings {
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

/// Trains the tiny model on `recs` with settings `s` into `out` (resuming when asked).
pub fn run_training(
    recs: &[PreferenceRecord],
    s: &TrainSettings,
    out: &Path,
    resume: bool,
) -> TrainSummary {
    run_training_as(burn::tensor::DType::F32, recs, s, out, resume)
}

/// [`run_training`] on the model in `dtype`.
pub fn run_training_as(
    dtype: burn::tensor::DType,
    recs: &[PreferenceRecord],
    s: &TrainSettings,
    out: &Path,
    resume: bool,
) -> TrainSummary {
    train(
        model_as(dtype),
        &tok(),
        recs,
        None,
        s,
        out,
        resume,
        &Default::default(),
        &mut |_, _| {},
    )
    .unwrap()
}

/// The f32 tensors of a PEFT adapter directory, by key.
pub fn adapter_tensors(dir: &Path) -> std::collections::BTreeMap<String, Vec<f32>> {
    let ck =
        mmedpo_core::checkpoint::Checkpoint::open(&dir.join("adapter_model.safetensors")).unwrap();
    ck.keys()
        .map(|k| {
            let raw = ck.raw(k).unwrap();
            assert_eq!(
                raw.dtype,
                mmedpo_core::checkpoint::Dtype::F32,
                "{k} is saved from f32 masters"
            );
            let v = raw
                .data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (k.to_string(), v)
        })
        .collect()
}
