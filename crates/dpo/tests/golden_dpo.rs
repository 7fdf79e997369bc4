//! LoRA and DPO against PyTorch + PEFT (goldens: `tests/golden/make_dpo_goldens.py`).
//!
//! * A PEFT adapter loads and gives HF+peft's logits (≤ 1e-4); an adapter we save has PEFT's keys
//!   and shapes and reloads to the same logits.
//! * The weighted DPO loss, the policy/reference log-probs and the gradient of every LoRA weight
//!   equal PyTorch's (gradients ≤ 1e-4 relative to the largest entry of each tensor).
//! * With `lora_B = 0` the first loss is ln 2 · mean(w).

use std::path::{Path, PathBuf};

use burn::module::Module;
use mmedpo_core::backend::{Cpu, CpuAutodiff};
use mmedpo_core::record::read_records;
use mmedpo_dpo::data::{pair_weights, WeightMode, WeightStats};
use mmedpo_dpo::train::{loss_and_grads, Reference, TrainSettings};
use mmedpo_dpo::{loss::LossType, optim::AdamW};
use mmedpo_lora::LoraConfig;
use mmedpo_lvlm::score::{prepare_pair, PairSettings, PreparedPair};
use mmedpo_lvlm::{load_llava, Layout, LlavaForConditionalGeneration, Sequence, Tokenizer};
use safetensors::SafeTensors;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
fn lvlm_golden() -> PathBuf {
    root().join("crates/lvlm/tests/golden")
}
fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}
fn tok() -> Tokenizer {
    Tokenizer::from_file(&root().join("models/mistral-tokenizer/tokenizer.json")).unwrap()
}
fn g_f32(bytes: &[u8], k: &str) -> (Vec<f32>, Vec<usize>) {
    let st = SafeTensors::deserialize(bytes).unwrap();
    let t = st.tensor(k).unwrap_or_else(|_| panic!("{k}"));
    (
        t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        t.shape().to_vec(),
    )
}
fn g_i64(bytes: &[u8], k: &str) -> Vec<i64> {
    let st = SafeTensors::deserialize(bytes).unwrap();
    st.tensor(k)
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn settings() -> PairSettings {
    PairSettings {
        template: mmedpo_llm::Template::VicunaV1,
        image_root: root().join("data/images"),
        aspect: mmedpo_vision::AspectRatio::Pad,
        image_size: 336,
    }
}

fn prepared() -> (Vec<PreparedPair>, Vec<f64>) {
    let recs = read_records(&lvlm_golden().join("pairs.json")).unwrap();
    let w = pair_weights(&recs, WeightMode::Raw, WeightStats::Global).unwrap();
    (
        recs.iter()
            .map(|r| prepare_pair(&tok(), &settings(), r).unwrap())
            .collect(),
        w,
    )
}

fn adapter_logits<B: burn::tensor::backend::Backend>(
    model: &LlavaForConditionalGeneration<B>,
    pair: &PreparedPair,
    device: &B::Device,
) -> Vec<f32> {
    let feats = model.image_features(mmedpo_lvlm::score::stack_pixels::<B>(
        &[&pair.chosen_pixels],
        336,
        device,
    ));
    let inputs = model
        .prepare(
            &[Sequence {
                ids: pair.chosen.ids.clone(),
                labels: None,
            }],
            feats,
            &[0],
            false,
        )
        .unwrap();
    model
        .forward(&inputs)
        .into_data()
        .convert::<f32>()
        .to_vec()
        .unwrap()
}

fn check_logits(logits: &[f32], bytes: &[u8]) -> f32 {
    let subset = g_i64(bytes, "subset_ids");
    let (want, _) = g_f32(bytes, "adapter.logits.subset");
    let mut worst = 0f32;
    for (j, &pos) in g_i64(bytes, "adapter.logits.positions").iter().enumerate() {
        for (k, &id) in subset.iter().enumerate() {
            worst = worst.max(
                (logits[pos as usize * 32000 + id as usize] - want[j * subset.len() + k]).abs(),
            );
        }
    }
    worst
}

#[test]
fn peft_adapter_gives_peft_logits_and_ours_round_trips_in_peft_layout() {
    let device = Default::default();
    let bytes = std::fs::read(golden().join("dpo_goldens.safetensors")).unwrap();
    let mut loaded =
        load_llava::<Cpu>(&lvlm_golden().join("tiny-llava-hf"), None, &device).unwrap();
    let base_logits = adapter_logits(&loaded.model, &prepared().0[0], &device);
    let cfg = loaded
        .model
        .load_adapter(&golden().join("peft-adapter"), &device)
        .unwrap();
    assert_eq!((cfg.r, cfg.lora_alpha), (4, 8.0));
    let pair = &prepared().0[0];
    let logits = adapter_logits(&loaded.model, pair, &device);
    let d = check_logits(&logits, &bytes);
    println!("adapter logits max |Δ| = {d:e}");
    assert!(d <= 1e-4, "{d}");
    assert!(
        check_logits(&base_logits, &bytes) > 1e-3,
        "the adapter must change the logits for this test to mean anything"
    );
    // Save ours, compare with PEFT's file, reload into a fresh model.
    let out = std::env::temp_dir().join(format!("mmedpo-adapter-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    loaded.model.save_adapter(&out, &cfg, Layout::Hf).unwrap();
    let ours = std::fs::read(out.join("adapter_model.safetensors")).unwrap();
    let theirs = std::fs::read(golden().join("peft-adapter/adapter_model.safetensors")).unwrap();
    let shapes = |b: &[u8]| {
        let st = SafeTensors::deserialize(b).unwrap();
        let mut v: Vec<(String, Vec<usize>)> = st
            .tensors()
            .into_iter()
            .map(|(k, t)| (k, t.shape().to_vec()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(shapes(&ours), shapes(&theirs));
    let mut fresh = load_llava::<Cpu>(&lvlm_golden().join("tiny-llava-hf"), None, &device).unwrap();
    fresh.model.load_adapter(&out, &device).unwrap();
    let again = adapter_logits(&fresh.model, pair, &device);
    assert!(check_logits(&again, &bytes) <= 1e-4);
    // Merging gives the same function.
    let merged = LlavaForConditionalGeneration {
        language_model: fresh.model.language_model.clone().merge_adapters(),
        ..fresh.model.clone()
    };
    assert!(check_logits(&adapter_logits(&merged, pair, &device), &bytes) <= 1e-4);
    std::fs::remove_dir_all(&out).unwrap();
}

fn train_settings(lora: LoraConfig) -> TrainSettings {
    TrainSettings {
        lora,
        beta: 0.1,
        loss_type: LossType::Sigmoid,
        weight_mode: WeightMode::Raw,
        weight_stats: WeightStats::Global,
        learning_rate: 1e-3,
        projector_lr: None,
        adamw: AdamW::default(),
        warmup_ratio: 0.0,
        epochs: 1,
        max_steps: None,
        batch_size: 3,
        grad_accum: 1,
        max_grad_norm: 1.0,
        seed: 0,
        save_steps: 0,
        pairs: settings(),
        reference: Reference::AdapterOff,
        layout: Layout::Hf,
        stop_after: None,
    }
}

#[test]
fn dpo_loss_logps_and_lora_gradients_equal_pytorch() {
    let device = Default::default();
    let bytes = std::fs::read(golden().join("dpo_goldens.safetensors")).unwrap();
    let loaded =
        load_llava::<CpuAutodiff>(&lvlm_golden().join("tiny-llava-hf"), None, &device).unwrap();
    let mut model = loaded.model.no_grad();
    let cfg = model
        .load_adapter(&golden().join("peft-adapter"), &device)
        .unwrap();
    let (pairs, w) = prepared();
    let g = loss_and_grads(
        &mut model,
        &pairs,
        &w,
        None,
        &train_settings(cfg),
        1.0,
        &device,
    )
    .unwrap();
    let want_loss = g_f32(&bytes, "loss").0[0] as f64;
    println!("loss {} vs {want_loss}", g.loss);
    assert!((g.loss - want_loss).abs() < 1e-5);
    for (i, name) in [
        "policy.chosen",
        "policy.rejected",
        "reference.chosen",
        "reference.rejected",
    ]
    .iter()
    .enumerate()
    {
        let want = g_f32(&bytes, name).0;
        for (a, b) in g.logps[i].iter().zip(&want) {
            assert!((a - *b as f64).abs() < 1e-3, "{name}: {a} vs {b}");
        }
    }
    assert_eq!(g.grads.len(), 2 * 7 * 2);
    let mut worst = 0f64;
    for (key, grad) in &g.grads {
        let (want, shape) = g_f32(&bytes, &format!("grad.{key}"));
        let ours: Vec<f32> = grad.clone().into_data().to_vec().unwrap();
        // Burn stores [in, out]; PEFT [out, in]: transpose ours.
        let (rows, cols) = (shape[0], shape[1]);
        let scale = want.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
        for r in 0..rows {
            for c in 0..cols {
                let rel = ((ours[c * rows + r] - want[r * cols + c]).abs() / scale) as f64;
                worst = worst.max(rel);
            }
        }
    }
    println!("LoRA gradients: max relative |Δ| = {worst:e}");
    assert!(worst <= 1e-4, "{worst}");
}

#[test]
fn with_lora_b_zero_the_first_loss_is_ln2_times_mean_weight() {
    let device = Default::default();
    let loaded =
        load_llava::<CpuAutodiff>(&lvlm_golden().join("tiny-llava-hf"), None, &device).unwrap();
    let mut model = loaded.model.no_grad();
    let lora = LoraConfig::new(8, 16.0);
    model.attach_lora(&lora, Layout::Hf, &device);
    let (pairs, w) = prepared();
    let g = loss_and_grads(
        &mut model,
        &pairs,
        &w,
        None,
        &train_settings(lora),
        1.0,
        &device,
    )
    .unwrap();
    let mean_w = w.iter().sum::<f64>() / w.len() as f64;
    println!(
        "loss {} vs ln2·mean(w) {}",
        g.loss,
        std::f64::consts::LN_2 * mean_w
    );
    assert!((g.loss - std::f64::consts::LN_2 * mean_w).abs() < 1e-6);
    // B = 0: only lora_B gets a gradient.
    assert!(g
        .grads
        .iter()
        .filter(|(k, _)| k.contains("lora_B"))
        .all(|(_, t)| t.clone().abs().max().into_scalar() > 0.0));
}
