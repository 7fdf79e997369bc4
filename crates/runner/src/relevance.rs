//! `mmedpo score-relevance`: the multi-agent clinical-relevance weight of every preference pair.
//!
//! Pairs run `--concurrency` at a time (each pair's turns are sequential by nature), so a vLLM
//! server is kept busy. Progress is an append-only JSONL keyed by item id (`OUT.progress.jsonl`),
//! transcripts another (`OUT.transcripts.jsonl`): killed and restarted, nothing done is redone or
//! lost, and the output file (written at the end, in input order) is the same as an uninterrupted
//! run's. Pairs for which no agent gave a score lose their `weighted_score`, are listed, and are
//! tried again by the next run; a run in which every pair failed exits non-zero.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use mmedpo_core::record::{read_records, PreferenceRecord};
use mmedpo_scorer::http::HttpAgent;
use mmedpo_scorer::local::{LocalAgent, LocalSettings};
use mmedpo_scorer::prompts::Prompts;
use mmedpo_scorer::{Agent, Protocol, ScoreRequest};

use mmedpo_core::journal::{write_json, Journal};
use mmedpo_core::manifest::Manifest;
use mmedpo_core::record::RecordId;

use crate::common::{side, Outcome};
use crate::{with_backend, DeviceKind};

/// Arguments of `mmedpo score-relevance`.
#[derive(Args, Debug)]
pub struct RelevanceArgs {
    /// Preference file (MMedPO format).
    #[arg(long)]
    data: PathBuf,
    /// An agent, in turn order (repeatable): `openai=BASE_URL@MODEL` (e.g.
    /// `openai=http://127.0.0.1:8000/v1@m42-8b`) or `local=MODEL_DIR` (an HF Llama/Mistral directory).
    #[arg(long = "agent", required_unless_present = "agents_file")]
    agents: Vec<String>,
    /// A file with one agent spec per line, in turn order (`#` comments and blank lines skipped);
    /// its agents come after any `--agent`.
    #[arg(long)]
    agents_file: Option<PathBuf>,
    #[command(flatten)]
    local: LocalArgs,
    /// Environment variable holding the API key (its value is never logged).
    #[arg(long)]
    api_key_env: Option<String>,
    /// Most seconds one pair may take over all its turns; no turn starts after it.
    #[arg(long, default_value_t = 600.0)]
    pair_budget: f64,
    /// Rounds before falling back to the mean (paper: 5).
    #[arg(long, default_value_t = 5)]
    max_rounds: usize,
    /// Corrective retries per turn after an unreadable reply.
    #[arg(long, default_value_t = 2)]
    max_retries: usize,
    /// Seconds per HTTP request.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// Pairs in flight.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Ask servers for a JSON-schema-constrained reply (`response_format`).
    #[arg(long)]
    json_schema: bool,
    /// Folder with prompt overrides (score_first.txt, score_next.txt, corrective.txt).
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Output preference file with `weighted_score` set.
    #[arg(long)]
    out: PathBuf,
    /// Start the journals over when they come from other inputs (instead of refusing).
    #[arg(long)]
    overwrite: bool,
}

/// Settings of `local=` agents (shared by `score-relevance` and `curate-text`).
#[derive(Args, Debug, Clone)]
pub struct LocalArgs {
    /// Built-in chat template for local agents whose tokenizer_config.json has none
    /// (llama3, mistral, chatml, zephyr); it also overrides one that is there.
    #[arg(long)]
    pub local_template: Option<String>,
    /// Most tokens per local-agent reply.
    #[arg(long, default_value_t = 128)]
    pub local_max_new_tokens: usize,
    /// Where local agents run.
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub local_device: DeviceKind,
}

