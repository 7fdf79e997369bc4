//! The training loop, top to bottom: prepare → (policy, reference) log-probs → weighted DPO loss →
//! accumulated gradients → global-norm clip → AdamW → checkpoint. No trainer trait, no callbacks
//! beyond one `on_step` closure for the caller's progress display.
//!
//! Trainable: the LoRA weights of the LLM (and, with `projector_lr`, the projector). Everything
//! else is frozen (`no_grad`). The reference is the same network with its adapters off, run on the
//! inner (non-autodiff) backend, or log-probs read from a `mmedpo score` file.
//!
//! Resuming: checkpoints (`checkpoint-N/`: PEFT adapter, `optimizer.safetensors`,
//! `trainer_state.json`, written to a temporary folder then renamed) hold everything the next step
//! depends on; the data order is a function of (seed, epoch) and dropout is reseeded per step, so on
//! the CPU a killed-and-resumed run ends with the same adapter bytes as an uninterrupted one.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, Module, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use mmedpo_core::record::{PreferenceRecord, RecordId};
use mmedpo_lora::LoraConfig;
use mmedpo_lvlm::score::{
    pair_images, pair_logps_with_features, prepare_pair, stack_pixels, PairScore, PairSettings,
    PreparedPair, ScoreMeta,
};
use mmedpo_lvlm::{Layout, LlavaForConditionalGeneration, Tokenizer};
use serde::{Deserialize, Serialize};

use crate::data::{epoch_order, pair_weights, WeightMode, WeightStats};
use crate::error::{Error, Result};
use crate::loss::{dpo_loss, LossType};
use crate::optim::{clip_factor, load_moments, lr_at, save_moments, warmup_steps, AdamW, Moments};

mod checkpoint;
mod metrics;
mod parameters;
mod reference;

pub(crate) use checkpoint::*;
pub(crate) use metrics::*;
pub use metrics::{Phases, StepLog};
pub(crate) use parameters::*;
pub use parameters::{materialize, optimizer_step, replica, trainable_sizes};
pub use reference::Reference;
pub(crate) use reference::*;

/// Everything the loop needs besides model and data.
#[derive(Debug, Clone)]
pub struct TrainSettings {
    /// LoRA hyper-parameters and targets.
    pub lora: LoraConfig,
    /// DPO β.
    pub beta: f64,
    /// Loss variant.
    pub loss_type: LossType,
    /// Weight mode.
    pub weight_mode: WeightMode,
    /// Weight statistics (paper mode).
    pub weight_stats: WeightStats,
    /// Peak learning rate of the LoRA weights.
    pub learning_rate: f64,
    /// Learning rate of the projector; `None` keeps it frozen.
    pub projector_lr: Option<f64>,
    /// AdamW settings.
    pub adamw: AdamW,
    /// Warmup as a fraction of all steps.
    pub warmup_ratio: f64,
    /// Passes over the data.
    pub epochs: usize,
    /// Optimizer steps; overrides `epochs` when set.
    pub max_steps: Option<usize>,
    /// Pairs per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Global gradient-norm clip.
    pub max_grad_norm: f64,
    /// Seed of the data order and dropout.
    pub seed: u64,
    /// Checkpoint every N optimizer steps (0: only at the end).
    pub save_steps: usize,
    /// How pairs become inputs.
    pub pairs: PairSettings,
    /// Reference log-probs.
    pub reference: Reference,
    /// The checkpoint layout (decides the PEFT module paths).
    pub layout: Layout,
    /// Stop after this many optimizer steps of this process (tests: a kill after a checkpoint).
    pub stop_after: Option<usize>,
}

