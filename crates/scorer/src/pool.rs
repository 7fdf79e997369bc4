//! A whole preference file scored by the multi-agent protocol: [`score_file`].
//!
//! Pairs run `concurrency` at a time (each pair's turns are sequential by nature), so a vLLM server
//! is kept busy. Progress is an append-only JSONL keyed by item id (`OUT.progress.jsonl`),
//! transcripts another (`OUT.transcripts.jsonl`), and `OUT.manifest.json` records the data,
//! agents, prompts and settings: killed and restarted with the same inputs, nothing done is redone
//! or lost, and the output file (written at the end, in input order) is the same as an
//! uninterrupted run's; with other inputs the restart is refused, naming them. Pairs for which no
//! agent gave a score lose their `weighted_score` (no stale weight reaches training), are listed,
//! and are tried again by the next run; a run in which every pair failed is an error.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use mmedpo_core::journal::{side, write_json, Journal};
use mmedpo_core::manifest::{Manifest, OutLock};
use mmedpo_core::record::{fingerprint, read_records, PreferenceRecord, RecordId};

use crate::{Agent, Error, Protocol, Result, ScoreRequest};

/// The question, ground truth and rejected answer of a pair, as the agents see them.
pub fn request(r: &PreferenceRecord) -> ScoreRequest {
    ScoreRequest {
        question: r
            .question()
            .unwrap_or_default()
            .replace("<image>", "")
            .trim()
            .to_string(),
        ground_truth: r.chosen().unwrap_or_default().to_string(),
        answer: r.rejected().unwrap_or_default().to_string(),
    }
}

/// A pair without a score.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unscored {
    /// The item id.
    pub id: String,
    /// The last error of its turns.
    pub error: String,
}

/// What [`score_file`] wrote.
#[derive(Debug, Clone)]
pub struct RelevanceReport {
    /// The preference file with `weighted_score` set.
    pub output: PathBuf,
    /// `OUT.transcripts.jsonl`.
    pub transcripts: PathBuf,
    /// Pairs in it.
    pub pairs: usize,
    /// Pairs the agents agreed on.
    pub consensus: usize,
    /// Pairs without a score (tried again by the next run).
    pub failed: Vec<Unscored>,
    /// Scores rounded to tenths: `histogram[i]` pairs scored `i / 10`.
    pub histogram: [usize; 11],
}

/// Scores every pair of `data` into `out` with `agents` in turn order. `inputs` records what
/// determines the agents' replies beyond the data, prompts and protocol (each agent through
/// [`crate::spec::AgentSpec::record`], and their settings); `progress(done, total)` is called as
/// pairs finish.
#[allow(clippy::too_many_arguments)]
pub fn score_file(
    data: &Path,
    out: &Path,
    agents: &[&dyn Agent],
    inputs: Manifest,
    protocol: &Protocol,
    concurrency: usize,
    overwrite: bool,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<RelevanceReport> {
    let records = read_records(data)?;
    let _lock = OutLock::acquire(out)?;
    let (progress_path, transcript_path) =
        (side(out, "progress.jsonl"), side(out, "transcripts.jsonl"));
    // Scores are resumed by id: only from a run with the same data, agents and prompts.
    let manifest = Manifest {
        command: "score-relevance".into(),
        ..inputs
    }
    .file("data", data)?
    .value(
        "prompts",
        fingerprint([format!("{:?}", protocol.prompts).as_bytes()]),
    )
    .value("max_rounds", protocol.max_rounds)
    .value("max_retries", protocol.max_retries);
    manifest.begin(
        &side(out, "manifest.json"),
        out,
        overwrite,
        &[&progress_path, &transcript_path],
    )?;
    // A pair is done once it has a score; a failed one (no agent gave a score) is tried again.
    let journal = Journal::<serde_json::Value>::open(&progress_path)?;
    let transcripts = Journal::<serde_json::Value>::open(&transcript_path)?;
    let scored = |id: &RecordId, j: &Journal| j.get(id).is_some_and(|v| v["score"].is_number());
    let todo: Vec<&PreferenceRecord> = records
        .iter()
        .filter(|r| !scored(&r.id, &journal))
        .collect();
    tracing::info!(
        pairs = records.len(),
        already = records.len() - todo.len(),
        agents = agents.len(),
        "scoring clinical relevance"
    );
    let total = records.len();
    let done = Mutex::new(total - todo.len());
    progress(total - todo.len(), total);
    let files = Mutex::new((journal, transcripts));
    let queue = Mutex::new(todo.iter());
    let error = Mutex::new(None::<Error>);
    std::thread::scope(|s| {
        for _ in 0..concurrency.max(1) {
            s.spawn(|| {
                while let Some(r) = queue.lock().map(|mut q| q.next()).ok().flatten() {
                    let outcome = protocol.score(agents, &request(r));
                    let mut line = serde_json::json!({"id": r.id, "score": outcome.score, "consensus": outcome.consensus, "rounds": outcome.rounds});
                    if outcome.score.is_none() {
                        line["error"] = outcome
                            .turns
                            .iter()
                            .rev()
                            .find_map(|t| t.error.clone())
                            .unwrap_or_else(|| "no agent gave a score".into())
                            .into();
                    }
                    let transcript = serde_json::json!({"id": r.id, "outcome": outcome});
                    let mut f = files.lock().unwrap_or_else(|p| p.into_inner());
                    // Transcript first: a pair counts as done only once its transcript is saved.
                    let res = f.1.append(transcript).and_then(|_| f.0.append(line));
                    if let Err(e) = res {
                        *error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.into());
                        break;
                    }
                    drop(f);
                    let mut d = done.lock().unwrap_or_else(|p| p.into_inner());
                    *d += 1;
                    progress(*d, total);
                }
            });
        }
    });
    if let Some(e) = error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let (scores, _) = files.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut pairs = records.clone();
    let (mut failed, mut consensus, mut histogram) = (vec![], 0usize, [0usize; 11]);
    for r in &mut pairs {
        let none = serde_json::Value::Null;
        let v = scores.get(&r.id).unwrap_or(&none);
        match v["score"].as_f64() {
            Some(x) => {
                r.weighted_score = Some(x);
                histogram[((x * 10.0).round() as usize).min(10)] += 1;
                consensus += usize::from(v["consensus"].as_bool() == Some(true));
            }
            None => {
                // No stale weight goes on to training: a failed pair has none until a rerun scores it.
                r.weighted_score = None;
                failed.push(Unscored {
                    id: r.id.to_string(),
                    error: v["error"].as_str().unwrap_or("not scored").to_string(),
                });
            }
        }
    }
    write_json(out, &pairs)?;
    if !failed.is_empty() && failed.len() == pairs.len() {
        return Err(Error::AllFailed(format!(
            "every pair failed ({}); first: item {}: {} (transcripts: {})",
            failed.len(),
            failed[0].id,
            failed[0].error,
            transcript_path.display()
        )));
    }
    Ok(RelevanceReport {
        output: out.to_path_buf(),
        transcripts: transcript_path,
        pairs: pairs.len(),
        consensus,
        failed,
        histogram,
    })
}
