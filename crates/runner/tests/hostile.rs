//! Hostile inputs (the corpus of `tests/hostile/corpus`, made by `make_corpus.py` there, plus a
//! FIFO named like an image and a checkpoint holding a NaN, made here) against the subcommands:
//! each case ends within 60 s, under an 8 GB address-space limit, with a non-zero exit that is not
//! a panic, and a message naming the file, item or field at fault.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{root, tiny_llava, tmp};

fn corpus(name: &str) -> String {
    root()
        .join("crates/runner/tests/hostile/corpus")
        .join(name)
        .display()
        .to_string()
}

/// `data/images` plus the corpus' images and a FIFO named `fifo.png`, in one folder.
fn image_root(dir: &Path) -> PathBuf {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    for d in [
        root().join("data/images"),
        root().join("crates/runner/tests/hostile/corpus"),
    ] {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "png") {
                std::fs::copy(&p, images.join(p.file_name().unwrap())).unwrap();
            }
        }
    }
    assert!(Command::new("mkfifo")
        .arg(images.join("fifo.png"))
        .status()
        .unwrap()
        .success());
    images
}

/// The tiny model (`src` names its folder) rewritten tensor by tensor into `DIR/name`: `alter`
/// gets each key and its bytes and returns the key to write.
fn altered_model(
    dir: &Path,
    src: &str,
    name: &str,
    alter: impl Fn(&str, &mut Vec<u8>) -> String,
) -> PathBuf {
    use mmedpo::core::checkpoint::{write_safetensors_bytes, Checkpoint, TensorBytes};
    let model = tiny_llava(src);
    let out = dir.join(name);
    std::fs::create_dir_all(&out).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(model.join(f), out.join(f)).unwrap();
    }
    let ck = Checkpoint::open(&model).unwrap();
    let keys: Vec<String> = ck.keys().map(String::from).collect();
    let tensors: Vec<TensorBytes> = keys
        .iter()
        .map(|k| {
            let raw = ck.raw(k).unwrap();
            let mut bytes = raw.data.to_vec();
            let key = alter(k, &mut bytes);
            (key, raw.dtype, raw.shape.clone(), bytes.into())
        })
        .collect();
    write_safetensors_bytes(&out.join("model.safetensors"), &tensors).unwrap();
    out
}