impl TrainSettings {
    /// Every out-of-range hyperparameter, in one error, before anything is loaded or trained.
    pub fn validate(&self) -> Result<()> {
        let mut bad = vec![];
        let mut positive = |name: &str, v: f64| {
            if !(v.is_finite() && v > 0.0) {
                bad.push(format!("{name} = {v} (a finite number > 0)"));
            }
        };
        positive("learning_rate", self.learning_rate);
        if let Some(p) = self.projector_lr {
            positive("projector_lr", p);
        }
        positive("beta", self.beta);
        positive("max_grad_norm", self.max_grad_norm);
        positive("lora alpha", self.lora.lora_alpha);
        if !(0.0..=1.0).contains(&self.warmup_ratio) {
            bad.push(format!("warmup_ratio = {} (in [0, 1])", self.warmup_ratio));
        }
        if !(0.0..1.0).contains(&self.lora.lora_dropout) {
            bad.push(format!(
                "lora dropout = {} (in [0, 1))",
                self.lora.lora_dropout
            ));
        }
        if !(self.adamw.weight_decay.is_finite() && self.adamw.weight_decay >= 0.0) {
            bad.push(format!(
                "weight_decay = {} (a finite number >= 0)",
                self.adamw.weight_decay
            ));
        }
        for (name, v) in [
            ("lora r", self.lora.r),
            ("batch_size", self.batch_size),
            ("grad_accum", self.grad_accum),
            ("epochs", self.epochs),
        ] {
            if v == 0 {
                bad.push(format!("{name} = 0 (at least 1)"));
            }
        }
        if self.max_steps == Some(0) {
            bad.push("max_steps = 0 (at least 1, or unset to train `epochs` passes)".into());
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(Error::Setting(bad.join("; ")))
        }
    }
}

/// What a finished run left.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// The final PEFT adapter.
    pub adapter_dir: PathBuf,
    /// The per-step JSONL log.
    pub log_path: PathBuf,
    /// All step logs (resumed runs included).
    pub logs: Vec<StepLog>,
    /// Optimizer steps in the whole run.
    pub total_steps: usize,
    /// The step this process started from (0 unless resumed).
    pub resumed_from: usize,
}

/// Summed per-parameter gradients (flattened, inner backend) and the metrics of some pairs.
pub struct Gradients<B: AutodiffBackend> {
    /// Gradient per trainable key, in the parameter's Burn layout, flattened.
    pub grads: BTreeMap<String, Tensor<Inner<B>, 1>>,
    /// Scalar loss.
    pub loss: f64,
    /// Policy chosen / rejected, reference chosen / rejected log-probs per pair.
    pub logps: [Vec<f64>; 4],
    /// Where the call's time went.
    pub phases: Phases,
}

