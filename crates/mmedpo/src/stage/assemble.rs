//! One training file from text-pair and visual-pair files, with the weight mode applied to
//! `weighted_score` and a seeded shuffle. (Training with `weight_mode = "raw"` on the result
//! equals training with that mode on the inputs.)

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::dpo::data::{epoch_order, load_records, pair_weights, WeightMode, WeightStats};
use crate::error::invalid;
use crate::{Event, Observer, Result};

/// What to assemble.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AssemblePlan {
    /// Preference files to merge: text pairs, visual pairs (`rejected_image` set).
    pub data: Vec<PathBuf>,
    /// The training file to write.
    pub out: PathBuf,
    /// raw | paper | none.
    pub weight_mode: WeightMode,
    /// global | per-source (the paper mode's statistics).
    pub weight_stats: WeightStats,
    /// Shuffle seed.
    pub seed: u64,
}

impl Default for AssemblePlan {
    fn default() -> Self {
        Self {
            data: vec![],
            out: PathBuf::new(),
            weight_mode: WeightMode::Raw,
            weight_stats: WeightStats::Global,
            seed: 42,
        }
    }
}

/// What was written.
#[derive(Debug, Clone)]
pub struct AssembleReport {
    /// The training file.
    pub output: PathBuf,
    /// Pairs in it.
    pub pairs: usize,
    /// Of which visual pairs.
    pub visual: usize,
    /// The weight mode applied.
    pub mode: WeightMode,
    /// Mean loss weight.
    pub mean_weight: f64,
}

/// Merges `plan.data` into `plan.out` (whole or not at all).
pub fn assemble(plan: &AssemblePlan, observer: &dyn Observer) -> Result<AssembleReport> {
    if plan.data.is_empty() {
        invalid!("assemble: no data files");
    }
    let records = load_records(&plan.data)?;
    // One training file, one pair per id (journals and reference log-probs are keyed by it).
    let dup = crate::core::record::repeated_ids(&records);
    if !dup.is_empty() {
        invalid!(
            "ids {} are in more than one of the data files; give each pair its own id",
            dup.join(", ")
        );
    }
    let weights = pair_weights(&records, plan.weight_mode, plan.weight_stats)?;
    let order = epoch_order(records.len(), plan.seed, 0);
    let out: Vec<_> = order
        .iter()
        .map(|&i| {
            let mut r = records[i].clone();
            r.weighted_score = Some(weights[i]);
            r
        })
        .collect();
    super::create_parent(&plan.out)?;
    // Whole or not at all: a killed run leaves no half file for the trainer to read.
    crate::core::journal::write_json(&plan.out, &out)?;
    let report = AssembleReport {
        output: plan.out.clone(),
        pairs: out.len(),
        visual: out.iter().filter(|r| r.rejected_image.is_some()).count(),
        mode: plan.weight_mode,
        mean_weight: weights.iter().sum::<f64>() / weights.len().max(1) as f64,
    };
    observer.event(&Event::Assembled(&report));
    Ok(report)
}
