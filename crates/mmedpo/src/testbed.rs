//! A synthetic medical-imaging world where MMedPO's effect can be measured on a CPU in minutes
//! ([`make_world`]): gray radiograph-like chest images (a body, two dark lung fields, ribs,
//! vessel-like distractor specks and noise) with zero to three lesions (round or irregular
//! opacities of three sizes) in named regions, one lesion per region; VQA items (closed: presence,
//! side; open: count, location, size), short reports, and the ground truth (each lesion, a mask
//! PNG per image) beside them; train and test scans drawn from one seed, never the same scan.
//!
//! Sides are the patient's, as a radiologist reads a PA film: the patient's right lung is on the
//! image's left. The training pairs' rejected answers change the truth the way a hallucinating
//! model does (presence negated, side flipped, count off by one, another region, another size),
//! weighted by how clinically serious the contradiction is (a missed or invented lesion 1.0, the
//! wrong side 0.8, the wrong region 0.7, the wrong count 0.6, the wrong size 0.4).
//!
//! Everything is a function of the [`WorldSpec`]: the same spec writes the same bytes.

use std::path::{Path, PathBuf};

use image::{GrayImage, Luma};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::core::journal::{write_atomic, write_json};
use crate::{Error, Result};

/// What to draw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorldSpec {
    /// Training scans.
    pub train: usize,
    /// Test scans.
    pub test: usize,
    /// Seed of the whole world.
    pub seed: u64,
    /// Side of the square images in pixels.
    pub size: u32,
}

impl Default for WorldSpec {
    fn default() -> Self {
        Self {
            train: 96,
            test: 48,
            seed: 0,
            size: 128,
        }
    }
}

/// The patient's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The patient's right (the image's left).
    Right,
    /// The patient's left (the image's right).
    Left,
}

/// The lung zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Zone {
    /// Upper zone.
    Upper,
    /// Lower zone.
    Lower,
}

/// The opacity's outline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// A round nodule.
    Round,
    /// Three overlapping blobs.
    Irregular,
}

/// The opacity's size class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Size {
    /// About 4 % of the image side in radius.
    Small,
    /// About 7 %.
    Medium,
    /// About 11 %.
    Large,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Right => "right",
            Side::Left => "left",
        }
    }
    fn other(self) -> Side {
        match self {
            Side::Right => Side::Left,
            Side::Left => Side::Right,
        }
    }
}

impl Zone {
    fn name(self) -> &'static str {
        match self {
            Zone::Upper => "upper",
            Zone::Lower => "lower",
        }
    }
}

impl Size {
    fn name(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Medium => "medium",
            Size::Large => "large",
        }
    }
    fn radius(self) -> f32 {
        match self {
            Size::Small => 0.04,
            Size::Medium => 0.07,
            Size::Large => 0.11,
        }
    }
    fn next(self) -> Size {
        match self {
            Size::Small => Size::Medium,
            Size::Medium => Size::Large,
            Size::Large => Size::Small,
        }
    }
}

/// One lesion of a scan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lesion {
    /// Which lung.
    pub side: Side,
    /// Which zone of it.
    pub zone: Zone,
    /// Its outline.
    pub shape: Shape,
    /// Its size class.
    pub size: Size,
    /// Centre in pixels (x, y).
    pub center: [f32; 2],
    /// Radius in pixels.
    pub radius: f32,
}

impl Lesion {
    fn region(&self) -> String {
        format!("{} {} zone", self.side.name(), self.zone.name())
    }
}

/// One scan and its truth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scan {
    /// The image's file name under `images/` (its mask has the same name under `masks/`).
    pub image: String,
    /// `train` or `test`.
    pub split: String,
    /// Its lesions (at most one per region).
    pub lesions: Vec<Lesion>,
}

