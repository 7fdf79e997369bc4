//! The lesion heatmap and mask, as MMedPO's `inference_attention-map_score.py` and
//! `generate_noised_image` compute them (shared/docs/medklip.md §3.2):
//! 14×14 map → nearest ×16 to 224×224 (`np.repeat`) → OpenCV `resize(INTER_LINEAR)` to the
//! original size → OpenCV `GaussianBlur((15, 15), 0)` (σ = 2.6, reflect-101 border) →
//! mask = blurred > mean − std (population std). All in float32 like the Python code; the
//! goldens (OpenCV 5, numpy) agree to 1e-5.

/// The 14×14 grid of MedKLIP's patches.
pub const GRID: usize = 14;
/// The 224-pixel input the grid is replicated to.
pub const SIDE: usize = 224;
/// The blur kernel size the script uses.
pub const KSIZE: usize = 15;

/// A heatmap at an image's original size, and the lesion mask drawn from it.
#[derive(Debug, Clone, PartialEq)]
pub struct LesionMap {
    /// Width of the original image.
    pub width: usize,
    /// Height of the original image.
    pub height: usize,
    /// The blurred heatmap, row-major `height × width`.
    pub heatmap: Vec<f32>,
    /// `mean(heatmap) − std(heatmap)`.
    pub threshold: f32,
    /// `heatmap > threshold`, row-major: where the noise goes.
    pub mask: Vec<bool>,
}

impl LesionMap {
    /// The fraction of the image inside the mask.
    pub fn coverage(&self) -> f64 {
        self.mask.iter().filter(|&&m| m).count() as f64 / self.mask.len().max(1) as f64
    }
}

/// `m.repeat(16, axis=0).repeat(16, axis=1)`: 14×14 → 224×224 by block replication.
pub fn nearest_224(map14: &[f32]) -> Vec<f32> {
    assert_eq!(map14.len(), GRID * GRID, "a 14x14 map");
    let f = SIDE / GRID;
    (0..SIDE * SIDE)
        .map(|i| map14[(i / SIDE / f) * GRID + (i % SIDE) / f])
        .collect()
}

/// OpenCV's `INTER_LINEAR` source index and weight for each destination index along one axis.
fn linear_taps(src: usize, dst: usize) -> Vec<(usize, usize, f32)> {
    let scale = 1.0 / (dst as f64 / src as f64);
    (0..dst)
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut s = f.floor() as i64;
            let mut w = f - s as f32;
            if s < 0 {
                s = 0;
                w = 0.0;
            }
            if s >= src as i64 - 1 {
                s = src as i64 - 1;
                w = 0.0;
            }
            let s = s as usize;
            (s, (s + 1).min(src - 1), w)
        })
        .collect()
}

/// `cv2.resize(src, (dw, dh), interpolation=cv2.INTER_LINEAR)` for a one-channel float32 image
/// (horizontal pass, then vertical; no antialias when shrinking, like OpenCV).
pub fn resize_linear(src: &[f32], sw: usize, sh: usize, dw: usize, dh: usize) -> Vec<f32> {
    assert_eq!(src.len(), sw * sh, "source size");
    let xs = linear_taps(sw, dw);
    let ys = linear_taps(sh, dh);
    let rows: Vec<Vec<f32>> = (0..sh)
        .map(|y| {
            let row = &src[y * sw..][..sw];
            xs.iter()
                .map(|&(a, b, w)| row[a] * (1.0 - w) + row[b] * w)
                .collect()
        })
        .collect();
    let mut out = Vec::with_capacity(dw * dh);
    for &(a, b, w) in &ys {
        out.extend(
            rows[a]
                .iter()
                .zip(&rows[b])
                .map(|(&p, &q)| p * (1.0 - w) + q * w),
        );
    }
    out
}

