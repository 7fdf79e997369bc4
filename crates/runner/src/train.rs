//! `mmedpo train` and `mmedpo init-model`.
//!
//! Configuration: [`TrainConfig::from_file`] (unknown keys and bad values are errors naming the
//! file, line and key), the flags set on its fields, saved as `OUT/train_config.toml` before
//! anything runs → library calls.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::{AutodiffBackend, Backend};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use mmedpo_dpo::data::load_records;
use mmedpo_dpo::{train_on_devices, TrainConfig};
use mmedpo_llm::Template;
use mmedpo_lvlm::score::{PairSettings, ScoreMeta};
use mmedpo_lvlm::{save_llava, Layout, LlavaConfig};
use mmedpo_vision::preprocess::AspectRatio;

use crate::common::check_vocab;
use crate::{DeviceKind, Dtype};

/// Arguments of `mmedpo train` (each overrides the config file).
#[derive(Args, Debug, Default)]
pub struct TrainArgs {
    /// TOML config (see docs/train-llava-med.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// LLaVA model directory.
    #[arg(long)]
    model: Option<PathBuf>,
    /// CLIP tower directory.
    #[arg(long)]
    vision_tower: Option<PathBuf>,
    /// tokenizer.json.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Preference file (repeatable).
    #[arg(long)]
    data: Vec<PathBuf>,
    /// Image folder.
    #[arg(long)]
    image_root: Option<PathBuf>,
    /// Output folder (adapter, log, plot, checkpoints).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Conversation template (vicuna_v1 for LLaVA-Med v1.5).
    #[arg(long)]
    template: Option<String>,
    /// Optimizer steps.
    #[arg(long)]
    max_steps: Option<usize>,
    /// Epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// LoRA rank.
    #[arg(long)]
    lora_r: Option<usize>,
    /// LoRA alpha.
    #[arg(long)]
    lora_alpha: Option<f64>,
    /// Learning rate.
    #[arg(long)]
    learning_rate: Option<f64>,
    /// DPO β.
    #[arg(long)]
    beta: Option<f64>,
    /// raw | paper | none.
    #[arg(long)]
    weight_mode: Option<String>,
    /// Seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Pairs per micro-batch.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Micro-batches per optimizer step.
    #[arg(long)]
    grad_accum: Option<usize>,
    /// Checkpoint every N steps.
    #[arg(long)]
    save_steps: Option<usize>,
    /// Recompute memory-bound activations in the backward pass (less memory, more time).
    #[arg(long)]
    checkpointing: bool,
    /// Continue from the latest checkpoint in --out.
    #[arg(long)]
    resume: bool,
    /// cpu | cuda.
    #[arg(long, value_enum)]
    device: Option<DeviceKind>,
    /// Data-parallel replicas: CUDA GPUs 0..N−1 with --device cuda, else N CPU threads.
    #[arg(long)]
    devices: Option<usize>,
    /// f32 | bf16.
    #[arg(long, value_enum)]
    dtype: Option<Dtype>,
}

fn parse_flag<T: serde::de::DeserializeOwned>(
    flag: &str,
    value: &str,
    expected: &str,
) -> Result<T> {
    serde_json::from_value(serde_json::json!(value))
        .map_err(|_| anyhow::anyhow!("--{flag} {value}: expected {expected}"))
}

/// The config file (or the defaults) with the flags on top; a missing required value is an error.
pub fn resolve(args: &TrainArgs) -> Result<TrainConfig> {
    let mut c = match &args.config {
        Some(path) => TrainConfig::from_file(path)?,
        None => TrainConfig::default(),
    };
    if let Some(v) = &args.model {
        c.model = v.clone();
    }
    if let Some(v) = &args.vision_tower {
        c.vision_tower = Some(v.clone());
    }
    if let Some(v) = &args.tokenizer {
        c.tokenizer = Some(v.clone());
    }
    if !args.data.is_empty() {
        c.data = args.data.clone();
    }
    if let Some(v) = &args.image_root {
        c.image_root = v.clone();
    }
    if let Some(v) = &args.out {
        c.out = v.clone();
    }
    if let Some(v) = &args.template {
        c.template = v.clone();
    }
    if let Some(v) = args.max_steps {
        c.optim.max_steps = Some(v);
    }
    if let Some(v) = args.epochs {
        c.optim.epochs = v;
    }
    if let Some(v) = args.lora_r {
        c.lora.r = v;
    }
    if let Some(v) = args.lora_alpha {
        c.lora.alpha = v;
    }
    if let Some(v) = args.learning_rate {
        c.optim.learning_rate = v;
    }
    if let Some(v) = args.beta {
        c.dpo.beta = v;
    }
    if let Some(v) = &args.weight_mode {
        c.dpo.weight_mode = parse_flag("weight-mode", v, "raw, paper or none")?;
    }
    if let Some(v) = args.seed {
        c.optim.seed = v;
    }
    if let Some(v) = args.batch_size {
        c.optim.batch_size = v;
    }
    if let Some(v) = args.grad_accum {
        c.optim.grad_accum = v;
    }
    if let Some(v) = args.save_steps {
        c.optim.save_steps = v;
    }
    if args.checkpointing {
        c.optim.activation_checkpointing = true;
    }
    if let Some(v) = args.device {
        c.device = v.name().into();
    }
    if let Some(v) = args.devices {
        c.devices = v;
    }
    if let Some(v) = args.dtype {
        c.dtype = v.name().into();
    }
    if let Some(key) = c.missing().first() {
        bail!(
            "no `{key}`: give --{} or set it in --config",
            key.replace('_', "-")
        );
    }
    Ok(c)
}

