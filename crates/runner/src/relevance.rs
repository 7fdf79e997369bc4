//! `mmedpo score-relevance`: the multi-agent clinical-relevance weight of every preference pair,
//! through [`mmedpo_scorer::score_file`] (concurrent, resumable; see there): arguments, agents,
//! a progress bar, the histogram.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use mmedpo_core::manifest::Manifest;
use mmedpo_core::record::read_records;
use mmedpo_scorer::local::LocalSettings;
use mmedpo_scorer::prompts::Prompts;
use mmedpo_scorer::{score_file, Agent, AgentSpec, HttpOptions, Protocol};

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

/// Builds an agent from `openai=BASE_URL@MODEL` or `local=MODEL_DIR` (a local one on
/// `--local-device`).
pub fn parse_agent(
    spec: &str,
    api_key_env: Option<&str>,
    timeout: f64,
    json_schema: bool,
    local: &LocalArgs,
) -> Result<Box<dyn Agent>> {
    let parsed = AgentSpec::parse(spec)?;
    // Checked here: a Duration cannot hold a negative or NaN number of seconds.
    if matches!(parsed, AgentSpec::OpenAi { .. }) && !(timeout.is_finite() && timeout > 0.0) {
        bail!("--timeout {timeout}: must be a number of seconds > 0");
    }
    let http = HttpOptions {
        api_key_env: api_key_env.map(String::from),
        timeout: Duration::from_secs_f64(if timeout.is_finite() && timeout > 0.0 {
            timeout
        } else {
            1.0
        }),
        json_schema,
    };
    let settings = LocalSettings {
        template: local.local_template.clone(),
        max_new_tokens: local.local_max_new_tokens,
        ..LocalSettings::default()
    };
    with_backend!(local.local_device, |B, device| Ok(
        parsed.build::<B>(&http, &settings, &device)?
    ))
}

/// Adds an agent to a manifest ([`AgentSpec::record`]).
pub fn agent_input(m: Manifest, name: &str, spec: &str) -> Result<Manifest> {
    Ok(AgentSpec::parse(spec)?.record(m, name)?)
}

/// Runs `mmedpo score-relevance`.
pub fn run(args: RelevanceArgs) -> Result<Outcome> {
    // The data is checked before any agent is loaded.
    let n = read_records(&args.data)?.len();
    let mut specs = args.agents.clone();
    if let Some(f) = &args.agents_file {
        specs.extend(AgentSpec::read_file(f)?);
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
    // What determines the agents' replies besides the data, prompts and protocol.
    let mut inputs = Manifest::new("score-relevance")
        .value("json_schema", args.json_schema)
        .option("local_template", args.local.local_template.as_ref())
        .value("local_max_new_tokens", args.local.local_max_new_tokens);
    for (i, spec) in specs.iter().enumerate() {
        inputs = agent_input(inputs, &format!("agent[{i}]"), spec)?;
    }
    let bar = ProgressBar::new(n as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} pairs {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let report = score_file(
        &args.data,
        &args.out,
        &refs,
        inputs,
        &protocol,
        args.concurrency,
        args.overwrite,
        &|done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    );
    bar.finish_and_clear();
    let r = report?;
    note!(
        "{} pairs: {} scored ({} by consensus), {} without any score",
        r.pairs,
        r.pairs - r.failed.len(),
        r.consensus,
        r.failed.len()
    );
    let max = r.histogram.iter().copied().max().unwrap_or(1).max(1);
    for (i, n) in r.histogram.iter().enumerate() {
        note!(
            "  {:.1} | {:<40} {n}",
            i as f64 / 10.0,
            "#".repeat(n * 40 / max)
        );
    }
    let png = side(&args.out, "histogram.png");
    match crate::plot::plot_score_histogram(
        &r.histogram,
        &format!(
            "clinical-relevance scores: {} pairs, {} by consensus",
            r.pairs - r.failed.len(),
            r.consensus
        ),
        &png,
    ) {
        Ok(()) => note!("histogram: {}", png.display()),
        Err(e) => tracing::warn!("no histogram PNG: {e}"),
    }
    if !r.failed.is_empty() {
        note!(
            "no score (weighted_score removed; a rerun tries these again): {}",
            r.failed
                .iter()
                .map(|u| u.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    note!(
        "written: {}\ntranscripts: {}",
        r.output.display(),
        r.transcripts.display()
    );
    Ok(Outcome {
        failed: r.failed.len(),
    })
}
