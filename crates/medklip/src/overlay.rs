//! Heatmap-over-image pictures for inspecting what MedKLIP pointed at: the image in gray, the
//! heatmap in a jet colour scale blended over it inside the mask, and the rest dimmed.

use image::{DynamicImage, Rgb, RgbImage};

use crate::heatmap::LesionMap;

/// Matplotlib-like "jet" for `t` in [0, 1].
pub fn jet(t: f32) -> [u8; 3] {
    let t = t.clamp(0.0, 1.0);
    let ch = |c: f32| ((1.5 - (4.0 * t - c).abs()).clamp(0.0, 1.0) * 255.0).round() as u8;
    [ch(3.0), ch(2.0), ch(1.0)]
}

/// The overlay of `lesion` on `img` (same size), as RGB.
pub fn overlay(img: &DynamicImage, lesion: &LesionMap) -> RgbImage {
    let base = img.to_rgb8();
    assert_eq!(
        (base.width() as usize, base.height() as usize),
        (lesion.width, lesion.height),
        "the heatmap is at the image's size"
    );
    let (lo, hi) = lesion
        .heatmap
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let span = if hi > lo { hi - lo } else { 1.0 };
    let mut out = RgbImage::new(base.width(), base.height());
    for (i, (p, q)) in base.pixels().zip(out.pixels_mut()).enumerate() {
        let g = (p[0] as f32 + p[1] as f32 + p[2] as f32) / 3.0;
        *q = if lesion.mask[i] {
            let c = jet((lesion.heatmap[i] - lo) / span);
            let mix = |k: usize| (0.55 * g + 0.45 * c[k] as f32).round() as u8;
            Rgb([mix(0), mix(1), mix(2)])
        } else {
            let d = (0.35 * g).round() as u8;
            Rgb([d, d, d])
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jet_runs_blue_to_red() {
        assert_eq!(jet(0.0), [0, 0, 128]);
        assert_eq!(jet(1.0), [128, 0, 0]);
        assert_eq!(jet(0.5), [128, 255, 128]);
    }

    #[test]
    fn outside_the_mask_is_dimmed_and_inside_is_coloured() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(2, 1, Rgb([200, 200, 200])));
        let lesion = LesionMap {
            width: 2,
            height: 1,
            heatmap: vec![1.0, 0.0],
            threshold: 0.5,
            mask: vec![true, false],
        };
        let o = overlay(&img, &lesion);
        assert_eq!(o.get_pixel(1, 0), &Rgb([70, 70, 70]));
        assert_ne!(o.get_pixel(0, 0)[0], o.get_pixel(0, 0)[2], "coloured");
    }
}
