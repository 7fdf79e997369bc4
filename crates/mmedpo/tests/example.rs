//! The example runs the whole pipeline from Rust (no command line) and a rerun finds every stage
//! current.

#[path = "../examples/pipeline.rs"]
#[allow(dead_code)]
mod example;

use std::sync::Mutex;

use mmedpo::Observer;

#[test]
fn the_example_runs_the_pipeline_from_rust() {
    let out = std::env::temp_dir().join(format!("mmedpo-example-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let s = example::run(&out).unwrap();
    assert!(s.table.contains("| closed_accuracy |"), "{}", s.table);
    assert!(s.base["closed_accuracy"].is_number() && s.mmedpo["open_recall"].is_number());
    for stage in ["visual", "assemble", "train", "eval-base", "eval"] {
        assert!(out.join(stage).join("done.json").is_file(), "{stage}");
    }
    assert!(out
        .join("train/adapter/adapter_model.safetensors")
        .is_file());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["mmedpo"], s.mmedpo);
    assert!(s.partial.is_empty());

    // Again: nothing runs, every stage says it is current.
    struct Notes(Mutex<Vec<String>>);
    impl Observer for Notes {
        fn note(&self, m: &str) {
            self.0.lock().unwrap().push(m.to_string());
        }
    }
    let notes = Notes(Mutex::new(vec![]));
    let c = example::config(&out).unwrap();
    let again = mmedpo::pipeline::run(&c, &Default::default(), &notes).unwrap();
    assert_eq!(again.mmedpo, s.mmedpo);
    let notes = notes.0.into_inner().unwrap();
    let skipped = notes
        .iter()
        .filter(|n| n.contains("current, skipped"))
        .count();
    assert_eq!(skipped, 5, "{notes:?}");
    std::fs::remove_dir_all(&out).unwrap();
}