/// Builds an agent from `openai=BASE_URL@MODEL` or `local=MODEL_DIR`.
pub fn parse_agent(
    spec: &str,
    api_key_env: Option<&str>,
    timeout: f64,
    json_schema: bool,
    local: &LocalArgs,
) -> Result<Box<dyn Agent>> {
    if let Some(dir) = spec.strip_prefix("local=") {
        let dir = PathBuf::from(dir);
        if !dir.is_dir() {
            bail!("--agent {spec}: {} is not a model directory", dir.display());
        }
        let settings = LocalSettings {
            template: local.local_template.clone(),
            max_new_tokens: local.local_max_new_tokens,
            ..LocalSettings::default()
        };
        return with_backend!(local.local_device, |B, device| {
            let agent = LocalAgent::load::<B>(&dir, settings, &device)
                .with_context(|| format!("--agent {spec}"))?;
            Ok(Box::new(agent) as Box<dyn Agent>)
        });
    }
    let Some(rest) = spec.strip_prefix("openai=") else {
        bail!("--agent {spec}: expected openai=BASE_URL@MODEL or local=MODEL_DIR");
    };
    let Some((url, model)) = rest.rsplit_once('@') else {
        bail!("--agent {spec}: expected openai=BASE_URL@MODEL")
    };
    // Checked before the first request: each of these would otherwise cost a whole run.
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        bail!("--agent {spec}: the base URL {url:?} needs a scheme (http:// or https://)");
    }
    if !(timeout.is_finite() && timeout > 0.0) {
        bail!("--timeout {timeout}: must be a number of seconds > 0");
    }
    if let Some(name) = api_key_env {
        if std::env::var(name).map_or(true, |v| v.is_empty()) {
            bail!("--api-key-env {name}: the environment variable {name} is not set (or empty)");
        }
    }
    let mut a = HttpAgent::new(url, model, api_key_env, Duration::from_secs_f64(timeout));
    a.json_schema = json_schema;
    Ok(Box::new(a))
}

