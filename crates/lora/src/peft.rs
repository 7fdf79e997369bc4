//! Adapters in the PEFT layout: `adapter_config.json` + `adapter_model.safetensors` with keys
//! `base_model.model.<module path>.lora_{A,B}.weight` (`lora_A`: `[r, d_in]`, `lora_B`: `[d_out, r]`).
//!
//! The module paths are the Python model's (`model.language_model.layers.0.self_attn.q_proj` for
//! transformers' LLaVA, `model.layers.0.self_attn.q_proj` for LLaVA-Med's own class); callers pass
//! the layers with their paths. Loading is strict: every tensor in the file must land in a layer.

use std::path::Path;

use burn::tensor::backend::Backend;
use mmedpo_core::checkpoint::{write_safetensors, Checkpoint};

use crate::config::LoraConfig;
use crate::error::{Error, Result};
use crate::linear::LoraLinear;

/// PEFT's prefix before the model's own module paths.
pub const PEFT_PREFIX: &str = "base_model.model.";

/// Attaches fresh adapters to every layer whose path the config targets; returns how many.
pub fn attach_all<B: Backend>(
    layers: Vec<(String, &mut LoraLinear<B>)>,
    config: &LoraConfig,
    device: &B::Device,
) -> usize {
    let mut n = 0;
    for (path, layer) in layers {
        if config.target_modules.matches(&path) {
            layer.attach(config, device);
            n += 1;
        }
    }
    n
}

/// Writes the adapters of `layers` (those that have one) in the PEFT layout.
pub fn save_adapter<B: Backend>(
    dir: &Path,
    config: &LoraConfig,
    layers: &[(String, &LoraLinear<B>)],
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| mmedpo_core::Error::io(dir, e))?;
    let mut tensors = Vec::new();
    for (path, layer) in layers {
        if let Some(a) = &layer.lora {
            for (name, w) in [("lora_A", &a.lora_A.weight), ("lora_B", &a.lora_B.weight)] {
                let t = w.val().transpose();
                let shape = t.dims().to_vec();
                let data = t
                    .into_data()
                    .convert::<f32>()
                    .to_vec::<f32>()
                    .unwrap_or_default();
                tensors.push((format!("{PEFT_PREFIX}{path}.{name}.weight"), shape, data));
            }
        }
    }
    if tensors.is_empty() {
        return Err(Error::Mismatch {
            path: dir.to_path_buf(),
            message: "no layer has an adapter to save".into(),
        });
    }
    // Write to temporary names, then rename: a kill never leaves a half-written adapter.
    let cfg_tmp = dir.join("adapter_config.json.tmp");
    let st_tmp = dir.join("adapter_model.safetensors.tmp");
    let text = serde_json::to_string_pretty(config).map_err(|cause| mmedpo_core::Error::Json {
        path: cfg_tmp.clone(),
        cause,
    })?;
    std::fs::write(&cfg_tmp, text).map_err(|e| mmedpo_core::Error::io(&cfg_tmp, e))?;
    write_safetensors(&st_tmp, &tensors)?;
    for (tmp, name) in [
        (cfg_tmp, "adapter_config.json"),
        (st_tmp, "adapter_model.safetensors"),
    ] {
        std::fs::rename(&tmp, dir.join(name)).map_err(|e| mmedpo_core::Error::io(&tmp, e))?;
    }
    Ok(())
}

/// Loads a PEFT adapter directory into `layers`. Every tensor must belong to one of them.
pub fn load_adapter<B: Backend>(
    dir: &Path,
    layers: Vec<(String, &mut LoraLinear<B>)>,
    device: &B::Device,
) -> Result<LoraConfig> {
    let config = LoraConfig::from_file(&dir.join("adapter_config.json"))?;
    let file = dir.join("adapter_model.safetensors");
    if !file.is_file() && dir.join("adapter_model.bin").is_file() {
        return Err(mmedpo_core::Error::UnsupportedCheckpoint {
            path: dir.join("adapter_model.bin"),
            message: "pickled adapters are not read (unpickling can run code); convert the adapter \
                directory once with mmedpo's scripts/convert_bin.py IN_DIR OUT_DIR (runs no pickled code)"
                .into(),
        }
        .into());
    }
    let mut ckpt = Checkpoint::open(&file)?;
    let mut loaded = 0;
    for (path, layer) in layers {
        let a_key = format!("{PEFT_PREFIX}{path}.lora_A.weight");
        let b_key = format!("{PEFT_PREFIX}{path}.lora_B.weight");
        if !ckpt.contains(&a_key) && !ckpt.contains(&b_key) {
            continue;
        }
        if !config.target_modules.matches(&path) {
            return Err(Error::Mismatch {
                path: dir.join("adapter_config.json"),
                message: format!(
                    "target_modules {:?} do not name {path}, which adapter_model.safetensors holds \
                     tensors for: the config and the weights disagree",
                    config.target_modules
                ),
            });
        }
        let (d_in, d_out) = layer.dims();
        let a = ckpt.take::<B, 2>(&a_key, [config.r, d_in], device)?;
        let b = ckpt.take::<B, 2>(&b_key, [d_out, config.r], device)?;
        layer.attach_weights(a, b, &config);
        loaded += 1;
    }
    let unused = ckpt.untaken();
    if !unused.is_empty() {
        return Err(Error::Mismatch {
            path: dir.to_path_buf(),
            message: format!(
                "{} adapter tensor(s) match no LLM layer of this model (first: {}); was it trained on another architecture or layout?",
                unused.len(),
                unused[0]
            ),
        });
    }
    if loaded == 0 {
        return Err(Error::Mismatch {
            path: dir.to_path_buf(),
            message: "the adapter has no tensors".into(),
        });
    }
    tracing::info!(dir = %dir.display(), layers = loaded, r = config.r, alpha = config.lora_alpha, "LoRA adapter loaded");
    Ok(config)
}
