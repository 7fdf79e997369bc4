//! Log-probabilities of preference pairs under a LLaVA (with or without an adapter):
//! log π(chosen | image) and log π(rejected | rejected_image), one JSON line per pair. Also the
//! reference precompute for training: the sidecar `FILE.jsonl.meta.json` records the model, data,
//! template, dtype and adapter, so a cache made from other inputs is refused. Resumable: lines
//! already in `out` are kept and their ids skipped.

use std::path::PathBuf;

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::core::journal::{side, write_atomic, write_json, Journal};
use crate::core::record::{read_records_lenient, PreferenceRecord};
use crate::error::invalid;
use crate::llm::Template;
use crate::lvlm::score::{prepare_pair, score_pairs, PairScore, ScoreMeta};
use crate::{with_backend, DeviceKind, Dtype, Error, Observer, Result};

/// What to score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScorePlan {
    /// LLaVA model directory (original LLaVA-Med or llava-hf layout).
    pub model: PathBuf,
    /// CLIP tower directory.
    pub vision_tower: Option<PathBuf>,
    /// tokenizer.json (default: MODEL/tokenizer.json).
    pub tokenizer: Option<PathBuf>,
    /// A PEFT LoRA adapter applied to the LLM.
    pub adapter: Option<PathBuf>,
    /// Preference files in the MMedPO format.
    pub data: Vec<PathBuf>,
    /// Folder the items' image paths are relative to.
    pub image_root: PathBuf,
    /// Output JSONL.
    pub out: PathBuf,
    /// Conversation template.
    pub template: String,
    /// Pairs per forward pass.
    pub batch_size: usize,
    /// Record unusable items in OUT.rejects.jsonl and go on, instead of stopping at the first.
    pub skip_bad: bool,
    /// Backend.
    pub device: DeviceKind,
    /// Float type.
    pub dtype: Dtype,
}

impl Default for ScorePlan {
    fn default() -> Self {
        Self {
            model: PathBuf::new(),
            vision_tower: None,
            tokenizer: None,
            adapter: None,
            data: vec![],
            image_root: PathBuf::new(),
            out: PathBuf::new(),
            template: "vicuna_v1".into(),
            batch_size: 1,
            skip_bad: false,
            device: DeviceKind::Cpu,
            dtype: Dtype::F32,
        }
    }
}

/// What a run scored.
#[derive(Debug, Clone)]
pub struct ScoreReport {
    /// Pairs scored by this run.
    pub scored: usize,
    /// Pairs in the output.
    pub total: usize,
    /// Items skipped (with `skip_bad`), and the file that lists them.
    pub rejects: Option<(usize, PathBuf)>,
}

/// Scores the pairs of `plan.data` that `plan.out` does not hold yet.
pub fn score(plan: &ScorePlan, observer: &dyn Observer) -> Result<ScoreReport> {
    with_backend!(plan.device, |B, device| score_on::<B>(
        plan, &device, observer
    ))
}

fn score_on<B: Backend>(
    plan: &ScorePlan,
    device: &B::Device,
    observer: &dyn Observer,
) -> Result<ScoreReport> {
    let template = Template::from_name(&plan.template)?;
    let mut meta = ScoreMeta::of(
        &plan.model,
        plan.vision_tower.as_deref(),
        &plan.data,
        &plan.template,
    )?;
    meta.adapter_fingerprint = plan
        .adapter
        .as_deref()
        .map(crate::core::checkpoint::dir_fingerprint)
        .transpose()?;
    meta.dtype = plan.dtype.name().into();
    meta.tokenizer_fingerprint = plan
        .tokenizer
        .as_deref()
        .map(crate::core::manifest::path_fingerprint)
        .transpose()?;
    let meta_path = ScoreMeta::path(&plan.out);
    let _lock = crate::core::manifest::OutLock::acquire(&plan.out)?;
    if plan.out.is_file() {
        let text = std::fs::read_to_string(&meta_path).map_err(|_| {
            Error::Invalid(format!(
                "{} exists but {} does not; remove it or choose another output",
                plan.out.display(),
                meta_path.display()
            ))
        })?;
        let old: ScoreMeta = serde_json::from_str(&text)
            .map_err(|e| Error::Invalid(format!("{}: {e}", meta_path.display())))?;
        let changed = old.differences(&meta);
        if !changed.is_empty() {
            invalid!(
                "{} was scored with other inputs ({}: {}); remove it or choose another output",
                plan.out.display(),
                meta_path.display(),
                changed.join(", ")
            );
        }
    }
    write_json(&meta_path, &meta)?;
    // The output is the journal: one line per scored pair (a line cut by a kill is redone).
    let mut out = Journal::<PairScore>::open(&plan.out)?;
    let already = out.len();
    let mut records: Vec<PreferenceRecord> = Vec::new();
    let mut rejects: Vec<serde_json::Value> = Vec::new();
    for path in &plan.data {
        let (good, bad) = read_records_lenient(path)?;
        if !bad.is_empty() && !plan.skip_bad {
            let msgs: Vec<&str> = bad.iter().map(|(_, m)| m.as_str()).collect();
            invalid!(
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
    let mut llava = crate::lvlm::open::<B>(
        &plan.model,
        plan.vision_tower.as_deref(),
        plan.tokenizer.as_deref(),
        device,
        plan.dtype.burn(),
    )?;
    if let Some(adapter) = &plan.adapter {
        llava.model.load_adapter(adapter, device)?;
    }
    let settings = llava.pairs(template, &plan.image_root);
    let mut done = 0;
    for chunk in todo.chunks(plan.batch_size.max(1)) {
        let mut prepared = Vec::with_capacity(chunk.len());
        for r in chunk {
            match prepare_pair(&llava.tokenizer, &settings, r) {
                Ok(p) => prepared.push(p),
                Err(e) if plan.skip_bad => {
                    rejects.push(serde_json::json!({"id": r.id, "error": e.to_string()}))
                }
                Err(e) => {
                    observer.finish();
                    invalid!("{e}\n(--skip-bad records such items and goes on)")
                }
            }
        }
        if !prepared.is_empty() {
            let size = settings.image_size as usize;
            for s in score_pairs(&llava.model, &prepared, size, device)? {
                out.append(s)?;
            }
        }
        done += chunk.len();
        observer.progress("pairs", done, todo.len(), "");
    }
    observer.finish();
    let rejects = if rejects.is_empty() {
        None
    } else {
        let path = side(&plan.out, "rejects.jsonl");
        let text: String = rejects.iter().map(|r| format!("{r}\n")).collect();
        write_atomic(&path, text.as_bytes())?;
        Some((rejects.len(), path))
    };
    if out.is_empty() && rejects.is_some() {
        return Err(Error::AllFailed(
            "no pair could be scored: every item was skipped (see the rejects file)".into(),
        ));
    }
    Ok(ScoreReport {
        scored: out.len() - already,
        total: out.len(),
        rejects,
    })
}
