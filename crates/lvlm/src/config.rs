//! LLaVA `config.json`, in both layouts, resolved into a [`LlavaConfig`].
//!
//! * Original LLaVA / LLaVA-Med (`model_type` `llava_mistral`, `llava_llama` or `llava`, with
//!   `mm_*` keys): the text model's keys sit at the top level; the tower is named by
//!   `mm_vision_tower` and read from its own directory.
//! * llava-hf (`model_type: llava` with `text_config` / `vision_config`), as transformers saves it.
//!
//! Values this crate does not implement (`mm_projector_type` other than `mlp2x_gelu`,
//! `image_aspect_ratio` `anyres`, `mm_use_im_start_end`, ...) are errors naming the key.

use std::path::Path;

use mmedpo_llm::{DecoderConfig, HfConfig};
use mmedpo_vision::{AspectRatio, ClipVisionConfig};
use serde_json::Value;

use crate::error::{Error, Result};

/// Which checkpoint layout a directory uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// haotian-liu/LLaVA and microsoft/LLaVA-Med (`model.layers.*`, `model.mm_projector.*`).
    Original,
    /// transformers' `LlavaForConditionalGeneration` (`language_model.*`, `multi_modal_projector.*`).
    Hf,
}

/// Which tokens of the selected layer become image features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectFeature {
    /// Patch tokens only (`patch` / `default`): CLS dropped.
    Patch,
    /// CLS and patches (`cls_patch` / `full`).
    ClsPatch,
}

/// The resolved LLaVA configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct LlavaConfig {
    /// Checkpoint layout.
    pub layout: Layout,
    /// The language model.
    pub text: DecoderConfig,
    /// The vision tower; `None` until read from the tower directory (original layout).
    pub vision: Option<ClipVisionConfig>,
    /// `mm_vision_tower` (original layout), e.g. `openai/clip-vit-large-patch14-336`.
    pub vision_tower_name: Option<String>,
    /// Hidden-state index of the tower (LLaVA: −2).
    pub select_layer: i64,
    /// Patch tokens only, or CLS too.
    pub select_feature: SelectFeature,
    /// Pad to square or not.
    pub aspect: AspectRatio,
    /// Sequence length after image expansion (`tokenizer_model_max_length`, default 1024).
    pub max_length: usize,
    /// llava-hf's image placeholder id, when the config names one.
    pub image_token_id: Option<i64>,
}

fn unsupported(field: &str, value: &Value, expected: &str) -> Error {
    Error::UnsupportedConfig {
        field: field.into(),
        value: value.to_string(),
        expected: expected.into(),
    }
}

fn text_config(mut value: Value, default_type: &str) -> Result<DecoderConfig> {
    if let Some(obj) = value.as_object_mut() {
        let mt = obj
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or(default_type)
            .to_string();
        let mt = match mt.as_str() {
            "llava_mistral" | "mistral" => "mistral",
            "llava_llama" | "llava" | "llama" => "llama",
            other => other,
        }
        .to_string();
        obj.insert("model_type".into(), Value::String(mt));
    }
    Ok(HfConfig::from_json(&value.to_string())?.into_runtime()?)
}

