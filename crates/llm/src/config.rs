//! The Hugging Face `config.json` of a Llama or Mistral checkpoint, and the resolved decoder config.
//!
//! [`HfConfig`] mirrors the upstream file field by field (`transformers` `LlamaConfig` /
//! `MistralConfig`; unknown keys are ignored, optional keys take the upstream defaults). Both the
//! transformers 4 layout (`rope_theta`, `rope_scaling`) and the transformers 5 layout
//! (`rope_parameters`) are read. [`HfConfig::into_runtime`] resolves it into a [`DecoderConfig`] with no
//! `Option`s left, refusing what this crate does not implement with [`Error::UnsupportedConfig`].

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// The architectures this crate implements (`model_type` in `config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelType {
    /// `LlamaForCausalLM` (Llama 2/3, Med42, ...).
    Llama,
    /// `MistralForCausalLM` (Mistral-7B, BioMistral, the LLM inside LLaVA-Med v1.5).
    Mistral,
}

/// `eos_token_id` is an integer in Llama 2 / Mistral configs and a list in Llama 3 ones.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    /// A single id.
    One(u32),
    /// Several ids, any of which ends generation.
    Many(Vec<u32>),
}

impl TokenIds {
    /// The ids as a list.
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

/// `rope_scaling` (transformers 4) or `rope_parameters` (transformers 5).
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
pub struct HfRopeParameters {
    /// `rope_type` (or the legacy `type`): `default`, `linear` or `llama3` are implemented.
    #[serde(default, alias = "type")]
    pub rope_type: Option<String>,
    /// The base, in the transformers 5 layout.
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// Scaling factor (`linear`, `llama3`).
    #[serde(default)]
    pub factor: Option<f64>,
    /// `llama3`: low-frequency factor.
    #[serde(default)]
    pub low_freq_factor: Option<f64>,
    /// `llama3`: high-frequency factor.
    #[serde(default)]
    pub high_freq_factor: Option<f64>,
    /// `llama3`: the context length the model was pre-trained with.
    #[serde(default)]
    pub original_max_position_embeddings: Option<usize>,
}

/// A Llama or Mistral `config.json`, field names verbatim from transformers.
#[derive(Debug, Clone, Deserialize)]
pub struct HfConfig {
    /// `llama` or `mistral`.
    pub model_type: ModelType,
    /// Vocabulary size (rows of `embed_tokens`).
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key/value heads (GQA); defaults to `num_attention_heads`.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Per-head width; defaults to `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// MLP activation; only `silu` is implemented.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Longest context the model supports.
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base (transformers 4 layout).
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// RoPE scaling (transformers 4 layout).
    #[serde(default)]
    pub rope_scaling: Option<HfRopeParameters>,
    /// RoPE parameters (transformers 5 layout).
    #[serde(default)]
    pub rope_parameters: Option<HfRopeParameters>,
    /// Whether `lm_head` shares `embed_tokens`' weight.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Bias on q/k/v/o projections (Llama only).
    #[serde(default)]
    pub attention_bias: bool,
    /// Bias on the MLP projections (Llama only).
    #[serde(default)]
    pub mlp_bias: bool,
    /// Mistral's sliding attention window (`null` in LLaVA-Med v1.5).
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Beginning-of-sequence id.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// End-of-sequence id(s).
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    /// Padding id, if the checkpoint names one.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
}

fn default_act() -> String {
    "silu".into()
}
fn default_max_pos() -> usize {
    2048
}
fn default_eps() -> f64 {
    1e-6
}

/// How RoPE frequencies are derived from the base.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Positions divided by `factor`.
    Linear {
        /// Scaling factor.
        factor: f64,
    },
    /// Llama 3.1's frequency-dependent scaling.
    Llama3 {
        /// Scaling factor.
        factor: f64,
        /// Low-frequency factor.
        low_freq_factor: f64,
        /// High-frequency factor.
        high_freq_factor: f64,
        /// Pre-training context length.
        original_max_position_embeddings: usize,
    },
}

/// The resolved decoder configuration: everything the modules need, no `Option`s.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderConfig {
    /// Which upstream architecture this came from.
    pub model_type: ModelType,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads.
    pub num_key_value_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// Longest context.
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// RoPE scaling.
    pub rope_scaling: RopeScaling,
    /// Tied `lm_head`.
    pub tie_word_embeddings: bool,
    /// Bias on attention projections.
    pub attention_bias: bool,
    /// Bias on MLP projections.
    pub mlp_bias: bool,
    /// Sliding attention window, in tokens.
    pub sliding_window: Option<usize>,
    /// BOS id.
    pub bos_token_id: u32,
    /// EOS ids.
    pub eos_token_ids: Vec<u32>,
    /// Padding id used when batching prompts (the checkpoint's, else EOS's first id).
    pub pad_token_id: u32,
}

impl HfConfig {
    /// Reads and parses `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text).map_err(|e| match e {
            Error::Json { cause, .. } => Error::Json {
                path: path.to_path_buf(),
                cause,
            },
            other => other,
        })
    }

    /// Parses the text of a `config.json`.
    pub fn from_json(text: &str) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|cause| Error::Json {
            path: "config.json".into(),
            cause,
        })?;
        if let Some(mt) = value.get("model_type").and_then(|v| v.as_str()) {
            if mt != "llama" && mt != "mistral" {
                return Err(Error::UnsupportedConfig {
                    field: "model_type".into(),
                    value: mt.into(),
                    expected: "\"llama\" or \"mistral\"".into(),
                });
            }
        }
        serde_json::from_value(value).map_err(|cause| Error::Json {
            path: "config.json".into(),
            cause,
        })
    }

    /// Resolves defaults and checks that every value is one this crate implements.
    pub fn into_runtime(self) -> Result<DecoderConfig> {
        let unsupported = |field: &str, value: String, expected: &str| Error::UnsupportedConfig {
            field: field.into(),
            value,
            expected: expected.into(),
        };
        if self.hidden_act != "silu" {
            return Err(unsupported("hidden_act", self.hidden_act, "\"silu\""));
        }
        // Sizes are checked before anything is allocated: a typo like 10,000,000 layers must be an
        // error, not a 5 GB allocation. The bounds are far above any published decoder.
        for (field, value, max) in [
            ("num_hidden_layers", self.num_hidden_layers, 1 << 10),
            ("hidden_size", self.hidden_size, 1 << 16),
            ("intermediate_size", self.intermediate_size, 1 << 18),
            ("vocab_size", self.vocab_size, 1 << 22),
            ("num_attention_heads", self.num_attention_heads, 1 << 10),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                1 << 24,
            ),
        ] {
            if value == 0 || value > max {
                return Err(unsupported(
                    field,
                    value.to_string(),
                    &format!("1 to {max}"),
                ));
            }
        }
        let heads = self.num_attention_heads;
        let kv_heads = self.num_key_value_heads.unwrap_or(heads);
        if kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            return Err(unsupported(
                "num_key_value_heads",
                kv_heads.to_string(),
                "a non-zero divisor of num_attention_heads",
            ));
        }
        let head_dim = match self.head_dim {
            Some(d) if d == 0 || d > 1 << 12 => {
                return Err(unsupported("head_dim", d.to_string(), "1 to 4096"))
            }
            Some(d) => d,
            None if self.hidden_size.is_multiple_of(heads) => self.hidden_size / heads,
            None => {
                return Err(unsupported(
                    "num_attention_heads",
                    heads.to_string(),
                    "a divisor of hidden_size (or an explicit head_dim)",
                ))
            }
        };
        if head_dim % 2 != 0 {
            return Err(unsupported(
                "head_dim",
                head_dim.to_string(),
                "an even number (RoPE)",
            ));
        }
        let params = self
            .rope_parameters
            .or(self.rope_scaling)
            .unwrap_or_default();
        let rope_theta = self.rope_theta.or(params.rope_theta).unwrap_or(10_000.0);
        let rope_scaling = match params.rope_type.as_deref().unwrap_or("default") {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear {
                factor: params.factor.unwrap_or(1.0),
            },
            "llama3" => RopeScaling::Llama3 {
                factor: params.factor.unwrap_or(8.0),
                low_freq_factor: params.low_freq_factor.unwrap_or(1.0),
                high_freq_factor: params.high_freq_factor.unwrap_or(4.0),
                original_max_position_embeddings: params
                    .original_max_position_embeddings
                    .unwrap_or(8192),
            },
            other => {
                return Err(unsupported(
                    "rope_type",
                    other.into(),
                    "\"default\", \"linear\" or \"llama3\"",
                ))
            }
        };
        let eos_token_ids = self
            .eos_token_id
            .map(|t| t.to_vec())
            .unwrap_or_else(|| vec![2]);
        let pad_token_id = self
            .pad_token_id
            .or(eos_token_ids.first().copied())
            .unwrap_or(0);
        Ok(DecoderConfig {
            model_type: self.model_type,
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            max_position_embeddings: self.max_position_embeddings,
            rms_norm_eps: self.rms_norm_eps,
            rope_theta,
            rope_scaling,
            tie_word_embeddings: self.tie_word_embeddings,
            attention_bias: self.attention_bias,
            mlp_bias: self.mlp_bias,
            sliding_window: self.sliding_window,
            bos_token_id: self.bos_token_id.unwrap_or(1),
            eos_token_ids,
            pad_token_id,
        })
    }
}

