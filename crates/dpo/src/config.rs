//! The training configuration as a file holds it (`train.toml`, docs/train-llava-med.toml): one
//! serde schema with its defaults in one place (the sections' `Default`s), unknown keys refused
//! by serde, and errors naming the file, the line and the key.
//!
//! [`TrainConfig::from_file`] reads a file (paths relative to its folder), a caller sets what its
//! flags give on the fields, [`TrainConfig::check`] names a missing required value, and
//! [`TrainConfig::settings`] and [`TrainConfig::manifest`] give the trainer's settings and the
//! record of what determines a run.

use std::path::{Path, PathBuf};

use mmedpo_core::manifest::Manifest;
use mmedpo_lora::config::TargetModules;
use mmedpo_lora::LoraConfig;
use mmedpo_lvlm::score::PairSettings;
use mmedpo_lvlm::Layout;
use serde::{Deserialize, Serialize};

use crate::data::{WeightMode, WeightStats};
use crate::loss::LossType;
use crate::optim::AdamW;
use crate::train::{Reference, TrainSettings};
use crate::{Error, Result};

/// `[lora]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraSection {
    /// Rank.
    pub r: usize,
    /// Alpha.
    pub alpha: f64,
    /// Dropout on the adapter input.
    pub dropout: f64,
    /// Targeted projections (names or one regex).
    pub target_modules: TargetModules,
}

impl Default for LoraSection {
    /// The paper's: r 128, alpha 256, no dropout, every projection of the LLM.
    fn default() -> Self {
        Self {
            r: 128,
            alpha: 256.0,
            dropout: 0.0,
            target_modules: TargetModules::List(
                [
                    "q_proj",
                    "k_proj",
                    "v_proj",
                    "o_proj",
                    "gate_proj",
                    "up_proj",
                    "down_proj",
                ]
                .map(String::from)
                .to_vec(),
            ),
        }
    }
}

/// `[dpo]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DpoSection {
    /// DPO β.
    pub beta: f64,
    /// sigmoid | hinge | ipo.
    pub loss: LossType,
    /// raw | paper | none.
    pub weight_mode: WeightMode,
    /// global | per-source.
    pub weight_stats: WeightStats,
    /// `adapter-off`, or a `mmedpo score` JSONL of the base model.
    pub reference: String,
}

impl Default for DpoSection {
    /// The paper's: β 0.1, sigmoid loss, the released code's raw weights, reference = adapter off.
    fn default() -> Self {
        Self {
            beta: 0.1,
            loss: LossType::Sigmoid,
            weight_mode: WeightMode::Raw,
            weight_stats: WeightStats::Global,
            reference: "adapter-off".into(),
        }
    }
}

/// `[optim]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimSection {
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Projector learning rate (trains the projector when set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub projector_lr: Option<f64>,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Warmup fraction.
    pub warmup_ratio: f64,
    /// Epochs.
    pub epochs: usize,
    /// Optimizer steps (overrides epochs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<usize>,
    /// Pairs per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per step.
    pub grad_accum: usize,
    /// Global gradient-norm clip.
    pub max_grad_norm: f64,
    /// Seed.
    pub seed: u64,
    /// Checkpoint every N steps (0: at the end only).
    pub save_steps: usize,
    /// Recompute memory-bound activations in the backward pass (Burn's BalancedCheckpointing).
    pub activation_checkpointing: bool,
}

impl Default for OptimSection {
    /// The paper's: lr 1e-7, 3 epochs, global batch 4 (1 × 4 accumulation), warmup 0.03, clip 1.
    fn default() -> Self {
        Self {
            learning_rate: 1e-7,
            projector_lr: None,
            weight_decay: 0.0,
            warmup_ratio: 0.03,
            epochs: 3,
            max_steps: None,
            batch_size: 1,
            grad_accum: 4,
            max_grad_norm: 1.0,
            seed: 42,
            save_steps: 0,
            activation_checkpointing: false,
        }
    }
}

fn vicuna() -> String {
    "vicuna_v1".into()
}
fn cpu() -> String {
    "cpu".into()
}
fn one() -> usize {
    1
}
fn f32_name() -> String {
    "f32".into()
}

