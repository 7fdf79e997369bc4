//! The text-pair stage as one library call: [`curate_text`].
//!
//! For each (image, question, ground truth) item the sampler draws `n` answers (per-item seeds, so
//! order and restarts do not change them) and the judge picks the most hallucinated one or writes
//! one. The output is the MMedPO preference format (chosen = ground truth, rejected = that answer,
//! same image), without weights: the multi-agent scorer sets them.
//!
//! Resumable: `OUT.progress.jsonl` (one line per curated item, written after its transcript in
//! `OUT.transcripts.jsonl`), `OUT.manifest.json` (a restart with other inputs is refused, naming
//! them); a restart skips curated items and retries failed ones; the output file is written at
//! the end in input order.

use std::path::{Path, PathBuf};

use mmedpo_core::journal::{side, write_json, Journal};
use mmedpo_core::manifest::{Manifest, OutLock};
use mmedpo_core::record::{fingerprint, read_items, PreferenceRecord, RecordId};
use mmedpo_scorer::Agent;

use crate::error::{Error, Result};
use crate::{judge, to_record, CandidateSampler, Item, JudgePrompts, Verdict};

/// How the stage runs.
#[derive(Debug, Clone)]
pub struct CurateSettings {
    /// Answers sampled per item.
    pub n: usize,
    /// Base seed of the sampling.
    pub seed: u64,
    /// Corrective retries per judge call after an unreadable verdict.
    pub max_retries: usize,
    /// Items the judge sees at once.
    pub concurrency: usize,
    /// Start the journals over when they come from other inputs (instead of refusing).
    pub overwrite: bool,
}

/// What [`curate_text`] wrote.
#[derive(Debug, Clone)]
pub struct CurateReport {
    /// The text-pair file.
    pub output: PathBuf,
    /// `OUT.transcripts.jsonl`.
    pub transcripts: PathBuf,
    /// Pairs in it.
    pub pairs: usize,
    /// Of them, answers of the model the judge picked (the rest it wrote).
    pub picked: usize,
    /// Items without a usable verdict (tried again by the next run).
    pub failed: Vec<String>,
}

/// The items of `data` that curation can use: each with a question and a ground truth, its image
/// present under `image_root`.
pub fn read_curation_items(data: &Path, image_root: &Path) -> Result<Vec<Item>> {
    curation_items(&read_items(data)?, data, image_root)
}

/// [`read_curation_items`] of records already read from `data`.
fn curation_items(
    records: &[PreferenceRecord],
    data: &Path,
    image_root: &Path,
) -> Result<Vec<Item>> {
    let mut items = Vec::with_capacity(records.len());
    for r in records {
        let it = Item::from_record(r).ok_or_else(|| Error::Data {
            path: data.to_path_buf(),
            message: format!("item {}: no question or no ground truth", r.id),
        })?;
        let p = image_root.join(&it.image);
        if !p.is_file() {
            return Err(Error::Data {
                path: data.to_path_buf(),
                message: format!("item {}: image {} not found", it.id, p.display()),
            });
        }
        items.push(it);
    }
    Ok(items)
}

/// Curates the text pairs of the items in `data` into the file `out`. `inputs` records what
/// determines the answers and verdicts besides the data, `n`, the seed, the retries and the
/// prompts (the target model and its sampling, the judge: [`mmedpo_scorer::AgentSpec::record`]);
/// `progress(done, total)` is called as items finish.
#[allow(clippy::too_many_arguments)]
pub fn curate_text(
    data: &Path,
    image_root: &Path,
    out: &Path,
    sampler: &mut dyn CandidateSampler,
    judge_agent: &dyn Agent,
    prompts: &JudgePrompts,
    inputs: Manifest,
    settings: &CurateSettings,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<CurateReport> {
    if settings.n == 0 {
        return Err(Error::Setting("n must be at least 1".into()));
    }
    let records = read_items(data)?;
    let items = curation_items(&records, data, image_root)?;
    let _lock = OutLock::acquire(out)?;
    let (progress_path, transcript_path) =
        (side(out, "progress.jsonl"), side(out, "transcripts.jsonl"));
    // Pairs are resumed by id: only from a run with the same target model, sampling, judge, data.
    let manifest = Manifest {
        command: "curate-text".into(),
        ..inputs
    }
    .file("data", data)?
    .value("image_root", image_root.display())
    .value("n", settings.n)
    .value("seed", settings.seed)
    .value("max_retries", settings.max_retries)
    .value("prompts", fingerprint([format!("{prompts:?}").as_bytes()]));
    manifest.begin(
        &side(out, "manifest.json"),
        out,
        settings.overwrite,
        &[&progress_path, &transcript_path],
    )?;
    let mut journal = Journal::<serde_json::Value>::open(&progress_path)?;
    let mut transcripts = Journal::<serde_json::Value>::open(&transcript_path)?;
    tracing::info!(items = items.len(), already = journal.len(), n = settings.n, judge = %judge_agent.name(), "curating text pairs");
    let total = items.len();
    let mut done = journal.len();
    progress(done, total);
    let mut failed = Vec::new();
    // Items go in chunks: the target model samples each chunk's answers (one item per batch of
    // `n` rows), then the judge sees the chunk's items concurrently, so a judge server is kept busy.
    let todo: Vec<(&RecordId, &Item)> = records
        .iter()
        .zip(&items)
        .filter(|(r, _)| !journal.contains(&r.id))
        .map(|(r, it)| (&r.id, it))
        .collect();
    for chunk in todo.chunks(settings.concurrency.max(1)) {
        let owned: Vec<Item> = chunk.iter().map(|&(_, it)| it.clone()).collect();
        let candidates = sampler
            .sample(&owned, settings.n, settings.seed)
            .map_err(Error::Sampling)?;
        let outcomes: Vec<crate::Outcome> = std::thread::scope(|s| {
            let handles: Vec<_> = owned
                .iter()
                .zip(&candidates)
                .map(|(item, cands)| {
                    s.spawn(move || judge(judge_agent, item, cands, prompts, settings.max_retries))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a judge thread panicked"))
                .collect()
        });
        // Transcript first: an item counts as curated only once its transcript is saved.
        for (((id, item), cands), outcome) in chunk.iter().zip(&candidates).zip(&outcomes) {
            transcripts
                .append(serde_json::json!({"id": id, "candidates": cands, "outcome": outcome}))?;
            match &outcome.verdict {
                Some(v) => {
                    let kind = match v {
                        Verdict::Picked { .. } => "picked",
                        Verdict::Written { .. } => "written",
                    };
                    journal.append(
                        serde_json::json!({"id": id, "rejected": v.text(), "source": kind}),
                    )?;
                }
                None => failed.push(item.id.clone()),
            }
            done += 1;
            progress(done, total);
        }
    }
    let (mut pairs, mut picked) = (Vec::new(), 0usize);
    for r in &records {
        if let Some(v) = journal.get(&r.id) {
            pairs.push(to_record(r, v["rejected"].as_str().unwrap_or_default()));
            picked += usize::from(v["source"] == "picked");
        }
    }
    write_json(out, &pairs)?;
    if pairs.is_empty() && !failed.is_empty() {
        return Err(Error::AllFailed(format!(
            "every item failed: {} item(s) without a usable verdict: {} (see {})",
            failed.len(),
            failed.join(", "),
            transcript_path.display()
        )));
    }
    Ok(CurateReport {
        output: out.to_path_buf(),
        transcripts: transcript_path,
        pairs: pairs.len(),
        picked,
        failed,
    })
}