/// What [`make_world`] wrote.
#[derive(Debug, Clone)]
pub struct WorldReport {
    /// The world's folder.
    pub out: PathBuf,
    /// Scans per split (train, test).
    pub scans: (usize, usize),
    /// Training pairs (`train_pairs.json`).
    pub pairs: usize,
    /// Test questions (`test_vqa.json`).
    pub questions: usize,
    /// Scans with no lesion, with one, two and three.
    pub by_count: [usize; 4],
}

const NUMBERS: [&str; 4] = ["none", "one", "two", "three"];

/// The scan `index` of the world `seed` (its own seeded stream: scans do not depend on each other).
fn scan(seed: u64, index: usize, split: &str, size: u32) -> (Scan, ChaCha8Rng) {
    let mut rng =
        ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index as u64);
    let count = match rng.random_range(0..10u32) {
        0..=2 => 0,
        3..=6 => 1,
        7..=8 => 2,
        _ => 3,
    };
    let mut regions = vec![
        (Side::Right, Zone::Upper),
        (Side::Right, Zone::Lower),
        (Side::Left, Zone::Upper),
        (Side::Left, Zone::Lower),
    ];
    let s = size as f32;
    let mut lesions = vec![];
    for _ in 0..count {
        let (side, zone) = regions.remove(rng.random_range(0..regions.len()));
        let size_class = [Size::Small, Size::Medium, Size::Large][rng.random_range(0..3)];
        let shape = if rng.random_bool(0.5) {
            Shape::Round
        } else {
            Shape::Irregular
        };
        // The lung fields' centres: the patient's right lung on the image's left.
        let cx = match side {
            Side::Right => 0.31,
            Side::Left => 0.69,
        } + rng.random_range(-0.05..0.05);
        let cy = match zone {
            Zone::Upper => rng.random_range(0.30..0.42),
            Zone::Lower => rng.random_range(0.56..0.68),
        };
        lesions.push(Lesion {
            side,
            zone,
            shape,
            size: size_class,
            center: [cx * s, cy * s],
            radius: size_class.radius() * s * rng.random_range(0.85..1.15),
        });
    }
    let image = format!("{split}-{index:04}.png");
    let scan = Scan {
        image,
        split: split.into(),
        lesions,
    };
    (scan, rng)
}

/// The scan's image and lesion mask.
fn draw(scan: &Scan, size: u32, rng: &mut ChaCha8Rng) -> (GrayImage, GrayImage) {
    let s = size as f32;
    let mut img = GrayImage::new(size, size);
    let mut mask = GrayImage::new(size, size);
    let ellipse = |x: f32, y: f32, cx: f32, cy: f32, rx: f32, ry: f32| {
        let d = ((x - cx) / rx).powi(2) + ((y - cy) / ry).powi(2);
        (1.0 - d).clamp(0.0, 1.0).sqrt()
    };
    let rib_phase: f32 = rng.random_range(0.0..std::f32::consts::TAU);
    let specks: Vec<[f32; 3]> = (0..rng.random_range(3..8))
        .map(|_| {
            [
                rng.random_range(0.15..0.85) * s,
                rng.random_range(0.2..0.8) * s,
                rng.random_range(0.008..0.02) * s,
            ]
        })
        .collect();
    for y in 0..size {
        for x in 0..size {
            let (xf, yf) = (x as f32 + 0.5, y as f32 + 0.5);
            let body = ellipse(xf, yf, 0.5 * s, 0.55 * s, 0.46 * s, 0.5 * s);
            let lungs = ellipse(xf, yf, 0.31 * s, 0.5 * s, 0.16 * s, 0.27 * s).max(ellipse(
                xf,
                yf,
                0.69 * s,
                0.5 * s,
                0.16 * s,
                0.27 * s,
            ));
            let ribs = 0.5 + 0.5 * ((yf / s * 28.0 + (xf / s - 0.5).abs() * 6.0) + rib_phase).sin();
            let mut v = 0.08 + 0.47 * body.min(0.6) / 0.6 - 0.3 * lungs.min(0.5) / 0.5
                + 0.05 * ribs * lungs.min(0.3) / 0.3;
            for [px, py, r] in &specks {
                v += 0.07 * ellipse(xf, yf, *px, *py, *r, *r);
            }
            let mut lesion = 0.0f32;
            for l in &scan.lesions {
                let [cx, cy] = l.center;
                let blob = |dx: f32, dy: f32, r: f32| ellipse(xf, yf, cx + dx, cy + dy, r, r);
                let o = match l.shape {
                    Shape::Round => blob(0.0, 0.0, l.radius),
                    Shape::Irregular => blob(-0.35 * l.radius, -0.2 * l.radius, 0.7 * l.radius)
                        .max(blob(0.4 * l.radius, -0.1 * l.radius, 0.55 * l.radius))
                        .max(blob(0.0, 0.4 * l.radius, 0.6 * l.radius)),
                };
                lesion = lesion.max(o);
            }
            v += 0.38 * lesion;
            // Film noise: the mean of three uniforms (about Gaussian), σ ≈ 0.02.
            let n: f32 = (0..3)
                .map(|_| rng.random_range(-0.06..0.06f32))
                .sum::<f32>()
                / 3.0;
            v += n;
            img.put_pixel(x, y, Luma([(v.clamp(0.0, 1.0) * 255.0).round() as u8]));
            mask.put_pixel(x, y, Luma([if lesion > 0.05 { 255 } else { 0 }]));
        }
    }
    (img, mask)
}