/// Every input the configuration names exists, or one error listing each missing one, the key that
/// names it, and where such a file comes from.
fn check_inputs(config: &TrainConfig, file: Option<&Path>) -> Result<()> {
    let from = |key: &str| match file {
        Some(f) => format!("`{key}` in {} or --{}", f.display(), key.replace('_', "-")),
        None => format!("--{}", key.replace('_', "-")),
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
        bail!("missing input(s):\n  {}", missing.join("\n  "));
    }
    Ok(())
}

/// Runs `mmedpo train`.
pub fn run(args: TrainArgs) -> Result<()> {
    let config = resolve(&args)?;
    check_inputs(&config, args.config.as_deref())?;
    std::fs::create_dir_all(&config.out)
        .with_context(|| format!("creating {}", config.out.display()))?;
    let _lock = mmedpo_core::manifest::OutLock::acquire(&config.out)?;
    // A resumed run continues only what the same inputs and settings started.
    let manifest = config.manifest()?;
    let manifest_path = config.out.join("manifest.json");
    if args.resume && manifest_path.is_file() {
        manifest.check(&manifest_path, &config.out, "drop --resume")?;
    } else {
        manifest.write(&manifest_path)?;
    }
    let resolved = config.out.join("train_config.toml");
    std::fs::write(&resolved, config.to_toml())
        .with_context(|| format!("writing {}", resolved.display()))?;
    let kind = match config.device.as_str() {
        "cpu" => DeviceKind::Cpu,
        "cuda" => DeviceKind::Cuda,
        other => bail!("device = {other:?}: expected \"cpu\" or \"cuda\""),
    };
    let dtype = match config.dtype.as_str() {
        "f32" => Dtype::F32,
        "bf16" => Dtype::Bf16,
        other => bail!("dtype = {other:?}: expected \"f32\" or \"bf16\""),
    };
    use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing as Ckpt;
    use burn::backend::Autodiff;
    if config.devices == 0 {
        bail!("devices = 0: at least 1");
    }
    let cpus = vec![Default::default(); config.devices];
    #[cfg(feature = "cuda")]
    let gpus: Vec<_> = (0..config.devices)
        .map(burn::backend::cuda::CudaDevice::new)
        .collect();
    match (kind, config.optim.activation_checkpointing) {
        (DeviceKind::Cpu, false) => run_on::<Autodiff<mmedpo_core::backend::Cpu>>(&config, dtype, args.resume, &cpus),
        (DeviceKind::Cpu, true) => run_on::<Autodiff<mmedpo_core::backend::Cpu, Ckpt>>(&config, dtype, args.resume, &cpus),
        #[cfg(feature = "cuda")]
        (DeviceKind::Cuda, false) => run_on::<Autodiff<mmedpo_core::backend::Gpu>>(&config, dtype, args.resume, &gpus),
        #[cfg(feature = "cuda")]
        (DeviceKind::Cuda, true) => run_on::<Autodiff<mmedpo_core::backend::Gpu, Ckpt>>(&config, dtype, args.resume, &gpus),
        #[cfg(not(feature = "cuda"))]
        (DeviceKind::Cuda, _) => bail!("this mmedpo was built without CUDA; rebuild with `cargo build --release --features cuda`"),
    }
}