/// Policy and reference log-probs, weighted DPO loss and its gradients for one micro-batch.
/// `scale` multiplies the loss before backward (1 / grad_accum).
#[allow(clippy::too_many_arguments)]
pub fn loss_and_grads<B: AutodiffBackend>(
    model: &mut LlavaForConditionalGeneration<B>,
    pairs: &[PreparedPair],
    weights: &[f64],
    reference: Option<(&[f64], &[f64])>,
    settings: &TrainSettings,
    scale: f64,
    device: &B::Device,
) -> Result<Gradients<B>> {
    let size = settings.pairs.image_size as usize;
    let mut clock = Clock::<B>::start(device);
    // The frozen tower runs once per distinct image, without autodiff; its features serve the
    // policy and the reference (and the projector's output too, unless it is trained).
    let inner = model.valid();
    let (images, image_of) = pair_images(pairs);
    let tower = inner.tower_features(stack_pixels::<Inner<B>>(&images, size, device));
    let projected = (settings.projector_lr.is_none())
        .then(|| inner.multi_modal_projector.forward(tower.clone()));
    let policy_features = match &projected {
        Some(p) => Tensor::from_inner(p.clone()),
        None => model
            .multi_modal_projector
            .forward(Tensor::from_inner(tower.clone())),
    };
    let tower_s = clock.lap();
    let reference_logps = || -> Result<(Vec<f64>, Vec<f64>)> {
        let reference = inner.reference();
        let features = projected
            .clone()
            .unwrap_or_else(|| reference.multi_modal_projector.forward(tower.clone()));
        let out = pair_logps_with_features(&reference, pairs, features, &image_of)?;
        Ok((to_vec(out.chosen), to_vec(out.rejected)))
    };
    // On the CPU the adapter-off reference runs in a second thread beside the policy forward:
    // many of Flex's ops use one core, so the two share the cores (same ops, same results). A
    // reference file, or another backend, runs it after the policy, timed on its own.
    let concurrent = reference.is_none() && mmedpo_core::backend::is_cpu::<Inner<B>>();
    let (policy, (rc, rr), policy_forward_s, reference_forward_s) = if concurrent {
        let (policy, refs) = std::thread::scope(|s| {
            let handle = s.spawn(reference_logps);
            let policy = pair_logps_with_features(model, pairs, policy_features, &image_of);
            let refs = handle
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e));
            (policy, refs)
        });
        // The two overlap: the lap is theirs together, reported as the policy's.
        (policy?, refs?, clock.lap(), 0.0)
    } else {
        let policy = pair_logps_with_features(model, pairs, policy_features, &image_of)?;
        let policy_forward_s = clock.lap();
        let refs = match reference {
            Some((c, r)) => (c.to_vec(), r.to_vec()),
            None => reference_logps()?,
        };
        (policy, refs, policy_forward_s, clock.lap())
    };
    let b = pairs.len();
    let t = |v: &[f64]| {
        Tensor::<B, 1>::from_data(
            TensorData::new(v.iter().map(|&x| x as f32).collect::<Vec<_>>(), [b]),
            device,
        )
    };
    let out = dpo_loss(
        policy.chosen.clone(),
        policy.rejected.clone(),
        t(&rc),
        t(&rr),
        t(weights),
        settings.beta,
        settings.loss_type,
    );
    let loss = out.loss.clone().into_scalar().elem::<f64>();
    let grads = out.loss.mul_scalar(scale).backward();
    let mut collected = BTreeMap::new();
    for (key, _, slot) in trainable(model, settings.layout, settings.projector_lr.is_some()) {
        let g = match slot {
            Slot::W2(p) => p.val().grad(&grads).map(|g| g.flatten::<1>(0, 1)),
            Slot::W1(p) => p.val().grad(&grads),
        };
        if let Some(g) = g {
            collected.insert(key, g);
        }
    }
    let logps = [
        to_vec(policy.chosen.inner()),
        to_vec(policy.rejected.inner()),
        rc,
        rr,
    ];
    let phases = Phases {
        tower_s,
        policy_forward_s,
        reference_forward_s,
        backward_s: clock.lap(),
    };
    Ok(Gradients {
        grads: collected,
        loss,
        logps,
        phases,
    })
}

/// Trains `model` (loaded, frozen or not) on `records`, writing under `out`.
#[allow(clippy::too_many_arguments)]
pub fn train<B: AutodiffBackend>(
    model: LlavaForConditionalGeneration<B>,
    tok: &Tokenizer,
    records: &[PreferenceRecord],
    reference_meta: Option<&ScoreMeta>,
    settings: &TrainSettings,
    out: &Path,
    resume: bool,
    device: &B::Device,
    on_step: &mut dyn FnMut(&StepLog, usize),
) -> Result<TrainSummary> {
    train_on_devices(
        model,
        tok,
        records,
        reference_meta,
        settings,
        out,
        resume,
        std::slice::from_ref(device),
        on_step,
    )
}

