//! `mmedpo assemble`: [`mmedpo::stage::assemble`]'s arguments.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use mmedpo::stage::assemble::{assemble, AssemblePlan};

/// Arguments of `mmedpo assemble`.
#[derive(Args, Debug)]
pub struct AssembleArgs {
    /// Preference files to merge (repeatable): text pairs, visual pairs (`rejected_image` set).
    #[arg(long, required = true)]
    data: Vec<PathBuf>,
    /// The training file to write.
    #[arg(long)]
    out: PathBuf,
    /// raw | paper | none.
    #[arg(long, default_value = "raw")]
    weight_mode: String,
    /// global | per-source (paper mode's statistics).
    #[arg(long, default_value = "global")]
    weight_stats: String,
    /// Shuffle seed.
    #[arg(long, default_value_t = AssemblePlan::default().seed)]
    seed: u64,
}

/// A flag's value as the serde enum it names.
pub fn parse_enum<T: serde::de::DeserializeOwned>(
    flag: &str,
    value: &str,
    expected: &str,
) -> Result<T> {
    serde_json::from_value(serde_json::json!(value))
        .with_context(|| format!("--{flag} {value}: expected {expected}"))
}

/// Runs `mmedpo assemble`.
pub fn run(args: AssembleArgs) -> Result<()> {
    let plan = AssemblePlan {
        data: args.data,
        out: args.out,
        weight_mode: parse_enum("weight-mode", &args.weight_mode, "raw, paper or none")?,
        weight_stats: parse_enum("weight-stats", &args.weight_stats, "global or per-source")?,
        seed: args.seed,
    };
    assemble(&plan, &crate::observe::Cli::default())?;
    Ok(())
}
