//! Training-loop invariants on the embedded tiny LLaVA (`models/tiny-llava`, random weights drawn
//! from a seed) and the embedded preference set (`data/default/pairs.json`, real scans):
//! * one step with gradient accumulation N equals the mean of N micro-batch gradients, and one
//!   micro-batch of N pairs (padding included), to 1e-5;
//! * 120 steps drive the reward accuracy on the set to 1.0.
//!
//! Resuming is tested in `resume.rs`, its own test binary (see there why).

mod common;

use burn::module::Module;
use common::*;
use mmedpo_core::record::read_records;
use mmedpo_dpo::data::{pair_weights, WeightMode, WeightStats};
use mmedpo_dpo::train::{loss_and_grads, TrainSettings};
use mmedpo_lvlm::score::prepare_pair;
use mmedpo_lvlm::Layout;

#[test]
fn accumulated_gradients_equal_one_big_micro_batch() {
    let device = Default::default();
    let mut m = model().no_grad();
    let s = settings();
    m.attach_lora(&s.lora, Layout::Hf, &device);
    // Give lora_B values so every gradient is non-zero.
    for (_, l) in m.language_model.lora_layers_mut() {
        let a = l.lora.as_mut().unwrap();
        a.lora_B.weight = a
            .lora_B
            .weight
            .clone()
            .map(|w| w.random_like(burn::tensor::Distribution::Normal(0.0, 0.05)));
    }
    let recs = read_records(&root().join("data/default/pairs.json")).unwrap();
    let w = pair_weights(&recs, WeightMode::Raw, WeightStats::Global).unwrap();
    let pairs: Vec<_> = recs[..4]
        .iter()
        .map(|r| prepare_pair(&tok(), &s.pairs, r).unwrap())
        .collect();
    let big = loss_and_grads(&mut m, &pairs, &w[..4], None, &s, 1.0, &device).unwrap();
    let mut acc: std::collections::BTreeMap<String, Vec<f32>> = Default::default();
    for i in 0..4 {
        let g = loss_and_grads(
            &mut m,
            &pairs[i..i + 1],
            &w[i..i + 1],
            None,
            &s,
            0.25,
            &device,
        )
        .unwrap();
        for (k, t) in g.grads {
            let v: Vec<f32> = t.into_data().to_vec().unwrap();
            let e = acc.entry(k).or_insert_with(|| vec![0.0; v.len()]);
            e.iter_mut().zip(v).for_each(|(a, b)| *a += b);
        }
    }
    let mut worst = 0f32;
    for (k, t) in &big.grads {
        let v: Vec<f32> = t.clone().into_data().to_vec().unwrap();
        let scale = v.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-20);
        for (a, b) in v.iter().zip(&acc[k]) {
            worst = worst.max((a - b).abs() / scale);
        }
    }
    println!("accumulation vs one batch: max relative |Δ| = {worst:e}");
    assert!(worst <= 1e-5, "{worst}");
}

#[test]
fn training_on_a_small_set_reaches_reward_accuracy_one() {
    let device = Default::default();
    let recs = read_records(&root().join("data/default/pairs.json")).unwrap();
    let s = TrainSettings {
        max_steps: Some(120),
        learning_rate: 1e-2,
        ..settings()
    };
    let out = tmp("converge");
    let summary = run_training(&recs, &s, &out, false);
    assert_eq!(summary.logs.len(), 120);
    let first = &summary.logs[0];
    let last = summary.logs.last().unwrap();
    println!(
        "loss {:.4} -> {:.4}, margin {:.3} -> {:.3}",
        first.loss, last.loss, first.rewards_margins, last.rewards_margins
    );
    // Evaluate the trained adapter on the whole set.
    let mut m = model().no_grad();
    m.load_adapter(&summary.adapter_dir, &device).unwrap();
    let w = vec![1.0; recs.len()];
    let pairs: Vec<_> = recs
        .iter()
        .map(|r| prepare_pair(&tok(), &s.pairs, r).unwrap())
        .collect();
    let g = loss_and_grads(&mut m, &pairs, &w, None, &s, 1.0, &device).unwrap();
    let [pc, pr, rc, rr] = &g.logps;
    let correct = (0..recs.len())
        .filter(|&i| pc[i] - rc[i] > pr[i] - rr[i])
        .count();
    println!("reward accuracy on the set: {correct}/{}", recs.len());
    assert_eq!(correct, recs.len());
    assert!(last.loss < 0.5 * first.loss);
}

#[test]
fn a_projector_learning_rate_trains_the_projector_and_checkpoints_it() {
    let recs = read_records(&root().join("data/default/pairs.json")).unwrap();
    let s = TrainSettings {
        max_steps: Some(2),
        save_steps: 1,
        batch_size: 2,
        projector_lr: Some(1e-2),
        ..settings()
    };
    let out = tmp("projector");
    let before: Vec<f32> = model()
        .multi_modal_projector
        .linear_1
        .weight
        .val()
        .into_data()
        .to_vec()
        .unwrap();
    run_training(&recs, &s, &out, false);
    let ck = out.join("checkpoint-2/projector.safetensors");
    assert!(ck.is_file());
    let bytes = std::fs::read(&ck).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let w = st.tensor("multi_modal_projector.linear_1.weight").unwrap();
    // PyTorch layout [out, in] on disk; Burn's [in, out] in memory.
    let after: Vec<f32> = w
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let (o, i) = (w.shape()[0], w.shape()[1]);
    let moved = (0..o)
        .flat_map(|r| (0..i).map(move |c| (r, c)))
        .map(|(r, c)| (after[r * i + c] - before[c * o + r]).abs())
        .fold(0f32, f32::max);
    assert!(moved > 1e-4, "the projector did not move ({moved})");
}
