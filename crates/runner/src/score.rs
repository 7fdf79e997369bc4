//! `mmedpo score`: [`mmedpo::stage::score`]'s arguments (log-probabilities of preference pairs;
//! the reference precompute for training).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use mmedpo::stage::score::{score, ScorePlan};

use crate::{DeviceKind, Dtype};

/// Arguments of `mmedpo score`.
#[derive(Args, Debug)]
pub struct ScoreArgs {
    /// LLaVA model directory (original LLaVA-Med or llava-hf layout).
    #[arg(long)]
    model: PathBuf,
    /// CLIP tower directory (default: the checkpoint's own tower, or `mm_vision_tower` as a local path).
    #[arg(long)]
    vision_tower: Option<PathBuf>,
    /// tokenizer.json (default: MODEL/tokenizer.json).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// A PEFT LoRA adapter directory (e.g. `mmedpo train`'s OUT/adapter) applied to the LLM.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Preference file(s) in the MMedPO format.
    #[arg(long, required = true)]
    data: Vec<PathBuf>,
    /// Folder the items' image paths are relative to.
    #[arg(long)]
    image_root: PathBuf,
    /// Output JSONL.
    #[arg(long)]
    out: PathBuf,
    /// Conversation template.
    #[arg(long, default_value_t = ScorePlan::default().template)]
    template: String,
    /// Pairs per forward pass.
    #[arg(long, default_value_t = ScorePlan::default().batch_size)]
    batch_size: usize,
    /// Record unusable items in OUT.rejects.jsonl and go on, instead of stopping at the first.
    #[arg(long)]
    skip_bad: bool,
    /// Backend (cpu | cuda).
    #[arg(long, default_value_t = DeviceKind::Cpu)]
    device: DeviceKind,
    /// Float type (f32 | bf16).
    #[arg(long, default_value_t = Dtype::F32)]
    dtype: Dtype,
}

/// Runs `mmedpo score`.
pub fn run(args: ScoreArgs) -> Result<()> {
    let plan = ScorePlan {
        model: args.model,
        vision_tower: args.vision_tower,
        tokenizer: args.tokenizer,
        adapter: args.adapter,
        data: args.data,
        image_root: args.image_root,
        out: args.out,
        template: args.template,
        batch_size: args.batch_size,
        skip_bad: args.skip_bad,
        device: args.device,
        dtype: args.dtype,
    };
    let r = score(&plan, &crate::observe::Cli::default())?;
    if let Some((n, path)) = &r.rejects {
        note!("{n} item(s) skipped; see {}", path.display());
    }
    note!(
        "scored {} pair(s) into {} ({} in all)",
        r.scored,
        plan.out.display(),
        r.total
    );
    Ok(())
}
