//! `mmedpo visual-pairs`: MMedPO's visual preference pairs (paper §3.1, Table 5) through
//! [`mmedpo_medklip::stage::make_visual_pairs`]: arguments, a progress bar and the report.

use std::path::PathBuf;

use anyhow::Result;
use burn::tensor::backend::Backend;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use mmedpo_medklip::noise::DEFAULT_STEP;
use mmedpo_medklip::stage::{make_visual_pairs, VisualSettings};
use mmedpo_medklip::NoiseMode;

use crate::common::Outcome;
use crate::{with_backend, DeviceKind};

pub use mmedpo_medklip::stage::OUTPUT_FILE;

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
    #[arg(long, default_value = "speckle-faithful")]
    noise: String,
    /// Diffusion step k for `diffusion` and `global` (0..=999).
    #[arg(long, default_value_t = DEFAULT_STEP)]
    noise_step: usize,
    /// Base seed of the noise.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// MedKLIP observation whose attention map and confidence are used.
    #[arg(long, default_value = "disease")]
    query: String,
    /// Also write heatmap-over-image PNGs to OUT/overlays/.
    #[arg(long)]
    overlays: bool,
    /// Images per MedKLIP forward pass.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// MedKLIP weights (.bpk) for the compiled graph (default: embedded tiny model, or the build's).
    #[arg(long)]
    medklip_weights: Option<PathBuf>,
    /// Where MedKLIP runs.
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    device: DeviceKind,
    /// Start the progress over when it comes from other inputs (instead of refusing).
    #[arg(long)]
    overwrite: bool,
}

/// Runs `mmedpo visual-pairs`.
pub fn run(args: VisualArgs) -> Result<Outcome> {
    with_backend!(args.device, |B, device| run_on::<B>(&args, &device))
}

fn run_on<B: Backend>(args: &VisualArgs, device: &B::Device) -> Result<Outcome> {
    let settings = VisualSettings {
        noise: NoiseMode::parse(&args.noise, args.noise_step)?,
        noise_step: args.noise_step,
        seed: args.seed,
        query: args.query.clone(),
        overlays: args.overlays,
        batch_size: args.batch_size,
        medklip_weights: args.medklip_weights.clone(),
        overwrite: args.overwrite,
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} items {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let report = make_visual_pairs::<B>(
        &args.data,
        &args.image_root,
        &args.out,
        &settings,
        device,
        &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    );
    bar.finish_and_clear();
    let r = report?;
    note!(
        "{} visual pairs in {} ({} items, {} unreadable); this run: {} distinct images and \
         {} noised images in {:.1} s ({:.1} pairs/s); confidence mean {:.3}, noised area mean {:.1}%",
        r.pairs,
        r.output.display(),
        r.items,
        r.unreadable.len(),
        r.images_done,
        r.items_done,
        r.seconds,
        r.items_done as f64 / r.seconds.max(1e-9),
        r.mean_confidence,
        100.0 * r.mean_coverage,
    );
    if !r.unreadable.is_empty() {
        note!("unreadable images (items left out; fix them and run again to add them):");
        for u in &r.unreadable {
            note!("  item {}: {}: {}", u.id, u.path.display(), u.message);
        }
    }
    Ok(Outcome {
        failed: r.unreadable.len(),
    })
}
