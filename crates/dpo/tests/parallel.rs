//! Data-parallel training over two CPU "devices" (threads on Flex, summed with burn-collective):
//! two devices × one pair per step train what one device with `grad_accum` 2 trains on the same
//! data order (to float summation order), and a killed two-device run resumes to the adapter
//! bytes of an uninterrupted one. A binary of its own, as `resume.rs` (thread-pool contention from
//! other tests would move the last bits).

mod common;

use std::path::Path;

use common::*;
use mmedpo_core::record::read_records;
use mmedpo_dpo::train::{train_on_devices, TrainSettings, TrainSummary};

fn run(
    recs: &[mmedpo_core::record::PreferenceRecord],
    s: &TrainSettings,
    out: &Path,
    devices: usize,
    resume: bool,
) -> TrainSummary {
    train_on_devices(
        model(),
        &tok(),
        recs,
        None,
        s,
        out,
        resume,
        &vec![Default::default(); devices],
        &mut |_, _| {},
    )
    .unwrap()
}

#[test]
fn two_devices_train_what_one_device_with_accumulation_two_trains() {
    let _serial = serial();
    let recs = read_records(&root().join("data/default/pairs.json")).unwrap();
    let base = TrainSettings {
        max_steps: Some(4),
        batch_size: 1,
        ..settings()
    };
    let one = TrainSettings {
        grad_accum: 2,
        ..base.clone()
    };
    let (a, b) = (tmp("dp-one"), tmp("dp-two"));
    let sa = run(&recs, &one, &a, 1, false);
    let sb = run(&recs, &base, &b, 2, false);
    let (ta, tb) = (
        adapter_tensors(&sa.adapter_dir),
        adapter_tensors(&sb.adapter_dir),
    );
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
    let (mut worst, mut changed) = (0f32, 0usize);
    for (k, x) in &ta {
        let y = &tb[k];
        let scale = x.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-20);
        for (p, q) in x.iter().zip(y) {
            worst = worst.max((p - q).abs() / scale);
        }
        changed += usize::from(x.iter().any(|v| *v != 0.0));
    }
    let (la, lb) = (&sa.logs, &sb.logs);
    let loss_diff = la
        .iter()
        .zip(lb)
        .map(|(x, y)| (x.loss - y.loss).abs() / x.loss.abs())
        .fold(0f64, f64::max);
    println!(
        "2 devices × 1 pair vs 1 device × grad_accum 2: adapters max relative |Δ| {worst:e}, \
         step losses max relative |Δ| {loss_diff:e}"
    );
    assert!(changed > 0);
    // Two summands add alike in either order, so two devices give one device's bits (measured:
    // 0); with more devices the all-reduce's order differs from accumulation's, hence a bound of
    // 1e-6 of each tensor's largest value, not equality.
    assert!(worst <= 1e-6, "{worst}");
    // The logged loss is the global batch's (summed in f32 across devices).
    assert!(loss_diff <= 1e-5, "{loss_diff}");
    for (x, y) in la.iter().zip(lb) {
        assert_eq!(x.step, y.step);
        assert!(
            (x.epoch - y.epoch).abs() < 1e-12,
            "{} vs {}",
            x.epoch,
            y.epoch
        );
        assert!((x.rewards_accuracies - y.rewards_accuracies).abs() < 1e-9);
    }
}

#[test]
fn a_killed_two_device_run_resumes_to_the_same_adapter_bytes() {
    let _serial = serial();
    let recs = read_records(&root().join("data/default/pairs.json")).unwrap();
    let s = TrainSettings {
        max_steps: Some(5),
        save_steps: 2,
        batch_size: 1,
        ..settings()
    };
    let (a, b) = (tmp("dp-whole"), tmp("dp-killed"));
    run(&recs, &s, &a, 2, false);
    let killed = TrainSettings {
        stop_after: Some(3),
        ..s.clone()
    };
    let partial = run(&recs, &killed, &b, 2, false);
    assert!(!partial.adapter_dir.exists());
    let resumed = run(&recs, &s, &b, 2, true);
    assert_eq!(resumed.resumed_from, 2);
    let bytes = |d: &Path| std::fs::read(d.join("adapter/adapter_model.safetensors")).unwrap();
    assert!(bytes(&a) == bytes(&b), "final adapters differ");
}
