//! The CLIP vision `config.json` (`CLIPVisionConfig`), read from a `clip_vision_model` file, the
//! `vision_config` of a `clip` file, or the `vision_config` nested in a llava-hf config.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Activation of the CLIP MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClipActivation {
    /// `x * sigmoid(1.702 x)` (OpenAI CLIP).
    QuickGelu,
    /// Exact (erf) GELU.
    Gelu,
}

/// `CLIPVisionConfig`, field names verbatim; defaults are transformers' (ViT-B/32), so real
/// configs must state their sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipVisionConfig {
    /// Width.
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    /// MLP width.
    #[serde(default = "d_inter")]
    pub intermediate_size: usize,
    /// Encoder layers.
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    /// Heads.
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    /// Input side in pixels.
    #[serde(default = "d_image")]
    pub image_size: usize,
    /// Patch side in pixels.
    #[serde(default = "d_patch")]
    pub patch_size: usize,
    /// Input channels.
    #[serde(default = "d_channels")]
    pub num_channels: usize,
    /// MLP activation.
    #[serde(default = "d_act")]
    pub hidden_act: ClipActivation,
    /// LayerNorm epsilon.
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
}

fn d_hidden() -> usize {
    768
}
fn d_inter() -> usize {
    3072
}
fn d_layers() -> usize {
    12
}
fn d_heads() -> usize {
    12
}
fn d_image() -> usize {
    224
}
fn d_patch() -> usize {
    32
}
fn d_channels() -> usize {
    3
}
fn d_act() -> ClipActivation {
    ClipActivation::QuickGelu
}
fn d_eps() -> f64 {
    1e-5
}

impl ClipVisionConfig {
    /// `openai/clip-vit-large-patch14-336`, LLaVA-Med v1.5's tower:
    /// <https://huggingface.co/openai/clip-vit-large-patch14-336/blob/main/config.json>.
    pub fn vit_large_patch14_336() -> Self {
        Self {
            hidden_size: 1024,
            intermediate_size: 4096,
            num_hidden_layers: 24,
            num_attention_heads: 16,
            image_size: 336,
            patch_size: 14,
            num_channels: 3,
            hidden_act: ClipActivation::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }

    /// Patches per image (576 for 336 px / 14).
    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }

    /// Position embeddings (patches + CLS).
    pub fn num_positions(&self) -> usize {
        self.num_patches() + 1
    }

    /// Reads a CLIP `config.json` (`clip_vision_model`, or `clip` with `vision_config`).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| mmedpo_core::Error::io(path, e))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|cause| mmedpo_core::Error::Json {
                path: path.to_path_buf(),
                cause,
            })?;
        let vision = match value.get("model_type").and_then(|v| v.as_str()) {
            Some("clip") => value.get("vision_config").cloned().unwrap_or_default(),
            Some("clip_vision_model") | None => value,
            Some(other) => {
                return Err(Error::UnsupportedConfig {
                    field: "model_type".into(),
                    value: other.into(),
                    expected: "\"clip_vision_model\" or \"clip\"".into(),
                })
            }
        };
        Self::from_value(vision).map_err(|e| match e {
            Error::Checkpoint(mmedpo_core::Error::Json { cause, .. }) => mmedpo_core::Error::Json {
                path: path.to_path_buf(),
                cause,
            }
            .into(),
            other => other,
        })
    }

    /// Parses a vision config object and checks it.
    pub fn from_value(value: serde_json::Value) -> Result<Self> {
        let cfg: Self =
            serde_json::from_value(value).map_err(|cause| mmedpo_core::Error::Json {
                path: "vision_config".into(),
                cause,
            })?;
        // Sizes are bounded before anything is allocated (far above any published CLIP).
        for (field, value, max) in [
            ("num_hidden_layers", cfg.num_hidden_layers, 1 << 8),
            ("hidden_size", cfg.hidden_size, 1 << 14),
            ("intermediate_size", cfg.intermediate_size, 1 << 16),
            ("image_size", cfg.image_size, 1 << 12),
        ] {
            if value == 0 || value > max {
                return Err(Error::UnsupportedConfig {
                    field: field.into(),
                    value: value.to_string(),
                    expected: format!("1 to {max}"),
                });
            }
        }
        if cfg.patch_size == 0 || !cfg.image_size.is_multiple_of(cfg.patch_size) {
            return Err(Error::UnsupportedConfig {
                field: "patch_size".into(),
                value: cfg.patch_size.to_string(),
                expected: format!("a divisor of image_size {}", cfg.image_size),
            });
        }
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads)
        {
            return Err(Error::UnsupportedConfig {
                field: "num_attention_heads".into(),
                value: cfg.num_attention_heads.to_string(),
                expected: "a divisor of hidden_size".into(),
            });
        }
        Ok(cfg)
    }
}
