//! Real checkpoint shapes end to end: a llava-hf model with a padded vocabulary and the
//! `<image>`/`<pad>` added tokens (as llava-hf/llava-1.5-7b-hf: 32,002 tokens, vocab_size 32,064)
//! loads, scores, trains and generates; `mmedpo merge` writes a model whose log-probs equal the base
//! with the adapter, in both layouts, sharded or not.

use std::path::{Path, PathBuf};
use std::process::Output;

use mmedpo::core::checkpoint::{Checkpoint, Dtype};

mod common;
use common::{mmedpo, root, stderr, tmp};

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "{}", stderr(&o));
    o
}

/// Merged vs base + adapter, f32, on summed log-probs of -30 to -200 over 8 pairs: the two
/// compute `x (W + s B A)` and `x W + s (x A) B` in different orders (measured 1.5e-5).
const TOLERANCE: f64 = 5e-5;

fn golden() -> PathBuf {
    root().join("crates/lvlm/tests/golden")
}

/// The tiny LLaVA's config with llava-1.5-7b-hf's vocabulary padding and added tokens, drawn by
/// `init-model` with a tokenizer that has them.
fn padded_llava(name: &str) -> PathBuf {
    let dir = tmp(name);
    let mut config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("models/tiny-llava/config.json")).unwrap(),
    )
    .unwrap();
    config["text_config"]["vocab_size"] = 32064.into();
    config["image_token_index"] = 32000.into();
    config["pad_token_id"] = 32001.into();
    let cfg = dir.join("config-in.json");
    std::fs::write(&cfg, config.to_string()).unwrap();
    let mut tok: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("models/mistral-tokenizer/tokenizer.json")).unwrap(),
    )
    .unwrap();
    for (id, content) in [(32000, "<image>"), (32001, "<pad>")] {
        tok["added_tokens"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "id": id, "content": content, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true
            }));
    }
    let tok_path = dir.join("tokenizer-in/tokenizer.json");
    std::fs::create_dir_all(tok_path.parent().unwrap()).unwrap();
    std::fs::write(&tok_path, tok.to_string()).unwrap();
    std::fs::copy(
        root().join("models/mistral-tokenizer/tokenizer_config.json"),
        tok_path.with_file_name("tokenizer_config.json"),
    )
    .unwrap();
    let model = dir.join("model");
    ok(mmedpo(&[
        "init-model",
        "--config",
        cfg.to_str().unwrap(),
        "--tokenizer",
        tok_path.to_str().unwrap(),
        "--out",
        model.to_str().unwrap(),
    ]));
    model
}

fn score(model: &Path, extra: &[&str], out: &Path) -> Vec<serde_json::Value> {
    let mut args = vec![
        "score",
        "--model",
        model.to_str().unwrap(),
        "--data",
        "data/default/pairs.json",
        "--image-root",
        "data/images",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ok(mmedpo(&args));
    std::fs::read_to_string(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn train(model: &Path, extra: &[&str], out: &Path) {
    let mut args = vec![
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
        "5e-2",
        "--batch-size",
        "4",
        "--grad-accum",
        "1",
        "--max-steps",
        "3",
    ];
    args.extend_from_slice(extra);
    let o = ok(mmedpo(&args));
    assert!(stderr(&o).contains("trained 3 step(s)"), "{}", stderr(&o));
}

/// The largest |Δ| of the chosen and rejected log-probs of two score files, pair by pair.
fn max_diff(a: &[serde_json::Value], b: &[serde_json::Value]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mut worst = 0f64;
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x["id"], y["id"]);
        for k in ["chosen_logp", "rejected_logp"] {
            worst = worst.max((x[k].as_f64().unwrap() - y[k].as_f64().unwrap()).abs());
        }
    }
    worst
}

#[test]
fn a_padded_vocabulary_with_added_tokens_loads_scores_trains_and_generates() {
    let model = padded_llava("padded");
    assert!(
        model.join("tokenizer.json").is_file(),
        "init-model --tokenizer copies it"
    );
    let dir = model.parent().unwrap().to_path_buf();
    let scores = score(&model, &[], &dir.join("scores.jsonl"));
    assert_eq!(scores.len(), 8);
    assert!(scores
        .iter()
        .all(|s| s["chosen_logp"].as_f64().unwrap() < 0.0));
    train(&model, &[], &dir.join("run"));
    let o = ok(mmedpo(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--image",
        "data/images/chest-xray-pa-nodules.png",
        "--prompt",
        "Is there a nodule?",
        "--max-new-tokens",
        "4",
        "--json",
    ]));
    let stdout = String::from_utf8(o.stdout).unwrap();
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["ids"].as_array().unwrap().len(), 4, "{stdout}");
    // More tokens than the vocabulary is still an error, naming both numbers.
    let small = dir.join("small");
    std::fs::create_dir_all(&small).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(
            root()
                .join("crates/lvlm/tests/golden/tiny-llava-hf")
                .join(f),
            small.join(f),
        )
        .unwrap();
    }
    let vocab = serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(small.join("config.json")).unwrap(),
    )
    .unwrap()["text_config"]["vocab_size"]
        .clone();
    let o = mmedpo(&[
        "score",
        "--model",
        small.to_str().unwrap(),
        "--tokenizer",
        model.join("tokenizer.json").to_str().unwrap(),
        "--data",
        "data/default/pairs.json",
        "--image-root",
        "data/images",
        "--out",
        dir.join("never.jsonl").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("tokenizer has 32002 tokens") && e.contains(&format!("vocab_size {vocab}")),
        "{e}"
    );
}