/// OpenCV's Gaussian kernel for `ksize` with σ = 0 (derived: `0.3·((ksize−1)/2 − 1) + 0.8`),
/// computed in f64 and normalised, then stored as float32.
pub fn gaussian_kernel(ksize: usize) -> Vec<f32> {
    let sigma = 0.3 * ((ksize as f64 - 1.0) * 0.5 - 1.0) + 0.8;
    let half = (ksize / 2) as f64;
    let k: Vec<f64> = (0..ksize)
        .map(|i| (-(i as f64 - half).powi(2) / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f64 = k.iter().sum();
    k.iter().map(|v| (v / sum) as f32).collect()
}

/// Reflect-101 (`dcb|abcd|cba`) index.
fn reflect101(i: i64, n: usize) -> usize {
    let n = n as i64;
    if n == 1 {
        return 0;
    }
    let mut i = i;
    loop {
        if i < 0 {
            i = -i;
        } else if i >= n {
            i = 2 * n - 2 - i;
        } else {
            return i as usize;
        }
    }
}

/// `cv2.GaussianBlur(src, (ksize, ksize), 0)` for a one-channel float32 image: separable,
/// rows then columns, `BORDER_REFLECT_101`.
pub fn gaussian_blur(src: &[f32], w: usize, h: usize, ksize: usize) -> Vec<f32> {
    let k = gaussian_kernel(ksize);
    let r = (ksize / 2) as i64;
    // Source index of tap j for output index i, on an axis of n: computed once per axis.
    let taps = |n: usize| -> Vec<usize> {
        (0..n)
            .flat_map(|i| (0..ksize).map(move |j| reflect101(i as i64 + j as i64 - r, n)))
            .collect()
    };
    let cols = taps(w);
    let mut tmp = vec![0f32; w * h];
    for (row, out) in src.chunks_exact(w).zip(tmp.chunks_exact_mut(w)) {
        for (x, o) in out.iter_mut().enumerate() {
            let t = &cols[x * ksize..][..ksize];
            *o = k.iter().zip(t).map(|(kv, &c)| kv * row[c]).sum();
        }
    }
    // Columns: whole rows at a time, taps in the same order as the row pass.
    let rows = taps(h);
    let mut out = vec![0f32; w * h];
    for (y, o) in out.chunks_exact_mut(w).enumerate() {
        for (kv, &yy) in k.iter().zip(&rows[y * ksize..][..ksize]) {
            for (acc, &v) in o.iter_mut().zip(&tmp[yy * w..][..w]) {
                *acc += kv * v;
            }
        }
    }
    out
}

/// `thr = mean − std` (population std) of a heatmap, accumulated in f64.
pub fn threshold(values: &[f32]) -> f32 {
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = values
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean - var.sqrt()) as f32
}

/// The whole chain for one image of `width × height` pixels from its 14×14 map.
pub fn lesion_map(map14: &[f32], width: usize, height: usize) -> LesionMap {
    let m224 = nearest_224(map14);
    let resized = resize_linear(&m224, SIDE, SIDE, width, height);
    let heatmap = gaussian_blur(&resized, width, height, KSIZE);
    let threshold = threshold(&heatmap);
    let mask = heatmap.iter().map(|&v| v > threshold).collect();
    LesionMap {
        width,
        height,
        heatmap,
        threshold,
        mask,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_is_opencvs_sigma_2_6_and_sums_to_one() {
        let k = gaussian_kernel(15);
        let sum: f32 = k.iter().sum();
        assert!((sum - 1.0).abs() < 1e-6);
        let sigma: f64 = 2.6;
        let ratio = (k[7] / k[8]) as f64;
        assert!(
            (ratio - (1.0 / (2.0 * sigma * sigma)).exp()).abs() < 1e-5,
            "{ratio}"
        );
    }

    #[test]
    fn reflect101_mirrors_without_repeating_the_edge() {
        let idx: Vec<usize> = (-3..8).map(|i| reflect101(i, 5)).collect();
        assert_eq!(idx, vec![3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1]);
    }

    #[test]
    fn linear_resize_keeps_constants_and_maps_corners() {
        let src: Vec<f32> = (0..12).map(|v| v as f32).collect(); // 4x3
        let same = resize_linear(&src, 4, 3, 4, 3);
        assert_eq!(same, src);
        let up = resize_linear(&[7.0; 6], 3, 2, 10, 5);
        assert!(up.iter().all(|&v| (v - 7.0).abs() < 1e-5));
        let big = resize_linear(&src, 4, 3, 8, 6);
        assert_eq!(big[0], 0.0);
        assert_eq!(big[47], 11.0);
    }

    #[test]
    fn a_flat_map_masks_nothing_and_a_smooth_blob_masks_all_but_its_far_corners() {
        let flat = lesion_map(&[0.5; 196], 30, 20);
        assert!(flat.mask.iter().all(|&m| !m), "nothing is above mean - 0");
        let blob: Vec<f32> = (0..196)
            .map(|i| {
                let (r, c) = ((i / 14) as f32 - 6.5, (i % 14) as f32 - 6.5);
                (-(r * r + c * c) / 18.0).exp()
            })
            .collect();
        let lm = lesion_map(&blob, 300, 200);
        assert!(lm.mask[100 * 300 + 150], "the centre is noised");
        assert!(
            !lm.mask[0] && !lm.mask[300 * 200 - 1],
            "the far corners are not"
        );
        assert!(
            lm.coverage() > 0.6 && lm.coverage() < 0.95,
            "{}",
            lm.coverage()
        );
    }
}
