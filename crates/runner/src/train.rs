//! `mmedpo train` and `mmedpo init-model`.
//!
//! Configuration flows in two stages: the TOML file (unknown keys are an error) with the command
//! line's flags on top → a resolved [`TrainConfig`] with every value set, saved as
//! `OUT/train_config.toml` before anything runs → library calls.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::{AutodiffBackend, Backend};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use mmedpo_dpo::data::{load_records, WeightMode, WeightStats};
use mmedpo_dpo::loss::LossType;
use mmedpo_dpo::optim::AdamW;
use mmedpo_dpo::{train_on_devices, Reference, TrainSettings};
use mmedpo_llm::Template;
use mmedpo_lora::config::TargetModules;
use mmedpo_lora::LoraConfig;
use mmedpo_lvlm::score::{PairSettings, ScoreMeta};
use mmedpo_lvlm::{load_llava_as, save_llava, Layout, LlavaConfig};
use mmedpo_vision::preprocess::AspectRatio;
use serde::{Deserialize, Serialize};

use crate::common::{check_vocab, load_tokenizer};
use crate::{DeviceKind, Dtype};

/// `[lora]` of the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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

/// `[dpo]` of the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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

/// `[optim]` of the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimSection {
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Projector learning rate (trains the projector when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projector_lr: Option<f64>,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Warmup fraction.
    pub warmup_ratio: f64,
    /// Epochs.
    pub epochs: usize,
    /// Optimizer steps (overrides epochs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    #[serde(default)]
    pub activation_checkpointing: bool,
}

/// The whole resolved training configuration (what `OUT/train_config.toml` holds).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// LLaVA model directory.
    pub model: PathBuf,
    /// Separate CLIP tower directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vision_tower: Option<PathBuf>,
    /// tokenizer.json (default MODEL/tokenizer.json).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<PathBuf>,
    /// Preference files.
    pub data: Vec<PathBuf>,
    /// Image folder.
    pub image_root: PathBuf,
    /// Output folder.
    pub out: PathBuf,
    /// Conversation template.
    pub template: String,
    /// cpu | cuda.
    pub device: String,
    /// Data-parallel replicas: CUDA GPUs 0..N−1, or N CPU threads (global batch =
    /// devices × batch_size × grad_accum).
    #[serde(default = "one")]
    pub devices: usize,
    /// f32 | bf16.
    pub dtype: String,
    /// LoRA.
    pub lora: LoraSection,
    /// DPO.
    pub dpo: DpoSection,
    /// Optimizer and schedule.
    pub optim: OptimSection,
}

/// Partial config as read from a file: everything optional, unknown keys refused. Only parsed to
/// reject unknown top-level keys with serde's message; the values are merged as a TOML table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RawConfig {
    model: Option<PathBuf>,
    vision_tower: Option<PathBuf>,
    tokenizer: Option<PathBuf>,
    data: Option<Vec<PathBuf>>,
    image_root: Option<PathBuf>,
    out: Option<PathBuf>,
    template: Option<String>,
    device: Option<String>,
    devices: Option<usize>,
    dtype: Option<String>,
    lora: Option<toml::Table>,
    dpo: Option<toml::Table>,
    optim: Option<toml::Table>,
}

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

fn one() -> usize {
    1
}