/// [`train`] data-parallel over `devices`: a replica of the model on each (one thread each), the
/// same LoRA initialization on all (made once, then copied), each optimizer step's micro-batches
/// shared out by rank from the one seeded order, one all-reduce of the flattened gradients per
/// step (burn-collective), the same AdamW step on every replica; logs, plots and checkpoints come
/// from rank 0. The global batch is `devices × batch_size × grad_accum` pairs: two devices with
/// `grad_accum` 1 train what one device with `grad_accum` 2 trains, up to float summation order.
#[allow(clippy::too_many_arguments)]
pub fn train_on_devices<B: AutodiffBackend>(
    model: LlavaForConditionalGeneration<B>,
    tok: &Tokenizer,
    records: &[PreferenceRecord],
    reference_meta: Option<&ScoreMeta>,
    settings: &TrainSettings,
    out: &Path,
    resume: bool,
    devices: &[B::Device],
    on_step: &mut dyn FnMut(&StepLog, usize),
) -> Result<TrainSummary> {
    settings.validate()?;
    let Some(device) = devices.first() else {
        return Err(Error::Setting("no device to train on".into()));
    };
    let world = devices.len();
    let weights = pair_weights(records, settings.weight_mode, settings.weight_stats)?;
    // Validate every pair up front (tokenization, placeholders, image files), listing all problems.
    let problems: Vec<String> = records
        .iter()
        .filter_map(|r| {
            let missing: Vec<String> = [r.image.as_str(), r.rejected_image()]
                .iter()
                .map(|p| settings.pairs.image_root.join(p))
                .filter(|p| !p.is_file())
                .map(|p| format!("item id {}: image {} not found", r.id, p.display()))
                .collect();
            let problems = r.problems();
            (!missing.is_empty() || !problems.is_empty()).then(|| {
                [
                    missing,
                    problems
                        .into_iter()
                        .map(|p| format!("item id {}: {p}", r.id))
                        .collect(),
                ]
                .concat()
                .join("; ")
            })
        })
        .collect();
    if !problems.is_empty() {
        return Err(Error::Data { problems });
    }
    if matches!(settings.reference, Reference::File(_)) {
        // Reference log-probs are looked up by id: ids must be unique over all the files.
        let dup = mmedpo_core::record::repeated_ids(records);
        if !dup.is_empty() {
            return Err(Error::Data {
                problems: vec![format!(
                    "ids {} appear in more than one pair, and a reference file is looked up by id",
                    dup.join(", ")
                )],
            });
        }
    }
    let reference = match (&settings.reference, reference_meta) {
        (Reference::AdapterOff, _) => None,
        (Reference::File(p), Some(meta)) => Some(read_reference(p, records, meta)?),
        (Reference::File(p), None) => {
            return Err(Error::Setting(format!(
                "{}: reference file given without the inputs to check it against",
                p.display()
            )))
        }
    };

    let n = records.len();
    let micro_per_epoch = n.div_ceil(settings.batch_size);
    let steps_per_epoch = micro_per_epoch.div_ceil(settings.grad_accum * world);
    let total = settings
        .max_steps
        .unwrap_or(settings.epochs * steps_per_epoch)
        .max(1);
    let warmup = warmup_steps(settings.warmup_ratio, total);
    std::fs::create_dir_all(out).map_err(|e| mmedpo_core::Error::io(out, e))?;

    let mut model = model.no_grad();
    let mut moments: BTreeMap<String, Moments<Inner<B>>> = BTreeMap::new();
    let mut start = 0;
    let log_path = out.join("log.jsonl");
    let mut logs: Vec<StepLog> = Vec::new();
    // The kept lines are rewritten verbatim (a float re-serialised after parsing can move an ulp).
    let mut kept_lines: Vec<String> = Vec::new();
    match latest_checkpoint(out).filter(|_| resume) {
        Some((step, dir)) => {
            model.load_adapter(&dir.join("adapter"), device)?;
            moments = load_moments(&dir.join("optimizer.safetensors"), &Default::default())?;
            let state: TrainerState = serde_json::from_str(
                &std::fs::read_to_string(dir.join("trainer_state.json"))
                    .map_err(|e| mmedpo_core::Error::io(&dir, e))?,
            )
            .map_err(|cause| mmedpo_core::Error::Json {
                path: dir.join("trainer_state.json"),
                cause,
            })?;
            if state.total_steps != total || state.pairs != n || state.seed != settings.seed {
                return Err(Error::Setting(format!(
                    "{} was made with other settings ({} steps, {} pairs, seed {}); start a new --out",
                    dir.display(), state.total_steps, state.pairs, state.seed
                )));
            }
            if settings.projector_lr.is_some() {
                let proj = dir.join("projector.safetensors");
                if proj.is_file() {
                    let mut ck = mmedpo_core::checkpoint::Checkpoint::open(&proj)?;
                    let d = model.multi_modal_projector.linear_1.weight.dims();
                    let d2 = model.multi_modal_projector.linear_2.weight.dims();
                    model.multi_modal_projector.linear_1 =
                        ck.take_linear("multi_modal_projector.linear_1", d[0], d[1], true, device)?;
                    model.multi_modal_projector.linear_2 = ck.take_linear(
                        "multi_modal_projector.linear_2",
                        d2[0],
                        d2[1],
                        true,
                        device,
                    )?;
                }
            }
            start = step;
            if let Ok(text) = std::fs::read_to_string(&log_path) {
                for line in text.lines() {
                    if let Ok(l) = serde_json::from_str::<StepLog>(line) {
                        if l.step <= step {
                            logs.push(l);
                            kept_lines.push(line.to_string());
                        }
                    }
                }
            }
            tracing::info!(step, dir = %dir.display(), "resumed");
        }
        None => {
            B::seed(device, settings.seed);
            let n_layers = model.attach_lora(&settings.lora, settings.layout, device);
            materialize(&mut model, settings);
            if n_layers == 0 {
                return Err(Error::Setting(
                    "target_modules matched no LLM projection".into(),
                ));
            }
            tracing::info!(
                layers = n_layers,
                r = settings.lora.r,
                alpha = settings.lora.lora_alpha,
                "LoRA attached"
            );
        }
    }
    if settings.projector_lr.is_some() {
        // A trained projector keeps f32 master weights over a bf16 model, as the adapter does.
        model.multi_modal_projector = mmedpo_core::precision::cast_module(
            model.multi_modal_projector.clone(),
            burn::tensor::DType::F32,
        );
        let p = &mut model.multi_modal_projector;
        for lin in [&mut p.linear_1, &mut p.linear_2] {
            lin.weight = lin.weight.clone().set_require_grad(true);
            lin.bias = lin.bias.clone().map(|b| b.set_require_grad(true));
        }
    }
    // Rewrite the log with the kept lines (drops steps after the checkpoint of a killed run).
    // The kept lines go back as bytes (never re-printed), through a temporary file and a rename.
    let kept: String = kept_lines.iter().map(|l| format!("{l}\n")).collect();
    mmedpo_core::journal::write_atomic(&log_path, kept.as_bytes())?;
    let log_file = std::fs::OpenOptions::new()
        .append(true)
        .open(&log_path)
        .map_err(|e| mmedpo_core::Error::io(&log_path, e))?;

    if world > 1 && settings.lora.lora_dropout > 0.0 {
        tracing::warn!(
            devices = world,
            "LoRA dropout draws from Burn's one generator per backend, shared by the device \
             threads: the masks (and so the run) are not reproducible; set dropout 0 for that"
        );
    }
    tracing::info!(
        devices = world,
        global_batch = world * settings.batch_size * settings.grad_accum,
        "training"
    );
    let run = Run {
        tok,
        records,
        weights: &weights,
        reference: reference.as_ref(),
        settings,
        out,
        micro_per_epoch,
        total,
        warmup,
        start,
        world,
    };
    let mut io = Io {
        log_file,
        log_path: &log_path,
        logs: &mut logs,
        on_step,
    };
    let model = if world == 1 {
        run.rank(0, model, moments, device, Some(&mut io))?
    } else {
        crate::parallel::reset::<Inner<B>>();
        // The replicas start from rank 0's weights (its LoRA initialization or checkpoint).
        let mut model = model;
        let replicas: Vec<_> = devices[1..]
            .iter()
            .map(|d| {
                let m = replica(&mut model, settings, d);
                let mo = crate::parallel::moments_to(&moments, d);
                (m, mo)
            })
            .collect();
        let moments0 = crate::parallel::moments_to(&moments, device);
        std::thread::scope(|scope| -> Result<LlavaForConditionalGeneration<B>> {
            let run = &run;
            let handles: Vec<_> = replicas
                .into_iter()
                .zip(&devices[1..])
                .enumerate()
                .map(|(i, ((m, mo), d))| scope.spawn(move || run.rank(i + 1, m, mo, d, None)))
                .collect();
            let first = run.rank(0, model, moments0, device, Some(&mut io));
            let others: Vec<Result<_>> = handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::Setting("a device thread panicked".into())))
                })
                .collect();
            // The cause first: a rank that only saw another one stop says so.
            let mut errors: Vec<Error> = others.into_iter().filter_map(|o| o.err()).collect();
            match first {
                Ok(m) if errors.is_empty() => return Ok(m),
                Ok(_) => {}
                Err(e) => errors.insert(0, e),
            }
            let cause = errors
                .iter()
                .position(|e| !matches!(e, Error::PeerStopped { .. }))
                .unwrap_or(0);
            Err(errors.swap_remove(cause))
        })?
    };
    let adapter_dir = out.join("adapter");
    if logs.last().is_some_and(|l| l.step == total) {
        let tmp = out.join("adapter.tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        model.save_adapter(&tmp, &settings.lora, settings.layout)?;
        if settings.projector_lr.is_some() {
            // The trained projector leaves with the adapter, where LLaVA's loader looks for it.
            model.save_projector(&tmp, settings.layout)?;
        }
        let _ = std::fs::remove_dir_all(&adapter_dir);
        std::fs::rename(&tmp, &adapter_dir).map_err(|e| mmedpo_core::Error::io(&adapter_dir, e))?;
    }
    Ok(TrainSummary {
        adapter_dir,
        log_path,
        logs,
        total_steps: total,
        resumed_from: start,
    })
}

