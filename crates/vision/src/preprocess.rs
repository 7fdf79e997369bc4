//! LLaVA's image preprocessing, exact to the byte for 8-bit images.
//!
//! Reference: haotian-liu/LLaVA `llava/mm_utils.py::expand2square` (pad to a square with the CLIP
//! mean colour (122, 116, 104), the image centred at offset `(max - min) // 2`), then transformers'
//! PIL-backed `CLIPImageProcessor` (shortest edge → 336 with `PIL.Image.resize(BICUBIC)`, centre crop
//! 336, ×1/255, normalise with the CLIP mean/std).
//!
//! The resize re-implements Pillow's `ImagingResample` (`src/libImaging/Resample.c`): a separable
//! bicubic filter (a = −0.5) widened by the scale factor when shrinking, coefficients normalised
//! then quantised to 22-bit fixed point, horizontal pass then vertical pass, each rounded and clipped
//! to 8 bits. So the uint8 image equals Pillow's exactly and the normalised tensor equals the Python
//! processor's to float rounding (the golden test checks both on real scans).
//! Decoding is the `image` crate's: PNG is lossless and exact; a JPEG decoder may differ from
//! libjpeg by ±1 on some pixels (a documented, not hidden, difference).

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use image::{Rgb, RgbImage};

use crate::error::{Error, Result};

/// CLIP's normalisation mean (RGB).
pub const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
/// CLIP's normalisation std (RGB).
pub const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];
/// LLaVA's padding colour: `tuple(int(x * 255) for x in image_mean)`.
pub const PAD_COLOR: [u8; 3] = [122, 116, 104];

/// How a non-square image is made square (LLaVA's `image_aspect_ratio`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AspectRatio {
    /// `pad`: expand to a square with [`PAD_COLOR`] (LLaVA-Med v1.5, MMedPO).
    Pad,
    /// Anything else in LLaVA: the processor's shortest-edge resize and centre crop only.
    Crop,
}

/// Reads an image file as 8-bit RGB (grayscale is replicated, like PIL's `convert("RGB")`).
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    Ok(open_image(path)?.to_rgb8())
}

/// The largest image side [`open_image`] decodes. Scans in the Med-VQA sets are at most a few
/// thousand pixels a side; LLaVA pads to a square of the longer side, so a 1 × 60,000 strip would
/// otherwise become a 10.8 GB canvas.
pub const MAX_IMAGE_SIDE: u32 = 8192;

/// Decodes an image file, refusing before anything is allocated what is not a regular file (a FIFO
/// would block forever) and what the header says is larger than [`MAX_IMAGE_SIDE`] a side.
pub fn open_image(path: &Path) -> Result<image::DynamicImage> {
    let bad = |message: String| Error::Image {
        path: path.to_path_buf(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    let mut reader = image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| bad(e.to_string()))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    reader.limits(limits);
    reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => bad(format!(
            "larger than {MAX_IMAGE_SIDE} pixels on a side ({e}); downscale it first"
        )),
        e => bad(e.to_string()),
    })
}

