//! Throughput figures (not timed tests; `mmedpo bench`, `cargo xtask bench`): LLM prefill and
//! decode tokens/s, square matmul GFLOP/s, visual-pair images/s ([`llm`], [`matmul`],
//! [`visual`]) and the training step ([`train`]). Each returns a [`Measurement`]: the lines a
//! person reads and the JSON a script reads.

pub mod train;

use std::path::Path;
use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};

use crate::error::invalid;
use crate::llm::generate::generate;
use crate::llm::{DecoderConfig, GenerationConfig, Sampling};
use crate::{Error, Result};

/// What a benchmark measured.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// For people: one summary line (and details).
    pub lines: Vec<String>,
    /// For scripts: every figure.
    pub json: serde_json::Value,
}

/// Backends the benchmark can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchBackend {
    /// Burn Flex (CPU).
    Flex,
    /// Burn ndarray (CPU; binary built with `--features ndarray`).
    Ndarray,
    /// CUDA f32 (binary built with `--features cuda`).
    Cuda,
    /// CUDA, bf16 weights and activations.
    CudaBf16,
    /// Flex, bf16 weights and activations.
    FlexBf16,
}

impl std::str::FromStr for BenchBackend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "flex" => BenchBackend::Flex,
            "ndarray" => BenchBackend::Ndarray,
            "cuda" => BenchBackend::Cuda,
            "cuda-bf16" => BenchBackend::CudaBf16,
            "flex-bf16" => BenchBackend::FlexBf16,
            other => {
                invalid!("backend {other:?}: expected flex, ndarray, cuda, cuda-bf16 or flex-bf16")
            }
        })
    }
}

impl BenchBackend {
    /// The float type its tensors are held in.
    pub fn dtype(self) -> burn::tensor::DType {
        match self {
            BenchBackend::CudaBf16 | BenchBackend::FlexBf16 => burn::tensor::DType::BF16,
            _ => burn::tensor::DType::F32,
        }
    }
}

macro_rules! on_backend {
    ($backend:expr, |$B:ident, $device:ident| $body:expr) => {{
        match $backend {
            BenchBackend::Flex | BenchBackend::FlexBf16 => {
                type $B = crate::core::backend::Cpu;
                let $device = Default::default();
                $body
            }
            #[cfg(feature = "ndarray")]
            BenchBackend::Ndarray => {
                type $B = crate::core::backend::NdArray;
                let $device = Default::default();
                $body
            }
            #[cfg(feature = "cuda")]
            BenchBackend::Cuda => {
                type $B = crate::core::backend::Gpu;
                let $device = burn::backend::cuda::CudaDevice::new(0);
                $body
            }
            #[cfg(feature = "cuda")]
            BenchBackend::CudaBf16 => {
                type $B = crate::core::backend::Gpu;
                let $device = burn::backend::cuda::CudaDevice::new(0);
                $body
            }
            #[allow(unreachable_patterns)]
            other => invalid!(
                "backend {other:?} is not compiled into this build (features ndarray / cuda)"
            ),
        }
    }};
}

/// Prefill and decode tokens/s of a Mistral/Llama with random weights: a ~100M-parameter one,
/// or the text model of `config` (an LLM's `config.json` or a llava-hf one's).
pub fn llm(
    config: Option<&Path>,
    prompt_len: usize,
    new_tokens: usize,
    batch: usize,
    reps: usize,
    backend: BenchBackend,
) -> Result<Measurement> {
    let config = match config {
        None => DecoderConfig::mistral_100m(),
        Some(path) => match crate::lvlm::LlavaConfig::from_file(path) {
            Ok(llava) => llava.text,
            Err(_) => crate::llm::HfConfig::from_file(path)?.into_runtime()?,
        },
    };
    on_backend!(backend, |B, device| bench_llm::<B>(
        &device, &config, prompt_len, new_tokens, batch, reps, backend
    ))
}

/// Square f32 (or bf16) matmul GFLOP/s.
pub fn matmul(size: usize, reps: usize, backend: BenchBackend) -> Result<Measurement> {
    on_backend!(backend, |B, device| bench_matmul::<B>(
        &device, size, reps, backend
    ))
}

