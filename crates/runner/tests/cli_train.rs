//! `mmedpo init-model`, `mmedpo train` and `mmedpo score --adapter` end to end, as a user runs them.

use std::process::Output;

mod common;
use common::{mmedpo, root, stderr, tiny_llava, tmp};

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "{}", stderr(&o));
    o
}

#[test]
fn train_without_a_config_file_leaves_adapter_log_plot_and_config_then_resumes() {
    let model = tiny_llava("model");
    let out = tmp("out");
    let base = [
        "train",
        "--model",
        model.to_str().unwrap(),
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
        "5e-3",
        "--batch-size",
        "2",
        "--grad-accum",
        "1",
    ];
    let mut args = base.to_vec();
    args.extend(["--max-steps", "4", "--save-steps", "2"]);
    let o = ok(mmedpo(&args));
    assert!(
        stderr(&o).contains("trained 4 step(s) on 8 pair(s)"),
        "{}",
        stderr(&o)
    );
    for f in [
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "log.jsonl",
        "training.png",
        "train_config.toml",
        "checkpoint-2/trainer_state.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let png = std::fs::read(out.join("training.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let log = std::fs::read_to_string(out.join("log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 4);
    let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    for key in [
        "loss",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/accuracies",
        "rewards/margins",
        "logps/chosen",
        "logps/rejected",
        "learning_rate",
        "grad_norm",
    ] {
        assert!(first.get(key).is_some(), "log lacks {key}");
    }
    let resolved = std::fs::read_to_string(out.join("train_config.toml")).unwrap();
    assert!(
        resolved.contains("max_steps = 4") && resolved.contains("r = 4"),
        "{resolved}"
    );
    // The resolved config reproduces the run, and --resume continues from the last checkpoint.
    let mut more = base.to_vec();
    more.extend(["--max-steps", "4", "--save-steps", "2", "--resume"]);
    let o = ok(mmedpo(&more));
    assert!(stderr(&o).contains("resumed at 4"), "{}", stderr(&o));
    // Resuming with a setting changed is refused, naming it (the adapter would not load).
    let mut changed = more.clone();
    let r = changed.iter().position(|a| *a == "--lora-r").unwrap();
    changed[r + 1] = "8";
    let o = mmedpo(&changed);
    let e = stderr(&o);
    assert!(
        !o.status.success() && e.contains("lora.r 4 → 8") && e.contains("drop --resume"),
        "{e}"
    );
    // A second process on the same --out is kept off while the first holds it.
    std::fs::write(out.join(".lock"), "1\n").unwrap();
    let e = stderr(&mmedpo(&more));
    assert!(e.contains("being written by another mmedpo"), "{e}");
    std::fs::remove_file(out.join(".lock")).unwrap();
    // score --adapter uses it.
    let scores = out.join("scores.jsonl");
    ok(mmedpo(&[
        "score",
        "--model",
        model.to_str().unwrap(),
        "--adapter",
        out.join("adapter").to_str().unwrap(),
        "--data",
        "data/default/pairs.json",
        "--image-root",
        "data/images",
        "--out",
        scores.to_str().unwrap(),
    ]));
    assert_eq!(std::fs::read_to_string(&scores).unwrap().lines().count(), 8);
}

#[test]
fn config_files_are_strict() {
    let dir = tmp("cfg");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("bad.toml");
    std::fs::write(&cfg, "model = \"m\"\n[optim]\nlearning_rat = 1e-5\n").unwrap();
    let o = mmedpo(&["train", "--config", cfg.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("learning_rat") && stderr(&o).contains("bad.toml"),
        "{}",
        stderr(&o)
    );
    std::fs::write(&cfg, "modle = \"m\"\n").unwrap();
    let o = mmedpo(&["train", "--config", cfg.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("modle"), "{}", stderr(&o));
    let o = mmedpo(&["train", "--data", "x.json"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no `model`"), "{}", stderr(&o));
    // The documented LLaVA-Med config parses; its inputs are absent here, so it refuses to start,
    // naming each one (paths relative to docs/), the key, and where it comes from.
    let o = mmedpo(&[
        "train",
        "--config",
        "docs/train-llava-med.toml",
        "--out",
        dir.join("x").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(!e.contains("unknown key"), "{e}");
    for want in [
        "docs/../checkpoints/llava-med-v1.5-mistral-7b: no LLaVA model",
        "docs/../datasets/vqa-rad/vqa-rad_dpo_weighted.json: no such preference file (`data` in docs/train-llava-med.toml",
        "`mmedpo curate-text`",
        "docs/../out/vqa-rad-visual/visual_pairs.json: no such preference file",
        "`mmedpo visual-pairs --data",
        "docs/../datasets/vqa-rad/images: no such image folder",
    ] {
        assert!(e.contains(want), "{want:?} not in {e}");
    }
    assert!(
        !dir.join("x").exists(),
        "a refused run wrote its output folder"
    );
}

#[test]
fn paths_in_a_config_file_are_relative_to_its_folder() {
    let model = tiny_llava("relmodel");
    std::fs::copy(
        root().join("data/default/pairs.json"),
        model.join("pairs.json"),
    )
    .unwrap();
    let cfg = model.join("train.toml");
    std::fs::write(
        &cfg,
        format!(
            "model = \".\"\ndata = [\"pairs.json\"]\nimage_root = {:?}\nout = \"run\"\n\
             [lora]\nr = 2\nalpha = 4.0\n[optim]\nmax_steps = 1\nbatch_size = 2\ngrad_accum = 1\n",
            root().join("data/images").canonicalize().unwrap()
        ),
    )
    .unwrap();
    let o = ok(mmedpo(&["train", "--config", cfg.to_str().unwrap()]));
    assert!(stderr(&o).contains("trained 1 step(s)"), "{}", stderr(&o));
    assert!(model
        .join("run/adapter/adapter_model.safetensors")
        .is_file());
}

#[test]
fn bad_training_data_is_reported_item_by_item() {
    let model = tiny_llava("badmodel");
    let dir = tmp("baddata");
    std::fs::create_dir_all(&dir).unwrap();
    let mut items: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(root().join("data/default/pairs.json")).unwrap(),
    )
    .unwrap();
    items[2]["image"] = "nope.png".into();
    items[5]["weighted_score"] = "high".into();
    let data = dir.join("pairs.json");
    std::fs::write(&data, serde_json::to_string(&items).unwrap()).unwrap();
    let out = dir.join("o");
    let train = || {
        mmedpo(&[
            "train",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--image-root",
            "data/images",
            "--out",
            out.to_str().unwrap(),
            "--max-steps",
            "1",
        ])
    };
    let o = train();
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("item id 5") && e.contains("\"high\""), "{e}");
    items[5]["weighted_score"] = 0.5.into();
    std::fs::write(&data, serde_json::to_string(&items).unwrap()).unwrap();
    let o = train();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("item id 2") && stderr(&o).contains("nope.png"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_hyperparameters_are_listed_before_the_model_loads_and_non_finite_steps_stop() {
    let model = tiny_llava("hyper");
    let out = tmp("hyper-out");
    let base = [
        "train",
        "--model",
        model.to_str().unwrap(),
        "--data",
        "data/default/pairs.json",
        "--image-root",
        "data/images",
        "--out",
        out.to_str().unwrap(),
    ];
    let mut args = base.to_vec();
    args.extend([
        "--learning-rate=-1",
        "--beta",
        "0",
        "--lora-r",
        "0",
        "--max-steps",
        "0",
        "--lora-alpha",
        "NaN",
    ]);
    let o = mmedpo(&args);
    assert!(!o.status.success());
    let e = stderr(&o);
    for want in [
        "learning_rate = -1",
        "beta = 0",
        "lora r = 0",
        "max_steps = 0",
        "lora alpha = NaN",
    ] {
        assert!(e.contains(want), "{want:?} not in {e}");
    }
    assert!(!out.join("adapter").exists());
    // A weight of 2 (or 1e308) is not a weight this pipeline writes: refused by item.
    let mut items: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(root().join("data/default/pairs.json")).unwrap(),
    )
    .unwrap();
    items[3]["weighted_score"] = 2.0.into();
    items[4]["weighted_score"] = 1e308.into();
    let data = out.join("heavy.json");
    std::fs::write(&data, serde_json::to_string(&items).unwrap()).unwrap();
    let mut args = base.to_vec();
    args[4] = data.to_str().unwrap();
    let e = stderr(&mmedpo(&args));
    assert!(
        e.contains("item id 3")
            && e.contains("weighted_score 2.0 is outside [0, 1.25]")
            && e.contains("item id 4"),
        "{e}"
    );
    // An alpha of 1e308 scales the LoRA gradients past f32: the run stops at that step, naming
    // it and its pairs, and writes no adapter.
    let mut args = base.to_vec();
    args.extend([
        "--lora-alpha",
        "1e308",
        "--max-steps",
        "2",
        "--batch-size",
        "2",
        "--grad-accum",
        "1",
    ]);
    let o = mmedpo(&args);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("step 1: ") && e.contains("is not finite (pair ids "),
        "{e}"
    );
    assert!(!out.join("adapter").exists());
}

#[test]
fn a_closed_stderr_and_stdout_do_not_end_training() {
    use std::process::{Command, Stdio};
    let model = tiny_llava("closed");
    let out = tmp("closed-out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mmedpo"))
        .args([
            "train",
            "--model",
            model.to_str().unwrap(),
            "--data",
            "data/default/pairs.json",
            "--image-root",
            "data/images",
            "--out",
            out.to_str().unwrap(),
            "--lora-r",
            "2",
            "--max-steps",
            "2",
            "--batch-size",
            "2",
            "--grad-accum",
            "1",
        ])
        .env("RUST_LOG", "info")
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // As `mmedpo train … 2>&1 | head -1` once head has exited: every write fails with EPIPE.
    drop(child.stdout.take());
    drop(child.stderr.take());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(out.join("adapter/adapter_model.safetensors").is_file());
}

#[test]
fn a_bad_value_in_a_config_file_is_reported_at_its_line() {
    let dir = tmp("toml-line");
    let cfg = dir.join("mine.toml");
    std::fs::write(
        &cfg,
        "# my run\n[lora]\nr = 4\n\n[optim]\nseed = 1\nlearning_rate = \"fast\"\n",
    )
    .unwrap();
    let model = tiny_llava("toml-line-model");
    let o = mmedpo(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--data",
        "data/default/pairs.json",
        "--image-root",
        "data/images",
        "--out",
        dir.join("o").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains(&format!(
            "{}:7: [optim] learning_rate: invalid type: string \"fast\", expected f64",
            cfg.display()
        )),
        "{e}"
    );
    // The file's value replaced by a bad flag: the flag is named, not the file's line.
    std::fs::write(&cfg, "[dpo]\nweight_mode = \"raw\"\n").unwrap();
    let o = mmedpo(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--data",
        "data/default/pairs.json",
        "--image-root",
        "data/images",
        "--out",
        dir.join("o").to_str().unwrap(),
        "--weight-mode",
        "bogus",
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("--weight-mode bogus: expected raw, paper or none"),
        "{e}"
    );
}

#[test]
fn a_reference_file_needs_unique_ids_over_all_the_data() {
    let model = tiny_llava("ref-dup");
    let dir = tmp("ref-dup-out");
    let cfg = dir.join("ref.toml");
    std::fs::write(&cfg, "[dpo]\nreference = \"scores.jsonl\"\n").unwrap();
    std::fs::write(dir.join("scores.jsonl"), "").unwrap();
    let o = mmedpo(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--data",
        "data/default/pairs.json",
        "--data",
        "data/default/pairs.json",
        "--image-root",
        "data/images",
        "--out",
        dir.join("o").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("ids 0, 1, 2") && e.contains("a reference file is looked up by id"),
        "{e}"
    );
}
