//! `mmedpo score-relevance`: [`mmedpo::stage::relevance`]'s arguments.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use mmedpo::stage::relevance::{score, RelevancePlan};

use crate::DeviceKind;

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
    #[arg(long, default_value_t = RelevancePlan::default().pair_budget)]
    pair_budget: f64,
    /// Rounds before falling back to the mean (paper: 5).
    #[arg(long, default_value_t = RelevancePlan::default().max_rounds)]
    max_rounds: usize,
    /// Corrective retries per turn after an unreadable reply.
    #[arg(long, default_value_t = RelevancePlan::default().max_retries)]
    max_retries: usize,
    /// Seconds per HTTP request.
    #[arg(long, default_value_t = RelevancePlan::default().timeout)]
    timeout: f64,
    /// Pairs in flight.
    #[arg(long, default_value_t = RelevancePlan::default().concurrency)]
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
    #[arg(long, default_value_t = RelevancePlan::default().local_max_new_tokens)]
    pub local_max_new_tokens: usize,
    /// Where local agents run (cpu | cuda).
    #[arg(long, default_value_t = DeviceKind::Cpu)]
    pub local_device: DeviceKind,
}

/// Runs `mmedpo score-relevance`.
pub fn run(args: RelevanceArgs) -> Result<()> {
    let plan = RelevancePlan {
        data: args.data,
        agent: args.agents,
        agents_file: args.agents_file,
        local_template: args.local.local_template,
        local_max_new_tokens: args.local.local_max_new_tokens,
        local_device: args.local.local_device,
        api_key_env: args.api_key_env,
        pair_budget: args.pair_budget,
        max_rounds: args.max_rounds,
        max_retries: args.max_retries,
        timeout: args.timeout,
        concurrency: args.concurrency,
        json_schema: args.json_schema,
        prompts: args.prompts,
        out: args.out,
        overwrite: args.overwrite,
    };
    score(&plan, &crate::observe::Cli::default())?;
    Ok(())
}
