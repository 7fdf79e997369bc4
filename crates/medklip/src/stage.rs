//! MMedPO's visual preference pairs (paper §3.1, Table 5) as one library call:
//! [`make_visual_pairs`].
//!
//! For every input item: MedKLIP reads its image (each distinct image once, in batches), the lesion
//! mask comes from the query's attention map (`disease`), and the rejected image is the original
//! with seeded noise in the mask. The item becomes a pair with the clean image as `image`, the
//! noised PNG as `rejected_image`, the ground-truth answer in both conversations and
//! `weighted_score` = MedKLIP's confidence. Noise seeds derive from the seed and the item id, so
//! order, batching and restarts do not change a pixel.
//!
//! Resumable: PNGs are written whole (temp file + rename), then one line per item is appended to
//! `OUT/progress.jsonl`; a restart skips the items listed there, and `OUT/manifest.json` refuses a
//! restart with other inputs. The preference file is written at the end, in input order, so an
//! interrupted-and-resumed run ends with the same files as one uninterrupted run. Unreadable images
//! are reported by item id and path in [`VisualReport::unreadable`]; the run goes on.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::backend::Backend;
use image::DynamicImage;
use mmedpo_core::journal::{write_atomic_with, write_json, Journal};
use mmedpo_core::manifest::{Manifest, OutLock};
use mmedpo_core::record::{fingerprint_u64, read_items, PreferenceRecord, RecordId};

use crate::error::{Error, Result};
use crate::noise::to_noise_input;
use crate::overlay::overlay;
use crate::{add_noise, lesion_map, observation_index, Medklip, NoiseMode};

/// The preference file written at the top of the output folder.
pub const OUTPUT_FILE: &str = "visual_pairs.json";

/// A visual pair's id is its item's id followed by this.
pub const VISUAL_ID_SUFFIX: &str = "-visual";

/// How the visual pairs are made.
#[derive(Debug, Clone)]
pub struct VisualSettings {
    /// The noise put into the lesion region.
    pub noise: NoiseMode,
    /// The diffusion step `k` the noise was parsed with (recorded in the manifest).
    pub noise_step: usize,
    /// Base seed of the noise.
    pub seed: u64,
    /// MedKLIP observation whose attention map and confidence are used (`disease`).
    pub query: String,
    /// Also write heatmap-over-image PNGs to `OUT/overlays/`.
    pub overlays: bool,
    /// Images per MedKLIP forward pass.
    pub batch_size: usize,
    /// MedKLIP weights (`.bpk`) for the compiled graph; `None`: the built-in ones.
    pub medklip_weights: Option<PathBuf>,
    /// Start the progress over when it comes from other inputs (instead of refusing).
    pub overwrite: bool,
}

/// An item whose image could not be read (left out; a rerun tries it again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// The item id.
    pub id: String,
    /// The image file.
    pub path: PathBuf,
    /// Why.
    pub message: String,
}

/// What a run made.
#[derive(Debug, Clone)]
pub struct VisualReport {
    /// The preference file (`OUT/visual_pairs.json`).
    pub output: PathBuf,
    /// Visual pairs in it.
    pub pairs: usize,
    /// Input items.
    pub items: usize,
    /// Items left out.
    pub unreadable: Vec<Unreadable>,
    /// Distinct images MedKLIP read in this run.
    pub images_done: usize,
    /// Noised images written in this run.
    pub items_done: usize,
    /// Seconds this run took.
    pub seconds: f64,
    /// Mean MedKLIP confidence over the pairs.
    pub mean_confidence: f64,
    /// Mean share of each image the noise covers.
    pub mean_coverage: f64,
}

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

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::Core(mmedpo_core::Error::io(path, e))
}

fn save_png(img: &DynamicImage, path: &Path) -> Result<()> {
    write_atomic_with(path, |tmp| {
        img.save_with_format(tmp, image::ImageFormat::Png)
            .map_err(|e| Error::Image {
                path: tmp.to_path_buf(),
                message: format!("writing: {e}"),
            })
    })
}

