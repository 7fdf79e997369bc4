//! Every metric against the reference libraries (goldens: `tests/golden/make_eval_goldens.py`):
//! 336 (prediction, reference) pairs from the MMedPO preference files (rejected vs chosen answer,
//! read from `../shared/data`, see the llm tokenizer test for `MMEDPO_SHARED_DIR` /
//! `MMEDPO_ALLOW_NO_SHARED`) and 24 synthetic report-like texts with edge cases. Tolerance 1e-6.
//! WordNet: `$MMEDPO_WORDNET` or /usr/share/wordnet (Debian's wordnet-base; `.ci/run` installs it).

use std::path::Path;

use mmedpo_eval::normalize::normalize_word;
use mmedpo_eval::vqa::{closed_hit, open_recall};
use mmedpo_eval::wordnet::WordNet;
use mmedpo_eval::{report_scores, ReportScores};

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
    let wn = WordNet::open(None).unwrap();
    let g = goldens();
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
        bad.extend(check("synthetic", p, r, item, &wn, &mut worst));
    }
    println!("synthetic worst |Δ| per metric: {worst:?}");
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn preference_file_answers_match_nltk_and_rouge() {
    let Some(data) = mmedpo_core::testing::shared_data_dir() else {
        return;
    };
    let wn = WordNet::open(None).unwrap();
    let g = goldens();
    let mut worst = [0f64; 9];
    let mut bad = vec![];
    let golden = g["shared"].as_array().unwrap();
    let mut n = 0;
    for item in golden {
        let path = data.join(item["file"].as_str().unwrap());
        let items: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let it = &items[item["index"].as_u64().unwrap() as usize];
        let last = |k: &str| {
            it[k].as_array().unwrap().last().unwrap()["value"]
                .as_str()
                .unwrap()
                .to_string()
        };
        bad.extend(check(
            &format!("{} #{}", item["file"], item["index"]),
            &last("rejected_conversations"),
            &last("conversations"),
            item,
            &wn,
            &mut worst,
        ));
        n += 1;
    }
    println!("{n} pairs; worst |Δ| per metric: {worst:?}");
    assert_eq!(n, 336);
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad[..bad.len().min(20)].join("\n")
    );
}
