//! The tiny MedKLIP compiled by burn-onnx against onnxruntime, and every post-processing step
//! against OpenCV/numpy. Goldens: `fixture/make_tiny_medklip.py` (onnxruntime 1.32, OpenCV 5.0).
//! These tests need the default build (the tiny test model); with `MEDKLIP_ONNX` set they fail
//! loudly rather than skip.

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use mmedpo_core::backend::Cpu;
use mmedpo_medklip::heatmap::{gaussian_blur, nearest_224, resize_linear, threshold, KSIZE, SIDE};
use mmedpo_medklip::model::{normalize, resize_224, IS_TINY_TEST_MODEL};
use mmedpo_medklip::{lesion_map, observation_index, Medklip};
use serde_json::Value;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixture")
}

fn goldens() -> Value {
    if !IS_TINY_TEST_MODEL {
        panic!("the goldens are for the tiny test model; unset MEDKLIP_ONNX and rebuild");
    }
    serde_json::from_slice(&std::fs::read(fixture().join("goldens.json")).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn xray() -> image::DynamicImage {
    image::open(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/images/chest-xray-pa-nodules.png"),
    )
    .unwrap()
}

/// The script's synthetic batch: sin/cos patterns over (channel, row, column).
fn synthetic() -> Vec<f32> {
    let mut out = Vec::with_capacity(2 * 3 * 224 * 224);
    for b in 0..2 {
        for c in 0..3 {
            for y in 0..224 {
                for x in 0..224 {
                    let (c, y, x) = (c as f64, y as f64, x as f64);
                    let v = if b == 0 {
                        (0.05 * x + 0.07 * y + c).sin() * 2.0
                    } else {
                        (0.03 * x - 0.11 * y + 2.0 * c).cos() * 1.5
                    };
                    out.push(v as f32);
                }
            }
        }
    }
    out
}

fn run(model: &Medklip<Cpu>, data: Vec<f32>, n: usize) -> (Vec<f32>, Vec<f32>, [usize; 4]) {
    let input =
        Tensor::<Cpu, 4>::from_data(TensorData::new(data, [n, 3, 224, 224]), &Default::default());
    let (logits, attn) = model.forward(input);
    let dims = attn.dims();
    (
        logits.into_data().into_vec().unwrap(),
        attn.into_data().into_vec().unwrap(),
        dims,
    )
}

#[test]
fn burn_matches_onnxruntime_on_a_synthetic_batch_of_two() {
    let g = goldens();
    let tol = g["tolerance"].as_f64().unwrap() as f32;
    let model = Medklip::<Cpu>::load(None, &Default::default()).unwrap();
    let (logits, attn, dims) = run(&model, synthetic(), 2);
    assert_eq!(dims, [2, 4, 75, 196]);
    let d = max_diff(&logits, &floats(&g["synthetic"]["logits"]));
    eprintln!("synthetic batch: logits max |Δ| {d:.2e}");
    assert!(d <= tol, "logits differ by {d}");
    let q = observation_index("disease").unwrap();
    let disease: Vec<f32> = (0..2)
        .flat_map(|b| (0..4).map(move |l| (b, l)))
        .flat_map(|(b, l)| attn[((b * 4 + l) * 75 + q) * 196..][..196].to_vec())
        .collect();
    let d = max_diff(&disease, &floats(&g["synthetic"]["attn_disease"]));
    eprintln!("synthetic batch: attention (query 29) max |Δ| {d:.2e}");
    assert!(d <= tol, "attention of query 29 differs by {d}");
    let q0: Vec<f32> = (0..2)
        .flat_map(|b| attn[((b * 4 + 3) * 75) * 196..][..196].to_vec())
        .collect();
    assert!(max_diff(&q0, &floats(&g["synthetic"]["attn_query0_layer3"])) <= tol);
    let sum: f64 = attn.iter().map(|&v| v as f64).sum();
    let want = g["synthetic"]["attn_sum"].as_f64().unwrap();
    assert!(
        (sum - want).abs() < 1e-3 && (sum - 600.0).abs() < 1e-2,
        "rows sum to 1: {sum}"
    );
    // Element 0 alone equals element 0 of the batch.
    let one = synthetic()[..3 * 224 * 224].to_vec();
    let (l1, a1, _) = run(&model, one, 1);
    assert!(max_diff(&l1, &logits[..150]) <= 1e-6);
    assert!(max_diff(&a1, &attn[..4 * 75 * 196]) <= 1e-6);
}

#[test]
fn chest_xray_preprocessing_model_and_confidence_match_the_python_pipeline() {
    let g = goldens();
    let x = &g["xray"];
    let tol = g["tolerance"].as_f64().unwrap() as f32;
    let img = xray();
    assert_eq!(
        (img.width() as u64, img.height() as u64),
        (x["width"].as_u64().unwrap(), x["height"].as_u64().unwrap())
    );
    // torchvision Resize([224, 224]) on the PIL image: bit-exact.
    let small = resize_224(&img.to_rgb8());
    let want = image::open(fixture().join("xray-224.png"))
        .unwrap()
        .to_luma8();
    let diffs = small
        .pixels()
        .zip(want.pixels())
        .filter(|(p, q)| p[0] != q[0] || p[1] != q[0] || p[2] != q[0])
        .count();
    assert_eq!(diffs, 0, "pixels differ from Pillow's bilinear resize");

    let model = Medklip::<Cpu>::load(None, &Default::default()).unwrap();
    let (logits, attn, _) = run(&model, normalize(&small), 1);
    let d = max_diff(&logits, &floats(&x["logits"]));
    eprintln!("chest X-ray: logits max |Δ| {d:.2e}");
    assert!(d <= tol, "logits differ by {d}");
    let q = observation_index("disease").unwrap();
    let disease: Vec<f32> = (0..4)
        .flat_map(|l| attn[(l * 75 + q) * 196..][..196].to_vec())
        .collect();
    let d = max_diff(&disease, &floats(&x["attn_disease"]));
    eprintln!("chest X-ray: attention (query 29) max |Δ| {d:.2e}");
    assert!(d <= tol, "attention differs by {d}");

    let a = &model.analyze(&[img.to_rgb8()], q).unwrap()[0];
    let score = x["score"].as_f64().unwrap();
    assert!((a.score - score).abs() <= 1e-5, "{} vs {score}", a.score);
    let d = max_diff(&a.map14, &floats(&x["heatmap14"]));
    assert!(d <= 1e-7, "14x14 map differs by {d}");
}

#[test]
fn heatmap_steps_match_opencv_on_the_chest_xray() {
    let g = goldens();
    let x = &g["xray"];
    let tol = g["tolerance"].as_f64().unwrap() as f32;
    let (w, h) = (
        x["width"].as_u64().unwrap() as usize,
        x["height"].as_u64().unwrap() as usize,
    );
    let step = x["sample_step"].as_u64().unwrap() as usize;
    let sample = |v: &[f32]| -> Vec<f32> {
        (0..h)
            .step_by(step)
            .flat_map(|r| (0..w).step_by(step).map(move |c| (r, c)))
            .map(|(r, c)| v[r * w + c])
            .collect()
    };
    // Each step starts from the golden input, so the steps are checked one by one.
    let map14 = floats(&x["heatmap14"]);
    let resized = resize_linear(&nearest_224(&map14), SIDE, SIDE, w, h);
    let d = max_diff(&sample(&resized), &floats(&x["resized_samples"]));
    eprintln!("cv2.resize INTER_LINEAR: max |Δ| {d:.2e}");
    assert!(d <= tol * 1e-2, "cv2.resize differs by {d}");
    let blurred = gaussian_blur(&resized, w, h, KSIZE);
    let d = max_diff(&sample(&blurred), &floats(&x["blurred_samples"]));
    eprintln!("cv2.GaussianBlur: max |Δ| {d:.2e}");
    assert!(d <= tol * 1e-2, "cv2.GaussianBlur differs by {d}");
    let thr = threshold(&blurred);
    let want_thr = x["threshold"].as_f64().unwrap() as f32;
    assert!((thr - want_thr).abs() <= 1e-8, "{thr} vs {want_thr}");

    let lm = lesion_map(&map14, w, h);
    assert_eq!(lm.heatmap, blurred);
    let want = image::open(fixture().join("xray-mask.png"))
        .unwrap()
        .to_luma8();
    let mut mismatched = 0;
    for (i, p) in want.pixels().enumerate() {
        if (p[0] == 255) != lm.mask[i] {
            mismatched += 1;
            // Only float rounding at the threshold itself may flip a pixel.
            assert!(
                (blurred[i] - want_thr).abs() < 1e-8,
                "pixel {i} flips far from the threshold"
            );
        }
    }
    eprintln!(
        "mask: {mismatched} of {} pixels differ, threshold Δ {:.2e}",
        w * h,
        (thr - want_thr).abs()
    );
    assert!(mismatched <= 8, "{mismatched} mask pixels differ");
    let count = lm.mask.iter().filter(|&&m| m).count() as i64;
    let want_count = x["mask_count"].as_i64().unwrap();
    assert!((count - want_count).abs() <= 8, "{count} vs {want_count}");
    assert!(
        lm.coverage() > 0.5 && lm.coverage() < 0.95,
        "{}",
        lm.coverage()
    );
}