impl LlavaConfig {
    /// Reads `config.json` of a LLaVA directory.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| mmedpo_core::Error::io(path, e))?;
        let value: Value =
            serde_json::from_str(&text).map_err(|cause| mmedpo_core::Error::Json {
                path: path.to_path_buf(),
                cause,
            })?;
        Self::from_value(&value).map_err(|e| e.in_file(path))
    }

    /// Resolves a parsed `config.json`.
    pub fn from_value(value: &Value) -> Result<Self> {
        let get = |k: &str| value.get(k).filter(|v| !v.is_null());
        let model_type = get("model_type").and_then(Value::as_str).unwrap_or("");
        if let Some(tc) = get("text_config") {
            // llava-hf.
            if model_type != "llava" {
                return Err(unsupported(
                    "model_type",
                    &Value::String(model_type.into()),
                    "\"llava\"",
                ));
            }
            let text = text_config(tc.clone(), "llama")?;
            let vision =
                ClipVisionConfig::from_value(get("vision_config").cloned().unwrap_or_default())?;
            let select_feature = match get("vision_feature_select_strategy")
                .and_then(Value::as_str)
                .unwrap_or("default")
            {
                "default" => SelectFeature::Patch,
                "full" => SelectFeature::ClsPatch,
                _ => {
                    return Err(unsupported(
                        "vision_feature_select_strategy",
                        &value["vision_feature_select_strategy"],
                        "\"default\" or \"full\"",
                    ))
                }
            };
            let select_layer = match get("vision_feature_layer") {
                None => -2,
                Some(v) => v
                    .as_i64()
                    .ok_or_else(|| unsupported("vision_feature_layer", v, "one integer layer"))?,
            };
            if let Some(act) = get("projector_hidden_act") {
                if act != "gelu" {
                    return Err(unsupported("projector_hidden_act", act, "\"gelu\""));
                }
            }
            if get("multimodal_projector_bias").is_some_and(|b| b == &Value::Bool(false)) {
                return Err(unsupported(
                    "multimodal_projector_bias",
                    &Value::Bool(false),
                    "true",
                ));
            }
            let image_token_id = get("image_token_id")
                .or(get("image_token_index"))
                .and_then(Value::as_i64);
            if let Some(id) = image_token_id.filter(|&id| id < 0 || id as usize >= text.vocab_size)
            {
                return Err(unsupported(
                    "image_token_index",
                    &Value::from(id),
                    &format!("an id below text_config.vocab_size {}", text.vocab_size),
                ));
            }
            // No sequence runs past the positions the LLM was built for.
            let max_length = 1024.min(text.max_position_embeddings);
            return Ok(Self {
                layout: Layout::Hf,
                text,
                vision: Some(vision),
                vision_tower_name: None,
                select_layer,
                select_feature,
                aspect: AspectRatio::Pad,
                max_length,
                image_token_id,
            });
        }
        if !model_type.starts_with("llava") && get("mm_vision_tower").is_none() {
            return Err(unsupported(
                "model_type",
                &Value::String(model_type.into()),
                "a LLaVA config (\"llava\" with text_config, or llava_mistral / llava_llama with mm_* keys)",
            ));
        }
        match get("mm_projector_type")
            .and_then(Value::as_str)
            .unwrap_or("linear")
        {
            "mlp2x_gelu" => {}
            _ => {
                return Err(unsupported(
                    "mm_projector_type",
                    value.get("mm_projector_type").unwrap_or(&Value::Null),
                    "\"mlp2x_gelu\"",
                ))
            }
        }
        for flag in ["mm_use_im_start_end", "mm_use_im_patch_token"] {
            if get(flag).is_some_and(|v| v == &Value::Bool(true)) {
                return Err(unsupported(
                    flag,
                    &Value::Bool(true),
                    "false (LLaVA-Med v1.5 adds no image tokens)",
                ));
            }
        }
        let select_feature = match get("mm_vision_select_feature")
            .and_then(Value::as_str)
            .unwrap_or("patch")
        {
            "patch" => SelectFeature::Patch,
            "cls_patch" => SelectFeature::ClsPatch,
            _ => {
                return Err(unsupported(
                    "mm_vision_select_feature",
                    &value["mm_vision_select_feature"],
                    "\"patch\" or \"cls_patch\"",
                ))
            }
        };
        let aspect = match get("image_aspect_ratio")
            .and_then(Value::as_str)
            .unwrap_or("square")
        {
            "pad" => AspectRatio::Pad,
            "square" => AspectRatio::Crop,
            _ => {
                return Err(unsupported(
                    "image_aspect_ratio",
                    &value["image_aspect_ratio"],
                    "\"pad\" or \"square\"",
                ))
            }
        };
        let select_layer = get("mm_vision_select_layer")
            .and_then(Value::as_i64)
            .unwrap_or(-2);
        let text = text_config(value.clone(), "llama")?;
        // No sequence runs past the positions the LLM was built for.
        let max_length = (get("tokenizer_model_max_length")
            .and_then(Value::as_u64)
            .unwrap_or(1024) as usize)
            .min(text.max_position_embeddings);
        Ok(Self {
            layout: Layout::Original,
            text,
            vision: None,
            vision_tower_name: get("mm_vision_tower")
                .and_then(Value::as_str)
                .map(String::from),
            select_layer,
            select_feature,
            aspect,
            max_length,
            image_token_id: None,
        })
    }

    /// Image features per image (576 for CLIP-336/14 with `patch`).
    pub fn image_tokens(&self) -> usize {
        let patches = self
            .vision
            .as_ref()
            .map_or(576, ClipVisionConfig::num_patches);
        match self.select_feature {
            SelectFeature::Patch => patches,
            SelectFeature::ClsPatch => patches + 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn original() -> Value {
        serde_json::json!({
            "architectures": ["LlavaMistralForCausalLM"], "model_type": "llava_mistral", "vocab_size": 32000,
            "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 8, "rms_norm_eps": 1e-5, "rope_theta": 1000000.0, "sliding_window": null,
            "max_position_embeddings": 32768, "mm_vision_tower": "openai/clip-vit-large-patch14-336",
            "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
            "image_aspect_ratio": "pad", "mm_use_im_start_end": false, "mm_use_im_patch_token": false,
            "mm_hidden_size": 1024, "tokenizer_model_max_length": 1024, "feature_outs": "encoder+decoder"
        })
    }

    #[test]
    fn the_llava_med_v15_config_resolves() {
        let cfg = LlavaConfig::from_value(&original()).unwrap();
        assert_eq!(cfg.layout, Layout::Original);
        assert_eq!(cfg.text, DecoderConfig::llava_med_v15_mistral_7b());
        assert_eq!(
            cfg.vision_tower_name.as_deref(),
            Some("openai/clip-vit-large-patch14-336")
        );
        assert_eq!(
            (
                cfg.select_layer,
                cfg.select_feature,
                cfg.aspect,
                cfg.max_length
            ),
            (-2, SelectFeature::Patch, AspectRatio::Pad, 1024)
        );
    }

    #[test]
    fn unsupported_values_name_the_key() {
        let hf = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/golden/tiny-llava-hf/config.json"),
        )
        .unwrap();
        let mut v: Value = serde_json::from_str(&hf).unwrap();
        v["image_token_index"] = 99_999.into();
        let err = LlavaConfig::from_value(&v).unwrap_err().to_string();
        assert!(
            err.contains("image_token_index") && err.contains("99999"),
            "{err}"
        );
        for (key, val, want) in [
            (
                "mm_projector_type",
                serde_json::json!("linear"),
                "mm_projector_type",
            ),
            (
                "image_aspect_ratio",
                serde_json::json!("anyres"),
                "image_aspect_ratio",
            ),
            (
                "mm_use_im_start_end",
                serde_json::json!(true),
                "mm_use_im_start_end",
            ),
            (
                "mm_vision_select_feature",
                serde_json::json!("cls"),
                "mm_vision_select_feature",
            ),
        ] {
            let mut v = original();
            v[key] = val;
            let err = LlavaConfig::from_value(&v).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
        let err = LlavaConfig::from_value(&serde_json::json!({"model_type": "qwen2_vl"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("model_type"), "{err}");
    }
}
