//! The training step of `mmedpo train` (the same `loss_and_grads` and `optimizer_step`) on a
//! random LLaVA of any config built on the device, with synthetic pairs of a given length. FLOP
//! formula: docs/benchmarks.md.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::backend::AutodiffBackend;

use super::Measurement;
use crate::dpo::train::{loss_and_grads, optimizer_step, Phases, Reference, TrainSettings};
use crate::error::invalid;
use crate::lora::LoraConfig;
use crate::lvlm::prompt::{IGNORE_INDEX, IMAGE_TOKEN_INDEX};
use crate::lvlm::score::{PairSettings, PreparedPair};
use crate::lvlm::{Layout, LlavaConfig, Sequence};
use crate::{DeviceKind, Dtype, Error, Result};

/// What to measure.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainBench {
    /// A llava-hf `config.json` (e.g. models/llava-med-7b/config.json).
    pub config: PathBuf,
    /// cpu | cuda.
    pub device: DeviceKind,
    /// Compute dtype of the frozen weights (LoRA stays f32).
    pub dtype: Dtype,
    /// Tokens per sequence after image expansion (LLaVA-Med pairs: about 776).
    pub seq_len: usize,
    /// Answer tokens per sequence (the labelled ones).
    pub answer_len: usize,
    /// Timed steps (after the first, which is reported on its own).
    pub steps: usize,
    /// Pairs per step.
    pub batch: usize,
    /// LoRA rank (alpha = 2r, as the paper's 128/256).
    pub lora_r: usize,
    /// Recompute memory-bound activations in the backward pass.
    pub checkpointing: bool,
    /// Data-parallel replicas (CUDA GPUs 0..N−1, or N CPU threads), each with `batch` pairs.
    pub devices: usize,
}

impl Default for TrainBench {
    fn default() -> Self {
        Self {
            config: PathBuf::new(),
            device: DeviceKind::Cpu,
            dtype: Dtype::F32,
            seq_len: 256,
            answer_len: 20,
            steps: 3,
            batch: 1,
            lora_r: 16,
            checkpointing: false,
            devices: 1,
        }
    }
}

/// Measures the step; an error when a loss or a gradient norm is not finite.
pub fn train(args: &TrainBench) -> Result<Measurement> {
    use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
    use burn::backend::Autodiff;
    if args.devices == 0 {
        invalid!("devices = 0: at least 1");
    }
    let cpus = vec![Default::default(); args.devices];
    #[cfg(feature = "cuda")]
    let gpus: Vec<_> = (0..args.devices)
        .map(burn::backend::cuda::CudaDevice::new)
        .collect();
    match (args.device, args.checkpointing) {
        (DeviceKind::Cpu, false) => bench::<Autodiff<crate::core::backend::Cpu>>(args, &cpus),
        (DeviceKind::Cpu, true) => {
            bench::<Autodiff<crate::core::backend::Cpu, BalancedCheckpointing>>(args, &cpus)
        }
        #[cfg(feature = "cuda")]
        (DeviceKind::Cuda, false) => bench::<Autodiff<crate::core::backend::Gpu>>(args, &gpus),
        #[cfg(feature = "cuda")]
        (DeviceKind::Cuda, true) => {
            bench::<Autodiff<crate::core::backend::Gpu, BalancedCheckpointing>>(args, &gpus)
        }
        #[cfg(not(feature = "cuda"))]
        (DeviceKind::Cuda, _) => Err(Error::NoCuda),
    }
}

/// One bench step as rank 0 saw it.
struct StepReport {
    step: usize,
    seconds: f64,
    loss: f64,
    norm: f64,
    phases: Phases,
    optimizer_s: f64,
}

/// What rank 0 does after each bench step.
type OnStep<'a, B> =
    Box<dyn FnMut(StepReport, &crate::lvlm::LlavaForConditionalGeneration<B>) + 'a>;

