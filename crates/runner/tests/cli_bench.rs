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