/// What every rank of a run shares (read-only).
struct Run<'a> {
    tok: &'a Tokenizer,
    records: &'a [PreferenceRecord],
    weights: &'a [f64],
    reference: Option<&'a HashMap<RecordId, (f64, f64)>>,
    settings: &'a TrainSettings,
    out: &'a Path,
    micro_per_epoch: usize,
    total: usize,
    warmup: usize,
    start: usize,
    world: usize,
}

/// Rank 0's outputs: the step log and the caller's progress callback.
struct Io<'a, 'b> {
    log_file: std::fs::File,
    log_path: &'a Path,
    logs: &'a mut Vec<StepLog>,
    on_step: &'b mut dyn FnMut(&StepLog, usize),
}

/// One step's sums over micro-batches (this rank's, or every rank's once summed).
pub(crate) struct Local<B: AutodiffBackend> {
    /// Gradient sums by trainable key.
    pub acc: BTreeMap<String, Tensor<Inner<B>, 1>>,
    /// Loss (already scaled to the global batch).
    pub loss: f64,
    /// Reward and log-prob sums (chosen, rejected, accuracy, margin, logp chosen, logp rejected).
    pub metrics: [f64; 6],
    /// Pairs summed.
    pub count: usize,
    /// The pairs' ids.
    pub ids: Vec<String>,
}