/// A closed or open question, its true answer and a hallucinated one with its clinical weight.
struct Question {
    kind: &'static str,
    text: String,
    answer: String,
    closed: bool,
    rejected: String,
    weight: f64,
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

fn regions(lesions: &[&Lesion]) -> String {
    let names: Vec<String> = lesions.iter().map(|l| l.region()).collect();
    names.join(" and ")
}

/// The questions asked of a scan (the side asked about is drawn from `rng`).
fn questions(scan: &Scan, rng: &mut ChaCha8Rng) -> Vec<Question> {
    let n = scan.lesions.len();
    let mut q = vec![Question {
        kind: "presence",
        text: "Is there a lesion in the lungs?".into(),
        answer: yes_no(n > 0),
        closed: true,
        rejected: yes_no(n == 0),
        weight: 1.0,
    }];
    let side = if rng.random_bool(0.5) {
        Side::Right
    } else {
        Side::Left
    };
    let on_side = scan.lesions.iter().any(|l| l.side == side);
    q.push(Question {
        kind: "side",
        text: format!("Is there a lesion in the {} lung?", side.name()),
        answer: yes_no(on_side),
        closed: true,
        rejected: yes_no(!on_side),
        weight: 0.8,
    });
    let wrong_count = if n == 0 || (n < 3 && rng.random_bool(0.5)) {
        n + 1
    } else {
        n - 1
    };
    q.push(Question {
        kind: "count",
        text: "How many lesions are there?".into(),
        answer: NUMBERS[n].into(),
        closed: false,
        rejected: NUMBERS[wrong_count].into(),
        weight: 0.6,
    });
    if n > 0 {
        let all: Vec<&Lesion> = scan.lesions.iter().collect();
        // Another region: the first lesion moved to the other side (or zone, where that is taken).
        let mut moved: Vec<Lesion> = scan.lesions.clone();
        let taken = |s: Side, z: Zone| scan.lesions.iter().any(|l| l.side == s && l.zone == z);
        let first = &mut moved[0];
        if !taken(first.side.other(), first.zone) {
            first.side = first.side.other();
        } else {
            first.zone = match first.zone {
                Zone::Upper => Zone::Lower,
                Zone::Lower => Zone::Upper,
            };
        }
        let moved_refs: Vec<&Lesion> = moved.iter().collect();
        q.push(Question {
            kind: "location",
            text: if n == 1 {
                "Where is the lesion?".into()
            } else {
                "Where are the lesions?".into()
            },
            answer: regions(&all),
            closed: false,
            rejected: regions(&moved_refs),
            weight: 0.7,
        });
        let largest = scan
            .lesions
            .iter()
            .map(|l| l.size)
            .max()
            .unwrap_or(Size::Small);
        q.push(Question {
            kind: "size",
            text: "How large is the largest lesion?".into(),
            answer: largest.name().into(),
            closed: false,
            rejected: largest.next().name().into(),
            weight: 0.4,
        });
    }
    q
}

/// The scan's report.
pub fn report(scan: &Scan) -> String {
    if scan.lesions.is_empty() {
        return "No focal opacity. The lungs are clear.".into();
    }
    let parts: Vec<String> = scan
        .lesions
        .iter()
        .map(|l| {
            let shape = match l.shape {
                Shape::Round => "round",
                Shape::Irregular => "irregular",
            };
            format!("a {} {shape} opacity in the {}", l.size.name(), l.region())
        })
        .collect();
    let n = scan.lesions.len();
    format!(
        "{} focal {}: {}.",
        ["", "One", "Two", "Three"][n],
        if n == 1 { "opacity" } else { "opacities" },
        parts.join(", ")
    )
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

fn turn(from: &str, value: String) -> serde_json::Value {
    serde_json::json!({"from": from, "value": value})
}

/// Draws the world of `spec` into `out`: `images/`, `masks/`, `truth.json` (every scan's
/// lesions), `train_pairs.json` (MMedPO pairs: ground truth chosen, a hallucination rejected,
/// its clinical weight), `test_vqa.json` (`question_id`, `image`, `question`, `answer`,
/// `answer_type`, `kind`) and `test_reports.json` (`id`, `image`, `report`).
pub fn make_world(spec: &WorldSpec, out: &Path) -> Result<WorldReport> {
    if spec.size < 32 || spec.train == 0 || spec.test == 0 {
        return Err(Error::Invalid(format!(
            "testbed world: size {} (at least 32), train {} and test {} (at least 1 each)",
            spec.size, spec.train, spec.test
        )));
    }
    for d in ["images", "masks"] {
        let p = out.join(d);
        std::fs::create_dir_all(&p).map_err(|e| Error::io(&p, e))?;
    }
    let (mut truth, mut pairs, mut vqa, mut reports) = (vec![], vec![], vec![], vec![]);
    let mut by_count = [0usize; 4];
    let all = (0..spec.train)
        .map(|i| ("train", i))
        .chain((0..spec.test).map(|i| ("test", spec.train + i)));
    for (split, index) in all {
        let (scan, mut rng) = scan(spec.seed, index, split, spec.size);
        let (img, mask) = draw(&scan, spec.size, &mut rng);
        for (dir, im) in [("images", &img), ("masks", &mask)] {
            let path = out.join(dir).join(&scan.image);
            let mut bytes = vec![];
            im.write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
            write_atomic(&path, &bytes)?;
        }
        by_count[scan.lesions.len()] += 1;
        for q in questions(&scan, &mut rng) {
            let human = turn("human", format!("<image>\n{}", q.text));
            if split == "train" {
                pairs.push(serde_json::json!({
                    "id": pairs.len(),
                    "image": scan.image,
                    "conversations": [human.clone(), turn("gpt", format!(" {}", capitalized(&q.answer)))],
                    "rejected_conversations": [human, turn("gpt", format!(" {}", capitalized(&q.rejected)))],
                    "weighted_score": q.weight,
                    "kind": q.kind,
                }));
            } else {
                vqa.push(serde_json::json!({
                    "question_id": vqa.len(),
                    "image": scan.image,
                    "question": q.text,
                    "answer": q.answer,
                    "answer_type": if q.closed { "CLOSED" } else { "OPEN" },
                    "kind": q.kind,
                }));
            }
        }
        if split == "test" {
            reports.push(serde_json::json!({"id": reports.len(), "image": scan.image, "report": report(&scan)}));
        }
        truth.push(scan);
    }
    write_json(&out.join("truth.json"), &truth)?;
    write_json(&out.join("train_pairs.json"), &pairs)?;
    write_json(&out.join("test_vqa.json"), &vqa)?;
    write_json(&out.join("test_reports.json"), &reports)?;
    write_json(&out.join("world.json"), spec)?;
    Ok(WorldReport {
        out: out.to_path_buf(),
        scans: (spec.train, spec.test),
        pairs: pairs.len(),
        questions: vqa.len(),
        by_count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mmedpo-world-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn the_same_spec_draws_the_same_world_and_another_seed_another() {
        let spec = WorldSpec {
            train: 6,
            test: 4,
            seed: 3,
            size: 64,
        };
        let (a, b, c) = (tmp("a"), tmp("b"), tmp("c"));
        make_world(&spec, &a).unwrap();
        make_world(&spec, &b).unwrap();
        make_world(
            &WorldSpec {
                seed: 4,
                ..spec.clone()
            },
            &c,
        )
        .unwrap();
        for f in [
            "truth.json",
            "train_pairs.json",
            "test_vqa.json",
            "images/test-0007.png",
        ] {
            assert_eq!(
                std::fs::read(a.join(f)).unwrap(),
                std::fs::read(b.join(f)).unwrap(),
                "{f}"
            );
        }
        assert_ne!(
            std::fs::read(a.join("truth.json")).unwrap(),
            std::fs::read(c.join("truth.json")).unwrap()
        );
        for d in [a, b, c] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }

    #[test]
    fn answers_masks_and_reports_follow_the_truth() {
        let spec = WorldSpec {
            train: 30,
            test: 10,
            seed: 0,
            size: 96,
        };
        let out = tmp("truth");
        let r = make_world(&spec, &out).unwrap();
        assert!(r.by_count.iter().all(|&n| n > 0), "{:?}", r.by_count);
        let truth: Vec<Scan> =
            serde_json::from_str(&std::fs::read_to_string(out.join("truth.json")).unwrap())
                .unwrap();
        let vqa: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(out.join("test_vqa.json")).unwrap())
                .unwrap();
        assert_eq!(vqa.len(), r.questions);
        for scan in &truth {
            // The mask covers every lesion centre, on the patient's side (right = image left).
            let mask = image::open(out.join("masks").join(&scan.image))
                .unwrap()
                .to_luma8();
            for l in &scan.lesions {
                let [x, y] = l.center;
                assert_eq!(mask.get_pixel(x as u32, y as u32)[0], 255, "{}", scan.image);
                assert_eq!(l.side == Side::Right, x < 48.0, "{}", scan.image);
            }
            let lit = mask.pixels().filter(|p| p[0] == 255).count();
            assert_eq!(lit == 0, scan.lesions.is_empty(), "{}", scan.image);
            let count = vqa
                .iter()
                .find(|q| q["image"] == scan.image && q["kind"] == "count");
            if let Some(q) = count {
                assert_eq!(q["answer"], NUMBERS[scan.lesions.len()]);
            }
        }
        // Every training pair contradicts its truth.
        let pairs: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(out.join("train_pairs.json")).unwrap())
                .unwrap();
        assert_eq!(pairs.len(), r.pairs);
        for p in &pairs {
            assert_ne!(
                p["conversations"][1]["value"],
                p["rejected_conversations"][1]["value"]
            );
        }
        // The training pairs are a valid MMedPO file, and the test set an eval test set.
        crate::core::record::read_records(&out.join("train_pairs.json")).unwrap();
        crate::eval::protocol::read_test_set(
            &out.join("test_vqa.json"),
            crate::eval::protocol::Task::Vqa,
        )
        .unwrap();
        crate::eval::protocol::read_test_set(
            &out.join("test_reports.json"),
            crate::eval::protocol::Task::Report,
        )
        .unwrap();
        let lesion_free = truth.iter().find(|s| s.lesions.is_empty()).unwrap();
        assert!(report(lesion_free).starts_with("No focal opacity"));
        std::fs::remove_dir_all(&out).unwrap();
    }
}
