//! Every metric against the reference libraries (goldens: `tests/golden/make_eval_goldens.py`):
//! 336 (prediction, reference) pairs from the MMedPO preference files (rejected vs chosen answer:
//! the committed sample `data/released-sample`, and the full released files as well when they are
//! beside the clone) and 24 synthetic report-like texts with edge cases. Tolerance 1e-6.
//! WordNet: the committed subset `tests/golden/wordnet-subset` (every entry these texts touch, made
//! by `make_wordnet_subset.py`) always, and the full database as well when it is installed
//! (`$MMEDPO_WORDNET` or /usr/share/wordnet, Debian's wordnet-base; `.ci/run` installs it). The
//! test output says which were used.

use std::path::Path;

use mmedpo_core::testing::{notice, released_data};
use mmedpo_eval::normalize::normalize_word;
use mmedpo_eval::vqa::{closed_hit, open_recall};
use mmedpo_eval::wordnet::WordNet;
use mmedpo_eval::{report_scores, ReportScores};

/// The committed subset, then the full database when installed.
fn wordnets(test: &str) -> Vec<(&'static str, WordNet)> {
    let subset = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/wordnet-subset");
    let mut out = vec![("wordnet-subset", WordNet::open(Some(&subset)).unwrap())];
    let full = std::env::var_os("MMEDPO_WORDNET")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| mmedpo_eval::wordnet::DEFAULT_DIR.into());
    if full.join("index.noun").is_file() {
        notice(&format!(
            "{test}: WordNet subset and the full database in {}",
            full.display()
        ));
        out.push(("wordnet-full", WordNet::open(Some(&full)).unwrap()));
    } else {
        notice(&format!(
            "{test}: WordNet subset only; no full database at {} (apt-get install wordnet-base or \
             MMEDPO_WORDNET=DIR), so the check over it did not run",
            full.display()
        ));
    }
    out
}

fn goldens() -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/eval_goldens.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn check(
    label: &str,
    pred: &str,
    reference: &str,
    g: &serde_json::Value,
    wn: &WordNet,
    worst: &mut [f64; 9],
) -> Vec<String> {
    let s: ReportScores = report_scores(pred, reference, wn);
    let ours = [
        closed_hit(pred, reference),
        open_recall(
            &normalize_word(&pred.to_lowercase()),
            &normalize_word(&reference.to_lowercase()),
        ),
        s.bleu[0],
        s.bleu[1],
        s.bleu[2],
        s.bleu[3],
        s.bleu_cumulative,
        s.rouge_l,
        s.meteor,
    ];
    let keys = [
        "closed",
        "open_recall",
        "bleu_1",
        "bleu_2",
        "bleu_3",
        "bleu_4",
        "bleu_cumulative",
        "rouge_l",
        "meteor",
    ];
    let mut bad = vec![];
    for (k, (key, ours)) in keys.iter().zip(ours).enumerate() {
        let want = g[*key].as_f64().unwrap();
        let d = (ours - want).abs();
        worst[k] = worst[k].max(d);
        if d > 1e-6 {
            bad.push(format!(
                "{label} {key}: ours {ours} vs {want} (pred {pred:?} ref {reference:?})"
            ));
        }
    }
    bad
}

#[test]
fn synthetic_texts_match_nltk_and_rouge() {
    let g = goldens();
    for (label, wn) in wordnets("synthetic metric goldens") {
        let mut worst = [0f64; 9];
        let mut bad = vec![];
        for item in g["synthetic"].as_array().unwrap() {
            let (p, r) = (
                item["prediction"].as_str().unwrap(),
                item["reference"].as_str().unwrap(),
            );
            assert_eq!(
                normalize_word(&p.to_lowercase()),
                item["norm_pred"].as_str().unwrap(),
                "normalize_word({p:?})"
            );
            bad.extend(check(label, p, r, item, &wn, &mut worst));
        }
        println!("synthetic, {label}: worst |Δ| per metric: {worst:?}");
        assert!(
            bad.is_empty(),
            "{} mismatches:\n{}",
            bad.len(),
            bad.join("\n")
        );
    }
}

#[test]
fn preference_file_answers_match_nltk_and_rouge() {
    let g = goldens();
    let golden = g["shared"].as_array().unwrap();
    let sets = released_data("preference-pair metric goldens");
    for (wn_label, wn) in wordnets("preference-pair metric goldens") {
        for set in &sets {
            let mut worst = [0f64; 9];
            let mut bad = vec![];
            let mut files = std::collections::HashMap::new();
            for item in golden {
                let name = item["file"].as_str().unwrap();
                let items: &serde_json::Value = files.entry(name).or_insert_with(|| {
                    let text = std::fs::read_to_string(set.dir.join(name)).unwrap();
                    serde_json::from_str(&text).unwrap()
                });
                let index = item["index"].as_u64().unwrap() as usize;
                assert_eq!(
                    index % set.stride,
                    0,
                    "golden index {index} not in the {}",
                    set.label
                );
                let it = &items[index / set.stride];
                let last = |k: &str| {
                    it[k].as_array().unwrap().last().unwrap()["value"]
                        .as_str()
                        .unwrap()
                        .to_string()
                };
                bad.extend(check(
                    &format!("{} {name} #{index} ({wn_label})", set.label),
                    &last("rejected_conversations"),
                    &last("conversations"),
                    item,
                    &wn,
                    &mut worst,
                ));
            }
            println!(
                "{} files, {wn_label}: {} pairs; worst |Δ| per metric: {worst:?}",
                set.label,
                golden.len()
            );
            assert_eq!(golden.len(), 336);
            assert!(
                bad.is_empty(),
                "{} mismatches:\n{}",
                bad.len(),
                bad[..bad.len().min(20)].join("\n")
            );
        }
    }
}