impl<B: AutodiffBackend> Default for Local<B> {
    fn default() -> Self {
        Self {
            acc: BTreeMap::new(),
            loss: 0.0,
            metrics: [0.0; 6],
            count: 0,
            ids: vec![],
        }
    }
}

impl Run<'_> {
    /// The micro-batch indices (into the seeded epoch order's stream) of `rank` at `step`.
    fn micros(&self, step: usize, rank: usize) -> std::ops::Range<usize> {
        let ga = self.settings.grad_accum;
        let first = step * self.world * ga + rank * ga;
        first..first + ga
    }

    /// Trains one replica from `start` to the end (or `stop_after`); rank 0 gets `io`.
    fn rank<B: AutodiffBackend>(
        &self,
        rank: usize,
        mut model: LlavaForConditionalGeneration<B>,
        mut moments: BTreeMap<String, Moments<Inner<B>>>,
        device: &B::Device,
        mut io: Option<&mut Io<'_, '_>>,
    ) -> Result<LlavaForConditionalGeneration<B>> {
        let (settings, records) = (self.settings, self.records);
        let n = records.len();
        let peer = (self.world > 1)
            .then(|| crate::parallel::Peer::register::<Inner<B>>(rank, self.world, device))
            .transpose()?;
        let keys = trainable_sizes(&mut model, settings);
        let scale = 1.0 / (settings.grad_accum * self.world) as f64;
        let mut ran = 0;
        // This rank's micro-batches in order (pairs by index, in the seeded epoch order),
        // tokenized and with their images decoded on a worker thread while the current step
        // computes (at most two batches ahead).
        type Batch = (Vec<usize>, mmedpo_lvlm::Result<Vec<PreparedPair>>);
        let result = std::thread::scope(|scope| -> Result<()> {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(2);
            let (batch_size, micro_per_epoch) = (settings.batch_size, self.micro_per_epoch);
            let pairs_settings = &settings.pairs;
            let (tok, this) = (self.tok, &self);
            scope.spawn(move || {
                for step in this.start..this.total {
                    for micro in this.micros(step, rank) {
                        let (epoch, pos) = (micro / micro_per_epoch, micro % micro_per_epoch);
                        let order = epoch_order(n, settings.seed, epoch);
                        let idx = order[pos * batch_size..((pos + 1) * batch_size).min(n)].to_vec();
                        let batch = idx
                            .iter()
                            .map(|&i| prepare_pair(tok, pairs_settings, &records[i]))
                            .collect();
                        if tx.send((idx, batch)).is_err() {
                            return; // the trainer stopped
                        }
                    }
                }
            });
            for step in self.start..self.total {
                let step_start = std::time::Instant::now();
                B::seed(device, settings.seed.wrapping_add(step as u64));
                let local = self.accumulate(&mut model, &rx, step, scale, device);
                let Local {
                    acc,
                    loss,
                    metrics,
                    count,
                    ids: step_ids,
                } = match &peer {
                    None => local?,
                    Some(peer) => peer.sum_step::<B>(local, &keys, step, device)?,
                };
                let (norm, lr) = optimizer_step(
                    &mut model,
                    &acc,
                    &mut moments,
                    settings,
                    step,
                    self.total,
                    self.warmup,
                )
                .map_err(|e| match e {
                    Error::NonFinite { step, what, .. } => Error::NonFinite {
                        step,
                        what,
                        ids: step_ids.join(", "),
                    },
                    other => other,
                })?;
                ran += 1;
                let done = step + 1;
                // Rank 0 writes; every rank then learns whether that worked, so none waits
                // for a rank that stopped.
                let written = match io.as_deref_mut() {
                    None => Ok(()),
                    Some(io) => {
                        let c = count.max(1) as f64;
                        let log = StepLog {
                            step: done,
                            epoch: (done * settings.grad_accum * self.world) as f64
                                / self.micro_per_epoch as f64,
                            loss,
                            rewards_chosen: metrics[0] / c,
                            rewards_rejected: metrics[1] / c,
                            rewards_accuracies: metrics[2] / c,
                            rewards_margins: metrics[3] / c,
                            logps_chosen: metrics[4] / c,
                            logps_rejected: metrics[5] / c,
                            learning_rate: lr,
                            grad_norm: norm,
                        };
                        self.write_step(io, log, &model, &moments, done, step_start)
                    }
                };
                if let Some(peer) = &peer {
                    peer.agree::<Inner<B>>(written.is_ok(), done, device)?;
                }
                written?;
                if settings.stop_after.is_some_and(|s| ran >= s) {
                    break;
                }
            }
            Ok(())
        });
        if let Some(peer) = peer {
            peer.finish::<Inner<B>>();
        }
        result.map(|()| model)
    }

    /// This rank's micro-batches of one step: gradients summed, metrics summed, non-finite
    /// values stopped with the step and the pair ids.
    fn accumulate<B: AutodiffBackend>(
        &self,
        model: &mut LlavaForConditionalGeneration<B>,
        rx: &std::sync::mpsc::Receiver<(Vec<usize>, mmedpo_lvlm::Result<Vec<PreparedPair>>)>,
        step: usize,
        scale: f64,
        device: &B::Device,
    ) -> Result<Local<B>> {
        let (settings, records) = (self.settings, self.records);
        let mut l = Local::<B>::default();
        for _ in 0..settings.grad_accum {
            let (idx, prepared) = rx
                .recv()
                .map_err(|_| Error::Setting("the data worker thread stopped".into()))?;
            let prepared: Vec<PreparedPair> = prepared?;
            let w: Vec<f64> = idx.iter().map(|&i| self.weights[i]).collect();
            let refs = self.reference.map(|m| {
                let c: Vec<f64> = idx.iter().map(|&i| m[&records[i].id].0).collect();
                let r: Vec<f64> = idx.iter().map(|&i| m[&records[i].id].1).collect();
                (c, r)
            });
            let g = loss_and_grads(
                model,
                &prepared,
                &w,
                refs.as_ref().map(|(c, r)| (c.as_slice(), r.as_slice())),
                settings,
                scale,
                device,
            )?;
            let ids: Vec<String> = idx.iter().map(|&i| records[i].id.to_string()).collect();
            let non_finite = |what: String| Error::NonFinite {
                step: step + 1,
                what,
                ids: ids.join(", "),
            };
            let names = [
                "policy chosen",
                "policy rejected",
                "reference chosen",
                "reference rejected",
            ];
            for (name, values) in names.iter().zip(&g.logps) {
                if let Some(v) = values.iter().find(|v| !v.is_finite()) {
                    return Err(non_finite(format!("a {name} log-prob ({v})")));
                }
            }
            if !g.loss.is_finite() {
                return Err(non_finite(format!("the loss ({})", g.loss)));
            }
            l.ids.extend(ids);
            for (k, v) in g.grads {
                let sum = match l.acc.remove(&k) {
                    Some(prev) => prev + v,
                    None => v,
                };
                l.acc.insert(k, sum);
            }
            l.loss += g.loss * scale;
            let [pc, pr, rc, rr] = &g.logps;
            for i in 0..pc.len() {
                let (cr, rj) = (
                    settings.beta * (pc[i] - rc[i]),
                    settings.beta * (pr[i] - rr[i]),
                );
                l.metrics[0] += cr;
                l.metrics[1] += rj;
                l.metrics[2] += f64::from(u8::from(cr > rj));
                l.metrics[3] += cr - rj;
                l.metrics[4] += pc[i];
                l.metrics[5] += pr[i];
                l.count += 1;
            }
        }
        Ok(l)
    }

    /// Rank 0's end of a step: the log line, the callback, a checkpoint when due.
    fn write_step<B: AutodiffBackend>(
        &self,
        io: &mut Io<'_, '_>,
        log: StepLog,
        model: &LlavaForConditionalGeneration<B>,
        moments: &BTreeMap<String, Moments<Inner<B>>>,
        done: usize,
        step_start: std::time::Instant,
    ) -> Result<()> {
        let settings = self.settings;
        writeln!(
            io.log_file,
            "{}",
            serde_json::to_string(&log).unwrap_or_default()
        )
        .and_then(|_| io.log_file.flush())
        .map_err(|e| mmedpo_core::Error::io(io.log_path, e))?;
        tracing::debug!(
            step = log.step,
            seconds = step_start.elapsed().as_secs_f64(),
            "step"
        );
        (io.on_step)(&log, self.total);
        io.logs.push(log);
        if (settings.save_steps > 0 && done.is_multiple_of(settings.save_steps))
            || done == self.total
        {
            save_checkpoint(
                model,
                moments,
                settings,
                self.out,
                done,
                self.total,
                self.records.len(),
            )?;
        }
        Ok(())
    }
}
