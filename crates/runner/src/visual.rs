//! `mmedpo visual-pairs`: MMedPO's visual preference pairs (paper §3.1, Table 5).
//!
//! For every input item: MedKLIP reads its image (each distinct image once, in batches), the lesion
//! mask comes from the "disease" attention map, and the rejected image is the original with seeded
//! noise in the mask. The item becomes a pair with the clean image as `image`, the noised PNG as
//! `rejected_image`, the ground-truth answer in both conversations and `weighted_score` = MedKLIP's
//! confidence. Noise seeds derive from `--seed` and the item id, so order, batching and restarts do
//! not change a pixel.
//!
//! Resumable: PNGs are written whole (temp file + rename), then one line per item is appended to
//! `OUT/progress.jsonl`; a restart skips the items listed there. The preference file is written at
//! the end, in input order, so an interrupted-and-resumed run ends with the same files as one
//! uninterrupted run. Unreadable images are reported by item id and path; the run goes on.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use clap::Args;
use image::DynamicImage;
use indicatif::{ProgressBar, ProgressStyle};
use mmedpo_core::record::{fingerprint_u64, read_items, PreferenceRecord};
use mmedpo_medklip::noise::{to_noise_input, DEFAULT_STEP};
use mmedpo_medklip::overlay::overlay;
use mmedpo_medklip::{add_noise, lesion_map, observation_index, Medklip, NoiseMode};

use crate::{with_backend, DeviceKind};
use mmedpo_core::journal::{write_atomic_with, write_json, Journal};

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

/// The preference file written at the top of `--out`.
pub const OUTPUT_FILE: &str = "visual_pairs.json";

/// A visual pair's id is its item's id followed by this.
pub const VISUAL_ID_SUFFIX: &str = "-visual";

/// A file-name-safe form of an item id (a hash suffix keeps distinct ids distinct).
fn file_stem(id: &str) -> String {
    let safe: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe == id && !safe.starts_with('.') {
        safe
    } else {
        format!("{safe}-{:08x}", fingerprint_u64([id.as_bytes()]) as u32)
    }
}

fn item_seed(seed: u64, id: &str) -> u64 {
    fingerprint_u64([format!("{seed}\u{0}{id}").as_bytes()])
}

/// How `rejected_image` is written: relative to the image root when the output is inside it,
/// else absolute.
fn rejected_path(root: &Path, png: &Path) -> String {
    let (Ok(root), Ok(png)) = (root.canonicalize(), png.canonicalize()) else {
        return png.display().to_string();
    };
    match png.strip_prefix(&root) {
        Ok(rel) => rel.display().to_string(),
        Err(_) => png.display().to_string(),
    }
}

/// Runs `mmedpo visual-pairs`.
pub fn run(args: VisualArgs) -> Result<()> {
    with_backend!(args.device, |B, device| run_on::<B>(&args, &device))
}

