//! # mmedpo-eval
//!
//! The metrics of the MMedPO paper's Table 1, as the authors' evaluation scripts compute them
//! (`eval/eval_vqa.py`, `eval/eval_report.py` at commit ec5ea44 of Odyssni/MMedPO), so that numbers
//! are comparable with the paper's:
//!
//! * [`normalize::normalize_word`]: LLaVA-Med's answer normalisation, quirks included.
//! * [`vqa`]: closed-question accuracy (substring) and open-question recall.
//! * [`bleu`]: nltk `sentence_bleu` with `method7` smoothing; the paper's BLEU is the mean of the
//!   individual BLEU-1..4.
//! * [`rouge`]: ROUGE-L F as the Python `rouge` package computes it.
//! * [`meteor`]: nltk METEOR with its Porter stemmer ([`porter`], written here: no crate implements
//!   NLTK's variant) and WordNet synonyms ([`wordnet`], written here: a reader of the WordNet
//!   database files with nltk's `morphy`).
//!
//! Empty or punctuation-only predictions score 0 (the authors' report script crashes on them).
//!
//! Around them, [`protocol`]: the test-set reader, the report prompts drawn with CPython's
//! `random` ([`pyrandom`]), the predictions file and the aggregation into [`protocol::Metrics`].
#![deny(missing_docs)]

pub mod bleu;
pub mod error;
pub mod meteor;
pub mod normalize;
pub mod porter;
pub mod protocol;
pub mod pyrandom;
pub mod rouge;
pub mod vqa;
pub mod wordnet;

pub use error::{Error, Result};

use normalize::normalize_word;
use wordnet::WordNet;

/// Per-sample report scores, in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ReportScores {
    /// Individual-n-gram BLEU-1..4.
    pub bleu: [f64; 4],
    /// Cumulative 4-gram BLEU (the script's `bleu_score`, not the paper's Table 1).
    pub bleu_cumulative: f64,
    /// ROUGE-L F.
    pub rouge_l: f64,
    /// METEOR.
    pub meteor: f64,
}

/// Report metrics of one (prediction, reference) pair, both normalised as the script does.
pub fn report_scores(prediction: &str, reference: &str, wn: &WordNet) -> ReportScores {
    let p = normalize_word(&prediction.to_lowercase());
    let r = normalize_word(&reference.to_lowercase());
    let (pt, rt): (Vec<&str>, Vec<&str>) = (
        p.split_whitespace().collect(),
        r.split_whitespace().collect(),
    );
    ReportScores {
        bleu: [1, 2, 3, 4].map(|n| bleu::bleu_n(&rt, &pt, n)),
        bleu_cumulative: bleu::sentence_bleu(&rt, &pt, [0.25; 4]),
        rouge_l: rouge::rouge_l(&p, &r),
        meteor: meteor::meteor(&rt, &pt, wn),
    }
}