/// Images/s of the visual-pair stage (MedKLIP as compiled, heatmap, mask, noise, PNG) on the
/// shipped chest X-ray resized to `size`², read from `xray`.
pub fn visual(
    xray: &Path,
    size: u32,
    images: usize,
    batch: usize,
    noise: &str,
    medklip_weights: Option<&Path>,
    backend: BenchBackend,
) -> Result<Measurement> {
    on_backend!(backend, |B, device| bench_visual::<B>(
        &device,
        xray,
        size,
        images,
        batch,
        noise,
        medklip_weights,
        backend
    ))
}

fn bench_llm<B: Backend>(
    device: &B::Device,
    config: &DecoderConfig,
    prompt_len: usize,
    new_tokens: usize,
    batch: usize,
    reps: usize,
    backend: BenchBackend,
) -> Result<Measurement> {
    if new_tokens < 2 || prompt_len == 0 || batch == 0 {
        invalid!("need prompt_len >= 1, new_tokens >= 2 and batch >= 1");
    }
    let model = crate::core::precision::cast_module(config.init::<B>(device), backend.dtype());
    let prompts: Vec<Vec<u32>> = (0..batch)
        .map(|b| {
            (0..prompt_len)
                .map(|i| 3 + ((i * 7919 + b * 104_729) % 31_000) as u32)
                .collect()
        })
        .collect();
    let gen = GenerationConfig {
        max_new_tokens: new_tokens,
        sampling: Sampling::Greedy,
        eos_token_ids: vec![],
        pad_token_id: 0,
    };
    generate(&model, &prompts, &gen, device)?; // warm-up
    let (mut prefill, mut decode) = (f64::MAX, f64::MAX);
    for _ in 0..reps.max(1) {
        let out = generate(&model, &prompts, &gen, device)?;
        prefill = prefill.min(out.prefill.as_secs_f64());
        decode = decode.min(out.decode.as_secs_f64());
    }
    // The first new token comes out of the prefill; the decode loop runs new_tokens - 1 steps.
    let prefill_tps = (batch * prompt_len) as f64 / prefill;
    let decode_tps = (batch * (new_tokens - 1)) as f64 / decode;
    let result = serde_json::json!({
        "bench": "llm", "backend": format!("{backend:?}"), "params_m": config.num_parameters() as f64 / 1e6,
        "batch": batch, "prompt_len": prompt_len, "new_tokens": new_tokens,
        "prefill_tokens_per_s": prefill_tps, "decode_tokens_per_s": decode_tps,
        "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    });
    let line = format!(
        "{backend:?}: {:.1}M params, batch {batch}: prefill {prefill_tps:.1} tokens/s ({prompt_len} tokens in {:.3} s), \
         decode {decode_tps:.2} tokens/s",
        config.num_parameters() as f64 / 1e6,
        prefill
    );
    Ok(Measurement {
        lines: vec![line],
        json: result,
    })
}

fn bench_matmul<B: Backend>(
    device: &B::Device,
    size: usize,
    reps: usize,
    backend: BenchBackend,
) -> Result<Measurement> {
    let a = Tensor::<B, 2>::random([size, size], Distribution::Normal(0.0, 1.0), device)
        .cast(backend.dtype());
    let b = Tensor::<B, 2>::random([size, size], Distribution::Normal(0.0, 1.0), device)
        .cast(backend.dtype());
    let check = a.clone().matmul(b.clone()).sum().into_scalar(); // warm-up and sync
    let start = Instant::now();
    for _ in 0..reps {
        let _ = a.clone().matmul(b.clone()).sum().into_scalar();
    }
    let secs = start.elapsed().as_secs_f64() / reps as f64;
    let gflops = 2.0 * (size as f64).powi(3) / secs / 1e9;
    let line = format!(
        "{backend:?}: {size}x{size} matmul {:.2} ms, {gflops:.1} GFLOP/s (checksum {check:?})",
        secs * 1e3
    );
    Ok(Measurement {
        lines: vec![line],
        json: serde_json::json!({"bench": "matmul", "backend": format!("{backend:?}"), "size": size, "ms": secs * 1e3, "gflops": gflops}),
    })
}

#[allow(clippy::too_many_arguments)]
fn bench_visual<B: Backend>(
    device: &B::Device,
    xray: &Path,
    size: u32,
    images: usize,
    batch: usize,
    noise: &str,
    weights: Option<&Path>,
    backend: BenchBackend,
) -> Result<Measurement> {
    use crate::medklip::model::{normalize, resize_224};
    use crate::medklip::noise::{add_noise, NoiseMode, DEFAULT_STEP};
    let mode = NoiseMode::parse(noise, DEFAULT_STEP)?;
    let model = crate::medklip::Medklip::<B>::load(weights, device)?;
    let query = crate::medklip::observation_index("disease")?;
    let xray = image::open(xray)
        .map_err(|e| Error::Invalid(format!("{}: {e}", xray.display())))?
        .resize_exact(size, size, image::imageops::FilterType::Triangle)
        .to_luma8();
    let img = image::DynamicImage::ImageLuma8(xray);
    let batch = batch.clamp(1, images.max(1));
    let mut stage = [0f64; 5]; // preprocess, medklip, heatmap+mask, noise, png
    let mut run_batch = |timed: bool| -> Result<()> {
        let t = Instant::now();
        let prepared: Vec<Vec<f32>> = (0..batch)
            .map(|_| normalize(&resize_224(&img.to_rgb8())))
            .collect();
        let t1 = Instant::now();
        let analyses = model.analyze_normalized(&prepared, query)?;
        let t2 = Instant::now();
        let (mut heat, mut noise_s, mut png) = (0.0, 0.0, 0.0);
        for (i, a) in analyses.iter().enumerate() {
            let t = Instant::now();
            let lesion = crate::medklip::lesion_map(&a.map14, size as usize, size as usize);
            let tn = Instant::now();
            let noised = add_noise(&img, &lesion.mask, mode, i as u64);
            let tp = Instant::now();
            let mut bytes = Vec::new();
            noised
                .write_to(
                    &mut std::io::Cursor::new(&mut bytes),
                    image::ImageFormat::Png,
                )
                .map_err(|e| Error::Invalid(format!("encoding a PNG: {e}")))?;
            heat += (tn - t).as_secs_f64();
            noise_s += (tp - tn).as_secs_f64();
            png += tp.elapsed().as_secs_f64();
        }
        if timed {
            stage[0] += (t1 - t).as_secs_f64();
            stage[1] += (t2 - t1).as_secs_f64();
            stage[2] += heat;
            stage[3] += noise_s;
            stage[4] += png;
        }
        Ok(())
    };
    run_batch(false)?; // warm-up
    let batches = images.max(1).div_ceil(batch);
    for _ in 0..batches {
        run_batch(true)?;
    }
    let n = (batches * batch) as f64;
    let total: f64 = stage.iter().sum();
    let per = |s: f64| 1e3 * s / n;
    let line = format!(
        "{backend:?}, MedKLIP = {}: {n} images of {size}x{size}, batch {batch}, noise {}: {:.2} images/s \
         (ms/image: preprocess {:.2}, MedKLIP {:.2}, heatmap+mask {:.2}, noise {:.2}, PNG {:.2})",
        crate::medklip::model::SOURCE,
        mode.name(),
        n / total,
        per(stage[0]),
        per(stage[1]),
        per(stage[2]),
        per(stage[3]),
        per(stage[4]),
    );
    let json = serde_json::json!({"bench": "visual", "backend": format!("{backend:?}"), "medklip": crate::medklip::model::SOURCE,
            "size": size, "images": n, "batch": batch, "noise": mode.name(), "images_per_s": n / total,
            "ms_per_image": {"preprocess": per(stage[0]), "medklip": per(stage[1]), "heatmap_mask": per(stage[2]),
            "noise": per(stage[3]), "png": per(stage[4])}});
    Ok(Measurement {
        lines: vec![line],
        json,
    })
}