impl DecoderConfig {
    /// Mistral-7B-v0.1's shape with LLaVA-Med v1.5's settings (rope_theta 1e6, no sliding window):
    /// <https://huggingface.co/microsoft/llava-med-v1.5-mistral-7b/blob/main/config.json>.
    pub fn llava_med_v15_mistral_7b() -> Self {
        Self {
            model_type: ModelType::Mistral,
            vocab_size: 32000,
            hidden_size: 4096,
            intermediate_size: 14336,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: 8,
            head_dim: 128,
            max_position_embeddings: 32768,
            rms_norm_eps: 1e-5,
            rope_theta: 1_000_000.0,
            rope_scaling: RopeScaling::None,
            tie_word_embeddings: false,
            attention_bias: false,
            mlp_bias: false,
            sliding_window: None,
            bos_token_id: 1,
            eos_token_ids: vec![2],
            pad_token_id: 2,
        }
    }

    /// A ~100M-parameter Mistral-shaped config (Mistral tokenizer vocabulary), used by the benchmark
    /// and by the embedded defaults.
    pub fn mistral_100m() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 2048,
            num_hidden_layers: 8,
            num_attention_heads: 12,
            num_key_value_heads: 4,
            head_dim: 64,
            max_position_embeddings: 4096,
            ..Self::llava_med_v15_mistral_7b()
        }
    }

    /// Number of parameters (embedding and `lm_head` included).
    pub fn num_parameters(&self) -> usize {
        let d = self.hidden_size;
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let attn = d * q
            + 2 * d * kv
            + q * d
            + if self.attention_bias {
                q + 2 * kv + d
            } else {
                0
            };
        let mlp = 3 * d * self.intermediate_size
            + if self.mlp_bias {
                2 * self.intermediate_size + d
            } else {
                0
            };
        let layer = attn + mlp + 2 * d;
        let embed = self.vocab_size * d;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        embed + self.num_hidden_layers * layer + d + head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MISTRAL: &str = r#"{
      "architectures": ["MistralForCausalLM"], "model_type": "mistral", "vocab_size": 32000,
      "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
      "num_attention_heads": 32, "num_key_value_heads": 8, "hidden_act": "silu",
      "max_position_embeddings": 32768, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0,
      "sliding_window": null, "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2,
      "torch_dtype": "bfloat16", "some_future_key": {"ignored": true}
    }"#;

    #[test]
    fn llava_med_config_resolves_to_the_preset() {
        let cfg = HfConfig::from_json(MISTRAL)
            .unwrap()
            .into_runtime()
            .unwrap();
        assert_eq!(cfg, DecoderConfig::llava_med_v15_mistral_7b());
        // Mistral-7B has 7.24 B parameters.
        assert_eq!(cfg.num_parameters(), 7_241_732_096);
    }

    #[test]
    fn transformers5_rope_parameters_and_llama3_eos_list() {
        let json = r#"{"model_type": "llama", "vocab_size": 128256, "hidden_size": 64,
          "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 4,
          "num_key_value_heads": 2, "eos_token_id": [128001, 128009],
          "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}"#;
        let cfg = HfConfig::from_json(json).unwrap().into_runtime().unwrap();
        assert_eq!(cfg.rope_theta, 500000.0);
        assert_eq!(cfg.eos_token_ids, vec![128001, 128009]);
        assert_eq!(cfg.head_dim, 16);
        assert!(matches!(cfg.rope_scaling, RopeScaling::Llama3 { .. }));
    }

    #[test]
    fn absurd_sizes_and_zero_heads_are_refused_by_name_before_allocating() {
        for (from, to, field) in [
            (
                "\"num_hidden_layers\": 32",
                "\"num_hidden_layers\": 10000000",
                "num_hidden_layers",
            ),
            (
                "\"num_attention_heads\": 32",
                "\"num_attention_heads\": 0",
                "num_attention_heads",
            ),
            ("\"vocab_size\": 32000", "\"vocab_size\": 0", "vocab_size"),
        ] {
            assert!(MISTRAL.contains(from), "{from}");
            let err = HfConfig::from_json(&MISTRAL.replace(from, to))
                .unwrap()
                .into_runtime()
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("{field} = ")), "{err}");
        }
    }

    #[test]
    fn unsupported_values_name_the_field() {
        let err = HfConfig::from_json(r#"{"model_type": "gemma"}"#).unwrap_err();
        assert!(err.to_string().contains("model_type"), "{err}");
        let json = MISTRAL.replace("\"silu\"", "\"gelu\"");
        let err = HfConfig::from_json(&json)
            .unwrap()
            .into_runtime()
            .unwrap_err();
        assert!(
            err.to_string().contains("hidden_act") && err.to_string().contains("gelu"),
            "{err}"
        );
        let json = MISTRAL.replace("\"num_key_value_heads\": 8", "\"num_key_value_heads\": 5");
        let err = HfConfig::from_json(&json)
            .unwrap()
            .into_runtime()
            .unwrap_err();
        assert!(err.to_string().contains("num_key_value_heads"), "{err}");
    }

    #[test]
    fn missing_required_key_is_a_json_error() {
        let json = MISTRAL.replace("\"hidden_size\": 4096,", "");
        let err = HfConfig::from_json(&json).unwrap_err();
        assert!(err.to_string().contains("hidden_size"), "{err}");
    }
}
