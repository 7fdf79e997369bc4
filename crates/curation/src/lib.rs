//! # mmedpo-curation
//!
//! MMedPO's text preference pairs (paper §3.1, shared/docs/paper-spec.md §1.4): for an (image,
//! question, ground truth) item, the target Med-LVLM samples `n` answers ([`CandidateSampler`]),
//! and a judge ([`mmedpo_scorer::Agent`]: a local LLM or an OpenAI-compatible server) picks the one
//! that most clearly contradicts the ground truth or, if none does, writes a plausible
//! hallucination. The pair is chosen = ground truth, rejected = that answer, same image; its
//! clinical-relevance weight is set afterwards by the multi-agent scorer.
//!
//! The stage ([`stage::curate_text`]: resumable, item by item) knows nothing of models: the
//! sampler and the judge are traits, so the same code runs with LLaVA-Med on a GPU, a vLLM server,
//! or scripted test doubles; [`llava::LlavaSampler`] is the target LLaVA as a sampler.

#![deny(missing_docs)]

pub mod error;
pub mod judge;
pub mod llava;
pub mod stage;

pub use error::{Error, Result};
pub use judge::{judge, parse_verdict, JudgePrompts, JudgeTurn, Outcome, Verdict};
pub use llava::LlavaSampler;
pub use stage::{curate_text, CurateReport, CurateSettings};

use mmedpo_core::record::{PreferenceRecord, Turn};

/// One item to curate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Item id, as text.
    pub id: String,
    /// Image path relative to the image root.
    pub image: String,
    /// The question, without the image placeholder.
    pub question: String,
    /// The ground-truth answer.
    pub ground_truth: String,
}

impl Item {
    /// The item of a record (its first turn is the question, its last the ground truth).
    pub fn from_record(r: &PreferenceRecord) -> Option<Self> {
        Some(Self {
            id: r.id.to_string(),
            image: r.image.clone(),
            question: r.question()?.replace("<image>", "").trim().to_string(),
            ground_truth: r.chosen()?.trim().to_string(),
        })
    }
}

/// The target Med-LVLM: `n` sampled answers per item.
pub trait CandidateSampler {
    /// Answers for each item (`n` each); `seed` makes the draw reproducible.
    fn sample(&mut self, items: &[Item], n: usize, seed: u64) -> Result<Vec<Vec<String>>, String>;
}

/// The preference record of a curated item: the input record with its rejected turn replaced by
/// `rejected` (same question, same image), `weighted_score` cleared for the scorer.
pub fn to_record(input: &PreferenceRecord, rejected: &str) -> PreferenceRecord {
    let mut out = input.clone();
    let question = input.conversations.first().cloned();
    out.rejected_conversations = question
        .into_iter()
        .chain(std::iter::once(Turn {
            from: "gpt".into(),
            value: rejected.to_string(),
        }))
        .collect();
    out.rejected_image = None;
    out.weighted_score = None;
    out
}

/// Text compared for "the same answer": lower case, words only.
pub fn normalized(text: &str) -> String {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
