//! Clinical-relevance weights of preference pairs by several Med-LLM agents in turns, through
//! [`score_file`](crate::scorer::score_file) (concurrent, resumable); the scores' histogram
//! beside the output (`OUT.histogram.png`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::core::manifest::Manifest;
use crate::core::record::read_records;
use crate::error::invalid;
use crate::scorer::prompts::Prompts;
use crate::scorer::{score_file, Agent, AgentSpec, Protocol, RelevanceReport};
use crate::{DeviceKind, Event, Observer, Result};

/// How to score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelevancePlan {
    /// Preference file (MMedPO format).
    pub data: PathBuf,
    /// The agents in turn order: `openai=BASE_URL@MODEL` or `local=MODEL_DIR`.
    pub agent: Vec<String>,
    /// A file with one agent spec per line (after `agent`).
    pub agents_file: Option<PathBuf>,
    /// Built-in chat template for local agents (llama3, mistral, chatml, zephyr).
    pub local_template: Option<String>,
    /// Most tokens per local-agent reply.
    pub local_max_new_tokens: usize,
    /// Where local agents run.
    pub local_device: DeviceKind,
    /// Environment variable holding the API key (its value is never logged).
    pub api_key_env: Option<String>,
    /// Most seconds one pair may take over all its turns.
    pub pair_budget: f64,
    /// Rounds before falling back to the mean (paper: 5).
    pub max_rounds: usize,
    /// Corrective retries per turn after an unreadable reply.
    pub max_retries: usize,
    /// Seconds per HTTP request.
    pub timeout: f64,
    /// Pairs in flight.
    pub concurrency: usize,
    /// Ask servers for a JSON-schema-constrained reply (`response_format`).
    pub json_schema: bool,
    /// Folder with prompt overrides (score_first.txt, score_next.txt, corrective.txt).
    pub prompts: Option<PathBuf>,
    /// Output preference file with `weighted_score` set.
    pub out: PathBuf,
    /// Start the journals over when they come from other inputs (instead of refusing).
    pub overwrite: bool,
}

impl Default for RelevancePlan {
    fn default() -> Self {
        Self {
            data: PathBuf::new(),
            agent: vec![],
            agents_file: None,
            local_template: None,
            local_max_new_tokens: 128,
            local_device: DeviceKind::Cpu,
            api_key_env: None,
            pair_budget: 600.0,
            max_rounds: 5,
            max_retries: 2,
            timeout: 120.0,
            concurrency: 8,
            json_schema: false,
            prompts: None,
            out: PathBuf::new(),
            overwrite: false,
        }
    }
}

impl RelevancePlan {
    /// Every agent spec, `agent` then `agents_file`'s, each parsed.
    pub fn specs(&self) -> Result<Vec<String>> {
        let mut specs = self.agent.clone();
        if let Some(f) = &self.agents_file {
            specs.extend(AgentSpec::read_file(f)?);
        }
        for s in &specs {
            AgentSpec::parse(s)?;
        }
        if specs.is_empty() {
            invalid!(
                "no agents: name at least one (agent = [\"openai=URL@MODEL\"] or \"local=DIR\")"
            );
        }
        if !(self.pair_budget.is_finite() && self.pair_budget > 0.0) {
            invalid!(
                "pair_budget = {}: must be a number of seconds > 0",
                self.pair_budget
            );
        }
        Ok(specs)
    }
}

/// Scores `plan.data` into `plan.out`; an error when every pair failed.
pub fn score(plan: &RelevancePlan, observer: &dyn Observer) -> Result<RelevanceReport> {
    // The data is checked before any agent is loaded.
    read_records(&plan.data)?;
    let specs = plan.specs()?;
    let local = super::Local {
        template: plan.local_template.as_deref(),
        max_new_tokens: plan.local_max_new_tokens,
        device: plan.local_device,
    };
    let agents: Vec<Box<dyn Agent>> = specs
        .iter()
        .map(|s| {
            super::build_agent(
                s,
                plan.api_key_env.as_deref(),
                plan.timeout,
                plan.json_schema,
                &local,
            )
        })
        .collect::<Result<_>>()?;
    let refs: Vec<&dyn Agent> = agents.iter().map(|a| a.as_ref()).collect();
    let prompts = match &plan.prompts {
        Some(d) => Prompts::from_dir(d).map_err(|e| {
            crate::Error::Invalid(format!("reading prompts from {}: {e}", d.display()))
        })?,
        None => Prompts::builtin(),
    };
    let protocol = Protocol {
        max_rounds: plan.max_rounds,
        max_retries: plan.max_retries,
        prompts,
        pair_budget: Some(Duration::from_secs_f64(plan.pair_budget)),
    };
    // What determines the agents' replies besides the data, prompts and protocol.
    let mut inputs = Manifest::new("score-relevance")
        .value("json_schema", plan.json_schema)
        .option("local_template", plan.local_template.as_ref())
        .value("local_max_new_tokens", plan.local_max_new_tokens);
    for (i, spec) in specs.iter().enumerate() {
        inputs = super::record_agent(inputs, &format!("agent[{i}]"), spec)?;
    }
    super::create_parent(&plan.out)?;
    let report = score_file(
        &plan.data,
        &plan.out,
        &refs,
        inputs,
        &protocol,
        plan.concurrency,
        plan.overwrite,
        &|done, total| observer.progress("pairs", done, total, ""),
    );
    observer.finish();
    let report = report?;
    let png = crate::core::journal::side(&plan.out, "histogram.png");
    let title = format!(
        "clinical-relevance scores: {} pairs, {} by consensus",
        report.pairs - report.failed.len(),
        report.consensus
    );
    if let Err(e) = crate::plot::plot_score_histogram(&report.histogram, &title, &png) {
        tracing::warn!("no histogram PNG: {e}");
    }
    observer.event(&Event::Scored(&report));
    Ok(report)
}
