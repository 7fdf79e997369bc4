//! Visual preference pairs (paper §3.1, Table 5) through
//! [`make_visual_pairs`](crate::medklip::stage::make_visual_pairs): MedKLIP's lesion heatmap,
//! noise in the lesion region, the confidence as the weight.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::medklip::noise::DEFAULT_STEP;
use crate::medklip::stage::{make_visual_pairs, VisualReport, VisualSettings};
use crate::medklip::NoiseMode;
use crate::{with_backend, DeviceKind, Event, Observer, Result};

pub use crate::medklip::stage::OUTPUT_FILE;

/// What to make.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VisualPlan {
    /// Preference file (MMedPO format) whose items (image, question, ground truth) become pairs.
    pub data: PathBuf,
    /// Folder the items' `image` paths are relative to.
    pub image_root: PathBuf,
    /// Output folder: `visual_pairs.json`, `images/`, `overlays/`, `progress.jsonl`.
    pub out: PathBuf,
    /// speckle-faithful (the released code), speckle-clamped, diffusion (paper Eq. 2) or global.
    pub noise: String,
    /// Diffusion step k for `diffusion` and `global` (0..=999).
    pub noise_step: usize,
    /// Base seed of the noise.
    pub seed: u64,
    /// MedKLIP observation whose attention map and confidence are used.
    pub query: String,
    /// Also write heatmap-over-image PNGs to OUT/overlays/.
    pub overlays: bool,
    /// Images per MedKLIP forward pass.
    pub batch_size: usize,
    /// MedKLIP weights (.bpk) for the compiled graph (default: the built-in ones).
    pub medklip_weights: Option<PathBuf>,
    /// Where MedKLIP runs.
    pub device: DeviceKind,
    /// Start the progress over when it comes from other inputs (instead of refusing).
    pub overwrite: bool,
}

impl Default for VisualPlan {
    fn default() -> Self {
        Self {
            data: PathBuf::new(),
            image_root: PathBuf::new(),
            out: PathBuf::new(),
            noise: "speckle-faithful".into(),
            noise_step: DEFAULT_STEP,
            seed: 42,
            query: "disease".into(),
            overlays: false,
            batch_size: 16,
            medklip_weights: None,
            device: DeviceKind::Cpu,
            overwrite: false,
        }
    }
}

impl VisualPlan {
    /// The library's settings (the noise mode parsed).
    pub fn settings(&self) -> Result<VisualSettings> {
        Ok(VisualSettings {
            noise: NoiseMode::parse(&self.noise, self.noise_step)?,
            noise_step: self.noise_step,
            seed: self.seed,
            query: self.query.clone(),
            overlays: self.overlays,
            batch_size: self.batch_size,
            medklip_weights: self.medklip_weights.clone(),
            overwrite: self.overwrite,
        })
    }
}

/// Makes (or resumes) the visual pairs of `plan.data` in `plan.out`.
pub fn make(plan: &VisualPlan, observer: &dyn Observer) -> Result<VisualReport> {
    let settings = plan.settings()?;
    let report = with_backend!(plan.device, |B, device| make_visual_pairs::<B>(
        &plan.data,
        &plan.image_root,
        &plan.out,
        &settings,
        &device,
        &mut |done, total| observer.progress("items", done, total, ""),
    ));
    observer.finish();
    let report = report?;
    observer.event(&Event::Visual(&report));
    Ok(report)
}
