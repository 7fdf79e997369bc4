//! Preprocessing and tower parity with Hugging Face (goldens: `tests/golden/make_vision_goldens.py`).
//!
//! Preprocessing: the uint8 image after pad-to-square + bicubic resize + crop equals Pillow's exactly
//! (max |Δ| = 0 levels), and the normalised tensor equals `CLIPImageProcessor`'s output (sampled every
//! 7th row/column) to 1e-6, far inside the required 2/255.
//! Tower: hidden_states[-2] without CLS, last_hidden_state and pooler_output ≤ 1e-4.

use std::path::{Path, PathBuf};

use mmedpo_core::backend::Cpu;
use mmedpo_vision::loader::load_clip;
use mmedpo_vision::preprocess::{load_rgb, normalize, pixel_values, preprocess_u8};
use mmedpo_vision::AspectRatio;
use safetensors::SafeTensors;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn image(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/images")
        .join(format!("{name}.png"))
}

fn goldens(key: &str) -> (Vec<f32>, Vec<usize>) {
    let bytes = std::fs::read(golden().join("vision_goldens.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(key).unwrap();
    (
        t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        t.shape().to_vec(),
    )
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn preprocessing_equals_pillow_and_clip_image_processor() {
    for name in ["chest-xray-pa-nodules", "ct-small"] {
        let ours = preprocess_u8(&load_rgb(&image(name)).unwrap(), 336, AspectRatio::Pad);
        let theirs = image::open(golden().join(format!("pixels-{name}.png")))
            .unwrap()
            .to_rgb8();
        assert_eq!(ours.dimensions(), (336, 336));
        let worst = ours
            .pixels()
            .zip(theirs.pixels())
            .flat_map(|(a, b)| (0..3).map(move |c| (a[c] as i32 - b[c] as i32).abs()))
            .max()
            .unwrap();
        println!("{name}: max |Δ| uint8 = {worst}");
        assert_eq!(worst, 0, "{name}: resized image differs from Pillow's");
        let full = normalize(&ours);
        let (want, shape) = goldens(&format!("pixel_values.{name}"));
        assert_eq!(shape, vec![3, 48, 48]);
        let sampled: Vec<f32> = (0..3)
            .flat_map(|c| (0..48).flat_map(move |y| (0..48).map(move |x| (c, y * 7, x * 7))))
            .map(|(c, y, x)| full[c * 336 * 336 + y * 336 + x])
            .collect();
        let d = max_diff(&sampled, &want);
        println!("{name}: max |Δ| normalised = {d:e}");
        assert!(d <= 1e-6, "{name}: {d}");
    }
}

#[test]
fn tiny_clip_tower_matches_transformers() {
    let device = Default::default();
    let (model, config, report) = load_clip::<Cpu>(&golden().join("tiny-clip"), &device).unwrap();
    assert_eq!(config.num_patches(), 576);
    assert!(report.ignored.is_empty(), "{report}");
    let pixels = pixel_values::<Cpu>(
        &[image("chest-xray-pa-nodules").as_path()],
        336,
        AspectRatio::Pad,
        &device,
    )
    .unwrap();
    let feats: Vec<f32> = model
        .features(pixels.clone(), -2, true)
        .into_data()
        .to_vec()
        .unwrap();
    let (want, shape) = goldens("hidden.-2");
    assert_eq!(shape, vec![576, 32]);
    let d1 = max_diff(&feats, &want);
    let (last, pooled) = model.forward_full(pixels);
    let d2 = max_diff(
        &last.into_data().to_vec::<f32>().unwrap(),
        &goldens("last_hidden").0,
    );
    let d3 = max_diff(
        &pooled.into_data().to_vec::<f32>().unwrap(),
        &goldens("pooled").0,
    );
    println!("layer -2: {d1:e}, last: {d2:e}, pooled: {d3:e}");
    assert!(d1 <= 1e-4 && d2 <= 1e-4 && d3 <= 1e-4, "{d1} {d2} {d3}");
}

#[test]
fn an_unreadable_image_names_the_file() {
    let bad = std::env::temp_dir().join(format!("mmedpo-bad-{}.png", std::process::id()));
    std::fs::write(&bad, b"not a png").unwrap();
    let err = load_rgb(&bad).unwrap_err().to_string();
    std::fs::remove_file(&bad).unwrap();
    assert!(err.contains(bad.to_str().unwrap()), "{err}");
    let err = load_rgb(Path::new("/no/such.png")).unwrap_err().to_string();
    assert!(err.contains("/no/such.png"), "{err}");
}
