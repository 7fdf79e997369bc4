//! Weighted DPO with LoRA through [`train_on_devices`](crate::dpo::train_on_devices): a
//! [`TrainConfig`] file (or its defaults) with the plan's settings on top, checked, recorded as
//! `OUT/train_config.toml` and `OUT/manifest.json` before anything runs; on one device or
//! data-parallel on several; `OUT/training.png` at the end.

use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::dpo::data::{load_records, WeightMode};
use crate::dpo::{TrainConfig, TrainSummary};
use crate::error::invalid;
use crate::llm::Template;
use crate::lvlm::score::{PairSettings, ScoreMeta};
use crate::lvlm::Layout;
use crate::vision::preprocess::AspectRatio;
use crate::{DeviceKind, Dtype, Event, Observer, Result};

/// A training run: each setting given here overrides the config file's (or its default).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainPlan {
    /// A train TOML (docs/train-llava-med.toml); relative paths in it are relative to it.
    pub config: Option<PathBuf>,
    /// LLaVA model directory.
    pub model: Option<PathBuf>,
    /// CLIP tower directory.
    pub vision_tower: Option<PathBuf>,
    /// tokenizer.json.
    pub tokenizer: Option<PathBuf>,
    /// Preference files (replace the config's list when not empty).
    pub data: Vec<PathBuf>,
    /// Image folder.
    pub image_root: Option<PathBuf>,
    /// Output folder (adapter, log, checkpoints).
    pub out: Option<PathBuf>,
    /// Conversation template.
    pub template: Option<String>,
    /// Optimizer steps.
    pub max_steps: Option<usize>,
    /// Epochs.
    pub epochs: Option<usize>,
    /// LoRA rank.
    pub lora_r: Option<usize>,
    /// LoRA alpha.
    pub lora_alpha: Option<f64>,
    /// Learning rate.
    pub learning_rate: Option<f64>,
    /// DPO β.
    pub beta: Option<f64>,
    /// raw | paper | none.
    pub weight_mode: Option<WeightMode>,
    /// Seed.
    pub seed: Option<u64>,
    /// Pairs per micro-batch.
    pub batch_size: Option<usize>,
    /// Micro-batches per optimizer step.
    pub grad_accum: Option<usize>,
    /// Checkpoint every N steps.
    pub save_steps: Option<usize>,
    /// Recompute memory-bound activations in the backward pass.
    pub checkpointing: bool,
    /// Continue from the latest checkpoint in `out` (same inputs and settings only).
    pub resume: bool,
    /// cpu | cuda.
    pub device: Option<DeviceKind>,
    /// Data-parallel replicas: CUDA GPUs 0..N−1 on cuda, else N CPU threads.
    pub devices: Option<usize>,
    /// f32 | bf16.
    pub dtype: Option<Dtype>,
}

