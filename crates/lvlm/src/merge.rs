//! LoRA merged into the base checkpoint: the aligned model as one directory that transformers,
//! LLaVA's own loader and serving engines read like the base.
//!
//! The merge works on the checkpoint, not on a loaded model: every tensor the adapter does not
//! touch is copied bit for bit (same key, dtype and bytes), so the output keeps the input's layout
//! (original LLaVA-Med or llava-hf, a tower in the shards or not) and dtype; [`MergeOptions::dtype`]
//! writes another dtype instead (f32 keeps the merged weights unrounded). Each adapted weight
//! becomes `W + scaling · B A` (PEFT's `merge_and_unload`; `lora_B` `[out, r]`, `lora_A` `[r, in]`),
//! computed in f32 and rounded once to the weight's dtype (PEFT adds a bf16-rounded delta to a
//! bf16 weight: at most one bf16 ulp apart). Weights are written as transformers'
//! `save_pretrained` writes them: `model.safetensors`, or shards of at most `max_shard_bytes` with
//! `model.safetensors.index.json`, `{"format": "pt"}` metadata. Every other file of the model
//! directory (config.json, tokenizer files, generation_config.json, ...) is copied; the output is
//! written under a temporary name and renamed when complete, so a killed merge leaves none.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use mmedpo_core::checkpoint::{
    f32_to_bytes, plan_shards, shard_name, write_safetensors_bytes, write_shard_index, Checkpoint,
    Dtype, RawTensor, TensorBytes,
};
use mmedpo_lora::peft::PEFT_PREFIX;
use mmedpo_lora::LoraConfig;

use crate::config::{Layout, LlavaConfig};
use crate::error::{Error, Result};
use crate::loader::llm_keys;

/// How to write the merged model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergeOptions {
    /// Weight files above this size are split (transformers' `max_shard_size`).
    pub max_shard_bytes: u64,
    /// Write every tensor in this dtype (f32, f16, bf16); `None` keeps each tensor's own. A bf16
    /// base keeps bf16 by default, which rounds each merged weight once (an f32 copy does not).
    pub dtype: Option<Dtype>,
}

impl Default for MergeOptions {
    fn default() -> Self {
        Self {
            max_shard_bytes: mmedpo_core::checkpoint::DEFAULT_MAX_SHARD_BYTES,
            dtype: None,
        }
    }
}

/// transformers' `max_shard_size` text (`5GB`, `500MB`, `2GiB`, `12345`) in bytes; the error
/// names the text and what is wrong.
pub fn parse_shard_size(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let factor: f64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KIB" => 1024.0,
        "MIB" => 1024.0 * 1024.0,
        "GIB" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (B, KB, MB, GB, KiB, MiB, GiB)"
            ))
        }
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{text:?}: not a number"))?;
    let bytes = n * factor;
    if !(bytes >= 1.0 && bytes.is_finite()) {
        return Err(format!("{text:?}: must be at least one byte"));
    }
    Ok(bytes as u64)
}

/// What a merge did.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeReport {
    /// The checkpoint layout (kept).
    pub layout: Layout,
    /// Weights that received an adapter.
    pub merged: usize,
    /// Tensors copied unchanged.
    pub copied: usize,
    /// The weight files written, in order.
    pub files: Vec<PathBuf>,
    /// Bytes of tensor data written.
    pub total_bytes: u64,
    /// Other files copied from the model directory (config, tokenizer, ...).
    pub other_files: Vec<String>,
}

