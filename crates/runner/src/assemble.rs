//! `mmedpo assemble`: merge text-pair and visual-pair files into one training file, with the weight
//! mode applied to `weighted_score` and a seeded shuffle. (Training with `weight_mode = "raw"` on the
//! result equals training with that mode on the inputs.)

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use mmedpo_dpo::data::{epoch_order, load_records, pair_weights, WeightMode, WeightStats};

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
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// Runs `mmedpo assemble`.
pub fn run(args: AssembleArgs) -> Result<()> {
    let mode: WeightMode = serde_json::from_value(serde_json::json!(args.weight_mode))
        .with_context(|| {
            format!(
                "--weight-mode {}: expected raw, paper or none",
                args.weight_mode
            )
        })?;
    let stats: WeightStats = serde_json::from_value(serde_json::json!(args.weight_stats))
        .with_context(|| {
            format!(
                "--weight-stats {}: expected global or per-source",
                args.weight_stats
            )
        })?;
    let records = load_records(&args.data)?;
    // One training file, one pair per id (journals and reference log-probs are keyed by it).
    let dup = mmedpo_core::record::repeated_ids(&records);
    if !dup.is_empty() {
        anyhow::bail!(
            "ids {} are in more than one of the --data files; give each pair its own id",
            dup.join(", ")
        );
    }
    let weights = pair_weights(&records, mode, stats)?;
    let order = epoch_order(records.len(), args.seed, 0);
    let out: Vec<_> = order
        .iter()
        .map(|&i| {
            let mut r = records[i].clone();
            r.weighted_score = Some(weights[i]);
            r
        })
        .collect();
    // Whole or not at all: a killed run leaves no half file for the trainer to read.
    mmedpo_core::journal::write_json(&args.out, &out)?;
    let visual = out.iter().filter(|r| r.rejected_image.is_some()).count();
    let mean = weights.iter().sum::<f64>() / weights.len().max(1) as f64;
    note!(
        "{} pairs ({} text, {visual} visual) written to {}; weights {:?}, mean {mean:.3}",
        out.len(),
        out.len() - visual,
        args.out.display(),
        mode
    );
    Ok(())
}
