//! `mmedpo bench`: [`mmedpo::bench`]'s arguments; the figures printed (a line for people, a
//! JSON line for scripts). `cargo xtask bench` calls it.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use mmedpo::bench::{train::TrainBench, BenchBackend, Measurement};

use crate::{DeviceKind, Dtype};

/// Arguments of `mmedpo bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand, Debug)]
enum What {
    /// Seconds, tokens/s, TFLOP/s and peak memory of `mmedpo train`'s step on a random LLaVA of
    /// any config (no weights on disk), with synthetic pairs.
    Train(TrainArgs),
    /// Prefill and decode tokens/s of a Mistral/Llama with random weights: a ~100M-parameter one,
    /// or the text model of `--config`.
    Llm {
        /// A `config.json` (an LLM's, or a llava-hf one's text model), e.g.
        /// models/llava-med-7b/config.json.
        #[arg(long)]
        config: Option<std::path::PathBuf>,
        /// Prompt tokens per sequence.
        #[arg(long, default_value_t = 128)]
        prompt_len: usize,
        /// New tokens per sequence.
        #[arg(long, default_value_t = 32)]
        new_tokens: usize,
        /// Sequences per batch.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Timed repetitions (after one warm-up).
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// flex | ndarray | cuda | cuda-bf16 | flex-bf16 (ndarray and cuda need those features).
        #[arg(long, default_value = "flex")]
        backend: BenchBackend,
    },
    /// Images/s of the visual-pair stage (MedKLIP as compiled, heatmap, mask, noise, PNG) on a
    /// square gray chest X-ray.
    Visual {
        /// Side of the input images in pixels.
        #[arg(long, default_value_t = 512)]
        size: u32,
        /// Images timed (after one warm-up batch).
        #[arg(long, default_value_t = 32)]
        images: usize,
        /// Images per MedKLIP forward.
        #[arg(long, default_value_t = 16)]
        batch: usize,
        /// Noise mode.
        #[arg(long, default_value = "speckle-faithful")]
        noise: String,
        /// MedKLIP weights for a real build (default: the compiled-in or built weights).
        #[arg(long)]
        medklip_weights: Option<std::path::PathBuf>,
        /// flex | ndarray | cuda | cuda-bf16 | flex-bf16 (ndarray and cuda need those features).
        #[arg(long, default_value = "flex")]
        backend: BenchBackend,
    },
    /// Square f32 matmul GFLOP/s.
    Matmul {
        /// Matrix side.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Timed repetitions.
        #[arg(long, default_value_t = 20)]
        reps: usize,
        /// flex | ndarray | cuda | cuda-bf16 | flex-bf16 (ndarray and cuda need those features).
        #[arg(long, default_value = "flex")]
        backend: BenchBackend,
    },
}

/// Arguments of `mmedpo bench train`: the training step of `mmedpo train` on a random LLaVA.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// A llava-hf `config.json` (e.g. models/llava-med-7b/config.json, models/bench-mid/config.json).
    #[arg(long)]
    config: PathBuf,
    /// cpu | cuda.
    #[arg(long, default_value_t = DeviceKind::Cpu)]
    device: DeviceKind,
    /// Compute dtype of the frozen weights (LoRA stays f32).
    #[arg(long, default_value_t = Dtype::F32)]
    dtype: Dtype,
    /// Tokens per sequence after image expansion (LLaVA-Med pairs: about 776).
    #[arg(long, default_value_t = TrainBench::default().seq_len)]
    seq_len: usize,
    /// Answer tokens per sequence (the labelled ones).
    #[arg(long, default_value_t = TrainBench::default().answer_len)]
    answer_len: usize,
    /// Timed steps (after the first, which is reported on its own).
    #[arg(long, default_value_t = TrainBench::default().steps)]
    steps: usize,
    /// Pairs per step.
    #[arg(long, default_value_t = TrainBench::default().batch)]
    batch: usize,
    /// LoRA rank (alpha = 2r, as the paper's 128/256).
    #[arg(long, default_value_t = TrainBench::default().lora_r)]
    lora_r: usize,
    /// Recompute memory-bound activations in the backward pass (Burn's BalancedCheckpointing).
    #[arg(long)]
    checkpointing: bool,
    /// Data-parallel replicas (CUDA GPUs 0..N−1, or N CPU threads), each with `--batch` pairs per
    /// step, gradients summed by one all-reduce per step as in `mmedpo train --devices`.
    #[arg(long, default_value_t = TrainBench::default().devices)]
    devices: usize,
    /// Also write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Runs `mmedpo bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    let m: Measurement = match args.what {
        What::Train(a) => {
            let bench = TrainBench {
                config: a.config,
                device: a.device,
                dtype: a.dtype,
                seq_len: a.seq_len,
                answer_len: a.answer_len,
                steps: a.steps,
                batch: a.batch,
                lora_r: a.lora_r,
                checkpointing: a.checkpointing,
                devices: a.devices,
            };
            let m = mmedpo::bench::train::train(&bench)?;
            if let Some(path) = &a.json {
                std::fs::write(path, serde_json::to_string_pretty(&m.json)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            m
        }
        What::Llm {
            config,
            prompt_len,
            new_tokens,
            batch,
            reps,
            backend,
        } => mmedpo::bench::llm(
            config.as_deref(),
            prompt_len,
            new_tokens,
            batch,
            reps,
            backend,
        )?,
        What::Visual {
            size,
            images,
            batch,
            noise,
            medklip_weights,
            backend,
        } => mmedpo::bench::visual(
            std::path::Path::new("data/images/chest-xray-pa-nodules.png"),
            size,
            images,
            batch,
            &noise,
            medklip_weights.as_deref(),
            backend,
        )
        .context("(run from the repository root)")?,
        What::Matmul {
            size,
            reps,
            backend,
        } => mmedpo::bench::matmul(size, reps, backend)?,
    };
    for line in &m.lines {
        say!("{line}");
    }
    say!("{}", m.json);
    Ok(())
}
