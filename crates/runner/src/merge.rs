//! `mmedpo merge`: a LoRA adapter merged into its base LLaVA, written in the base's layout
//! (library: `mmedpo::lvlm::merge`).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use mmedpo::core::checkpoint::{Dtype as StoredDtype, DEFAULT_MAX_SHARD_BYTES};
use mmedpo::lvlm::merge::{merge_adapter, parse_shard_size, MergeOptions};

use crate::{with_backend, DeviceKind};

/// Arguments of `mmedpo merge`.
#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The base LLaVA model directory (original LLaVA-Med or llava-hf layout).
    #[arg(long)]
    model: PathBuf,
    /// The PEFT adapter directory (e.g. `mmedpo train`'s OUT/adapter).
    #[arg(long)]
    adapter: PathBuf,
    /// Output directory (must not exist).
    #[arg(long)]
    out: PathBuf,
    /// tokenizer.json to put beside the merged weights when the model directory has none
    /// (LLaVA-Med ships only tokenizer.model).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Largest weight file before sharding, as transformers' max_shard_size: bytes or with a unit
    /// (KB, MB, GB decimal; KiB, MiB, GiB binary).
    #[arg(long, default_value_t = DEFAULT_MAX_SHARD_BYTES.to_string())]
    max_shard_size: String,
    /// dtype of the written tensors: each tensor's own (`keep`), or all f32 / bf16 / f16. A bf16 base
    /// kept in bf16 rounds each merged weight once; f32 keeps the merge exact.
    #[arg(long, value_enum, default_value_t = OutDtype::Keep)]
    dtype: OutDtype,
    /// Where the merge's matrix products run.
    #[arg(long, default_value_t = DeviceKind::Cpu)]
    device: DeviceKind,
}

/// dtype of the merged model's tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OutDtype {
    /// Each tensor's own dtype.
    Keep,
    /// 32-bit floats.
    F32,
    /// bfloat16.
    Bf16,
    /// float16.
    F16,
}

/// Runs `mmedpo merge`.
pub fn run(args: MergeArgs) -> Result<()> {
    let max_shard = parse_shard_size(&args.max_shard_size)
        .map_err(|e| anyhow::anyhow!("--max-shard-size {e}"))?;
    let tokenizer_json = args.model.join("tokenizer.json");
    if let Some(t) = &args.tokenizer {
        if tokenizer_json.is_file() {
            bail!(
                "{} has its own tokenizer.json; --tokenizer {} would replace it",
                args.model.display(),
                t.display()
            );
        }
        mmedpo::llm::Tokenizer::from_file(t)?;
    }
    let options = MergeOptions {
        max_shard_bytes: max_shard,
        dtype: match args.dtype {
            OutDtype::Keep => None,
            OutDtype::F32 => Some(StoredDtype::F32),
            OutDtype::Bf16 => Some(StoredDtype::BF16),
            OutDtype::F16 => Some(StoredDtype::F16),
        },
    };
    let report = with_backend!(args.device, |B, device| merge_adapter::<B>(
        &args.model,
        &args.adapter,
        &args.out,
        options,
        &device
    ))?;
    if let Some(t) = &args.tokenizer {
        let to = args.out.join("tokenizer.json");
        std::fs::copy(t, &to)
            .with_context(|| format!("copying {} to {}", t.display(), to.display()))?;
    }
    note!(
        "merged {} adapted weight(s) into {} ({:?} layout, {} tensor(s) copied unchanged, {:.1} MB in {} file(s)); also copied: {}",
        report.merged,
        args.out.display(),
        report.layout,
        report.copied,
        report.total_bytes as f64 / 1e6,
        report.files.len(),
        if report.other_files.is_empty() { "nothing".to_string() } else { report.other_files.join(", ") }
    );
    Ok(())
}