/// The tiny model with one weight replaced by NaN.
fn nan_model(dir: &Path) -> PathBuf {
    altered_model(dir, "hostile-nan-src", "nan-model", |k, bytes| {
        if k.ends_with("layers.1.mlp.down_proj.weight") {
            bytes[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
        }
        k.to_string()
    })
}

/// The tiny model with one tensor's name damaged (`...up_proj.weight` → `...up_proj.weighx`).
fn damaged_key_model(dir: &Path) -> PathBuf {
    altered_model(dir, "hostile-key-src", "damaged-key-model", |k, _| {
        k.replace("layers.0.mlp.up_proj.weight", "layers.0.mlp.up_proj.weighx")
    })
}

#[test]
fn every_hostile_input_ends_fast_with_a_named_error_and_no_panic() {
    let dir = tmp("hostile");
    let model = tiny_llava("hostile-model");
    let model = model.to_str().unwrap().to_string();
    let images = image_root(&dir);
    let images = images.to_str().unwrap().to_string();
    let nan = nan_model(&dir);
    let damaged = damaged_key_model(&dir);
    let out = |name: &str| dir.join(name).display().to_string();
    let fifo_pairs = dir.join("pairs-fifo.json");
    let mut items: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(root().join("data/default/pairs.json")).unwrap(),
    )
    .unwrap();
    items[0]["image"] = "fifo.png".into();
    std::fs::write(&fifo_pairs, serde_json::to_string(&items).unwrap()).unwrap();
    let fifo_pairs = fifo_pairs.display().to_string();
    let wordnet = root()
        .join("crates/eval/tests/golden/wordnet-subset")
        .display()
        .to_string();

    let score = |data: &str, model: &str, o: &str| -> Vec<String> {
        [
            "score",
            "--model",
            model,
            "--data",
            data,
            "--image-root",
            &images,
            "--out",
            o,
        ]
        .map(String::from)
        .to_vec()
    };
    let train = |data: &str, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "train",
            "--model",
            &model,
            "--data",
            data,
            "--image-root",
            &images,
        ]
        .map(String::from)
        .to_vec();
        if extra.is_empty() {
            v.extend(["--max-steps".into(), "1".into()]);
        }
        v.push("--out".into());
        v.push(out("train-out"));
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let pairs = root().join("data/default/pairs.json").display().to_string();
    let init = |config: &str| -> Vec<String> {
        [
            "init-model",
            "--config",
            &corpus(config),
            "--out",
            &out("never-model"),
        ]
        .map(String::from)
        .to_vec()
    };
    let eval = |data: &str| -> Vec<String> {
        [
            "eval",
            "--model",
            &model,
            "--data",
            data,
            "--image-root",
            &images,
            "--task",
            "vqa",
            "--out",
            &out("eval"),
        ]
        .map(String::from)
        .to_vec()
    };
    let cases: Vec<(&str, Vec<String>, Vec<&str>)> = vec![
        (
            "1 x 60,000 PNG",
            score(&corpus("pairs-strip-image.json"), &model, &out("s1.jsonl")),
            vec!["strip.png", "larger than 8192"],
        ),
        (
            "text named .png",
            score(&corpus("pairs-not-an-image.json"), &model, &out("s2.jsonl")),
            vec!["not-an-image.png", "item 2"],
        ),
        (
            "FIFO named .png",
            score(&fifo_pairs, &model, &out("s3.jsonl")),
            vec!["fifo.png", "not a regular file"],
        ),
        (
            "path out of the image folder",
            score(
                &corpus("pairs-climbing-path.json"),
                &model,
                &out("s4.jsonl"),
            ),
            vec!["pairs-climbing-path.json", "item id 3", "climbs out"],
        ),
        (
            "not a list",
            score(&corpus("pairs-not-a-list.json"), &model, &out("s5.jsonl")),
            vec!["pairs-not-a-list.json", "JSON list"],
        ),
        (
            "cut JSON",
            score(&corpus("pairs-cut.json"), &model, &out("s6.jsonl")),
            vec!["pairs-cut.json", "EOF"],
        ),
        (
            "NaN weight",
            score(&pairs, nan.to_str().unwrap(), &out("s7.jsonl")),
            vec!["down_proj.weight", "not a finite number"],
        ),
        (
            "weight 2",
            train(&corpus("pairs-weight-2.json"), &[]),
            vec!["pairs-weight-2.json", "item id 4", "weighted_score 2"],
        ),
        (
            "weight 1e308",
            train(&corpus("pairs-weight-huge.json"), &[]),
            vec!["item id 5", "weighted_score 1e308"],
        ),
        (
            "no <image>",
            train(&corpus("pairs-no-image-placeholder.json"), &[]),
            vec!["item id 6", "<image>"],
        ),
        (
            "negative lr",
            train(&pairs, &["--config", &corpus("train-negative-lr.toml")]),
            vec!["learning_rate = -"],
        ),
        (
            "NaN alpha",
            train(&pairs, &["--config", &corpus("train-nan-alpha.toml")]),
            vec!["lora alpha = NaN"],
        ),
        (
            "rank 0",
            train(&pairs, &["--config", &corpus("train-zero-rank.toml")]),
            vec!["lora r = 0"],
        ),
        (
            "beta 0",
            train(&pairs, &["--config", &corpus("train-beta-zero.toml")]),
            vec!["beta = 0"],
        ),
        (
            "warmup 2",
            train(&pairs, &["--config", &corpus("train-warmup-2.toml")]),
            vec!["warmup_ratio = 2"],
        ),
        (
            "0 steps",
            train(&pairs, &["--config", &corpus("train-zero-steps.toml")]),
            vec!["max_steps = 0"],
        ),
        (
            "unknown key",
            train(&pairs, &["--config", &corpus("train-unknown-key.toml")]),
            vec!["train-unknown-key.toml", "learning_rat"],
        ),
        (
            "10M layers",
            init("config-ten-million-layers.json"),
            vec!["num_hidden_layers = 10000000"],
        ),
        (
            "0 heads",
            init("config-zero-heads.json"),
            vec!["num_attention_heads = 0"],
        ),
        (
            "image token outside",
            init("config-image-token-outside.json"),
            vec!["image_token_index = 10000000"],
        ),
        (
            "answer_type maybe",
            eval(&corpus("vqa-maybe.json")),
            vec!["vqa-maybe.json", "answer_type \"maybe\""],
        ),
        (
            "empty test set",
            eval(&corpus("vqa-empty.json")),
            vec!["vqa-empty.json"],
        ),
        (
            "no predictions",
            [
                "metrics",
                "--task",
                "vqa",
                "--predictions",
                &corpus("predictions-empty.jsonl"),
            ]
            .map(String::from)
            .to_vec(),
            vec!["no predictions"],
        ),
        (
            "30,000-word report",
            [
                "metrics",
                "--task",
                "report",
                "--wordnet",
                &wordnet,
                "--predictions",
                &corpus("predictions-huge-report.jsonl"),
            ]
            .map(String::from)
            .to_vec(),
            vec!["r1", "30000 words"],
        ),
        (
            "disk full",
            [
                "assemble",
                "--data",
                &pairs,
                "--seed",
                "1",
                "--out",
                "/dev/full",
            ]
            .map(String::from)
            .to_vec(),
            vec!["/dev/full", "No space left on device"],
        ),
        (
            "a damaged tensor name",
            score(&pairs, damaged.to_str().unwrap(), &out("s-damaged.jsonl")),
            vec![
                "damaged-key-model",
                "missing key(s) [language_model.model.layers.0.mlp.up_proj.weight]",
                "unused key(s) [language_model.model.layers.0.mlp.up_proj.weighx]",
            ],
        ),
        (
            "agent URL without scheme",
            [
                "score-relevance",
                "--data",
                &pairs,
                "--agent",
                "openai=localhost:9/v1@m",
                "--out",
                &out("r.json"),
            ]
            .map(String::from)
            .to_vec(),
            vec!["needs a scheme"],
        ),
    ];
    let mut failures = vec![];
    for (name, args, wants) in &cases {
        let started = std::time::Instant::now();
        let o = Command::new("bash")
            .arg("-c")
            .arg(r#"ulimit -v 8000000; exec timeout 60 "$@""#)
            .arg("bash")
            .arg(env!("CARGO_BIN_EXE_mmedpo"))
            .args(args)
            .env("RUST_LOG", "warn")
            .current_dir(root())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        let code = o.status.code();
        let bad = if code.is_none() {
            Some(format!("killed by a signal ({})", o.status))
        } else if code == Some(0) {
            Some("exit 0".into())
        } else if code == Some(101) || err.contains("panicked") {
            Some("panic".into())
        } else if code == Some(124) {
            Some("ran past 60 s".into())
        } else {
            wants
                .iter()
                .find(|w| !err.contains(*w))
                .map(|w| format!("no {w:?} in the message"))
        };
        println!(
            "{:5.1} s  {name}: {}",
            started.elapsed().as_secs_f64(),
            err.lines().last().unwrap_or("")
        );
        if let Some(why) = bad {
            failures.push(format!("{name}: {why}\n  {}", err.trim()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn visual_pairs_lists_a_fifo_and_a_non_image_and_goes_on() {
    let dir = tmp("hostile-visual");
    let images = image_root(&dir);
    let mut items: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(root().join("data/default/pairs.json")).unwrap(),
    )
    .unwrap();
    items[0]["image"] = "fifo.png".into();
    items[1]["image"] = "not-an-image.png".into();
    let data = dir.join("pairs.json");
    std::fs::write(&data, serde_json::to_string(&items).unwrap()).unwrap();
    let o = Command::new("timeout")
        .args(["60", env!("CARGO_BIN_EXE_mmedpo"), "visual-pairs", "--data"])
        .arg(&data)
        .arg("--image-root")
        .arg(&images)
        .arg("--out")
        .arg(dir.join("visual"))
        .env("RUST_LOG", "warn")
        .current_dir(root())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("fifo.png") && err.contains("not a regular file"),
        "{err}"
    );
    assert!(err.contains("not-an-image.png"), "{err}");
}
