//! Seeded noise for the rejected image of a visual pair (paper §3.1, shared/docs/paper-spec.md §1.6).
//!
//! - `speckle-faithful`: the released `generate_noised_image`: masked pixels are *replaced* by
//!   N(0, 10) samples cast to uint8 the way numpy does on x86-64 (truncate toward zero, wrap
//!   modulo 256: −3.7 → 253), so about half the replaced pixels become near-white.
//! - `speckle-clamped`: the same samples rounded and clamped to [0, 255] (what the code meant).
//! - `diffusion`: the paper's Eq. 2 inside the mask at step `k`: `x_k = √ᾱ_k·x + √(1−ᾱ_k)·ε` on
//!   the [0, 1] image, ᾱ from the sigmoid β schedule (T = 1000, β ∈ [1e−5, 5e−3]); default k = 500.
//! - `global`: the diffusion process on the whole image, ignoring the mask (the paper's
//!   global-vs-local ablation).
//!
//! A grayscale image stays one channel; RGB channels get independent samples (numpy draws one
//! sample per array element). Pixels outside the mask are copied bit for bit. The same seed gives
//! the same image.

use image::{DynamicImage, GrayImage, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

/// The paper's diffusion steps T.
pub const DIFFUSION_STEPS: usize = 1000;
/// Default noise step k (POVID's `train_dpo_inherent.py`, the same repository).
pub const DEFAULT_STEP: usize = 500;

/// How the rejected image is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseMode {
    /// Replace masked pixels by N(0,10) cast with numpy's truncate-and-wrap.
    SpeckleFaithful,
    /// Replace masked pixels by N(0,10), rounded and clamped.
    SpeckleClamped,
    /// Forward diffusion at step `k` inside the mask.
    Diffusion {
        /// The step k (0-based index into ᾱ, `< 1000`).
        step: usize,
    },
    /// Forward diffusion at step `k` over the whole image.
    Global {
        /// The step k.
        step: usize,
    },
}

impl NoiseMode {
    /// Parses a mode name; `step` is used by `diffusion` and `global`.
    pub fn parse(name: &str, step: usize) -> Result<Self> {
        if step >= DIFFUSION_STEPS {
            return Err(Error::UnknownNoise(format!(
                "{name} with step {step} (the schedule has {DIFFUSION_STEPS} steps, 0..=999)"
            )));
        }
        Ok(match name {
            "speckle-faithful" => NoiseMode::SpeckleFaithful,
            "speckle-clamped" => NoiseMode::SpeckleClamped,
            "diffusion" => NoiseMode::Diffusion { step },
            "global" => NoiseMode::Global { step },
            other => return Err(Error::UnknownNoise(other.to_string())),
        })
    }

    /// The mode's name as the CLI spells it.
    pub fn name(&self) -> &'static str {
        match self {
            NoiseMode::SpeckleFaithful => "speckle-faithful",
            NoiseMode::SpeckleClamped => "speckle-clamped",
            NoiseMode::Diffusion { .. } => "diffusion",
            NoiseMode::Global { .. } => "global",
        }
    }

    /// Whether the lesion mask is used (every mode but `global`).
    pub fn is_local(&self) -> bool {
        !matches!(self, NoiseMode::Global { .. })
    }
}

/// ᾱ_k = Π_{i≤k} (1 − β_i), β = sigmoid(linspace(−6, 6, 1000))·(5e−3 − 1e−5) + 1e−5.
pub fn alpha_bar(step: usize) -> f64 {
    let t = DIFFUSION_STEPS;
    (0..=step)
        .map(|i| {
            let x = -6.0 + 12.0 * i as f64 / (t - 1) as f64;
            let beta = 1.0 / (1.0 + (-x).exp()) * (5e-3 - 1e-5) + 1e-5;
            1.0 - beta
        })
        .product()
}

/// numpy's `float64 → uint8` cast on x86-64: truncate toward zero, wrap modulo 256.
pub fn numpy_u8_cast(x: f64) -> u8 {
    (x.trunc() as i64).rem_euclid(256) as u8
}

struct Sampler {
    rng: ChaCha8Rng,
    spare: Option<f64>,
}

impl Sampler {
    /// Standard normal samples by the Box–Muller transform.
    fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let u1: f64 = 1.0 - self.rng.random::<f64>(); // (0, 1]
        let u2: f64 = self.rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        self.spare = Some(r * t.sin());
        r * t.cos()
    }
}

/// Noises `img` (8-bit gray or RGB; anything else is converted to RGB first) where `mask` is set
/// (row-major, one entry per pixel; ignored by `global`) and returns an image of the same kind.
pub fn add_noise(img: &DynamicImage, mask: &[bool], mode: NoiseMode, seed: u64) -> DynamicImage {
    let mut sampler = Sampler {
        rng: ChaCha8Rng::seed_from_u64(seed),
        spare: None,
    };
    let (scale_x, scale_eps) = match mode {
        NoiseMode::Diffusion { step } | NoiseMode::Global { step } => {
            let ab = alpha_bar(step);
            (ab.sqrt(), (1.0 - ab).sqrt())
        }
        _ => (0.0, 0.0),
    };
    let mut noise = |v: u8| -> u8 {
        match mode {
            NoiseMode::SpeckleFaithful => numpy_u8_cast(10.0 * sampler.normal()),
            NoiseMode::SpeckleClamped => (10.0 * sampler.normal()).round().clamp(0.0, 255.0) as u8,
            NoiseMode::Diffusion { .. } | NoiseMode::Global { .. } => {
                let x = v as f64 / 255.0;
                let y = scale_x * x + scale_eps * sampler.normal();
                (y.clamp(0.0, 1.0) * 255.0).round() as u8
            }
        }
    };
    let local = mode.is_local();
    let (channels, mut buf, w, h) = match img {
        DynamicImage::ImageLuma8(g) => (1, g.as_raw().clone(), g.width(), g.height()),
        other => {
            let rgb = other.to_rgb8();
            let (w, h) = rgb.dimensions();
            (3, rgb.into_raw(), w, h)
        }
    };
    if local {
        assert_eq!(mask.len(), (w * h) as usize, "one mask entry per pixel");
    }
    for (i, px) in buf.chunks_mut(channels).enumerate() {
        if !local || mask[i] {
            px.iter_mut().for_each(|v| *v = noise(*v));
        }
    }
    if channels == 1 {
        DynamicImage::ImageLuma8(GrayImage::from_raw(w, h, buf).expect("sizes match"))
    } else {
        DynamicImage::ImageRgb8(RgbImage::from_raw(w, h, buf).expect("sizes match"))
    }
}

