//! PEFT's `adapter_config.json` (`LoraConfig`), field names verbatim; unknown keys are ignored.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `target_modules`: a list of module-name suffixes, or one regular expression matched against the
/// full module name (PEFT's two forms).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    /// Names such as `q_proj`: a module matches when its path ends with `.q_proj` (or equals it).
    List(Vec<String>),
    /// A regex that must match the whole module path.
    Regex(String),
}

impl TargetModules {
    /// Whether the module at `path` is targeted.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            TargetModules::List(names) => names
                .iter()
                .any(|n| path == n || path.ends_with(&format!(".{n}"))),
            TargetModules::Regex(re) => regex::Regex::new(&format!("^(?:{re})$"))
                .map(|r| r.is_match(path))
                .unwrap_or(false),
        }
    }
}

/// LoRA hyper-parameters, as PEFT writes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Always `LORA`.
    #[serde(default = "lora")]
    pub peft_type: String,
    /// Rank.
    pub r: usize,
    /// Alpha: scaling = alpha / r.
    pub lora_alpha: f64,
    /// Dropout on the adapter's input (training only).
    #[serde(default)]
    pub lora_dropout: f64,
    /// Which linear layers get adapters.
    pub target_modules: TargetModules,
    /// Only `none` is implemented.
    #[serde(default = "none")]
    pub bias: String,
    /// rsLoRA: scaling = alpha / sqrt(r).
    #[serde(default)]
    pub use_rslora: bool,
    /// DoRA is not implemented.
    #[serde(default)]
    pub use_dora: bool,
    /// The base model's name or path (informational).
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// `CAUSAL_LM` (informational).
    #[serde(default)]
    pub task_type: Option<String>,
    /// Must be false (weights stored `[out, in]`).
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// Modules trained in full besides the adapters: not implemented, must be empty.
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    /// Per-module ranks: not implemented, must be empty.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub rank_pattern: serde_json::Map<String, serde_json::Value>,
    /// Per-module alphas: not implemented, must be empty.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub alpha_pattern: serde_json::Map<String, serde_json::Value>,
}

fn lora() -> String {
    "LORA".into()
}
fn none() -> String {
    "none".into()
}

/// The LLM projections LoRA targets by default (MMedPO: every `nn.Linear` of the LLM).
pub const DEFAULT_TARGETS: &[&str] = &[
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

impl LoraConfig {
    /// A config with the given rank and alpha on the default targets, no dropout.
    pub fn new(r: usize, lora_alpha: f64) -> Self {
        Self {
            peft_type: lora(),
            r,
            lora_alpha,
            lora_dropout: 0.0,
            target_modules: TargetModules::List(
                DEFAULT_TARGETS.iter().map(|s| s.to_string()).collect(),
            ),
            bias: none(),
            use_rslora: false,
            use_dora: false,
            base_model_name_or_path: None,
            task_type: Some("CAUSAL_LM".into()),
            fan_in_fan_out: false,
            modules_to_save: None,
            rank_pattern: Default::default(),
            alpha_pattern: Default::default(),
        }
    }

    /// The factor the adapter's output is multiplied by.
    pub fn scaling(&self) -> f64 {
        if self.use_rslora {
            self.lora_alpha / (self.r as f64).sqrt()
        } else {
            self.lora_alpha / self.r as f64
        }
    }

    /// Reads and checks `adapter_config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| mmedpo_core::Error::io(path, e))?;
        let cfg: Self = serde_json::from_str(&text).map_err(|cause| mmedpo_core::Error::Json {
            path: path.to_path_buf(),
            cause,
        })?;
        let bad = |field: &str, value: String, expected: &str| Error::Unsupported {
            path: path.to_path_buf(),
            field: field.into(),
            value,
            expected: expected.into(),
        };
        if cfg.peft_type != "LORA" {
            return Err(bad("peft_type", cfg.peft_type, "\"LORA\""));
        }
        if cfg.bias != "none" {
            return Err(bad("bias", cfg.bias, "\"none\""));
        }
        if cfg.use_dora {
            return Err(bad("use_dora", "true".into(), "false"));
        }
        if cfg.fan_in_fan_out {
            return Err(bad("fan_in_fan_out", "true".into(), "false"));
        }
        if cfg.modules_to_save.as_ref().is_some_and(|m| !m.is_empty()) {
            return Err(bad(
                "modules_to_save",
                format!("{:?}", cfg.modules_to_save),
                "none",
            ));
        }
        if !cfg.rank_pattern.is_empty() || !cfg.alpha_pattern.is_empty() {
            return Err(bad(
                "rank_pattern/alpha_pattern",
                "per-module values".into(),
                "empty maps",
            ));
        }
        if cfg.r == 0 {
            return Err(bad("r", "0".into(), "a positive rank"));
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_modules_match_like_peft() {
        let list = TargetModules::List(vec!["q_proj".into()]);
        assert!(list.matches("model.layers.0.self_attn.q_proj"));
        assert!(!list.matches("model.layers.0.self_attn.qq_proj"));
        let re = TargetModules::Regex(r".*language_model.*\.(q_proj|v_proj)".into());
        assert!(re.matches("model.language_model.layers.1.self_attn.v_proj"));
        assert!(!re.matches("model.vision_tower.encoder.layers.1.self_attn.v_proj"));
    }

    #[test]
    fn reads_peft_config_and_refuses_what_is_not_implemented() {
        let dir = std::env::temp_dir().join(format!("mmedpo-lora-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("adapter_config.json");
        std::fs::write(&p, r#"{"peft_type": "LORA", "r": 128, "lora_alpha": 256, "lora_dropout": 0.05,
            "target_modules": ["q_proj", "v_proj"], "bias": "none", "task_type": "CAUSAL_LM", "revision": null}"#).unwrap();
        let cfg = LoraConfig::from_file(&p).unwrap();
        assert_eq!(cfg.scaling(), 2.0);
        std::fs::write(&p, r#"{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"], "use_dora": true}"#).unwrap();
        let err = LoraConfig::from_file(&p).unwrap_err().to_string();
        assert!(
            err.contains("use_dora") && err.contains("adapter_config.json"),
            "{err}"
        );
    }
}