fn run_on<B: AutodiffBackend>(
    config: &TrainConfig,
    dtype: Dtype,
    resume: bool,
    devices: &[B::Device],
) -> Result<()> {
    let device = &devices[0];
    let template = Template::from_name(&config.template)?;
    // Hyperparameters are checked before anything is read or loaded (the image settings and the
    // layout, which only the model knows, play no part in the check).
    let unloaded = PairSettings {
        template,
        image_root: config.image_root.clone(),
        aspect: AspectRatio::Pad,
        image_size: 336,
    };
    config.settings(unloaded, Layout::Hf).validate()?;
    let records = load_records(&config.data)?;
    let loaded = mmedpo_lvlm::open::<B>(
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
                .map(mmedpo_core::manifest::path_fingerprint)
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
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} steps  {msg}  [{elapsed} < {eta}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    note!(
        "global batch {} pair(s) per step = {} device(s) × batch_size {} × grad_accum {}",
        config.devices * config.optim.batch_size * config.optim.grad_accum,
        config.devices,
        config.optim.batch_size,
        config.optim.grad_accum
    );
    let summary = train_on_devices(
        loaded.model,
        &loaded.tokenizer,
        &records,
        meta.as_ref(),
        &settings,
        &config.out,
        resume,
        devices,
        &mut |log, total| {
            bar.set_length(total as u64);
            bar.set_position(log.step as u64);
            bar.set_message(format!(
                "loss {:.4}  margin {:+.3}  acc {:.2}",
                log.loss, log.rewards_margins, log.rewards_accuracies
            ));
        },
    )?;
    bar.finish_and_clear();
    let plot = config.out.join("training.png");
    if let Err(e) = crate::plot::plot_training(&summary.logs, &plot) {
        tracing::warn!("no plot: {e:#}");
    }
    let last = summary.logs.last();
    note!(
        "trained {} step(s){} on {} pair(s): final loss {:.4}, reward margin {:+.3}, reward accuracy {:.2}",
        summary.total_steps,
        if summary.resumed_from > 0 { format!(" (resumed at {})", summary.resumed_from) } else { String::new() },
        records.len(),
        last.map_or(f64::NAN, |l| l.loss),
        last.map_or(f64::NAN, |l| l.rewards_margins),
        last.map_or(f64::NAN, |l| l.rewards_accuracies),
    );
    note!("adapter (PEFT): {}", summary.adapter_dir.display());
    note!("log (JSONL):    {}", summary.log_path.display());
    note!("plot:           {}", plot.display());
    note!(
        "config:         {}",
        config.out.join("train_config.toml").display()
    );
    Ok(())
}

/// Arguments of `mmedpo init-model`.
#[derive(Args, Debug)]
pub struct InitModelArgs {
    /// A llava-hf `config.json` (e.g. models/tiny-llava/config.json).
    #[arg(long)]
    config: PathBuf,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output directory (llava-hf layout).
    #[arg(long)]
    out: PathBuf,
    /// tokenizer.json to copy into the output (with its tokenizer_config.json when one is beside
    /// it), so that commands find it there without `--tokenizer`.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
}

/// Runs `mmedpo init-model`: random weights for a LLaVA config, saved as a llava-hf directory.
pub fn init_model(args: InitModelArgs) -> Result<()> {
    let config = LlavaConfig::from_file(&args.config)?;
    type B = mmedpo_core::backend::Cpu;
    let device = Default::default();
    let tokenizer = match &args.tokenizer {
        Some(path) => {
            let tokenizer = mmedpo_llm::Tokenizer::from_file(path)?;
            check_vocab(&tokenizer, config.text.vocab_size, &args.out)?;
            Some(path)
        }
        None => None,
    };
    B::seed(&device, args.seed);
    let model = config.init::<B>(&device);
    save_llava(&model, &config, &args.out)?;
    if let Some(path) = tokenizer {
        let copy = |from: &Path, name: &str| -> Result<()> {
            let to = args.out.join(name);
            std::fs::copy(from, &to)
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
            Ok(())
        };
        copy(path, "tokenizer.json")?;
        let tokenizer_config = path.with_file_name("tokenizer_config.json");
        if tokenizer_config.is_file() {
            copy(&tokenizer_config, "tokenizer_config.json")?;
        }
    }
    note!(
        "random LLaVA ({} text layers, {} image tokens) written to {}{}",
        config.text.num_hidden_layers,
        config.image_tokens(),
        args.out.display(),
        if tokenizer.is_some() {
            " with its tokenizer"
        } else {
            " (no tokenizer: give --tokenizer here or to each command)"
        }
    );
    Ok(())
}
