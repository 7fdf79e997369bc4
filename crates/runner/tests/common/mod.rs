//! Helpers shared by the command-line tests: run the `mmedpo` binary from the repository root,
//! fresh temporary folders, stderr as text, an OpenAI-schema server on loopback, and "chain"
//! LLMs: tiny Mistral-shaped models whose weights make greedy decoding write a fixed text.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh, empty folder for this test process (what dead test processes left is swept).
pub fn tmp(name: &str) -> PathBuf {
    let d = mmedpo_core::testing::scratch("mmedpo-cli", name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `mmedpo ARGS` in the repository root (logs at warn level).
pub fn mmedpo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmedpo"))
        .args(args)
        .env("RUST_LOG", "warn")
        .current_dir(root())
        .output()
        .unwrap()
}

/// The process's stderr.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// An OpenAI-schema server on loopback that always answers `reply` (500 requests or 60 s).
pub fn serve(reply: &'static str) -> String {
    mmedpo_scorer::testing::serve(500, move |_| {
        mmedpo_scorer::testing::StubReply::content(reply)
    })
    .url
}

/// A tiny Mistral-shaped model (Mistral tokenizer, one layer) whose greedy reply to any prompt
/// ending in `[/INST]` is `reply`, then EOS: a bigram chain in the weights. The embedding puts
/// each chain token on its own axis, the layer adds nothing (zero `o_proj` and `down_proj`), and
/// `lm_head` maps each axis to the next token. A real model directory, read by the real loader
/// and decoded by the real generation loop; `tokenizer_config.json` has no chat template.
pub fn chain_llm(name: &str, reply: &str) -> PathBuf {
    use mmedpo_llm::loader::{hf_tensors, save_llm};
    use mmedpo_llm::{DecoderConfig, Tokenizer};
    let dir = tmp(name);
    let tok_path = root().join("models/mistral-tokenizer/tokenizer.json");
    let tok = Tokenizer::from_file(&tok_path).unwrap();
    let start = *tok
        .encode("Score it. [/INST]", false)
        .unwrap()
        .last()
        .unwrap();
    let mut chain = vec![start];
    chain.extend(tok.encode(reply, false).unwrap());
    let mut seen = std::collections::BTreeSet::new();
    assert!(
        chain.iter().all(|t| seen.insert(*t)),
        "{reply:?}: a chain needs distinct tokens"
    );
    let d = 32;
    assert!(chain.len() <= d, "{reply:?} is too long for a chain model");
    let config = DecoderConfig {
        hidden_size: d,
        intermediate_size: 16,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        num_key_value_heads: 1,
        head_dim: 16,
        ..DecoderConfig::mistral_100m()
    };
    let model = config.init::<mmedpo::core::backend::Cpu>(&Default::default());
    let vocab = config.vocab_size;
    let mut tensors = hf_tensors(&model);
    for (key, shape, data) in tensors.iter_mut() {
        match key.as_str() {
            "model.embed_tokens.weight" => {
                data.fill(0.0);
                for (j, &t) in chain.iter().enumerate() {
                    data[t as usize * d + j] = 1.0;
                }
            }
            "lm_head.weight" => {
                assert_eq!(shape, &vec![vocab, d]);
                data.fill(0.0);
                for (j, _) in chain.iter().enumerate() {
                    let next = chain.get(j + 1).copied().unwrap_or(config.eos_token_ids[0]);
                    data[next as usize * d + j] = 10.0;
                }
            }
            k if k.ends_with("o_proj.weight") || k.ends_with("down_proj.weight") => data.fill(0.0),
            k if k.ends_with("norm.weight") => data.fill(1.0),
            _ => {}
        }
    }
    save_llm(&model, &config, &dir).unwrap();
    mmedpo::core::checkpoint::write_safetensors(&dir.join("model.safetensors"), &tensors).unwrap();
    std::fs::copy(&tok_path, dir.join("tokenizer.json")).unwrap();
    dir
}

/// `mmedpo init-model` of the tiny LLaVA (models/tiny-llava), with the Mistral tokenizer.
pub fn tiny_llava(name: &str) -> PathBuf {
    let dir = tmp(name);
    let o = mmedpo(&[
        "init-model",
        "--config",
        "models/tiny-llava/config.json",
        "--seed",
        "0",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::copy(
        root().join("models/mistral-tokenizer/tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    dir
}

/// Three items (image, question, ground truth) on the shipped scans.
pub fn pipeline_items(dir: &Path) -> PathBuf {
    let v = serde_json::json!([
        {"id": 1, "image": "chest-xray-pa-nodules.png", "conversations": [
            {"from": "human", "value": "<image>\nAre there nodules in the lungs?"}, {"from": "gpt", "value": "Yes"}]},
        {"id": 2, "image": "ct-small.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat organ is shown?"}, {"from": "gpt", "value": "Liver"}]},
        {"id": 3, "image": "mr-small.png", "conversations": [
            {"from": "human", "value": "<image>\nIs this an MRI?"}, {"from": "gpt", "value": "Yes"}]},
    ]);
    let p = dir.join("items.json");
    std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
    p
}

/// A `mmedpo pipeline` file in `dir` with every stage on (a local judge, two local agents, 4
/// training steps), its output in `dir/out`; `extra_eval` is added to `[eval]`.
pub fn pipeline_file(dir: &Path, name: &str, extra_eval: &str) -> PathBuf {
    let llava = tiny_llava(&format!("{name}-llava"));
    let judge = chain_llm(
        &format!("{name}-judge"),
        r#"{"write": "Multiple cavitating masses."}"#,
    );
    let a = chain_llm(&format!("{name}-agent-a"), r#"{"score": 0.7}"#);
    let b = chain_llm(&format!("{name}-agent-b"), "0.7");
    let r = root();
    let text = format!(
        r#"out = "out"
model = "{llava}"
data = "{items}"
image_root = "{r}/data/images"
test = "{r}/data/default/vqa_test.json"
task = "vqa"

[text]
judge = "local={judge}"
n = 2
max_new_tokens = 4
local_template = "mistral"

[relevance]
agent = ["local={a}", "local={b}"]
local_template = "mistral"

[visual]
batch_size = 2

[train]
config = "{r}/models/tiny-llava/train.toml"
max_steps = 4
save_steps = 2

[eval]
temperature = 0
{extra_eval}
"#,
        llava = llava.display(),
        items = pipeline_items(dir).display(),
        r = r.display(),
        judge = judge.display(),
        a = a.display(),
        b = b.display(),
    );
    let p = dir.join("pipeline.toml");
    std::fs::write(&p, text).unwrap();
    p
}
