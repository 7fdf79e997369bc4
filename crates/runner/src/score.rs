//! `mmedpo score`: log π(chosen | image) and log π(rejected | rejected_image) of every preference
//! pair, one JSON line each. Also the reference log-prob precompute for training: a sidecar
//! `FILE.jsonl.meta.json` records fingerprints of the model and the data so a stale cache is refused.
//! Resumable: lines already in `--out` are kept and their ids skipped.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use mmedpo_core::journal::{write_atomic, write_json, Journal};
use mmedpo_core::record::{read_records_lenient, PreferenceRecord};
use mmedpo_llm::Template;
use mmedpo_lvlm::score::{prepare_pair, score_pairs, PairScore, ScoreMeta};

use crate::{with_backend, DeviceKind, Dtype};

/// Arguments of `mmedpo score`.
#[derive(Args, Debug)]
pub struct ScoreArgs {
    /// LLaVA model directory (original LLaVA-Med or llava-hf layout).
    #[arg(long)]
    model: PathBuf,
    /// CLIP tower directory (default: the checkpoint's own tower, or `mm_vision_tower` as a local path).
    #[arg(long)]
    vision_tower: Option<PathBuf>,
    /// tokenizer.json (default: MODEL/tokenizer.json).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// A PEFT LoRA adapter directory (e.g. `mmedpo train`'s OUT/adapter) applied to the LLM.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Preference file(s) in the MMedPO format.
    #[arg(long, required = true)]
    data: Vec<PathBuf>,
    /// Folder the items' image paths are relative to.
    #[arg(long)]
    image_root: PathBuf,
    /// Output JSONL.
    #[arg(long)]
    out: PathBuf,
    /// Conversation template.
    #[arg(long, default_value = "vicuna_v1")]
    template: String,
    /// Pairs per forward pass.
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    /// Record unusable items in OUT.rejects.jsonl and go on, instead of stopping at the first.
    #[arg(long)]
    skip_bad: bool,
    /// Backend.
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    device: DeviceKind,
    /// Float type .
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    dtype: Dtype,
}

/// Runs `mmedpo score`.
pub fn run(args: ScoreArgs) -> Result<()> {
    with_backend!(args.device, |B, device| run_on::<B>(&args, &device))
}

fn run_on<B: Backend>(args: &ScoreArgs, device: &B::Device) -> Result<()> {
    let template = Template::from_name(&args.template)?;
    let mut meta = ScoreMeta::of(
        &args.model,
        args.vision_tower.as_deref(),
        &args.data,
        &args.template,
    )?;
    meta.adapter_fingerprint = args
        .adapter
        .as_deref()
        .map(mmedpo_core::checkpoint::dir_fingerprint)
        .transpose()?;
    meta.dtype = args.dtype.name().into();
    meta.tokenizer_fingerprint = args
        .tokenizer
        .as_deref()
        .map(mmedpo_core::manifest::path_fingerprint)
        .transpose()?;
    let meta_path = ScoreMeta::path(&args.out);
    let _lock = mmedpo_core::manifest::OutLock::acquire(&args.out)?;
    if args.out.is_file() {
        let old: ScoreMeta =
            serde_json::from_str(&std::fs::read_to_string(&meta_path).with_context(|| {
                format!(
                    "{} exists but {} does not; remove it or choose another --out",
                    args.out.display(),
                    meta_path.display()
                )
            })?)?;
        let changed = old.differences(&meta);
        if !changed.is_empty() {
            bail!(
                "{} was scored with other inputs ({}: {}); remove it or choose another --out",
                args.out.display(),
                meta_path.display(),
                changed.join(", ")
            );
        }
    }
    write_json(&meta_path, &meta)?;
    // The output is the journal: one line per scored pair (a line cut by a kill is redone).
    let mut out = Journal::<PairScore>::open(&args.out)?;
    let already = out.len();

    let mut records: Vec<PreferenceRecord> = Vec::new();
    let mut rejects: Vec<serde_json::Value> = Vec::new();
    for path in &args.data {
        let (good, bad) = read_records_lenient(path)?;
        if !bad.is_empty() && !args.skip_bad {
            let msgs: Vec<&str> = bad.iter().map(|(_, m)| m.as_str()).collect();
            bail!(
                "{}: {} bad item(s):\n  {}\n(--skip-bad records them and goes on)",
                path.display(),
                bad.len(),
                msgs.join("\n  ")
            );
        }
        rejects.extend(
            bad.into_iter()
                .map(|(id, m)| serde_json::json!({"id": id, "file": path, "error": m})),
        );
        records.extend(good);
    }
    let todo: Vec<&PreferenceRecord> = records.iter().filter(|r| !out.contains(&r.id)).collect();
    tracing::info!(
        total = records.len(),
        already_scored = records.len() - todo.len(),
        "scoring"
    );

    let mut llava = mmedpo_lvlm::open::<B>(
        &args.model,
        args.vision_tower.as_deref(),
        args.tokenizer.as_deref(),
        device,
        args.dtype.burn(),
    )?;
    if let Some(adapter) = &args.adapter {
        llava.model.load_adapter(adapter, device)?;
    }
    let settings = llava.pairs(template, &args.image_root);
    let tokenizer = &llava.tokenizer;

    let bar = ProgressBar::new(todo.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} pairs {per_sec} eta {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    for chunk in todo.chunks(args.batch_size.max(1)) {
        let mut prepared = Vec::with_capacity(chunk.len());
        for r in chunk {
            match prepare_pair(tokenizer, &settings, r) {
                Ok(p) => prepared.push(p),
                Err(e) if args.skip_bad => {
                    rejects.push(serde_json::json!({"id": r.id, "error": e.to_string()}))
                }
                Err(e) => bail!("{e}\n(--skip-bad records such items and goes on)"),
            }
        }
        if !prepared.is_empty() {
            for s in score_pairs(
                &llava.model,
                &prepared,
                settings.image_size as usize,
                device,
            )? {
                out.append(s)?;
            }
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    if !rejects.is_empty() {
        let path = crate::common::side(&args.out, "rejects.jsonl");
        let text: String = rejects.iter().map(|r| format!("{r}\n")).collect();
        write_atomic(&path, text.as_bytes())?;
        note!("{} item(s) skipped; see {}", rejects.len(), path.display());
    }
    note!(
        "scored {} pair(s) into {} ({} in all)",
        out.len() - already,
        args.out.display(),
        out.len()
    );
    if out.is_empty() && !rejects.is_empty() {
        bail!("no pair could be scored: every item was skipped (see the rejects file)");
    }
    Ok(())
}