fn in_file(path: &Path, message: impl Into<String>) -> Error {
    Error::InFile {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// The base weight each adapted module lands on: `base key → (lora_A key, lora_B key)`.
fn targets(
    model: &Checkpoint,
    model_dir: &Path,
    adapter: &Checkpoint,
    adapter_file: &Path,
) -> Result<BTreeMap<String, (String, String)>> {
    let (llm_prefix, _) = llm_keys(model).ok_or_else(|| {
        in_file(
            model_dir,
            "no language-model embedding (`*embed_tokens.weight`) in the checkpoint",
        )
    })?;
    let mut out = BTreeMap::new();
    for key in adapter.keys() {
        let module = key
            .strip_prefix(PEFT_PREFIX)
            .and_then(|k| k.strip_suffix(".lora_A.weight"));
        let Some(module) = module else {
            if key.ends_with(".lora_B.weight") {
                continue;
            }
            return Err(in_file(
                adapter_file,
                format!("{key}: not a `{PEFT_PREFIX}<module>.lora_{{A,B}}.weight` tensor"),
            ));
        };
        let b_key = format!("{PEFT_PREFIX}{module}.lora_B.weight");
        if !adapter.contains(&b_key) {
            return Err(in_file(adapter_file, format!("{key} has no {b_key}")));
        }
        // The module path below the decoder (`layers.N.self_attn.q_proj`) is the same in every
        // layout; the checkpoint's own LLM prefix goes before it.
        let below = module
            .find("layers.")
            .map(|i| &module[i..])
            .ok_or_else(|| in_file(adapter_file, format!("{key}: not in a decoder layer")))?;
        let base = format!("{llm_prefix}{below}.weight");
        if !model.contains(&base) {
            return Err(in_file(
                adapter_file,
                format!(
                    "{key} matches no weight of {} (looked for {base}); was the adapter trained on another model?",
                    model_dir.display()
                ),
            ));
        }
        out.insert(base, (key.to_string(), b_key));
    }
    for key in adapter.keys().filter(|k| k.ends_with(".lora_B.weight")) {
        let a_key = key.replace(".lora_B.weight", ".lora_A.weight");
        if !adapter.contains(&a_key) {
            return Err(in_file(adapter_file, format!("{key} has no {a_key}")));
        }
    }
    if out.is_empty() {
        return Err(in_file(adapter_file, "the adapter has no LoRA tensors"));
    }
    Ok(out)
}

/// `W + scaling · B A` in f32, then in `dtype`.
fn merged_weight<B: Backend>(
    model: &Checkpoint,
    base_key: &str,
    adapter: &Checkpoint,
    (a_key, b_key): &(String, String),
    config: &LoraConfig,
    dtype: Dtype,
    device: &B::Device,
) -> Result<Vec<u8>> {
    let w = model.raw(base_key)?;
    let [out_dim, in_dim] = w.shape[..] else {
        return Err(in_file(
            model.dir(),
            format!("{base_key}: shape {:?} is not a matrix", w.shape),
        ));
    };
    let a = adapter.raw(a_key)?;
    let b = adapter.raw(b_key)?;
    let r = config.r;
    if a.shape != [r, in_dim] || b.shape != [out_dim, r] {
        return Err(in_file(
            adapter.dir(),
            format!(
                "{a_key} {:?} / {b_key} {:?} do not fit {base_key} [{out_dim}, {in_dim}] at r = {r}",
                a.shape, b.shape
            ),
        ));
    }
    let tensor = |raw: &RawTensor, dir: &Path, key: &str| -> Result<Tensor<B, 2>> {
        let values = raw.to_f32(dir, key)?;
        Ok(Tensor::from_data(
            TensorData::new(values, [raw.shape[0], raw.shape[1]]).convert::<B::FloatElem>(),
            device,
        ))
    };
    let delta = tensor(&b, adapter.dir(), b_key)?
        .matmul(tensor(&a, adapter.dir(), a_key)?)
        .mul_scalar(config.scaling());
    let merged = tensor(&w, model.dir(), base_key)? + delta;
    let values: Vec<f32> = merged
        .into_data()
        .convert::<f32>()
        .into_vec()
        .map_err(|e| in_file(model.dir(), format!("{base_key}: {e:?}")))?;
    f32_to_bytes(values, dtype).ok_or_else(|| unsupported(model.dir(), base_key, dtype))
}

fn unsupported(dir: &Path, key: &str, dtype: Dtype) -> Error {
    in_file(
        dir,
        format!("{key}: dtype {dtype:?} is not supported (f32, f16, bf16 are)"),
    )
}

/// Merges the PEFT adapter in `adapter_dir` into the LLaVA checkpoint in `model_dir` and writes the
/// result to `out` (which must not exist). See the module doc.
pub fn merge_adapter<B: Backend>(
    model_dir: &Path,
    adapter_dir: &Path,
    out: &Path,
    options: MergeOptions,
    device: &B::Device,
) -> Result<MergeReport> {
    if out.exists() {
        return Err(in_file(
            out,
            "already exists; give another --out or remove it",
        ));
    }
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "merged".into());
    let tmp = out.with_file_name(format!(".{name}.partial"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| mmedpo_core::Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| mmedpo_core::Error::io(&tmp, e))?;
    match write_merged::<B>(model_dir, adapter_dir, &tmp, options, device) {
        Ok(mut report) => {
            std::fs::rename(&tmp, out).map_err(|e| mmedpo_core::Error::io(out, e))?;
            for f in &mut report.files {
                *f = out.join(f.file_name().unwrap_or_default());
            }
            Ok(report)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

fn write_merged<B: Backend>(
    model_dir: &Path,
    adapter_dir: &Path,
    tmp: &Path,
    options: MergeOptions,
    device: &B::Device,
) -> Result<MergeReport> {
    let config = LlavaConfig::from_file(&model_dir.join("config.json"))?;
    let model = Checkpoint::open(model_dir)?;
    let lora = LoraConfig::from_file(&adapter_dir.join("adapter_config.json"))?;
    let adapter_file = adapter_dir.join("adapter_model.safetensors");
    let adapter = Checkpoint::open(&adapter_file)?;
    let targets = targets(&model, model_dir, &adapter, &adapter_file)?;

    let keys: Vec<String> = model.keys().map(String::from).collect();
    let mut dtypes = Vec::with_capacity(keys.len());
    let mut sizes = Vec::with_capacity(keys.len());
    for k in &keys {
        let raw = model.raw(k)?;
        let dtype = options.dtype.unwrap_or(raw.dtype);
        let width = |d: Dtype| d.bitsize() as u64 / 8;
        sizes.push(raw.data.len() as u64 / width(raw.dtype) * width(dtype));
        dtypes.push(dtype);
    }
    let shards = plan_shards(&sizes, options.max_shard_bytes);
    let mut report = MergeReport {
        layout: config.layout,
        merged: 0,
        copied: 0,
        files: vec![],
        total_bytes: sizes.iter().sum(),
        other_files: vec![],
    };
    let mut weight_map = BTreeMap::new();
    for (i, range) in shards.iter().enumerate() {
        let file = shard_name(i, shards.len());
        let mut tensors: Vec<TensorBytes> = Vec::with_capacity(range.len());
        for (key, &dtype) in keys[range.clone()].iter().zip(&dtypes[range.clone()]) {
            let raw = model.raw(key)?;
            let bytes = match targets.get(key) {
                Some(pair) => {
                    report.merged += 1;
                    Cow::Owned(merged_weight::<B>(
                        &model, key, &adapter, pair, &lora, dtype, device,
                    )?)
                }
                None if dtype == raw.dtype => {
                    report.copied += 1;
                    Cow::Borrowed(raw.data)
                }
                None => {
                    report.copied += 1;
                    let values = raw.to_f32(model_dir, key)?;
                    Cow::Owned(
                        f32_to_bytes(values, dtype)
                            .ok_or_else(|| unsupported(model_dir, key, dtype))?,
                    )
                }
            };
            tensors.push((key.clone(), dtype, raw.shape.clone(), bytes));
            weight_map.insert(key.clone(), file.clone());
        }
        write_safetensors_bytes(&tmp.join(&file), &tensors)?;
        report.files.push(tmp.join(&file));
        tracing::info!(file = %file, tensors = tensors.len(), "merge: weights written");
    }
    if shards.len() > 1 {
        write_shard_index(tmp, report.total_bytes, &weight_map)?;
    }
    // Everything else the model directory holds: config, tokenizer, generation config, ...
    let entries = std::fs::read_dir(model_dir).map_err(|e| mmedpo_core::Error::io(model_dir, e))?;
    for entry in entries {
        let path = entry
            .map_err(|e| mmedpo_core::Error::io(model_dir, e))?
            .path();
        let file = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let weights = file.ends_with(".safetensors")
            || file == "model.safetensors.index.json"
            || file.ends_with(".bin")
            || file.ends_with(".bin.index.json");
        if path.is_file() && !weights {
            std::fs::copy(&path, tmp.join(&file)).map_err(|e| mmedpo_core::Error::io(&path, e))?;
            report.other_files.push(file);
        }
    }
    report.other_files.sort();
    Ok(report)
}

#[cfg(test)]
mod tests {
    #[test]
    fn shard_sizes_parse_as_transformers_writes_them() {
        use super::parse_shard_size as parse;
        assert_eq!(parse("5GB").unwrap(), 5_000_000_000);
        assert_eq!(parse("100KB").unwrap(), 100_000);
        assert_eq!(parse("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse("12345").unwrap(), 12345);
        assert!(parse("5XB").unwrap_err().contains("unknown unit"));
        assert!(parse("0").is_err());
        assert!(parse("GB").is_err());
    }
}