/// Peak resident memory of this process (Linux `VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Synthetic pairs: `[bos, <image>, prompt…, answer…]` expanding to `seq_len` tokens, the same
/// image for chosen and rejected (a text pair), answers differing.
fn synthetic_pairs(config: &LlavaConfig, args: &TrainBench) -> Result<Vec<PreparedPair>> {
    let image_tokens = config.image_tokens();
    let text = (args.seq_len + 1)
        .checked_sub(image_tokens + 2)
        .filter(|t| *t > args.answer_len)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "seq_len {} leaves no room for {} image tokens, a prompt and {} answer tokens",
                args.seq_len, image_tokens, args.answer_len
            ))
        })?;
    let vocab = config.text.vocab_size as i64;
    let size = config.vision.as_ref().map_or(336, |v| v.image_size);
    let token = |i: usize, salt: usize| 3 + ((i * 7919 + salt * 104_729) as i64 % (vocab - 3));
    Ok((0..args.batch)
        .map(|b| {
            let seq = |salt: usize| {
                let mut ids = vec![1, IMAGE_TOKEN_INDEX];
                ids.extend((0..text).map(|i| token(i, b * 3 + salt)));
                let mut labels = vec![IGNORE_INDEX; ids.len() - args.answer_len];
                labels.extend_from_slice(&ids[ids.len() - args.answer_len..]);
                Sequence {
                    ids,
                    labels: Some(labels),
                }
            };
            let pixels: Vec<f32> = (0..3 * size * size)
                .map(|i| ((i * 2654435761usize + b) % 1000) as f32 / 250.0 - 2.0)
                .collect();
            PreparedPair {
                id: crate::core::record::RecordId::Int(b as i64),
                chosen: seq(1),
                rejected: seq(2),
                chosen_pixels: pixels.clone(),
                rejected_pixels: pixels,
            }
        })
        .collect())
}

/// Matmul FLOPs of one pair's step (docs/benchmarks.md): the decoder forward of both sequences three
/// times over (policy forward, its backward to the inputs, the reference forward) plus one tower pass.
fn flops_per_pair(config: &LlavaConfig, t: usize) -> f64 {
    let c = &config.text;
    let (d, m) = (c.hidden_size as f64, c.intermediate_size as f64);
    let (q, kv) = (
        (c.num_attention_heads * c.head_dim) as f64,
        (c.num_key_value_heads * c.head_dim) as f64,
    );
    let layers = c.num_hidden_layers as f64;
    let linear = layers * (2.0 * d * q + 2.0 * d * kv + 3.0 * d * m);
    let t = t as f64;
    let decoder = 2.0 * linear * t + 4.0 * layers * t * t * q;
    let tower = config.vision.as_ref().map_or(0.0, |v| {
        let (d, m) = (v.hidden_size as f64, v.intermediate_size as f64);
        let p = ((v.image_size / v.patch_size).pow(2) + 1) as f64;
        v.num_hidden_layers as f64 * (2.0 * (4.0 * d * d + 2.0 * d * m) * p + 4.0 * p * p * d)
    });
    2.0 * 3.0 * decoder + tower
}

fn lora_a_values<B: AutodiffBackend>(
    model: &crate::lvlm::LlavaForConditionalGeneration<B>,
) -> Vec<f32> {
    model
        .language_model
        .lora_layers()
        .into_iter()
        .filter_map(|(_, l)| l.lora.as_ref())
        .flat_map(|a| {
            a.lora_A
                .weight
                .val()
                .inner()
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .unwrap_or_default()
        })
        .collect()
}

