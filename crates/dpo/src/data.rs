//! Training data: preference files merged and validated up front, per-pair weights, seeded order.
//!
//! Weight modes (paper-spec §1.3, §8.1):
//! * `raw`: the file's `weighted_score` (the released code);
//! * `paper`: the paper's normalisation Z, read as "standardise, rescale to mean µ = 1 and variance
//!   σ² = 0.1, clip to [α = 0.75, β = 1.25]" (population std), statistics over all pairs or per
//!   source (text pairs vs visual pairs, whose scores come from different tools);
//! * `none`: every weight 1 (plain DPO).

use std::path::PathBuf;

use mmedpo_core::record::{read_records_lenient, PreferenceRecord};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How `weighted_score` becomes the loss weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WeightMode {
    /// The score as is (released code).
    #[default]
    Raw,
    /// The paper's Z normalisation.
    Paper,
    /// All weights 1.
    None,
}

/// Which pairs share the statistics of the `paper` mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum WeightStats {
    /// One mean/std over every pair (Algorithm 1 applies Z over D_o).
    #[default]
    Global,
    /// Separate statistics for text pairs and visual pairs (`rejected_image` set).
    PerSource,
}

/// The paper's Z constants (App. B).
pub const Z_MEAN: f64 = 1.0;
/// σ² of Z.
pub const Z_VAR: f64 = 0.1;
/// Lower clip.
pub const Z_LO: f64 = 0.75;
/// Upper clip.
pub const Z_HI: f64 = 1.25;

/// Reads and merges preference files; every problem in every file is reported at once.
pub fn load_records(paths: &[PathBuf]) -> Result<Vec<PreferenceRecord>> {
    let mut all = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        match read_records_lenient(path) {
            Ok((good, bad)) => {
                problems.extend(
                    bad.into_iter()
                        .map(|(_, m)| format!("{}: {m}", path.display())),
                );
                all.extend(good);
            }
            Err(e) => problems.push(e.to_string()),
        }
    }
    if all.is_empty() && problems.is_empty() {
        problems.push("no preference pairs in the given files".into());
    }
    if problems.is_empty() {
        Ok(all)
    } else {
        Err(Error::Data { problems })
    }
}

fn z(scores: &[f64]) -> Vec<f64> {
    let n = scores.len() as f64;
    let mean = scores.iter().sum::<f64>() / n;
    let std = (scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n).sqrt();
    scores
        .iter()
        .map(|s| {
            let z = if std > 0.0 { (s - mean) / std } else { 0.0 };
            (Z_MEAN + Z_VAR.sqrt() * z).clamp(Z_LO, Z_HI)
        })
        .collect()
}

/// The loss weight of every record.
pub fn pair_weights(
    records: &[PreferenceRecord],
    mode: WeightMode,
    stats: WeightStats,
) -> Result<Vec<f64>> {
    if mode == WeightMode::None {
        return Ok(vec![1.0; records.len()]);
    }
    let missing: Vec<String> = records
        .iter()
        .filter(|r| r.weighted_score.is_none())
        .map(|r| format!("item id {}: no weighted_score", r.id))
        .collect();
    if !missing.is_empty() {
        return Err(Error::Data { problems: missing });
    }
    let scores: Vec<f64> = records
        .iter()
        .map(|r| r.weighted_score.unwrap_or(0.0))
        .collect();
    if mode == WeightMode::Raw {
        return Ok(scores);
    }
    match stats {
        WeightStats::Global => Ok(z(&scores)),
        WeightStats::PerSource => {
            let mut out = vec![0.0; records.len()];
            for visual in [false, true] {
                let idx: Vec<usize> = (0..records.len())
                    .filter(|&i| records[i].rejected_image.is_some() == visual)
                    .collect();
                let zs = z(&idx.iter().map(|&i| scores[i]).collect::<Vec<_>>());
                for (k, &i) in idx.iter().enumerate() {
                    out[i] = zs[k];
                }
            }
            Ok(out)
        }
    }
}

/// The order of the `n` pairs in `epoch`: a ChaCha8 shuffle seeded by `(seed, epoch)`.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng =
        ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ epoch as u64);
    order.shuffle(&mut rng);
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmedpo_core::record::{RecordId, Turn};

    fn rec(id: i64, w: f64, visual: bool) -> PreferenceRecord {
        let t = |v: &str| {
            vec![
                Turn {
                    from: "human".into(),
                    value: "<image>\nQ".into(),
                },
                Turn {
                    from: "gpt".into(),
                    value: v.into(),
                },
            ]
        };
        PreferenceRecord {
            id: RecordId::Int(id),
            image: "a.png".into(),
            conversations: t("A"),
            rejected_conversations: t("B"),
            rejected_image: visual.then(|| "b.png".into()),
            weighted_score: Some(w),
            extra: Default::default(),
        }
    }

    #[test]
    fn paper_weights_are_centred_on_one_and_clipped() {
        let recs: Vec<_> = [0.0, 0.2, 0.8, 0.9, 1.0, 1.0]
            .iter()
            .enumerate()
            .map(|(i, &w)| rec(i as i64, w, false))
            .collect();
        let w = pair_weights(&recs, WeightMode::Paper, WeightStats::Global).unwrap();
        assert!(w.iter().all(|&x| (Z_LO..=Z_HI).contains(&x)));
        assert_eq!(w[0], Z_LO);
        // Monotone in the score.
        assert!(w.windows(2).all(|p| p[0] <= p[1]));
        // Unclipped values follow 1 + sqrt(0.1) z: check the 0.8 item by hand.
        let mean = 3.9 / 6.0;
        let std = ([0.0f64, 0.2, 0.8, 0.9, 1.0, 1.0]
            .iter()
            .map(|s| (s - mean).powi(2))
            .sum::<f64>()
            / 6.0)
            .sqrt();
        assert!((w[2] - (1.0 + 0.1f64.sqrt() * (0.8 - mean) / std)).abs() < 1e-12);
        assert_eq!(
            pair_weights(&recs, WeightMode::Raw, WeightStats::Global).unwrap()[1],
            0.2
        );
        assert_eq!(
            pair_weights(&recs, WeightMode::None, WeightStats::Global).unwrap(),
            vec![1.0; 6]
        );
    }

    #[test]
    fn per_source_statistics_are_separate() {
        let recs = vec![
            rec(0, 0.2, false),
            rec(1, 0.4, false),
            rec(2, 0.9, true),
            rec(3, 0.95, true),
        ];
        // Two items per source: z = ±1 → 1 ± 0.316, clipped to the bounds within each source.
        let w = pair_weights(&recs, WeightMode::Paper, WeightStats::PerSource).unwrap();
        assert_eq!(w, vec![Z_LO, Z_HI, Z_LO, Z_HI]);
        // Pooled, the text pairs' 0.4 sits below the mean but inside the bounds.
        let g = pair_weights(&recs, WeightMode::Paper, WeightStats::Global).unwrap();
        assert!(g[1] > Z_LO && g[1] < 1.0, "{g:?}");
    }

    #[test]
    fn missing_scores_are_listed() {
        let mut r = rec(7, 0.5, false);
        r.weighted_score = None;
        let err = pair_weights(&[r], WeightMode::Raw, WeightStats::Global)
            .unwrap_err()
            .to_string();
        assert!(err.contains("item id 7"), "{err}");
    }

    #[test]
    fn the_order_is_a_seeded_permutation() {
        let a = epoch_order(50, 42, 0);
        assert_eq!(a, epoch_order(50, 42, 0));
        assert_ne!(a, epoch_order(50, 42, 1));
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..50).collect::<Vec<_>>());
    }
}