fn defaults() -> toml::Table {
    toml::toml! {
        template = "vicuna_v1"
        device = "cpu"
        devices = 1
        dtype = "f32"
        [lora]
        r = 128
        alpha = 256.0
        dropout = 0.0
        target_modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        [dpo]
        beta = 0.1
        loss = "sigmoid"
        weight_mode = "raw"
        weight_stats = "global"
        reference = "adapter-off"
        [optim]
        learning_rate = 1e-7
        weight_decay = 0.0
        warmup_ratio = 0.03
        epochs = 3
        batch_size = 1
        grad_accum = 4
        max_grad_norm = 1.0
        seed = 42
        save_steps = 0
        activation_checkpointing = false
    }
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Paths in a config file are relative to the file's folder (flags stay relative to the current
/// directory): `model`, `vision_tower`, `tokenizer`, `data`, `image_root`, `out` and a
/// `[dpo] reference` file.
fn relative_to_file(table: &mut toml::Table, file: &Path) {
    let folder = file.parent().unwrap_or(Path::new(""));
    let rebase = |v: &mut toml::Value| {
        if let toml::Value::String(s) = v {
            if Path::new(s.as_str()).is_relative() {
                *s = folder.join(s.as_str()).display().to_string();
            }
        }
    };
    for key in ["model", "vision_tower", "tokenizer", "image_root", "out"] {
        if let Some(v) = table.get_mut(key) {
            rebase(v);
        }
    }
    if let Some(toml::Value::Array(files)) = table.get_mut("data") {
        files.iter_mut().for_each(rebase);
    }
    if let Some(toml::Value::Table(dpo)) = table.get_mut("dpo") {
        if let Some(v) = dpo
            .get_mut("reference")
            .filter(|v| v.as_str() != Some("adapter-off"))
        {
            rebase(v);
        }
    }
}

/// Resolves file + flags into a full config; unknown keys and missing required values are errors.
pub fn resolve(args: &TrainArgs) -> Result<TrainConfig> {
    let mut table = defaults();
    if let Some(path) = &args.config {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut raw: toml::Table =
            toml::from_str(&text).with_context(|| format!("{}: not valid TOML", path.display()))?;
        // Unknown keys are errors (checked on the raw file, with its own sections).
        let _: RawConfig =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        for (section, keys) in [
            ("lora", &["r", "alpha", "dropout", "target_modules"][..]),
            (
                "dpo",
                &["beta", "loss", "weight_mode", "weight_stats", "reference"][..],
            ),
            (
                "optim",
                &[
                    "learning_rate",
                    "projector_lr",
                    "weight_decay",
                    "warmup_ratio",
                    "epochs",
                    "max_steps",
                    "batch_size",
                    "grad_accum",
                    "max_grad_norm",
                    "seed",
                    "save_steps",
                    "activation_checkpointing",
                ][..],
            ),
        ] {
            if let Some(toml::Value::Table(t)) = raw.get(section) {
                if let Some(bad) = t.keys().find(|k| !keys.contains(&k.as_str())) {
                    bail!(
                        "{}: unknown key `{bad}` in [{section}] (known: {})",
                        path.display(),
                        keys.join(", ")
                    );
                }
            }
        }
        relative_to_file(&mut raw, path);
        merge(&mut table, raw);
    }
    let mut set = |path: &[&str], v: toml::Value| {
        let mut t = &mut table;
        for p in &path[..path.len() - 1] {
            t = t
                .entry(p.to_string())
                .or_insert_with(|| toml::Value::Table(Default::default()))
                .as_table_mut()
                .expect("section");
        }
        t.insert(path[path.len() - 1].to_string(), v);
    };
    let path_value = |p: &Path| toml::Value::String(p.display().to_string());
    if let Some(v) = &args.model {
        set(&["model"], path_value(v));
    }
    if let Some(v) = &args.vision_tower {
        set(&["vision_tower"], path_value(v));
    }
    if let Some(v) = &args.tokenizer {
        set(&["tokenizer"], path_value(v));
    }
    if !args.data.is_empty() {
        set(
            &["data"],
            toml::Value::Array(args.data.iter().map(|p| path_value(p)).collect()),
        );
    }
    if let Some(v) = &args.image_root {
        set(&["image_root"], path_value(v));
    }
    if let Some(v) = &args.out {
        set(&["out"], path_value(v));
    }
    if let Some(v) = &args.template {
        set(&["template"], toml::Value::String(v.clone()));
    }
    if let Some(v) = args.max_steps {
        set(&["optim", "max_steps"], toml::Value::Integer(v as i64));
    }
    if let Some(v) = args.epochs {
        set(&["optim", "epochs"], toml::Value::Integer(v as i64));
    }
    if let Some(v) = args.lora_r {
        set(&["lora", "r"], toml::Value::Integer(v as i64));
    }
    if let Some(v) = args.lora_alpha {
        set(&["lora", "alpha"], toml::Value::Float(v));
    }
    if let Some(v) = args.learning_rate {
        set(&["optim", "learning_rate"], toml::Value::Float(v));
    }
    if let Some(v) = args.beta {
        set(&["dpo", "beta"], toml::Value::Float(v));
    }
    if let Some(v) = &args.weight_mode {
        set(&["dpo", "weight_mode"], toml::Value::String(v.clone()));
    }
    if let Some(v) = args.seed {
        set(&["optim", "seed"], toml::Value::Integer(v as i64));
    }
    if let Some(v) = args.batch_size {
        set(&["optim", "batch_size"], toml::Value::Integer(v as i64));
    }
    if let Some(v) = args.grad_accum {
        set(&["optim", "grad_accum"], toml::Value::Integer(v as i64));
    }
    if let Some(v) = args.save_steps {
        set(&["optim", "save_steps"], toml::Value::Integer(v as i64));
    }
    if args.checkpointing {
        set(
            &["optim", "activation_checkpointing"],
            toml::Value::Boolean(true),
        );
    }
    if let Some(v) = args.device {
        set(
            &["device"],
            toml::Value::String(format!("{v:?}").to_lowercase()),
        );
    }
    if let Some(v) = args.devices {
        set(&["devices"], toml::Value::Integer(v as i64));
    }
    if let Some(v) = args.dtype {
        set(
            &["dtype"],
            toml::Value::String(format!("{v:?}").to_lowercase()),
        );
    }
    for key in ["model", "data", "image_root", "out"] {
        if !table.contains_key(key) {
            bail!(
                "no `{key}`: give --{} or set it in --config",
                key.replace('_', "-")
            );
        }
    }
    let text = toml::to_string(&table)?;
    toml::from_str(&text).map_err(|e| {
        let file = args
            .config
            .as_deref()
            .and_then(|p| Some((p, std::fs::read_to_string(p).ok()?)));
        anyhow::anyhow!(
            "{}",
            locate(&text, &e, file.as_ref().map(|(p, t)| (*p, t.as_str())))
        )
    })
}

/// Where a value error of the resolved document came from: the config file's line (`FILE:LINE`)
/// when the key is set there, else the flag that set it.
fn locate(resolved: &str, err: &toml::de::Error, file: Option<(&Path, &str)>) -> String {
    let at = err.span().map_or(0, |s| s.start).min(resolved.len());
    let before = &resolved[..at];
    let line = resolved[before.rfind('\n').map_or(0, |i| i + 1)..]
        .lines()
        .next()
        .unwrap_or("");
    let key = line.split('=').next().unwrap_or("").trim().to_string();
    let section = before
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix('[').and_then(|r| r.strip_suffix(']')))
        .map(|s| s.trim().to_string());
    let name = match &section {
        Some(sec) => format!("[{sec}] {key}"),
        None => key.clone(),
    };
    if let Some((path, text)) = file {
        let mut current: Option<String> = None;
        for (n, l) in text.lines().enumerate() {
            let t = l.trim();
            if let Some(sec) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                current = Some(sec.trim().to_string());
            } else if current == section && t.split('=').next().map(str::trim) == Some(key.as_str())
            {
                // The file's value, unless a flag replaced it (then the flag is at fault).
                let value = |l: &str| -> String {
                    let v = l.split_once('=').map_or("", |(_, v)| v);
                    v.split(" #").next().unwrap_or(v).trim().to_string()
                };
                if value(t) == value(line) {
                    return format!("{}:{}: {name}: {}", path.display(), n + 1, err.message());
                }
            }
        }
    }
    format!(
        "invalid training configuration: {name} (from a flag): {}",
        err.message()
    )
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
    let manifest = train_manifest(&config)?;
    let manifest_path = config.out.join("manifest.json");
    if args.resume && manifest_path.is_file() {
        manifest.check(&manifest_path, &config.out, "drop --resume")?;
    } else {
        manifest.write(&manifest_path)?;
    }
    let resolved = config.out.join("train_config.toml");
    std::fs::write(&resolved, toml::to_string_pretty(&config)?)
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