fn bench<B: AutodiffBackend>(args: &TrainBench, devices: &[B::Device]) -> Result<Measurement> {
    let device = &devices[0];
    let world = devices.len();
    if args.steps == 0 || args.batch == 0 {
        invalid!("steps and batch must be at least 1");
    }
    let config = LlavaConfig::from_file(&args.config)?;
    let pairs = synthetic_pairs(&config, args)?;
    let build = Instant::now();
    B::seed(device, 0);
    let model = crate::core::precision::cast_module(config.init::<B>(device), args.dtype.burn());
    let mut model = model.no_grad();
    let settings = TrainSettings {
        lora: LoraConfig::new(args.lora_r, 2.0 * args.lora_r as f64),
        beta: 0.1,
        loss_type: crate::dpo::loss::LossType::Sigmoid,
        weight_mode: crate::dpo::data::WeightMode::Raw,
        weight_stats: crate::dpo::data::WeightStats::Global,
        learning_rate: 1e-7,
        projector_lr: None,
        adamw: crate::dpo::optim::AdamW::default(),
        warmup_ratio: 0.0,
        epochs: 1,
        max_steps: Some(args.steps + 1),
        batch_size: args.batch,
        grad_accum: 1,
        max_grad_norm: 1.0,
        seed: 0,
        save_steps: 0,
        pairs: PairSettings {
            template: crate::llm::Template::VicunaV1,
            image_root: Path::new(".").to_path_buf(),
            aspect: crate::vision::AspectRatio::Pad,
            image_size: config.vision.as_ref().map_or(336, |v| v.image_size) as u32,
        },
        reference: Reference::AdapterOff,
        layout: Layout::Hf,
        stop_after: None,
    };
    settings.validate()?;
    let layers = model.attach_lora(&settings.lora, Layout::Hf, device);
    // Touch one weight so the lazily drawn parameters exist before the clock stops.
    let _ = model
        .language_model
        .model
        .norm
        .gamma
        .val()
        .sum()
        .into_data();
    let build_s = build.elapsed().as_secs_f64();
    let weights = vec![1.0; pairs.len()];
    let total = args.steps + 1;
    let (mut times, mut losses, mut norms) = (vec![], vec![], vec![]);
    let mut a_after_first = vec![];
    let mut phases: Vec<(Phases, f64)> = vec![];
    // Rank r > 0: a replica on its device running the same steps; every rank sums its gradients
    // with the others' (one all-reduce per step) before the same AdamW step.
    type Inner<B> = <B as AutodiffBackend>::InnerBackend;
    let replicas: Vec<_> = devices[1..]
        .iter()
        .map(|d| crate::dpo::train::replica(&mut model, &settings, d))
        .collect();
    let keys = crate::dpo::train::trainable_sizes(&mut model, &settings);
    if world > 1 {
        crate::dpo::parallel::reset::<Inner<B>>();
    }
    let scale = 1.0 / world as f64;
    let rank_steps = |rank: usize,
                      model: &mut crate::lvlm::LlavaForConditionalGeneration<B>,
                      device: &B::Device,
                      mut each: OnStep<'_, B>|
     -> Result<()> {
        let peer = (world > 1)
            .then(|| crate::dpo::parallel::Peer::register::<Inner<B>>(rank, world, device))
            .transpose()?;
        let mut moments = Default::default();
        for step in 0..total {
            let start = Instant::now();
            let g = loss_and_grads(model, &pairs, &weights, None, &settings, scale, device)?;
            let grads = match &peer {
                Some(p) => p.sum_gradients(&g.grads, &keys, device)?,
                None => g.grads,
            };
            let optimizer = Instant::now();
            let (norm, _) = optimizer_step(model, &grads, &mut moments, &settings, step, total, 0)?;
            let _ = B::sync(device);
            let report = StepReport {
                step,
                seconds: start.elapsed().as_secs_f64(),
                loss: g.loss,
                norm,
                phases: g.phases,
                optimizer_s: optimizer.elapsed().as_secs_f64(),
            };
            each(report, model);
        }
        if let Some(p) = peer {
            p.finish::<Inner<B>>();
        }
        Ok(())
    };
    std::thread::scope(|scope| -> Result<()> {
        let handles: Vec<_> = replicas
            .into_iter()
            .zip(&devices[1..])
            .enumerate()
            .map(|(i, (mut m, d))| {
                let rank_steps = &rank_steps;
                scope.spawn(move || rank_steps(i + 1, &mut m, d, Box::new(|_, _| {})))
            })
            .collect();
        let first = rank_steps(
            0,
            &mut model,
            device,
            Box::new(|r, m| {
                times.push(r.seconds);
                losses.push(r.loss);
                norms.push(r.norm);
                if r.step == 0 {
                    a_after_first = lora_a_values(m);
                } else {
                    phases.push((r.phases, r.optimizer_s));
                }
                tracing::info!(r.step, r.seconds, r.loss, r.norm, ?r.phases, r.optimizer_s, "bench step");
            }),
        );
        for h in handles {
            h.join()
                .map_err(|_| Error::Invalid("a device thread panicked".into()))??;
        }
        first
    })?;
    let a_last = lora_a_values(&model);
    let changed = a_after_first
        .iter()
        .zip(&a_last)
        .filter(|(x, y)| x != y)
        .count();
    let changed_fraction = changed as f64 / a_last.len().max(1) as f64;
    let first_s = times[0];
    let mut timed: Vec<f64> = times[1..].to_vec();
    timed.sort_by(f64::total_cmp);
    // Every rank runs `--batch` pairs per step: the step's pairs are devices × batch.
    let per_pair = |s: f64| s / (pairs.len() * world) as f64;
    let (median, min) = (per_pair(timed[timed.len() / 2]), per_pair(timed[0]));
    let tokens_per_s = (2 * args.seq_len) as f64 / median;
    let tflops = flops_per_pair(&config, args.seq_len) / median / 1e12;
    // Per-phase medians over the timed steps, per pair (rank 0's).
    let phase = |f: &dyn Fn(&(Phases, f64)) -> f64| {
        let mut v: Vec<f64> = phases.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2] / pairs.len() as f64
    };
    let phase_medians = serde_json::json!({
        "tower_s": phase(&|p| p.0.tower_s),
        "policy_forward_s": phase(&|p| p.0.policy_forward_s),
        "reference_forward_s": phase(&|p| p.0.reference_forward_s),
        "backward_s": phase(&|p| p.0.backward_s),
        "optimizer_s": phase(&|p| p.1),
    });
    let peak = peak_rss_bytes();
    let finite = losses.iter().chain(&norms).all(|v| v.is_finite());
    let result = serde_json::json!({
        "bench": "train", "config": args.config, "device": format!("{:?}", args.device).to_lowercase(),
        "dtype": args.dtype.name(), "seq_len": args.seq_len, "answer_len": args.answer_len,
        "batch": args.batch, "lora_r": args.lora_r, "lora_layers": layers,
        "checkpointing": args.checkpointing, "steps": args.steps, "devices": world,
        "build_s": build_s, "first_step_s": first_s, "s_per_pair": median, "min_s_per_pair": min,
        "tokens_per_s": tokens_per_s, "tflops": tflops, "peak_bytes": peak,
        "loss": losses.last(), "grad_norm": norms.last(), "finite": finite,
        "lora_a_changed_fraction": changed_fraction, "phases": phase_medians,
        "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    });
    let mut lines = vec![format!(
        "bench train {} ({:?}{}, {}, T={}, r={}{}): build {build_s:.2} s, first step {first_s:.2} s, \
         {median:.3} s/pair (min {min:.3}), {tokens_per_s:.0} tokens/s, {tflops:.3} TFLOP/s, \
         peak host memory {}, loss {:.5} / grad norm {:.3e} {}, LoRA-A changed at lr 1e-7: {:.2}%",
        args.config.display(),
        args.device,
        if world > 1 { format!(" × {world}") } else { String::new() },
        args.dtype.name(),
        args.seq_len,
        args.lora_r,
        if args.checkpointing { ", checkpointing" } else { "" },
        peak.map_or("unknown".into(), |b| format!("{:.2} GB", b as f64 / 1e9)),
        losses.last().copied().unwrap_or(f64::NAN),
        norms.last().copied().unwrap_or(f64::NAN),
        if finite { "finite" } else { "NOT FINITE" },
        100.0 * changed_fraction
    )];
    lines.push(format!(
        "phases per pair (medians): {}",
        phase_medians
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!(
                "{} {:.3}",
                k.trim_end_matches("_s"),
                v.as_f64().unwrap_or(f64::NAN)
            ))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if !finite {
        invalid!(
            "a loss or gradient norm was not finite: {}",
            lines.join("; ")
        );
    }
    Ok(Measurement {
        lines,
        json: result,
    })
}