#[test]
fn merge_equals_the_adapter_on_the_base_in_the_llava_hf_layout() {
    let model = padded_llava("merge-hf");
    let dir = model.parent().unwrap().to_path_buf();
    train(&model, &[], &dir.join("run"));
    let adapter = dir.join("run/adapter");
    let with_adapter = score(
        &model,
        &["--adapter", adapter.to_str().unwrap()],
        &dir.join("a.jsonl"),
    );
    let base = score(&model, &[], &dir.join("base.jsonl"));
    let merged = dir.join("merged");
    let o = ok(mmedpo(&[
        "merge",
        "--model",
        model.to_str().unwrap(),
        "--adapter",
        adapter.to_str().unwrap(),
        "--out",
        merged.to_str().unwrap(),
    ]));
    assert!(
        stderr(&o).contains("merged 14 adapted weight(s)"),
        "{}",
        stderr(&o)
    );
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(merged.join(f).is_file(), "{f} missing");
    }
    assert_eq!(
        std::fs::read(model.join("config.json")).unwrap(),
        std::fs::read(merged.join("config.json")).unwrap()
    );
    let m = score(&merged, &[], &dir.join("m.jsonl"));
    let d = max_diff(&m, &with_adapter);
    println!("merged vs base+adapter: max |Δ logp| {d:.2e}");
    assert!(d <= TOLERANCE, "merged vs base+adapter: {d}");
    // The adapter did something, so the comparison means something.
    assert!(max_diff(&base, &with_adapter) > 1e-2);
    // An adapter whose config names none of the layers its weights are for is refused.
    let odd = dir.join("odd-adapter");
    std::fs::create_dir_all(&odd).unwrap();
    std::fs::copy(
        adapter.join("adapter_model.safetensors"),
        odd.join("adapter_model.safetensors"),
    )
    .unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    cfg["target_modules"] = serde_json::json!(["nothing_proj"]);
    std::fs::write(odd.join("adapter_config.json"), cfg.to_string()).unwrap();
    let o = mmedpo(&[
        "score",
        "--model",
        model.to_str().unwrap(),
        "--adapter",
        odd.to_str().unwrap(),
        "--data",
        "data/default/pairs.json",
        "--image-root",
        "data/images",
        "--out",
        dir.join("odd.jsonl").to_str().unwrap(),
    ]);
    assert!(
        !o.status.success() && stderr(&o).contains("do not name"),
        "{}",
        stderr(&o)
    );
    // An existing --out is refused; so is an adapter for another model.
    let o = mmedpo(&[
        "merge",
        "--model",
        model.to_str().unwrap(),
        "--adapter",
        adapter.to_str().unwrap(),
        "--out",
        merged.to_str().unwrap(),
    ]);
    assert!(
        !o.status.success() && stderr(&o).contains("already exists"),
        "{}",
        stderr(&o)
    );
    let o = mmedpo(&[
        "merge",
        "--model",
        golden().join("tiny-llava-hf").to_str().unwrap(),
        "--adapter",
        adapter.to_str().unwrap(),
        "--out",
        dir.join("never").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("do not fit"), "{}", stderr(&o));
    assert!(!dir.join("never").exists() && !dir.join(".never.partial").exists());
}