/// Makes the visual pairs of the items in `data` (images under `image_root`) into the folder
/// `out`; `progress(done, total)` is called as items finish.
pub fn make_visual_pairs<B: Backend>(
    data: &Path,
    image_root: &Path,
    out: &Path,
    settings: &VisualSettings,
    device: &B::Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<VisualReport> {
    let mode = settings.noise;
    let query = observation_index(&settings.query)?;
    let records = read_items(data)?;
    let mut seen = HashMap::new();
    for r in &records {
        if let Some(prev) = seen.insert(r.id.to_string(), &r.image) {
            return Err(Error::Data {
                path: data.to_path_buf(),
                message: format!(
                    "item id {} appears twice (images {prev} and {})",
                    r.id, r.image
                ),
            });
        }
    }
    let images_dir = out.join("images");
    let overlays_dir = out.join("overlays");
    std::fs::create_dir_all(&images_dir).map_err(io(&images_dir))?;
    let _lock = OutLock::acquire(out)?;
    if settings.overlays {
        std::fs::create_dir_all(&overlays_dir).map_err(io(&overlays_dir))?;
    }
    // A kill can leave a half-written temp file; it is redone from scratch.
    for dir in [&images_dir, &overlays_dir] {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if mmedpo_core::journal::is_partial(&e.file_name().to_string_lossy()) {
                let p = e.path();
                std::fs::remove_file(&p).map_err(io(&p))?;
            }
        }
    }
    let progress_path = out.join("progress.jsonl");
    // What changes pixels or weights must match the run being resumed (as the other journals).
    let manifest = Manifest::new("visual-pairs")
        .file("data", data)?
        .value("image_root", image_root.display())
        .value("noise", mode.name())
        .value("noise_step", settings.noise_step)
        .value("seed", settings.seed)
        .value("query", &settings.query)
        .value("medklip", crate::model::FINGERPRINT);
    let manifest = match &settings.medklip_weights {
        Some(w) => manifest.file("medklip_weights", w)?,
        None => manifest.value("medklip_weights", "built in"),
    };
    manifest.begin(
        &out.join("manifest.json"),
        out,
        settings.overwrite,
        &[&progress_path],
    )?;
    let mut log = Journal::<serde_json::Value>::open(&progress_path)?;

    let model = Medklip::<B>::load(settings.medklip_weights.as_deref(), device)?;
    tracing::info!(
        items = records.len(),
        already = log.len(),
        noise = mode.name(),
        medklip = crate::model::SOURCE,
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
    let total = records.len();
    let mut done = log.len();
    progress(done, total);
    let started = Instant::now();
    let (mut unreadable, mut images_done, mut items_done) = (Vec::new(), 0usize, 0usize);
    for batch in groups.chunks(settings.batch_size.max(1)) {
        if batch
            .iter()
            .all(|g| g.1.iter().all(|r| log.contains(&r.id)))
        {
            continue;
        }
        let mut loaded: Vec<(&(String, Vec<&PreferenceRecord>), DynamicImage)> = Vec::new();
        for g in batch {
            let path = image_root.join(&g.0);
            match mmedpo_vision::preprocess::open_image(&path) {
                Ok(img) => loaded.push((g, img)),
                Err(e) => {
                    let why = match e {
                        mmedpo_vision::Error::Image { message, .. } => message,
                        e => e.to_string(),
                    };
                    for r in &g.1 {
                        unreadable.push(Unreadable {
                            id: r.id.to_string(),
                            path: path.clone(),
                            message: why.clone(),
                        });
                        done += 1;
                        progress(done, total);
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
            if settings.overlays {
                let stem = Path::new(&g.0).with_extension("");
                let path = overlays_dir.join(format!("{}.png", file_stem(&stem.to_string_lossy())));
                save_png(&DynamicImage::ImageRgb8(overlay(&original, &lesion)), &path)?;
            }
            let todo: Vec<&PreferenceRecord> =
                g.1.iter()
                    .copied()
                    .filter(|r| !log.contains(&r.id))
                    .collect();
            for r in todo {
                let id = r.id.to_string();
                let seed = item_seed(settings.seed, &id);
                let noised = add_noise(&original, &lesion.mask, mode, seed);
                let png = images_dir.join(format!("{}.png", file_stem(&id)));
                save_png(&noised, &png)?;
                log.append(serde_json::json!({
                    "id": r.id, "rejected_image": rejected_path(image_root, &png),
                    "score": a.score, "coverage": lesion.coverage(), "seed": seed,
                }))?;
                done += 1;
                progress(done, total);
                items_done += 1;
            }
            images_done += 1;
        }
    }
    let seconds = started.elapsed().as_secs_f64();

    let mut pairs = Vec::new();
    let (mut scores, mut coverage) = (Vec::new(), Vec::new());
    for r in &records {
        let Some(p) = log.get(&r.id) else {
            continue;
        };
        let score = p["score"].as_f64().ok_or_else(|| Error::Data {
            path: progress_path.clone(),
            message: format!("the line of item {} has no score", r.id),
        })?;
        scores.push(score);
        coverage.push(p["coverage"].as_f64().unwrap_or(f64::NAN));
        let mut pair = r.clone();
        // A visual pair has an id of its own (stable, derived from the item's), so that it and the
        // item's text pair can sit in one training file.
        pair.id = RecordId::Str(format!("{}{VISUAL_ID_SUFFIX}", r.id));
        pair.rejected_conversations = r.conversations.clone();
        pair.rejected_image = Some(p["rejected_image"].as_str().unwrap_or_default().to_string());
        pair.weighted_score = Some(score);
        pairs.push(pair);
    }
    let output = out.join(OUTPUT_FILE);
    write_json(&output, &pairs)?;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    if pairs.is_empty() && !unreadable.is_empty() {
        return Err(Error::Data {
            path: data.to_path_buf(),
            message: format!(
                "every item failed: none of the {} item(s) has a readable image (first: {}: {})",
                unreadable.len(),
                unreadable[0].path.display(),
                unreadable[0].message
            ),
        });
    }
    Ok(VisualReport {
        output,
        pairs: pairs.len(),
        items: records.len(),
        unreadable,
        images_done,
        items_done,
        seconds,
        mean_confidence: mean(&scores),
        mean_coverage: mean(&coverage),
    })
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