fn request(r: &PreferenceRecord) -> ScoreRequest {
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

/// Runs `mmedpo score-relevance`.
pub fn run(args: RelevanceArgs) -> Result<Outcome> {
    let records = read_records(&args.data)?;
    let mut specs = args.agents.clone();
    if let Some(f) = &args.agents_file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        specs.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
        if specs.is_empty() {
            bail!("{}: no agent specs in the file", f.display());
        }
    }
    let agents: Vec<Box<dyn Agent>> = specs
        .iter()
        .map(|s| {
            parse_agent(
                s,
                args.api_key_env.as_deref(),
                args.timeout,
                args.json_schema,
                &args.local,
            )
        })
        .collect::<Result<_>>()?;
    let refs: Vec<&dyn Agent> = agents.iter().map(|a| a.as_ref()).collect();
    let prompts = match &args.prompts {
        Some(d) => {
            Prompts::from_dir(d).with_context(|| format!("reading prompts from {}", d.display()))?
        }
        None => Prompts::builtin(),
    };
    if !(args.pair_budget.is_finite() && args.pair_budget > 0.0) {
        bail!(
            "--pair-budget {}: must be a number of seconds > 0",
            args.pair_budget
        );
    }
    let protocol = Protocol {
        max_rounds: args.max_rounds,
        max_retries: args.max_retries,
        prompts,
        pair_budget: Some(Duration::from_secs_f64(args.pair_budget)),
    };
    let _lock = mmedpo_core::manifest::OutLock::acquire(&args.out)?;
    let (progress_path, transcript_path) = (
        side(&args.out, "progress.jsonl"),
        side(&args.out, "transcripts.jsonl"),
    );
    // Scores are resumed by id: only from a run with the same data, agents and prompts.
    let mut manifest = Manifest::new("score-relevance")
        .file("data", &args.data)?
        .value(
            "prompts",
            mmedpo_core::record::fingerprint([format!("{:?}", protocol.prompts).as_bytes()]),
        )
        .value("max_rounds", args.max_rounds)
        .value("max_retries", args.max_retries)
        .value("json_schema", args.json_schema)
        .option("local_template", args.local.local_template.as_ref())
        .value("local_max_new_tokens", args.local.local_max_new_tokens);
    for (i, spec) in specs.iter().enumerate() {
        manifest = agent_input(manifest, &format!("agent[{i}]"), spec)?;
    }
    manifest.begin(
        &side(&args.out, "manifest.json"),
        &args.out,
        args.overwrite,
        &[&progress_path, &transcript_path],
    )?;
    // A pair is done once it has a score; a failed one (no agent gave a score) is tried again.
    let progress = Journal::<serde_json::Value>::open(&progress_path)?;
    let transcripts = Journal::<serde_json::Value>::open(&transcript_path)?;
    let scored = |id: &RecordId, j: &Journal| j.get(id).is_some_and(|v| v["score"].is_number());
    let todo: Vec<&PreferenceRecord> = records
        .iter()
        .filter(|r| !scored(&r.id, &progress))
        .collect();
    tracing::info!(
        pairs = records.len(),
        already = records.len() - todo.len(),
        agents = agents.len(),
        "scoring clinical relevance"
    );
    let files = Mutex::new((progress, transcripts));
    let queue = Mutex::new(todo.iter());
    let bar = ProgressBar::new(records.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} pairs {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position((records.len() - todo.len()) as u64);
    let error = Mutex::new(None::<anyhow::Error>);
    std::thread::scope(|s| {
        for _ in 0..args.concurrency.max(1) {
            s.spawn(|| {
                while let Some(r) = queue.lock().map(|mut q| q.next()).ok().flatten() {
                let out = protocol.score(&refs, &request(r));
                let mut line = serde_json::json!({"id": r.id, "score": out.score, "consensus": out.consensus, "rounds": out.rounds});
                if out.score.is_none() {
                    line["error"] = out.turns.iter().rev().find_map(|t| t.error.clone()).unwrap_or_else(|| "no agent gave a score".into()).into();
                }
                let transcript = serde_json::json!({"id": r.id, "outcome": out});
                let mut f = files.lock().unwrap_or_else(|p| p.into_inner());
                // Transcript first: a pair counts as done only once its transcript is saved.
                let res = f.1.append(transcript).and_then(|_| f.0.append(line));
                if let Err(e) = res {
                    *error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.into());
                    break;
                }
                bar.inc(1);
                }
            });
        }
    });
    bar.finish_and_clear();
    if let Some(e) = error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let (scores, _) = files.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut out = records.clone();
    let (mut failed, mut consensus, mut hist) = (vec![], 0usize, [0usize; 11]);
    for r in &mut out {
        let none = serde_json::Value::Null;
        let v = scores.get(&r.id).unwrap_or(&none);
        match v["score"].as_f64() {
            Some(x) => {
                r.weighted_score = Some(x);
                hist[((x * 10.0).round() as usize).min(10)] += 1;
                consensus += usize::from(v["consensus"].as_bool() == Some(true));
            }
            None => {
                // No stale weight goes on to training: a failed pair has none until a rerun scores it.
                r.weighted_score = None;
                failed.push((
                    r.id.to_string(),
                    v["error"].as_str().unwrap_or("not scored").to_string(),
                ));
            }
        }
    }
    write_json(&args.out, &out)?;
    note!(
        "{} pairs: {} scored ({} by consensus), {} without any score",
        out.len(),
        out.len() - failed.len(),
        consensus,
        failed.len()
    );
    let max = hist.iter().copied().max().unwrap_or(1).max(1);
    for (i, n) in hist.iter().enumerate() {
        note!(
            "  {:.1} | {:<40} {n}",
            i as f64 / 10.0,
            "#".repeat(n * 40 / max)
        );
    }
    let png = side(&args.out, "histogram.png");
    match crate::plot::plot_score_histogram(
        &hist,
        &format!(
            "clinical-relevance scores: {} pairs, {consensus} by consensus",
            out.len() - failed.len()
        ),
        &png,
    ) {
        Ok(()) => note!("histogram: {}", png.display()),
        Err(e) => tracing::warn!("no histogram PNG: {e}"),
    }
    if !failed.is_empty() {
        note!(
            "no score (weighted_score removed; a rerun tries these again): {}",
            failed
                .iter()
                .map(|(id, _)| id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    note!(
        "written: {}\ntranscripts: {}",
        args.out.display(),
        transcript_path.display()
    );
    if failed.len() == out.len() {
        bail!(
            "every pair failed ({}); first: item {}: {}",
            failed.len(),
            failed[0].0,
            failed[0].1
        );
    }
    Ok(Outcome {
        failed: failed.len(),
    })
}

/// Adds an agent to a manifest: an API agent's model name, a `local=DIR` agent's weights.
pub fn agent_input(m: Manifest, name: &str, spec: &str) -> Result<Manifest> {
    // An API agent is its model name (the server may move: a restarted one on another port serves
    // the same model); a local one is its directory's weights.
    Ok(match spec.strip_prefix("local=") {
        Some(dir) => m
            .value(name, spec)
            .dir(&format!("{name}.model"), Path::new(dir))?,
        None => match spec.rsplit_once('@') {
            Some((_, model)) => m.value(name, format!("openai model {model}")),
            None => m.value(name, spec),
        },
    })
}
