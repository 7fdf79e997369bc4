//! Parity with Hugging Face transformers on tiny random Mistral and Llama checkpoints.
//!
//! Goldens and models: `tests/golden/make_llm_goldens.py` (regenerate with the command in its header).
//! Tolerance: logits at 512 vocabulary ids and the full-vocabulary logsumexp ≤ 1e-4 (f32); argmax
//! at every position and the greedy continuation identical.

use std::path::{Path, PathBuf};

use burn::tensor::{Int, Tensor, TensorData};
use mmedpo_core::backend::Cpu;
use mmedpo_llm::generate::generate;
use mmedpo_llm::{load_llm, GenerationConfig, Sampling};
use safetensors::SafeTensors;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

struct Goldens {
    bytes: Vec<u8>,
}

impl Goldens {
    fn load() -> Self {
        Self {
            bytes: std::fs::read(golden_dir().join("llm_goldens.safetensors")).unwrap(),
        }
    }
    fn f32(&self, key: &str) -> (Vec<f32>, Vec<usize>) {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st
            .tensor(key)
            .unwrap_or_else(|_| panic!("golden {key} missing"));
        let v = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (v, t.shape().to_vec())
    }
    fn i64(&self, key: &str) -> Vec<i64> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st
            .tensor(key)
            .unwrap_or_else(|_| panic!("golden {key} missing"));
        t.data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }
}

fn check_model(kind: &str, expect_files: usize, expect_dtype: &str) {
    let device = Default::default();
    let dir = golden_dir().join(format!("tiny-{kind}"));
    let llm = load_llm::<Cpu>(&dir, &device).unwrap();
    assert_eq!(llm.report.files.len(), expect_files, "{}", llm.report);
    assert_eq!(
        llm.report.dtypes.keys().collect::<Vec<_>>(),
        vec![expect_dtype]
    );
    let g = Goldens::load();
    let subset = g.i64("subset_ids");
    for seq in 0..2 {
        let ids = g.i64(&format!("{kind}.seq{seq}.input_ids"));
        let len = ids.len();
        let input = Tensor::<Cpu, 2, Int>::from_data(
            TensorData::new(ids.iter().map(|&i| i as i32).collect::<Vec<_>>(), [1, len]),
            &device,
        );
        let logits: Vec<f32> = llm.model.forward(input).into_data().to_vec().unwrap();
        let vocab = logits.len() / len;
        let (want, shape) = g.f32(&format!("{kind}.seq{seq}.logits"));
        assert_eq!(shape, vec![len, subset.len()]);
        let (lse, _) = g.f32(&format!("{kind}.seq{seq}.lse"));
        let argmax = g.i64(&format!("{kind}.seq{seq}.argmax"));
        let mut max_diff = 0f32;
        for t in 0..len {
            let row = &logits[t * vocab..(t + 1) * vocab];
            for (j, &id) in subset.iter().enumerate() {
                max_diff = max_diff.max((row[id as usize] - want[t * subset.len() + j]).abs());
            }
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let ours_lse = m + row.iter().map(|x| (x - m).exp()).sum::<f32>().ln();
            max_diff = max_diff.max((ours_lse - lse[t]).abs());
            assert_eq!(
                mmedpo_llm::generate::argmax(row) as i64,
                argmax[t],
                "{kind} seq{seq} argmax at {t}"
            );
        }
        println!("{kind} seq{seq} (len {len}): max |Δ| = {max_diff:e}");
        assert!(
            max_diff <= 1e-4,
            "{kind} seq{seq}: max |Δlogit| = {max_diff}"
        );
    }
    let prompt: Vec<u32> = g
        .i64(&format!("{kind}.greedy.prompt"))
        .iter()
        .map(|&i| i as u32)
        .collect();
    let want: Vec<u32> = g
        .i64(&format!("{kind}.greedy.output"))
        .iter()
        .map(|&i| i as u32)
        .collect();
    let config = GenerationConfig {
        max_new_tokens: want.len(),
        sampling: Sampling::Greedy,
        eos_token_ids: llm.config.eos_token_ids.clone(),
        pad_token_id: llm.config.pad_token_id,
    };
    let out = generate(&llm.model, &[prompt], &config, &device).unwrap();
    assert_eq!(out.tokens[0], want, "{kind} greedy continuation");
}

#[test]
fn mistral_bf16_sharded_matches_transformers() {
    check_model("mistral", 3, "BF16");
}

#[test]
fn llama_f16_tied_with_bias_matches_transformers() {
    check_model("llama", 1, "F16");
}