impl TrainPlan {
    /// The config file (or the defaults) with the plan on top; a missing required value, a
    /// device or dtype that does not exist, or settings that cannot train are errors.
    pub fn resolve(&self) -> Result<TrainConfig> {
        let mut c = match &self.config {
            Some(path) => TrainConfig::from_file(path)?,
            None => TrainConfig::default(),
        };
        let set = |to: &mut PathBuf, v: &Option<PathBuf>| {
            if let Some(v) = v {
                *to = v.clone();
            }
        };
        set(&mut c.model, &self.model);
        set(&mut c.image_root, &self.image_root);
        set(&mut c.out, &self.out);
        if self.vision_tower.is_some() {
            c.vision_tower = self.vision_tower.clone();
        }
        if self.tokenizer.is_some() {
            c.tokenizer = self.tokenizer.clone();
        }
        if !self.data.is_empty() {
            c.data = self.data.clone();
        }
        if let Some(v) = &self.template {
            c.template = v.clone();
        }
        c.optim.max_steps = self.max_steps.or(c.optim.max_steps);
        c.optim.epochs = self.epochs.unwrap_or(c.optim.epochs);
        c.lora.r = self.lora_r.unwrap_or(c.lora.r);
        c.lora.alpha = self.lora_alpha.unwrap_or(c.lora.alpha);
        c.optim.learning_rate = self.learning_rate.unwrap_or(c.optim.learning_rate);
        c.dpo.beta = self.beta.unwrap_or(c.dpo.beta);
        c.dpo.weight_mode = self.weight_mode.unwrap_or(c.dpo.weight_mode);
        c.optim.seed = self.seed.unwrap_or(c.optim.seed);
        c.optim.batch_size = self.batch_size.unwrap_or(c.optim.batch_size);
        c.optim.grad_accum = self.grad_accum.unwrap_or(c.optim.grad_accum);
        c.optim.save_steps = self.save_steps.unwrap_or(c.optim.save_steps);
        c.optim.activation_checkpointing |= self.checkpointing;
        if let Some(v) = self.device {
            c.device = v.name().into();
        }
        c.devices = self.devices.unwrap_or(c.devices);
        if let Some(v) = self.dtype {
            c.dtype = v.name().into();
        }
        if let Some(key) = c.missing().first() {
            invalid!("no `{key}`: set it in the train config or give it on the command line");
        }
        DeviceKind::parse("device", &c.device)?;
        Dtype::parse("dtype", &c.dtype)?;
        if c.devices == 0 {
            invalid!("devices = 0: at least 1");
        }
        // Hyperparameters are checked before anything is read or loaded (the image settings and
        // the layout, which only the model knows, play no part in the check).
        let unloaded = PairSettings {
            template: Template::from_name(&c.template)?,
            image_root: c.image_root.clone(),
            aspect: AspectRatio::Pad,
            image_size: 336,
        };
        c.settings(unloaded, Layout::Hf).validate()?;
        Ok(c)
    }
}

/// Every input `config` names exists, or one error listing each missing one, the key that names
/// it, and where such a file comes from.
pub fn check_inputs(config: &TrainConfig, file: Option<&Path>) -> Result<()> {
    let from = |key: &str| match file {
        Some(f) => format!("`{key}` in {} or --{}", f.display(), key.replace('_', "-")),
        None => format!("`{key}`"),
    };
    let mut missing = vec![];
    if !config.model.join("config.json").is_file() {
        missing.push(format!(
            "{}: no LLaVA model (no config.json) ({}); download one there (LLaVA-Med v1.5: \
             microsoft/llava-med-v1.5-mistral-7b) or draw a random one with `mmedpo init-model`",
            config.model.display(),
            from("model")
        ));
    }
    for path in &config.data {
        if !path.is_file() {
            missing.push(format!(
                "{}: no such preference file ({}); text pairs come from `mmedpo curate-text` then \
                 `mmedpo score-relevance` (or are the pairs released with the paper: \
                 data/*_dpo_weighted.json of the MMedPO repository, a sample in data/released-sample), \
                 visual pairs from `mmedpo visual-pairs --data TEXT_PAIRS --image-root IMAGES --out DIR` \
                 (DIR/visual_pairs.json)",
                path.display(),
                from("data")
            ));
        }
    }
    if !config.image_root.is_dir() {
        missing.push(format!(
            "{}: no such image folder ({}); it holds the images the pairs' `image` fields name \
             (e.g. VQA-RAD's or SLAKE's image folder)",
            config.image_root.display(),
            from("image_root")
        ));
    }
    if !missing.is_empty() {
        invalid!("missing input(s):\n  {}", missing.join("\n  "));
    }
    Ok(())
}