/// `expand2square`: pads to a square with `color`, the image centred.
pub fn expand_to_square(img: &RgbImage, color: [u8; 3]) -> RgbImage {
    let (w, h) = img.dimensions();
    if w == h {
        return img.clone();
    }
    let side = w.max(h);
    let mut out = RgbImage::from_pixel(side, side, Rgb(color));
    let (dx, dy) = if w > h {
        (0, (w - h) / 2)
    } else {
        ((h - w) / 2, 0)
    };
    image::imageops::replace(&mut out, img, dx as i64, dy as i64);
    out
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// A Pillow resampling filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// `Image.BICUBIC` (a = −0.5, support 2): CLIP's processor.
    Bicubic,
    /// `Image.BILINEAR` (triangle, support 1): torchvision's `Resize` on PIL images (MedKLIP).
    Bilinear,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bicubic => 2.0,
            Filter::Bilinear => 1.0,
        }
    }

    fn eval(self, x: f64) -> f64 {
        match self {
            Filter::Bicubic => bicubic(x),
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
        }
    }
}

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`: per output pixel the first input index
/// and the fixed-point weights.
fn coefficients(in_size: usize, out_size: usize, filter: Filter) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // C casts truncate toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let mut k: Vec<f64> = (xmin..xmax)
                .map(|x| filter.eval((x as f64 - center + 0.5) * ss))
                .collect();
            let ww: f64 = k.iter().sum();
            if ww != 0.0 {
                k.iter_mut().for_each(|w| *w /= ww);
            }
            let fixed = k
                .iter()
                .map(|&w| {
                    let v = w * (1u32 << PRECISION_BITS) as f64;
                    (if w < 0.0 { -0.5 + v } else { 0.5 + v }) as i32
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow's `Image.resize(size, Image.BICUBIC)` for 8-bit RGB, bit-exact.
pub fn resize_bicubic(img: &RgbImage, out_w: u32, out_h: u32) -> RgbImage {
    resize(img, out_w, out_h, Filter::Bicubic)
}

/// Pillow's `Image.resize(size, filter)` for 8-bit RGB, bit-exact: horizontal pass, then vertical.
pub fn resize(img: &RgbImage, out_w: u32, out_h: u32, filter: Filter) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut cur = img.clone();
    if out_w != w {
        let coeffs = coefficients(w as usize, out_w as usize, filter);
        let mut out = RgbImage::new(out_w, h);
        for y in 0..h {
            for (xx, (xmin, k)) in coeffs.iter().enumerate() {
                let mut acc = [1i64 << (PRECISION_BITS - 1); 3];
                for (i, &kw) in k.iter().enumerate() {
                    let p = cur.get_pixel((xmin + i) as u32, y);
                    for c in 0..3 {
                        acc[c] += p[c] as i64 * kw as i64;
                    }
                }
                out.put_pixel(
                    xx as u32,
                    y,
                    Rgb([clip8(acc[0]), clip8(acc[1]), clip8(acc[2])]),
                );
            }
        }
        cur = out;
    }
    if out_h != h {
        let coeffs = coefficients(h as usize, out_h as usize, filter);
        let cw = cur.width();
        let mut out = RgbImage::new(cw, out_h);
        for (yy, (ymin, k)) in coeffs.iter().enumerate() {
            for x in 0..cw {
                let mut acc = [1i64 << (PRECISION_BITS - 1); 3];
                for (i, &kw) in k.iter().enumerate() {
                    let p = cur.get_pixel(x, (ymin + i) as u32);
                    for c in 0..3 {
                        acc[c] += p[c] as i64 * kw as i64;
                    }
                }
                out.put_pixel(
                    x,
                    yy as u32,
                    Rgb([clip8(acc[0]), clip8(acc[1]), clip8(acc[2])]),
                );
            }
        }
        cur = out;
    }
    cur
}

/// The processor's uint8 image: shortest edge to `size` (the long edge `int(size * long / short)`),
/// then centre crop `size`×`size`.
pub fn resize_and_crop(img: &RgbImage, size: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    let new_long = (size as u64 * long as u64 / short as u64) as u32;
    let (nw, nh) = if w <= h {
        (size, new_long)
    } else {
        (new_long, size)
    };
    let resized = if (nw, nh) == (w, h) {
        img.clone()
    } else {
        resize_bicubic(img, nw, nh)
    };
    let top = (nh.saturating_sub(size)) / 2;
    let left = (nw.saturating_sub(size)) / 2;
    image::imageops::crop_imm(&resized, left, top, size.min(nw), size.min(nh)).to_image()
}

/// The full LLaVA preprocessing up to the uint8 image the processor rescales.
pub fn preprocess_u8(img: &RgbImage, size: u32, aspect: AspectRatio) -> RgbImage {
    let square = match aspect {
        AspectRatio::Pad => expand_to_square(img, PAD_COLOR),
        AspectRatio::Crop => img.clone(),
    };
    resize_and_crop(&square, size)
}

/// ×1/255 and CLIP normalisation, channel-first `[3, size, size]`, as f32 values.
pub fn normalize(img: &RgbImage) -> Vec<f32> {
    let (w, h) = img.dimensions();
    let plane = (w * h) as usize;
    let mut out = vec![0f32; 3 * plane];
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            // transformers rescales in float64 then casts; normalises in float32.
            let scaled = (p[c] as f64 * (1.0 / 255.0)) as f32;
            out[c * plane + i] = (scaled - CLIP_MEAN[c] as f32) / CLIP_STD[c] as f32;
        }
    }
    out
}

/// Loads and preprocesses image files into a `[batch, 3, size, size]` pixel tensor.
pub fn pixel_values<B: Backend>(
    paths: &[&Path],
    size: u32,
    aspect: AspectRatio,
    device: &B::Device,
) -> Result<Tensor<B, 4>> {
    let mut data = Vec::with_capacity(paths.len() * 3 * (size * size) as usize);
    for path in paths {
        data.extend(normalize(&preprocess_u8(&load_rgb(path)?, size, aspect)));
    }
    let s = size as usize;
    Ok(Tensor::from_data(
        TensorData::new(data, [paths.len(), 3, s, s]),
        device,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_images_and_non_files_are_refused_before_decoding() {
        let dir = std::env::temp_dir().join(format!("mmedpo-vision-open-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A 1 x 60,000 strip: a few hundred bytes of PNG, a 10.8 GB square once padded.
        let strip = dir.join("strip.png");
        image::GrayImage::new(1, 60_000).save(&strip).unwrap();
        assert!(std::fs::metadata(&strip).unwrap().len() < 100_000);
        let e = open_image(&strip).unwrap_err().to_string();
        assert!(
            e.contains("strip.png") && e.contains("larger than 8192"),
            "{e}"
        );
        let fifo = dir.join("x.png");
        let _ = std::fs::remove_file(&fifo);
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let e = open_image(&fifo).unwrap_err().to_string();
        assert!(
            e.contains("x.png") && e.contains("not a regular file"),
            "{e}"
        );
        let e = open_image(&dir.join("none.png")).unwrap_err().to_string();
        assert!(e.contains("none.png"), "{e}");
        let ok = dir.join("ok.png");
        image::GrayImage::new(3, 2).save(&ok).unwrap();
        assert_eq!(load_rgb(&ok).unwrap().dimensions(), (3, 2));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn expand_to_square_centres_like_llava() {
        let img = RgbImage::from_pixel(4, 2, Rgb([9, 9, 9]));
        let sq = expand_to_square(&img, PAD_COLOR);
        assert_eq!(sq.dimensions(), (4, 4));
        assert_eq!(sq.get_pixel(0, 0), &Rgb(PAD_COLOR));
        assert_eq!(sq.get_pixel(0, 1), &Rgb([9, 9, 9]));
        assert_eq!(sq.get_pixel(3, 2), &Rgb([9, 9, 9]));
        assert_eq!(sq.get_pixel(3, 3), &Rgb(PAD_COLOR));
        // Odd padding goes to the bottom/right, as (max - min) // 2 puts it.
        let tall = expand_to_square(&RgbImage::from_pixel(2, 5, Rgb([1, 1, 1])), PAD_COLOR);
        assert_eq!(tall.get_pixel(0, 0), &Rgb(PAD_COLOR));
        assert_eq!(tall.get_pixel(1, 0), &Rgb([1, 1, 1]));
        assert_eq!(tall.get_pixel(4, 0), &Rgb(PAD_COLOR));
    }

    #[test]
    fn resize_keeps_a_constant_image_constant_and_weights_sum_to_one() {
        let img = RgbImage::from_pixel(50, 30, Rgb([200, 17, 0]));
        let out = resize_bicubic(&img, 23, 71);
        assert!(out.pixels().all(|p| p == &Rgb([200, 17, 0])));
        for (n, m) in [(512, 336), (128, 336), (336, 336)] {
            for (_, k) in coefficients(n, m, Filter::Bicubic)
                .into_iter()
                .chain(coefficients(n, m, Filter::Bilinear))
            {
                let sum: i64 = k.iter().map(|&x| x as i64).sum();
                assert!(
                    (sum - (1 << PRECISION_BITS)).abs() <= k.len() as i64,
                    "{n}->{m}: {sum}"
                );
            }
        }
    }
}
