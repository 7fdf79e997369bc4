//! `mmedpo visual-pairs`: [`mmedpo::stage::visual`]'s arguments.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use mmedpo::stage::visual::{make, VisualPlan};

use crate::DeviceKind;

/// Arguments of `mmedpo visual-pairs`.
#[derive(Args, Debug)]
pub struct VisualArgs {
    /// Preference file (MMedPO format) whose items (image, question, ground truth) become visual pairs.
    #[arg(long)]
    data: PathBuf,
    /// Folder the items' `image` paths are relative to.
    #[arg(long)]
    image_root: PathBuf,
    /// Output folder: `visual_pairs.json`, `images/`, `overlays/`, `progress.jsonl`.
    #[arg(long)]
    out: PathBuf,
    /// speckle-faithful (the released code), speckle-clamped, diffusion (paper Eq. 2) or global.
    #[arg(long, default_value_t = VisualPlan::default().noise)]
    noise: String,
    /// Diffusion step k for `diffusion` and `global` (0..=999).
    #[arg(long, default_value_t = VisualPlan::default().noise_step)]
    noise_step: usize,
    /// Base seed of the noise.
    #[arg(long, default_value_t = VisualPlan::default().seed)]
    seed: u64,
    /// MedKLIP observation whose attention map and confidence are used.
    #[arg(long, default_value_t = VisualPlan::default().query)]
    query: String,
    /// Also write heatmap-over-image PNGs to OUT/overlays/.
    #[arg(long)]
    overlays: bool,
    /// Images per MedKLIP forward pass.
    #[arg(long, default_value_t = VisualPlan::default().batch_size)]
    batch_size: usize,
    /// MedKLIP weights (.bpk) for the compiled graph (default: embedded tiny model, or the build's).
    #[arg(long)]
    medklip_weights: Option<PathBuf>,
    /// Where MedKLIP runs (cpu | cuda).
    #[arg(long, default_value_t = DeviceKind::Cpu)]
    device: DeviceKind,
    /// Start the progress over when it comes from other inputs (instead of refusing).
    #[arg(long)]
    overwrite: bool,
}

/// Runs `mmedpo visual-pairs`.
pub fn run(args: VisualArgs) -> Result<()> {
    let plan = VisualPlan {
        data: args.data,
        image_root: args.image_root,
        out: args.out,
        noise: args.noise,
        noise_step: args.noise_step,
        seed: args.seed,
        query: args.query,
        overlays: args.overlays,
        batch_size: args.batch_size,
        medklip_weights: args.medklip_weights,
        device: args.device,
        overwrite: args.overwrite,
    };
    make(&plan, &crate::observe::Cli::default())?;
    Ok(())
}
