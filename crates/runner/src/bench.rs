//! `mmedpo bench`: throughput figures (not a timed test). `cargo xtask bench llm` calls it.

use std::time::Instant;

use anyhow::{bail, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use clap::{Args, Subcommand, ValueEnum};
use mmedpo_llm::generate::generate;
use mmedpo_llm::{DecoderConfig, GenerationConfig, Sampling};

/// Arguments of `mmedpo bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand, Debug)]
enum What {
    /// Seconds, tokens/s, TFLOP/s and peak memory of `mmedpo train`'s step on a random LLaVA of
    /// any config (no weights on disk), with synthetic pairs.
    Train(crate::bench_train::BenchTrainArgs),
    /// Prefill and decode tokens/s of a Mistral/Llama with random weights: a ~100M-parameter one,
    /// or the text model of `--config`.
    Llm {
        /// A `config.json` (an LLM's, or a llava-hf one's text model), e.g.
        /// models/llava-med-7b/config.json.
        #[arg(long)]
        config: Option<std::path::PathBuf>,
        /// Prompt tokens per sequence.
        #[arg(long, default_value_t = 128)]
        prompt_len: usize,
        /// New tokens per sequence.
        #[arg(long, default_value_t = 32)]
        new_tokens: usize,
        /// Sequences per batch.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Timed repetitions (after one warm-up).
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Backend.
        #[arg(long, value_enum, default_value_t = BenchBackend::Flex)]
        backend: BenchBackend,
    },
    /// Images/s of the visual-pair stage (MedKLIP as compiled, heatmap, mask, noise, PNG) on a
    /// square gray chest X-ray.
    Visual {
        /// Side of the input images in pixels.
        #[arg(long, default_value_t = 512)]
        size: u32,
        /// Images timed (after one warm-up batch).
        #[arg(long, default_value_t = 32)]
        images: usize,
        /// Images per MedKLIP forward.
        #[arg(long, default_value_t = 16)]
        batch: usize,
        /// Noise mode.
        #[arg(long, default_value = "speckle-faithful")]
        noise: String,
        /// MedKLIP weights for a real build (default: the compiled-in or built weights).
        #[arg(long)]
        medklip_weights: Option<std::path::PathBuf>,
        /// Backend.
        #[arg(long, value_enum, default_value_t = BenchBackend::Flex)]
        backend: BenchBackend,
    },
    /// Square f32 matmul GFLOP/s.
    Matmul {
        /// Matrix side.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Timed repetitions.
        #[arg(long, default_value_t = 20)]
        reps: usize,
        /// Backend.
        #[arg(long, value_enum, default_value_t = BenchBackend::Flex)]
        backend: BenchBackend,
    },
}

/// Backends the benchmark can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BenchBackend {
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

impl BenchBackend {
    fn dtype(self) -> burn::tensor::DType {
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
                type $B = mmedpo_core::backend::Cpu;
                let $device = Default::default();
                $body
            }
            #[cfg(feature = "ndarray")]
            BenchBackend::Ndarray => {
                type $B = mmedpo_core::backend::NdArray;
                let $device = Default::default();
                $body
            }
            #[cfg(feature = "cuda")]
            BenchBackend::Cuda => {
                type $B = mmedpo_core::backend::Gpu;
                let $device = burn::backend::cuda::CudaDevice::new(0);
                $body
            }
            #[cfg(feature = "cuda")]
            BenchBackend::CudaBf16 => {
                type $B = mmedpo_core::backend::Gpu;
                let $device = burn::backend::cuda::CudaDevice::new(0);
                $body
            }
            #[allow(unreachable_patterns)]
            other => bail!(
                "backend {other:?} is not compiled into this binary (features ndarray / cuda)"
            ),
        }
    }};
}