/// Decodes an image as `np.array(Image.open(path))` keeps it for the noise: 8-bit gray stays gray
/// (16-bit and gray+alpha become 8-bit gray), everything else becomes 8-bit RGB.
pub fn to_noise_input(img: DynamicImage) -> DynamicImage {
    match img {
        DynamicImage::ImageLuma8(_) => img,
        DynamicImage::ImageLuma16(_)
        | DynamicImage::ImageLumaA8(_)
        | DynamicImage::ImageLumaA16(_) => DynamicImage::ImageLuma8(img.to_luma8()),
        DynamicImage::ImageRgb8(_) => img,
        other => DynamicImage::ImageRgb8(other.to_rgb8()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gray(w: u32, h: u32) -> DynamicImage {
        DynamicImage::ImageLuma8(GrayImage::from_fn(w, h, |x, y| {
            image::Luma([((x * 7 + y * 13) % 256) as u8])
        }))
    }

    #[test]
    fn numpy_cast_wraps_like_x86() {
        assert_eq!(numpy_u8_cast(-3.7), 253);
        assert_eq!(numpy_u8_cast(-25.9), 231);
        assert_eq!(numpy_u8_cast(300.2), 44);
        assert_eq!(numpy_u8_cast(12.9), 12);
        assert_eq!(numpy_u8_cast(-0.5), 0);
    }

    #[test]
    fn alpha_bar_at_500_matches_the_paper_spec() {
        let ab = alpha_bar(500);
        assert!((ab.sqrt() - 0.8630).abs() < 5e-5, "{}", ab.sqrt());
        assert!(((1.0 - ab).sqrt() - 0.5052).abs() < 5e-5);
    }

    #[test]
    fn every_mode_keeps_gray_and_touches_only_the_mask() {
        let img = gray(40, 30);
        let mask: Vec<bool> = (0..1200).map(|i| (i % 40) < 20).collect();
        for mode in [
            NoiseMode::SpeckleFaithful,
            NoiseMode::SpeckleClamped,
            NoiseMode::Diffusion { step: 500 },
        ] {
            let out = add_noise(&img, &mask, mode, 7);
            let (a, b) = (
                img.as_luma8().unwrap(),
                out.as_luma8().expect("gray stays gray"),
            );
            let mut changed = 0;
            for (i, (p, q)) in a.pixels().zip(b.pixels()).enumerate() {
                if mask[i] {
                    changed += (p != q) as usize;
                } else {
                    assert_eq!(p, q, "{mode:?}: pixel {i} outside the mask changed");
                }
            }
            assert!(
                changed > 500,
                "{mode:?}: only {changed} of 600 masked pixels changed"
            );
            assert_eq!(
                out,
                add_noise(&img, &mask, mode, 7),
                "{mode:?}: same seed, same image"
            );
            assert_ne!(
                out,
                add_noise(&img, &mask, mode, 8),
                "{mode:?}: the seed matters"
            );
        }
        let global = add_noise(&img, &mask, NoiseMode::Global { step: 500 }, 7);
        let changed_outside = img
            .as_luma8()
            .unwrap()
            .pixels()
            .zip(global.as_luma8().unwrap().pixels())
            .enumerate()
            .filter(|(i, (p, q))| !mask[*i] && p != q)
            .count();
        assert!(changed_outside > 500, "global noise ignores the mask");
    }

    #[test]
    fn faithful_speckle_is_half_bright_and_clamped_speckle_is_dark() {
        let img = DynamicImage::ImageRgb8(RgbImage::new(100, 100));
        let mask = vec![true; 10_000];
        let faithful = add_noise(&img, &mask, NoiseMode::SpeckleFaithful, 1).to_rgb8();
        let bright = faithful.as_raw().iter().filter(|&&v| v >= 200).count() as f64 / 30_000.0;
        assert!((0.40..0.52).contains(&bright), "{bright}");
        let clamped = add_noise(&img, &mask, NoiseMode::SpeckleClamped, 1).to_rgb8();
        assert!(clamped.as_raw().iter().all(|&v| v <= 60));
        let zeros = clamped.as_raw().iter().filter(|&&v| v == 0).count() as f64 / 30_000.0;
        assert!((0.45..0.56).contains(&zeros), "{zeros}");
    }

    #[test]
    fn modes_parse_by_name() {
        assert_eq!(
            NoiseMode::parse("diffusion", 500).unwrap(),
            NoiseMode::Diffusion { step: 500 }
        );
        assert!(NoiseMode::parse("salt", 500).is_err());
        assert!(NoiseMode::parse("global", 1000).is_err());
    }
}