/// The whole training configuration (what `OUT/train_config.toml` holds once resolved). The
/// required paths are empty until set by the file or the caller ([`check`](Self::check)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// LLaVA model directory.
    #[serde(default)]
    pub model: PathBuf,
    /// Separate CLIP tower directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vision_tower: Option<PathBuf>,
    /// tokenizer.json (default MODEL/tokenizer.json).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<PathBuf>,
    /// Preference files.
    #[serde(default)]
    pub data: Vec<PathBuf>,
    /// Image folder.
    #[serde(default)]
    pub image_root: PathBuf,
    /// Output folder.
    #[serde(default)]
    pub out: PathBuf,
    /// Conversation template.
    #[serde(default = "vicuna")]
    pub template: String,
    /// cpu | cuda.
    #[serde(default = "cpu")]
    pub device: String,
    /// Data-parallel replicas: CUDA GPUs 0..N−1, or N CPU threads (global batch =
    /// devices × batch_size × grad_accum).
    #[serde(default = "one")]
    pub devices: usize,
    /// f32 | bf16.
    #[serde(default = "f32_name")]
    pub dtype: String,
    /// LoRA.
    #[serde(default)]
    pub lora: LoraSection,
    /// DPO.
    #[serde(default)]
    pub dpo: DpoSection,
    /// Optimizer and schedule.
    #[serde(default)]
    pub optim: OptimSection,
}

impl Default for TrainConfig {
    fn default() -> Self {
        toml::from_str("").expect("every key has a default")
    }
}

/// `[section] key` at byte `at` of a TOML text, and its 1-based line.
fn key_at(text: &str, at: usize) -> (usize, String) {
    let at = at.min(text.len());
    let before = &text[..at];
    let line_no = before.matches('\n').count() + 1;
    let line = text[before.rfind('\n').map_or(0, |i| i + 1)..]
        .lines()
        .next()
        .unwrap_or("");
    let key = line.split('=').next().unwrap_or("").trim().to_string();
    let section = before
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix('[').and_then(|r| r.strip_suffix(']')))
        .map(|s| s.trim().to_string());
    match section {
        Some(s) => (line_no, format!("[{s}] {key}")),
        None => (line_no, key),
    }
}