/// Runs `mmedpo bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    match args.what {
        What::Train(a) => crate::bench_train::run(a),
        What::Llm {
            config,
            prompt_len,
            new_tokens,
            batch,
            reps,
            backend,
        } => {
            let config = match &config {
                None => DecoderConfig::mistral_100m(),
                Some(path) => match mmedpo_lvlm::LlavaConfig::from_file(path) {
                    Ok(llava) => llava.text,
                    Err(_) => mmedpo_llm::HfConfig::from_file(path)?.into_runtime()?,
                },
            };
            on_backend!(backend, |B, device| bench_llm::<B>(
                &device, &config, prompt_len, new_tokens, batch, reps, backend
            ))
        }
        What::Visual {
            size,
            images,
            batch,
            noise,
            medklip_weights,
            backend,
        } => on_backend!(backend, |B, device| bench_visual::<B>(
            &device,
            size,
            images,
            batch,
            &noise,
            medklip_weights.as_deref(),
            backend
        )),
        What::Matmul {
            size,
            reps,
            backend,
        } => on_backend!(backend, |B, device| bench_matmul::<B>(
            &device, size, reps, backend
        )),
    }
}

fn bench_llm<B: Backend>(
    device: &B::Device,
    config: &DecoderConfig,
    prompt_len: usize,
    new_tokens: usize,
    batch: usize,
    reps: usize,
    backend: BenchBackend,
) -> Result<()> {
    if new_tokens < 2 || prompt_len == 0 || batch == 0 {
        bail!("need --prompt-len >= 1, --new-tokens >= 2 and --batch >= 1");
    }
    let model = mmedpo_core::precision::cast_module(config.init::<B>(device), backend.dtype());
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
    say!(
        "{backend:?}: {:.1}M params, batch {batch}: prefill {prefill_tps:.1} tokens/s ({prompt_len} tokens in {:.3} s), \
         decode {decode_tps:.2} tokens/s",
        config.num_parameters() as f64 / 1e6,
        prefill
    );
    say!("{result}");
    Ok(())
}

fn bench_matmul<B: Backend>(
    device: &B::Device,
    size: usize,
    reps: usize,
    backend: BenchBackend,
) -> Result<()> {
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
    say!(
        "{backend:?}: {size}x{size} matmul {:.2} ms, {gflops:.1} GFLOP/s (checksum {check:?})",
        secs * 1e3
    );
    say!(
        "{}",
        serde_json::json!({"bench": "matmul", "backend": format!("{backend:?}"), "size": size, "ms": secs * 1e3, "gflops": gflops})
    );
    Ok(())
}

fn bench_visual<B: Backend>(
    device: &B::Device,
    size: u32,
    images: usize,
    batch: usize,
    noise: &str,
    weights: Option<&std::path::Path>,
    backend: BenchBackend,
) -> Result<()> {
    use mmedpo_medklip::model::{normalize, resize_224};
    use mmedpo_medklip::noise::{add_noise, NoiseMode, DEFAULT_STEP};
    let mode = NoiseMode::parse(noise, DEFAULT_STEP)?;
    let model = mmedpo_medklip::Medklip::<B>::load(weights, device)?;
    let query = mmedpo_medklip::observation_index("disease")?;
    let xray = image::open("data/images/chest-xray-pa-nodules.png")
        .map_err(|e| {
            anyhow::anyhow!(
                "data/images/chest-xray-pa-nodules.png (run from the repository root): {e}"
            )
        })?
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
            let lesion = mmedpo_medklip::lesion_map(&a.map14, size as usize, size as usize);
            let tn = Instant::now();
            let noised = add_noise(&img, &lesion.mask, mode, i as u64);
            let tp = Instant::now();
            let mut bytes = Vec::new();
            noised.write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )?;
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
    say!(
        "{backend:?}, MedKLIP = {}: {n} images of {size}x{size}, batch {batch}, noise {}: {:.2} images/s \
         (ms/image: preprocess {:.2}, MedKLIP {:.2}, heatmap+mask {:.2}, noise {:.2}, PNG {:.2})",
        mmedpo_medklip::model::SOURCE,
        mode.name(),
        n / total,
        per(stage[0]),
        per(stage[1]),
        per(stage[2]),
        per(stage[3]),
        per(stage[4]),
    );
    say!(
        "{}",
        serde_json::json!({"bench": "visual", "backend": format!("{backend:?}"), "medklip": mmedpo_medklip::model::SOURCE,
            "size": size, "images": n, "batch": batch, "noise": mode.name(), "images_per_s": n / total,
            "ms_per_image": {"preprocess": per(stage[0]), "medklip": per(stage[1]), "heatmap_mask": per(stage[2]),
            "noise": per(stage[3]), "png": per(stage[4])}})
    );
    Ok(())
}
