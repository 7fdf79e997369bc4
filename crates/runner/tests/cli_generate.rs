//! `mmedpo generate` end to end, as a user runs it: exit codes, messages, the `--json` line.

use std::path::PathBuf;

mod common;
use common::{mmedpo, root, stderr, tmp};

use mmedpo::core::backend::Cpu;
use mmedpo_llm::{loader::save_llm, DecoderConfig};

/// The golden tiny Mistral (bf16, sharded) with the real tokenizer beside it.
fn model_dir(name: &str) -> PathBuf {
    let d = tmp(name);
    let src = root().join("crates/llm/tests/golden/tiny-mistral");
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, d.join(p.file_name().unwrap())).unwrap();
    }
    std::fs::copy(
        root().join("models/mistral-tokenizer/tokenizer.json"),
        d.join("tokenizer.json"),
    )
    .unwrap();
    d
}

#[test]
fn generate_prints_json_and_is_deterministic() {
    let dir = model_dir("json");
    let d = dir.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--model",
            d,
            "--prompt",
            "The chest X-ray shows",
            "--max-new-tokens",
            "6",
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = mmedpo(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        let stdout = String::from_utf8(out.stdout).unwrap();
        let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        let ids: Vec<u64> = last["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert!(last["text"].is_string());
        ids
    };
    let greedy = run(&[]);
    assert_eq!(greedy.len(), 6);
    assert_eq!(greedy, run(&[]));
    let sampled = run(&["--temperature", "1.5", "--seed", "11"]);
    assert_eq!(sampled, run(&["--temperature", "1.5", "--seed", "11"]));
    assert_ne!(sampled, run(&["--temperature", "1.5", "--seed", "12"]));
    assert_eq!(run(&["--template", "vicuna_v1"]).len(), 6);
}

#[test]
fn bad_inputs_fail_with_a_message_naming_the_problem() {
    let dir = model_dir("bad");
    let d = dir.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--model", "/no/such/dir", "--prompt", "x"],
            "/no/such/dir: model directory not found",
        ),
        (
            vec!["--model", d, "--prompt", "x", "--template", "chatml"],
            "vicuna_v1",
        ),
        (
            vec!["--model", d, "--prompt", "x", "--temperature", "0"],
            "temperature must be > 0",
        ),
    ];
    for (args, want) in cases {
        let mut all = vec!["generate"];
        all.extend(args);
        let out = mmedpo(&all);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains(want),
            "wanted {want:?} in {}",
            stderr(&out)
        );
    }
    // A config of an unsupported architecture.
    let cfg = std::fs::read_to_string(dir.join("config.json"))
        .unwrap()
        .replace("\"mistral\"", "\"gemma\"");
    std::fs::write(dir.join("config.json"), cfg).unwrap();
    let out = mmedpo(&["generate", "--model", d, "--prompt", "x"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("model_type = gemma"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_tokenizer_that_disagrees_with_the_model_is_refused() {
    let dir = tmp("vocab");
    let config = DecoderConfig {
        vocab_size: 64,
        hidden_size: 16,
        intermediate_size: 32,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        num_key_value_heads: 1,
        head_dim: 8,
        ..DecoderConfig::mistral_100m()
    };
    save_llm(&config.init::<Cpu>(&Default::default()), &config, &dir).unwrap();
    std::fs::copy(
        root().join("models/mistral-tokenizer/tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    let out = mmedpo(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt",
        "x",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("tokenizer has 32000 tokens")
            && stderr(&out).contains("vocab_size 64"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_pickle_checkpoint_is_refused() {
    let dir = tmp("pickle");
    let cfg = root().join("crates/llm/tests/golden/tiny-mistral/config.json");
    std::fs::copy(cfg, dir.join("config.json")).unwrap();
    std::fs::copy(
        root().join("models/mistral-tokenizer/tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    std::fs::write(dir.join("pytorch_model.bin"), b"pickle").unwrap();
    let out = mmedpo(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt",
        "x",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("pytorch_model.bin") && stderr(&out).contains("safetensors"),
        "{}",
        stderr(&out)
    );
}