fn run_on<B: Backend>(args: &VisualArgs, device: &B::Device) -> Result<()> {
    let mode = NoiseMode::parse(&args.noise, args.noise_step)?;
    let query = observation_index(&args.query)?;
    let records = read_items(&args.data)?;
    let mut seen = HashMap::new();
    for r in &records {
        if let Some(prev) = seen.insert(r.id.to_string(), &r.image) {
            bail!(
                "{}: item id {} appears twice (images {prev} and {})",
                args.data.display(),
                r.id,
                r.image
            );
        }
    }
    let images_dir = args.out.join("images");
    let overlays_dir = args.out.join("overlays");
    std::fs::create_dir_all(&images_dir)
        .with_context(|| format!("creating {}", images_dir.display()))?;
    let _lock = mmedpo_core::manifest::OutLock::acquire(&args.out)?;
    if args.overlays {
        std::fs::create_dir_all(&overlays_dir)
            .with_context(|| format!("creating {}", overlays_dir.display()))?;
    }
    // A kill can leave a half-written temp file; it is redone from scratch.
    for dir in [&images_dir, &overlays_dir] {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if mmedpo_core::journal::is_partial(&e.file_name().to_string_lossy()) {
                std::fs::remove_file(e.path())
                    .with_context(|| format!("removing {}", e.path().display()))?;
            }
        }
    }
    let progress_path = args.out.join("progress.jsonl");
    // What changes pixels or weights must match the run being resumed (as the other journals).
    let manifest = mmedpo_core::manifest::Manifest::new("visual-pairs")
        .file("data", &args.data)?
        .value("image_root", args.image_root.display())
        .value("noise", mode.name())
        .value("noise_step", args.noise_step)
        .value("seed", args.seed)
        .value("query", &args.query)
        .value("medklip", mmedpo_medklip::model::FINGERPRINT);
    let manifest = match &args.medklip_weights {
        Some(w) => manifest.file("medklip_weights", w)?,
        None => manifest.value("medklip_weights", "built in"),
    };
    manifest.begin(
        &args.out.join("manifest.json"),
        &args.out,
        args.overwrite,
        &[&progress_path],
    )?;
    let mut log = Journal::<serde_json::Value>::open(&progress_path)?;

    let model = Medklip::<B>::load(args.medklip_weights.as_deref(), device)?;
    tracing::info!(
        items = records.len(),
        already = log.len(),
        noise = mode.name(),
        medklip = mmedpo_medklip::model::SOURCE,
        weights = %model.weights().display(),
        "making visual pairs"
    );
    // Distinct images in order of first use, with their items. Batches are cut from all of them,
    // done or not, and a batch with any item left runs whole: MedKLIP then sees the same batches
    // as in an uninterrupted run, so a resumed run's numbers are the same to the last digit.
    let mut groups: Vec<(String, Vec<&PreferenceRecord>)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for r in &records {
        let i = *index.entry(r.image.as_str()).or_insert_with(|| {
            groups.push((r.image.clone(), Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push(r);
    }
    let bar = ProgressBar::new(records.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} items {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(log.len() as u64);
    let started = Instant::now();
    let (mut unreadable, mut images_done, mut items_done) =
        (Vec::<(String, PathBuf, String)>::new(), 0usize, 0usize);
    for batch in groups.chunks(args.batch_size.max(1)) {
        if batch
            .iter()
            .all(|g| g.1.iter().all(|r| log.contains(&r.id)))
        {
            continue;
        }
        let mut loaded: Vec<(&(String, Vec<&PreferenceRecord>), DynamicImage)> = Vec::new();
        for g in batch {
            let path = args.image_root.join(&g.0);
            match mmedpo_vision::preprocess::open_image(&path) {
                Ok(img) => loaded.push((g, img)),
                Err(e) => {
                    let why = match e {
                        mmedpo_vision::Error::Image { message, .. } => message,
                        e => e.to_string(),
                    };
                    for r in &g.1 {
                        unreadable.push((r.id.to_string(), path.clone(), why.clone()));
                        bar.inc(1);
                    }
                }
            }
        }
        let rgb: Vec<_> = loaded.iter().map(|(_, img)| img.to_rgb8()).collect();
        let analyses = model.analyze(&rgb, query)?;
        for ((g, img), a) in loaded.into_iter().zip(analyses) {
            let original = to_noise_input(img);
            let (w, h) = (original.width() as usize, original.height() as usize);
            let lesion = lesion_map(&a.map14, w, h);
            if args.overlays {
                let stem = Path::new(&g.0).with_extension("");
                let path = overlays_dir.join(format!("{}.png", file_stem(&stem.to_string_lossy())));
                let pic = overlay(&original, &lesion);
                write_atomic_with(&path, |tmp| {
                    pic.save_with_format(tmp, image::ImageFormat::Png)
                        .with_context(|| format!("writing {}", tmp.display()))
                })?;
            }
            let todo: Vec<&PreferenceRecord> =
                g.1.iter()
                    .copied()
                    .filter(|r| !log.contains(&r.id))
                    .collect();
            for r in todo {
                let id = r.id.to_string();
                let seed = item_seed(args.seed, &id);
                let noised = add_noise(&original, &lesion.mask, mode, seed);
                let png = images_dir.join(format!("{}.png", file_stem(&id)));
                write_atomic_with(&png, |tmp| {
                    noised
                        .save_with_format(tmp, image::ImageFormat::Png)
                        .with_context(|| format!("writing {}", tmp.display()))
                })?;
                log.append(serde_json::json!({
                    "id": r.id, "rejected_image": rejected_path(&args.image_root, &png),
                    "score": a.score, "coverage": lesion.coverage(), "seed": seed,
                }))?;
                bar.inc(1);
                items_done += 1;
            }
            images_done += 1;
        }
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();

    let mut out = Vec::new();
    let (mut scores, mut coverage) = (Vec::new(), Vec::new());
    for r in &records {
        let Some(p) = log.get(&r.id) else {
            continue;
        };
        let score = p["score"]
            .as_f64()
            .context("progress line without a score")?;
        scores.push(score);
        coverage.push(p["coverage"].as_f64().unwrap_or(f64::NAN));
        let mut pair = r.clone();
        // A visual pair has an id of its own (stable, derived from the item's), so that it and the
        // item's text pair can sit in one training file.
        pair.id = mmedpo_core::record::RecordId::Str(format!("{}{VISUAL_ID_SUFFIX}", r.id));
        pair.rejected_conversations = r.conversations.clone();
        pair.rejected_image = Some(p["rejected_image"].as_str().unwrap_or_default().to_string());
        pair.weighted_score = Some(score);
        out.push(pair);
    }
    let out_file = args.out.join(OUTPUT_FILE);
    write_json(&out_file, &out)?;

    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    note!(
        "{} visual pairs in {} ({} items, {} unreadable); this run: {images_done} distinct images and \
         {items_done} noised images in {secs:.1} s ({:.1} pairs/s); confidence mean {:.3}, noised area mean {:.1}%",
        out.len(),
        out_file.display(),
        records.len(),
        unreadable.len(),
        items_done as f64 / secs.max(1e-9),
        mean(&scores),
        100.0 * mean(&coverage),
    );
    if !unreadable.is_empty() {
        note!("unreadable images (items left out; fix them and run again to add them):");
        for (id, path, e) in &unreadable {
            note!("  item {id}: {}: {e}", path.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_stems_are_safe_and_distinct() {
        assert_eq!(file_stem("123"), "123");
        assert_eq!(file_stem("a-b_c.d"), "a-b_c.d");
        let (a, b) = (file_stem("x/y"), file_stem("x:y"));
        assert!(a.starts_with("x_y-") && b.starts_with("x_y-") && a != b);
        assert!(!file_stem("../etc").contains('/'));
        assert_ne!(item_seed(1, "a"), item_seed(2, "a"));
        assert_ne!(item_seed(1, "a"), item_seed(1, "b"));
    }
}
