//! Strict loading of LLaVA checkpoints in both layouts, with one load report.
//!
//! | part | original LLaVA-Med | llava-hf (transformers 4 hub / 5 save) |
//! |---|---|---|
//! | LLM | `model.*`, `lm_head.weight` | `language_model.model.*`, `language_model.lm_head.weight` (or `model.language_model.*`, `lm_head.weight`) |
//! | projector | `model.mm_projector.{0,2}.*` | `multi_modal_projector.linear_{1,2}.*` (or under `model.`) |
//! | tower | its own directory (`mm_vision_tower` / `--vision-tower`), or `model.vision_tower.vision_tower.vision_model.*` | `vision_tower.vision_model.*` or `vision_tower.*` (or under `model.`) |
//!
//! Remaps beyond the per-module ones (Linear transpose, norm gamma/beta): the LLM prefix, the
//! projector's `mm_projector.{0,2}` → `linear_{1,2}`, the tower prefix. Every key of the main
//! checkpoint must be taken; a tower found in the shards while `--vision-tower` is given is
//! ignored with that reason (as LLaVA's Python code ignores it).

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use mmedpo_core::checkpoint::{Checkpoint, LoadReport};
use mmedpo_llm::loader::take_llm;
use mmedpo_vision::loader::{find_prefix, load_clip_as, take_clip};
use mmedpo_vision::ClipVisionConfig;

use crate::config::{Layout, LlavaConfig, SelectFeature};
use crate::error::{Error, Result};
use crate::llava::{LlavaForConditionalGeneration, Projector};

/// A loaded LLaVA.
#[derive(Debug)]
pub struct LoadedLlava<B: Backend> {
    /// The model.
    pub model: LlavaForConditionalGeneration<B>,
    /// Its resolved config (with the tower's).
    pub config: LlavaConfig,
    /// The main checkpoint's report.
    pub report: LoadReport,
    /// The tower directory's report, when the tower came from its own directory.
    pub tower_report: Option<LoadReport>,
}

pub(crate) fn llm_keys(ckpt: &Checkpoint) -> Option<(String, String)> {
    let embed = ckpt
        .keys()
        .find(|k| k.ends_with("embed_tokens.weight") && !k.contains("vision"))?;
    let prefix = embed.trim_end_matches("embed_tokens.weight").to_string();
    let head = if prefix == "language_model.model." {
        "language_model.lm_head.weight"
    } else {
        "lm_head.weight"
    };
    Some((prefix, head.to_string()))
}

fn projector_keys(ckpt: &Checkpoint) -> Option<(&'static str, &'static str)> {
    [
        (
            "multi_modal_projector.linear_1",
            "multi_modal_projector.linear_2",
        ),
        (
            "model.multi_modal_projector.linear_1",
            "model.multi_modal_projector.linear_2",
        ),
        ("model.mm_projector.0", "model.mm_projector.2"),
    ]
    .into_iter()
    .find(|(a, _)| ckpt.contains(&format!("{a}.weight")))
}

/// Resolves `mm_vision_tower` to a local directory: absolute, or relative to the model directory.
fn tower_dir(model_dir: &Path, name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    let candidate = if p.is_absolute() {
        p.to_path_buf()
    } else {
        model_dir.join(p)
    };
    candidate.join("config.json").is_file().then_some(candidate)
}

/// Loads a LLaVA directory. `vision_tower` overrides where the CLIP tower comes from.
pub fn load_llava<B: Backend>(
    dir: &Path,
    vision_tower: Option<&Path>,
    device: &B::Device,
) -> Result<LoadedLlava<B>> {
    load_llava_as(
        dir,
        vision_tower,
        device,
        mmedpo_core::precision::default_float::<B>(),
    )
}

