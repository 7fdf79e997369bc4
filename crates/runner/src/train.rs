//! `mmedpo train` and `mmedpo init-model`.
//!
//! `mmedpo train` is [`mmedpo::stage::train`] with the flags as its plan (each overrides the
//! config file's setting).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use mmedpo::stage::train::{train, TrainPlan};

use crate::assemble::parse_enum;
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
    #[arg(long)]
    device: Option<DeviceKind>,
    /// Data-parallel replicas: CUDA GPUs 0..N−1 with --device cuda, else N CPU threads.
    #[arg(long)]
    devices: Option<usize>,
    /// f32 | bf16.
    #[arg(long)]
    dtype: Option<Dtype>,
}

impl TrainArgs {
    /// The library's plan (a bad `--weight-mode` names the flag).
    pub fn plan(self) -> Result<TrainPlan> {
        Ok(TrainPlan {
            config: self.config,
            model: self.model,
            vision_tower: self.vision_tower,
            tokenizer: self.tokenizer,
            data: self.data,
            image_root: self.image_root,
            out: self.out,
            template: self.template,
            max_steps: self.max_steps,
            epochs: self.epochs,
            lora_r: self.lora_r,
            lora_alpha: self.lora_alpha,
            learning_rate: self.learning_rate,
            beta: self.beta,
            weight_mode: self
                .weight_mode
                .map(|v| parse_enum("weight-mode", &v, "raw, paper or none"))
                .transpose()?,
            seed: self.seed,
            batch_size: self.batch_size,
            grad_accum: self.grad_accum,
            save_steps: self.save_steps,
            checkpointing: self.checkpointing,
            resume: self.resume,
            device: self.device,
            devices: self.devices,
            dtype: self.dtype,
        })
    }
}

/// Runs `mmedpo train`.
pub fn run(args: TrainArgs) -> Result<()> {
    train(&args.plan()?, &crate::observe::Cli::default())?;
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
    let tokenizer = args.tokenizer.as_deref();
    let config = mmedpo::init_model(&args.config, args.seed, &args.out, tokenizer)?;
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