/// What determines a training run's checkpoints: the inputs' fingerprints and every setting that
/// changes the numbers (not `save_steps`, `max_steps` — checked by the trainer — or checkpointing).
fn train_manifest(config: &TrainConfig) -> Result<mmedpo_core::manifest::Manifest> {
    let mut m = mmedpo_core::manifest::Manifest::new("train")
        .dir("model", &config.model)?
        .opt_dir("vision_tower", config.vision_tower.as_deref())?
        .opt_dir("tokenizer", config.tokenizer.as_deref())?
        .value("image_root", config.image_root.display())
        .value("template", &config.template)
        .value("dtype", &config.dtype)
        .value("devices", config.devices);
    for (i, d) in config.data.iter().enumerate() {
        m = m.file(&format!("data[{i}]"), d)?;
    }
    let table = toml::Table::try_from(config)?;
    for section in ["lora", "dpo", "optim"] {
        if let Some(toml::Value::Table(t)) = table.get(section) {
            for (k, v) in t {
                if !["save_steps", "max_steps", "activation_checkpointing"].contains(&k.as_str()) {
                    m = m.value(&format!("{section}.{k}"), v);
                }
            }
        }
    }
    Ok(m)
}

/// The library's settings of a resolved config; the image settings and the layout come from the
/// loaded model.
fn train_settings(
    config: &TrainConfig,
    template: Template,
    aspect: AspectRatio,
    image_size: u32,
    layout: Layout,
) -> TrainSettings {
    let lora = LoraConfig {
        lora_dropout: config.lora.dropout,
        target_modules: config.lora.target_modules.clone(),
        base_model_name_or_path: Some(config.model.display().to_string()),
        ..LoraConfig::new(config.lora.r, config.lora.alpha)
    };
    let reference = match config.dpo.reference.as_str() {
        "adapter-off" => Reference::AdapterOff,
        path => Reference::File(PathBuf::from(path)),
    };
    TrainSettings {
        lora,
        beta: config.dpo.beta,
        loss_type: config.dpo.loss,
        weight_mode: config.dpo.weight_mode,
        weight_stats: config.dpo.weight_stats,
        learning_rate: config.optim.learning_rate,
        projector_lr: config.optim.projector_lr,
        adamw: AdamW {
            weight_decay: config.optim.weight_decay,
            ..AdamW::default()
        },
        warmup_ratio: config.optim.warmup_ratio,
        epochs: config.optim.epochs,
        max_steps: config.optim.max_steps,
        batch_size: config.optim.batch_size,
        grad_accum: config.optim.grad_accum,
        max_grad_norm: config.optim.max_grad_norm,
        seed: config.optim.seed,
        save_steps: config.optim.save_steps,
        pairs: PairSettings {
            template,
            image_root: config.image_root.clone(),
            aspect,
            image_size,
        },
        reference,
        layout,
        stop_after: None,
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
    train_settings(config, template, AspectRatio::Pad, 336, Layout::Hf).validate()?;
    let records = load_records(&config.data)?;
    let tokenizer = load_tokenizer(&config.model, config.tokenizer.as_deref())?;
    let loaded = load_llava_as::<B>(
        &config.model,
        config.vision_tower.as_deref(),
        device,
        dtype.burn(),
    )?;
    check_vocab(&tokenizer, loaded.config.text.vocab_size, &config.model)?;
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
    let image_size = loaded.config.vision.as_ref().map_or(336, |v| v.image_size) as u32;
    let settings = train_settings(
        config,
        template,
        loaded.config.aspect,
        image_size,
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
        &tokenizer,
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