/// Trains (or, with `plan.resume`, continues) the run the plan resolves to.
pub fn train(plan: &TrainPlan, observer: &dyn Observer) -> Result<TrainSummary> {
    let config = plan.resolve()?;
    check_inputs(&config, plan.config.as_deref())?;
    std::fs::create_dir_all(&config.out).map_err(|e| crate::Error::io(&config.out, e))?;
    let _lock = crate::core::manifest::OutLock::acquire(&config.out)?;
    // A resumed run continues only what the same inputs and settings started.
    let manifest = config.manifest()?;
    let manifest_path = config.out.join("manifest.json");
    if plan.resume && manifest_path.is_file() {
        manifest.check(&manifest_path, &config.out, "drop --resume")?;
    } else {
        manifest.write(&manifest_path)?;
    }
    let resolved = config.out.join("train_config.toml");
    std::fs::write(&resolved, config.to_toml()).map_err(|e| crate::Error::io(&resolved, e))?;
    let kind = DeviceKind::parse("device", &config.device)?;
    let dtype = Dtype::parse("dtype", &config.dtype)?;
    use crate::core::backend::Cpu;
    use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing as Ckpt;
    use burn::backend::Autodiff;
    let cpus = vec![Default::default(); config.devices];
    #[cfg(feature = "cuda")]
    let gpus: Vec<_> = (0..config.devices)
        .map(burn::backend::cuda::CudaDevice::new)
        .collect();
    let r = (&config, dtype, plan.resume, observer);
    match (kind, config.optim.activation_checkpointing) {
        (DeviceKind::Cpu, false) => train_on::<Autodiff<Cpu>>(r, &cpus),
        (DeviceKind::Cpu, true) => train_on::<Autodiff<Cpu, Ckpt>>(r, &cpus),
        #[cfg(feature = "cuda")]
        (DeviceKind::Cuda, false) => train_on::<Autodiff<crate::core::backend::Gpu>>(r, &gpus),
        #[cfg(feature = "cuda")]
        (DeviceKind::Cuda, true) => train_on::<Autodiff<crate::core::backend::Gpu, Ckpt>>(r, &gpus),
        #[cfg(not(feature = "cuda"))]
        (DeviceKind::Cuda, _) => Err(crate::Error::NoCuda),
    }
}

fn train_on<B: AutodiffBackend>(
    (config, dtype, resume, observer): (&TrainConfig, Dtype, bool, &dyn Observer),
    devices: &[B::Device],
) -> Result<TrainSummary> {
    let device = &devices[0];
    let template = Template::from_name(&config.template)?;
    let records = load_records(&config.data)?;
    let loaded = crate::lvlm::open::<B>(
        &config.model,
        config.vision_tower.as_deref(),
        config.tokenizer.as_deref(),
        device,
        dtype.burn(),
    )?;
    let meta = match config.dpo.reference.as_str() {
        "adapter-off" => None,
        _ => Some(ScoreMeta {
            dtype: dtype.name().into(),
            tokenizer_fingerprint: config
                .tokenizer
                .as_deref()
                .map(crate::core::manifest::path_fingerprint)
                .transpose()?,
            ..ScoreMeta::of(
                &config.model,
                config.vision_tower.as_deref(),
                &config.data,
                &config.template,
            )?
        }),
    };
    let settings = config.settings(
        loaded.pairs(template, &config.image_root),
        loaded.config.layout,
    );
    observer.note(&format!(
        "global batch {} pair(s) per step = {} device(s) × batch_size {} × grad_accum {}",
        config.devices * config.optim.batch_size * config.optim.grad_accum,
        config.devices,
        config.optim.batch_size,
        config.optim.grad_accum
    ));
    let summary = crate::dpo::train_on_devices(
        loaded.model,
        &loaded.tokenizer,
        &records,
        meta.as_ref(),
        &settings,
        &config.out,
        resume,
        devices,
        &mut |log, total| {
            let message = format!(
                "loss {:.4}  margin {:+.3}  acc {:.2}",
                log.loss, log.rewards_margins, log.rewards_accuracies
            );
            observer.progress("steps", log.step, total, &message);
        },
    );
    observer.finish();
    let summary = summary?;
    let plot = config.out.join("training.png");
    if let Err(e) = crate::plot::plot_training(&summary.logs, &plot) {
        tracing::warn!("no training plot: {e}");
    }
    observer.event(&Event::Trained {
        summary: &summary,
        config,
        pairs: records.len(),
    });
    Ok(summary)
}