#[test]
fn merge_keeps_the_original_llava_med_layout_and_shards_like_transformers() {
    let dir = tmp("merge-orig");
    let model = golden().join("tiny-llava-med");
    let tower = golden().join("tiny-clip-336");
    let tok = "models/mistral-tokenizer/tokenizer.json";
    let common = [
        "--vision-tower",
        tower.to_str().unwrap(),
        "--tokenizer",
        tok,
    ];
    train(&model, &common, &dir.join("run"));
    let adapter = dir.join("run/adapter");
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert!(
        cfg["target_modules"]
            .as_str()
            .unwrap()
            .starts_with(r"model\.layers"),
        "{cfg}"
    );
    let mut with_adapter_args = common.to_vec();
    with_adapter_args.extend(["--adapter", adapter.to_str().unwrap()]);
    let with_adapter = score(&model, &with_adapter_args, &dir.join("a.jsonl"));
    let merged = dir.join("merged");
    ok(mmedpo(&[
        "merge",
        "--model",
        model.to_str().unwrap(),
        "--adapter",
        adapter.to_str().unwrap(),
        "--out",
        merged.to_str().unwrap(),
        "--tokenizer",
        tok,
        "--max-shard-size",
        "40KB",
    ]));
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(merged.join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    let map = index["weight_map"].as_object().unwrap();
    let shards: std::collections::BTreeSet<&str> =
        map.values().map(|v| v.as_str().unwrap()).collect();
    assert!(shards.len() > 1, "{shards:?}");
    let n = shards.len();
    for (i, s) in shards.iter().enumerate() {
        assert_eq!(*s, format!("model-{:05}-of-{n:05}.safetensors", i + 1));
        // At most 40 KB of tensors (+ the header), unless one tensor alone is larger.
        let size = std::fs::metadata(merged.join(s)).unwrap().len();
        let tensors = map.values().filter(|v| v.as_str() == Some(*s)).count();
        assert!(
            size < 40_000 + 10_000 || tensors == 1,
            "{s}: {size} bytes, {tensors} tensors"
        );
    }
    // Same keys, dtypes (bf16) and shapes as the input; untouched tensors bit for bit; each adapted
    // weight is W + 2·B·A (alpha 8 / r 4) rounded once to bf16.
    let input = Checkpoint::open(&model).unwrap();
    let output = Checkpoint::open(&merged).unwrap();
    let lora = Checkpoint::open(&adapter.join("adapter_model.safetensors")).unwrap();
    let keys: Vec<&str> = input.keys().collect();
    assert_eq!(keys, output.keys().collect::<Vec<_>>());
    let mut changed = 0;
    for k in keys {
        let (a, b) = (input.raw(k).unwrap(), output.raw(k).unwrap());
        assert_eq!((a.dtype, &a.shape), (b.dtype, &b.shape), "{k}");
        assert_eq!(a.dtype, Dtype::BF16);
        let module = format!("base_model.model.{}", k.trim_end_matches(".weight"));
        if !lora.contains(&format!("{module}.lora_A.weight")) {
            assert_eq!(a.data, b.data, "{k} changed");
            continue;
        }
        changed += 1;
        let f =
            |c: &Checkpoint, key: &str| c.raw(key).unwrap().to_f32(Path::new(key), key).unwrap();
        let (w, got) = (f(&input, k), f(&output, k));
        let la = f(&lora, &format!("{module}.lora_A.weight"));
        let lb = f(&lora, &format!("{module}.lora_B.weight"));
        let (rows, cols, r) = (a.shape[0], a.shape[1], 4);
        for i in 0..rows {
            for j in 0..cols {
                let delta: f64 = (0..r)
                    .map(|t| lb[i * r + t] as f64 * la[t * cols + j] as f64)
                    .sum();
                let want = w[i * cols + j] as f64 + 2.0 * delta;
                let ulp = want.abs().max(1e-30) * 2f64.powi(-8);
                let g = got[i * cols + j] as f64;
                assert!((g - want).abs() <= ulp, "{k}[{i},{j}]: {g} vs {want}");
            }
        }
    }
    assert_eq!(changed, 14, "2 layers x 7 projections");
    assert_eq!(
        index["metadata"]["total_size"].as_u64().unwrap(),
        map.keys()
            .map(|k| output.raw(k).unwrap().data.len() as u64)
            .sum::<u64>()
    );
    assert!(merged.join("tokenizer.json").is_file());
    let bf16 = score(&merged, &common[..2], &dir.join("m.jsonl"));
    let d16 = max_diff(&bf16, &with_adapter);
    // The same merge in f32 is the base with the adapter, up to f32 rounding.
    let merged32 = dir.join("merged-f32");
    ok(mmedpo(&[
        "merge",
        "--model",
        model.to_str().unwrap(),
        "--adapter",
        adapter.to_str().unwrap(),
        "--out",
        merged32.to_str().unwrap(),
        "--tokenizer",
        tok,
        "--dtype",
        "f32",
    ]));
    let f32_scores = score(&merged32, &common[..2], &dir.join("m32.jsonl"));
    let d32 = max_diff(&f32_scores, &with_adapter);
    println!(
        "original layout vs base+adapter: merged f32 max |Δ logp| {d32:.2e}, kept bf16 {d16:.2e}"
    );
    assert!(d32 <= TOLERANCE, "{d32}");
    assert!(d16 < 0.1, "{d16}");
}

/// Runs `python3 scripts/convert_bin.py IN OUT` in `cwd`.
fn convert_bin(input: &Path, out: &Path, cwd: &Path) -> Output {
    std::process::Command::new("python3")
        .arg(root().join("scripts/convert_bin.py"))
        .arg(input)
        .arg(out)
        .current_dir(cwd)
        .output()
        .expect("python3 (the converter needs only its standard library)")
}

#[test]
fn bin_checkpoints_convert_bit_for_bit_in_both_layouts_and_pickled_code_never_runs() {
    let fixtures = root().join("scripts/tests/bin-fixtures");
    let dir = tmp("convert");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("expected.json")).unwrap())
            .unwrap();
    // The pickle-refusing error points to the converter.
    let e = stderr(&mmedpo(&[
        "score",
        "--model",
        fixtures.join("llava-hf").to_str().unwrap(),
        "--tokenizer",
        "models/mistral-tokenizer/tokenizer.json",
        "--data",
        "data/default/pairs.json",
        "--image-root",
        "data/images",
        "--out",
        dir.join("x.jsonl").to_str().unwrap(),
    ]));
    assert!(e.contains("scripts/convert_bin.py"), "{e}");
    for (from, to) in [
        ("llava-hf", "llava-hf"),
        ("llava-med", "llava-med"),
        ("llava-med/tower", "llava-med/tower"),
        ("adapter", "adapter"),
    ] {
        let o = convert_bin(&fixtures.join(from), &dir.join(to), &dir);
        assert!(o.status.success(), "{from}: {}", stderr(&o));
    }
    let mut n = 0;
    for (file, tensors) in expected.as_object().unwrap() {
        let path = dir.join(file);
        let ck = Checkpoint::open(&path).unwrap();
        assert_eq!(
            ck.keys().count(),
            tensors.as_object().unwrap().len(),
            "{file}"
        );
        for (key, want) in tensors.as_object().unwrap() {
            let raw = ck.raw(key).unwrap();
            assert_eq!(
                format!("{:?}", raw.dtype),
                want["dtype"].as_str().unwrap(),
                "{key}"
            );
            assert_eq!(serde_json::json!(raw.shape), want["shape"], "{key}");
            assert_eq!(
                mmedpo::core::record::fingerprint([raw.data]),
                want["fnv"].as_str().unwrap(),
                "{file}: {key} differs from torch's bytes"
            );
            n += 1;
        }
    }
    assert_eq!(n, 80);
    // Both converted layouts load strictly (every key taken, shapes as the config implies).
    let device = Default::default();
    for model in ["llava-hf", "llava-med"] {
        mmedpo::lvlm::load_llava::<mmedpo::core::backend::Cpu>(&dir.join(model), None, &device)
            .unwrap_or_else(|e| panic!("{model}: {e}"));
    }
    let index =
        std::fs::read_to_string(dir.join("llava-med/model.safetensors.index.json")).unwrap();
    assert!(
        index.contains("model-00002-of-00002.safetensors"),
        "{index}"
    );
    // A pickle that calls os.system is refused by name before anything runs.
    let o = convert_bin(
        &fixtures.join("evil.bin"),
        &dir.join("evil.safetensors"),
        &dir,
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("system, which a state dict never needs"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.join("pwned-by-pickle").exists() && !dir.join("evil.safetensors").exists());
}