/// [`load_llava`] with every weight in `dtype` (f32, f16 or bf16), the model's compute dtype, as
/// LLaVA's `load_pretrained_model` with `torch_dtype` does. Adapters attached later stay f32.
pub fn load_llava_as<B: Backend>(
    dir: &Path,
    vision_tower: Option<&Path>,
    device: &B::Device,
    dtype: burn::tensor::DType,
) -> Result<LoadedLlava<B>> {
    if !dir.is_dir() {
        return Err(mmedpo_core::Error::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such model directory"),
        )
        .into());
    }
    let mut config = LlavaConfig::from_file(&dir.join("config.json"))?;
    let mut ckpt = Checkpoint::open(dir)?;
    ckpt.set_float_dtype(dtype);
    let (llm_prefix, head) = llm_keys(&ckpt).ok_or_else(|| Error::InFile {
        path: dir.to_path_buf(),
        message: "no language-model embedding (`*embed_tokens.weight`) in the checkpoint".into(),
    })?;
    let language_model = take_llm::<B>(&mut ckpt, &config.text, &llm_prefix, &head, device)?;

    // The tower: --vision-tower, else in the shards, else mm_vision_tower as a local directory.
    let shard_prefix = find_prefix(&ckpt);
    let mut tower_report = None;
    let vision_tower = match (vision_tower, &shard_prefix) {
        (Some(_), _) | (None, None) => {
            let path = match vision_tower {
                Some(p) => p.to_path_buf(),
                None => {
                    let name = config.vision_tower_name.clone().unwrap_or_default();
                    tower_dir(dir, &name).ok_or_else(|| Error::InFile {
                        path: dir.join("config.json"),
                        message: format!(
                            "mm_vision_tower {name:?} is not a local directory and the checkpoint holds no tower; \
                             pass --vision-tower DIR (a local copy of {name})"
                        ),
                    })?
                }
            };
            if let Some(prefix) = &shard_prefix {
                ckpt.ignore_prefix(prefix, "vision tower taken from --vision-tower instead");
            }
            let (tower, vcfg, report) = load_clip_as::<B>(&path, device, dtype)?;
            config.vision = Some(vcfg);
            tower_report = Some(report);
            tower
        }
        (None, Some(prefix)) => {
            let vcfg = match (&config.vision, config.layout) {
                (Some(v), _) => v.clone(),
                (None, Layout::Original) => ClipVisionConfig::vit_large_patch14_336(),
                (None, Layout::Hf) => unreachable!("llava-hf configs carry vision_config"),
            };
            let tower = take_clip::<B>(&mut ckpt, &vcfg, prefix, device)?;
            config.vision = Some(vcfg);
            tower
        }
    };
    let vcfg = config
        .vision
        .clone()
        .unwrap_or_else(ClipVisionConfig::vit_large_patch14_336);
    let (p1, p2) = projector_keys(&ckpt).ok_or_else(|| Error::InFile {
        path: dir.to_path_buf(),
        message: "no projector (`multi_modal_projector.linear_1.*` or `model.mm_projector.0.*`) in the checkpoint".into(),
    })?;
    let d = config.text.hidden_size;
    let multi_modal_projector = Projector {
        linear_1: ckpt.take_linear::<B>(p1, vcfg.hidden_size, d, true, device)?,
        linear_2: ckpt.take_linear::<B>(p2, d, d, true, device)?,
    };
    let report = ckpt.finish()?;
    tracing::info!(dir = %dir.display(), layout = ?config.layout, "LLaVA: {report}");
    let model = LlavaForConditionalGeneration {
        vision_tower,
        multi_modal_projector,
        language_model,
        select_layer: config.select_layer,
        drop_cls: config.select_feature == SelectFeature::Patch,
        max_length: config.max_length,
    };
    Ok(LoadedLlava {
        model,
        config,
        report,
        tower_report,
    })
}

/// The llava-hf `config.json` of a config.
pub fn hf_config_json(config: &LlavaConfig) -> serde_json::Value {
    let vision = config
        .vision
        .clone()
        .unwrap_or_else(ClipVisionConfig::vit_large_patch14_336);
    let mut vjson = serde_json::to_value(&vision).unwrap_or_default();
    vjson["model_type"] = "clip_vision_model".into();
    serde_json::json!({
        "architectures": ["LlavaForConditionalGeneration"],
        "model_type": "llava",
        "text_config": mmedpo_llm::loader::hf_config_json(&config.text),
        "vision_config": vjson,
        "vision_feature_layer": config.select_layer,
        "vision_feature_select_strategy": match config.select_feature { SelectFeature::Patch => "default", SelectFeature::ClsPatch => "full" },
        "projector_hidden_act": "gelu",
        "multimodal_projector_bias": true,
        "image_token_index": config.image_token_id.unwrap_or(config.text.vocab_size as i64 - 1),
        "tie_word_embeddings": false,
    })
}

/// Saves a LLaVA as a llava-hf directory (`config.json` + `model.safetensors`, f32), the layout
/// transformers' `LlavaForConditionalGeneration.from_pretrained` reads.
pub fn save_llava<B: Backend>(
    model: &LlavaForConditionalGeneration<B>,
    config: &LlavaConfig,
    dir: &Path,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| mmedpo_core::Error::io(dir, e))?;
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> =
        mmedpo_llm::loader::hf_tensors(&model.language_model)
            .into_iter()
            .map(|(k, s, d)| (format!("language_model.{k}"), s, d))
            .collect();
    tensors.extend(
        mmedpo_vision::loader::hf_tensors(&model.vision_tower)
            .into_iter()
            .map(|(k, s, d)| (format!("vision_tower.vision_model.{k}"), s, d)),
    );
    tensors.extend(model.multi_modal_projector.hf_tensors());
    mmedpo_core::checkpoint::write_safetensors(&dir.join("model.safetensors"), &tensors)?;
    let cfg_path = dir.join("config.json");
    let text = serde_json::to_string_pretty(&hf_config_json(config)).unwrap_or_default();
    std::fs::write(&cfg_path, text).map_err(|e| mmedpo_core::Error::io(&cfg_path, e))?;
    Ok(())
}