impl TrainConfig {
    /// Reads a config file: unknown keys and bad values are errors naming the file, the line and
    /// the key; relative paths (`model`, `vision_tower`, `tokenizer`, `data`, `image_root`, `out`,
    /// a `[dpo] reference` file) are made relative to the file's folder.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| mmedpo_core::Error::io(path, e))?;
        let mut c: TrainConfig = toml::from_str(&text).map_err(|e| {
            let message = e.message().to_string();
            Error::Config(match e.span() {
                Some(span) => {
                    let (line, key) = key_at(&text, span.start);
                    format!("{}:{line}: {key}: {message}", path.display())
                }
                None => format!("{}: {message}", path.display()),
            })
        })?;
        let folder = path.parent().unwrap_or(Path::new(""));
        let rebase = |p: &mut PathBuf| {
            if !p.as_os_str().is_empty() && p.is_relative() {
                *p = folder.join(&*p);
            }
        };
        rebase(&mut c.model);
        rebase(&mut c.image_root);
        rebase(&mut c.out);
        c.data.iter_mut().for_each(rebase);
        for p in [&mut c.vision_tower, &mut c.tokenizer]
            .into_iter()
            .flatten()
        {
            rebase(p);
        }
        if c.dpo.reference != "adapter-off" {
            let mut p = PathBuf::from(&c.dpo.reference);
            rebase(&mut p);
            c.dpo.reference = p.display().to_string();
        }
        Ok(c)
    }

    /// The required values that are still unset, as `model`, `data`, `image_root`, `out`.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut m = vec![];
        if self.model.as_os_str().is_empty() {
            m.push("model");
        }
        if self.data.is_empty() {
            m.push("data");
        }
        if self.image_root.as_os_str().is_empty() {
            m.push("image_root");
        }
        if self.out.as_os_str().is_empty() {
            m.push("out");
        }
        m
    }

    /// The trainer's settings; how pairs become inputs and the layout come from the loaded model.
    pub fn settings(&self, pairs: PairSettings, layout: Layout) -> TrainSettings {
        let lora = LoraConfig {
            lora_dropout: self.lora.dropout,
            target_modules: self.lora.target_modules.clone(),
            base_model_name_or_path: Some(self.model.display().to_string()),
            ..LoraConfig::new(self.lora.r, self.lora.alpha)
        };
        let reference = match self.dpo.reference.as_str() {
            "adapter-off" => Reference::AdapterOff,
            path => Reference::File(PathBuf::from(path)),
        };
        TrainSettings {
            lora,
            beta: self.dpo.beta,
            loss_type: self.dpo.loss,
            weight_mode: self.dpo.weight_mode,
            weight_stats: self.dpo.weight_stats,
            learning_rate: self.optim.learning_rate,
            projector_lr: self.optim.projector_lr,
            adamw: AdamW {
                weight_decay: self.optim.weight_decay,
                ..AdamW::default()
            },
            warmup_ratio: self.optim.warmup_ratio,
            epochs: self.optim.epochs,
            max_steps: self.optim.max_steps,
            batch_size: self.optim.batch_size,
            grad_accum: self.optim.grad_accum,
            max_grad_norm: self.optim.max_grad_norm,
            seed: self.optim.seed,
            save_steps: self.optim.save_steps,
            pairs,
            reference,
            layout,
            stop_after: None,
        }
    }

    /// What determines a run's checkpoints: the inputs' fingerprints and every setting that
    /// changes the numbers (not `save_steps`, `max_steps` — checked by the trainer — or
    /// checkpointing).
    pub fn manifest(&self) -> Result<Manifest> {
        let mut m = Manifest::new("train")
            .dir("model", &self.model)?
            .opt_dir("vision_tower", self.vision_tower.as_deref())?
            .opt_dir("tokenizer", self.tokenizer.as_deref())?
            .value("image_root", self.image_root.display())
            .value("template", &self.template)
            .value("dtype", &self.dtype)
            .value("devices", self.devices);
        for (i, d) in self.data.iter().enumerate() {
            m = m.file(&format!("data[{i}]"), d)?;
        }
        let table = toml::Table::try_from(self).map_err(|e| Error::Config(e.to_string()))?;
        for section in ["lora", "dpo", "optim"] {
            if let Some(toml::Value::Table(t)) = table.get(section) {
                for (k, v) in t {
                    if !["save_steps", "max_steps", "activation_checkpointing"]
                        .contains(&k.as_str())
                    {
                        m = m.value(&format!("{section}.{k}"), v);
                    }
                }
            }
        }
        Ok(m)
    }

    /// The resolved configuration as TOML (`OUT/train_config.toml`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a config serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mmedpo-dpo-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn defaults_are_the_papers_and_a_file_overrides_them_key_by_key() {
        let d = TrainConfig::default();
        assert_eq!(
            (d.lora.r, d.lora.alpha, d.optim.learning_rate),
            (128, 256.0, 1e-7)
        );
        assert_eq!(
            (d.optim.batch_size, d.optim.grad_accum, d.dpo.beta),
            (1, 4, 0.1)
        );
        assert_eq!(d.missing(), ["model", "data", "image_root", "out"]);
        let p = write(
            "a.toml",
            "model = \"m\"\ndata = [\"d.json\"]\n[lora]\nr = 8\n[dpo]\nreference = \"ref.jsonl\"\n",
        );
        let c = TrainConfig::from_file(&p).unwrap();
        assert_eq!(
            (c.lora.r, c.lora.alpha),
            (8, 256.0),
            "a section keeps the defaults it does not set"
        );
        assert_eq!(c.model, p.parent().unwrap().join("m"));
        assert_eq!(c.data, [p.parent().unwrap().join("d.json")]);
        assert!(
            c.dpo.reference.ends_with("ref.jsonl") && c.dpo.reference.len() > "ref.jsonl".len()
        );
        assert_eq!(c.missing(), ["image_root", "out"]);
        let back: TrainConfig = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back, c, "train_config.toml reads back as the same config");
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_key() {
        let p = write(
            "b.toml",
            "# run\n[lora]\nr = 4\n\n[optim]\nseed = 1\nlearning_rate = \"fast\"\n",
        );
        let e = TrainConfig::from_file(&p).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "{}:7: [optim] learning_rate: invalid type: string \"fast\"",
                p.display()
            )),
            "{e}"
        );
        let p = write("c.toml", "[optim]\nlearning_rat = 1e-5\n");
        let e = TrainConfig::from_file(&p).unwrap_err().to_string();
        assert!(
            e.contains("c.toml:2: [optim] learning_rat: unknown field `learning_rat`"),
            "{e}"
        );
        let p = write("d.toml", "modle = \"m\"\n");
        let e = TrainConfig::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("d.toml:1: modle: unknown field `modle`"), "{e}");
        let p = write("e.toml", "[dpo]\nweight_mode = \"bogus\"\n");
        let e = TrainConfig::from_file(&p).unwrap_err().to_string();
        assert!(
            e.contains("e.toml:2: [dpo] weight_mode: unknown variant `bogus`"),
            "{e}"
        );
    }
}
