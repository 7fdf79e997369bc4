//! `mmedpo bench train`: the figures a GPU check reads, here on the tiny config in f32 and bf16.

mod common;
use common::{mmedpo, stderr, tmp};

#[test]
fn bench_train_reports_speed_memory_and_the_lora_a_update() {
    for dtype in ["f32", "bf16"] {
        let json = tmp(&format!("bench-{dtype}")).join("bench.json");
        let o = mmedpo(&[
            "bench",
            "train",
            "--config",
            "models/tiny-llava/config.json",
            "--seq-len",
            "64",
            "--steps",
            "2",
            "--dtype",
            dtype,
            "--json",
            json.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        println!("{v}");
        assert_eq!(v["dtype"], dtype);
        assert_eq!(v["finite"], true);
        for key in [
            "s_per_pair",
            "tokens_per_s",
            "tflops",
            "build_s",
            "first_step_s",
        ] {
            assert!(v[key].as_f64().unwrap() > 0.0, "{key}: {v}");
        }
        assert!(v["peak_bytes"].as_u64().unwrap() > 1 << 20, "{v}");
        // f32 masters: an lr of 1e-7 changes most of A in bf16 as in f32 (A elements whose input
        // features get no gradient stay).
        let changed = v["lora_a_changed_fraction"].as_f64().unwrap();
        assert!(changed > 0.5, "{dtype}: {changed}");
    }
    let o = mmedpo(&[
        "bench",
        "train",
        "--config",
        "models/tiny-llava/config.json",
        "--seq-len",
        "16",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("leaves no room for 16 image tokens"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bench_train_on_two_devices_sums_the_replicas_into_the_same_step() {
    // Both replicas run the same synthetic pairs, so the summed step is the one-device step:
    // the same loss and gradient norm, reported per pair of the global batch.
    let run = |devices: &str| {
        let json = tmp(&format!("bench-devices-{devices}")).join("bench.json");
        let o = mmedpo(&[
            "bench",
            "train",
            "--config",
            "models/tiny-llava/config.json",
            "--seq-len",
            "64",
            "--steps",
            "2",
            "--devices",
            devices,
            "--json",
            json.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        v
    };
    let (one, two) = (run("1"), run("2"));
    assert_eq!(two["devices"], 2);
    for key in ["loss", "grad_norm"] {
        let (a, b) = (one[key].as_f64().unwrap(), two[key].as_f64().unwrap());
        assert!((a - b).abs() <= 1e-5 * a.abs(), "{key}: {a} vs {b}");
    }
}
