//! The prompt texts (`data/prompts/*.txt`, built in at compile time; a folder of files with the same
//! names overrides them).

use std::path::Path;

use crate::protocol::ScoreRequest;

/// The three prompts of the scoring protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompts {
    /// First turn: `{question}`, `{ground_truth}`, `{answer}`.
    pub score_first: String,
    /// Later turns: the same plus `{previous_score}`.
    pub score_next: String,
    /// After an unreadable reply: `{problem}`.
    pub corrective: String,
}

impl Prompts {
    /// The project's prompts.
    pub fn builtin() -> Self {
        Self {
            score_first: include_str!("../../../data/prompts/score_first.txt").into(),
            score_next: include_str!("../../../data/prompts/score_next.txt").into(),
            corrective: include_str!("../../../data/prompts/corrective.txt").into(),
        }
    }

    /// Prompts from a folder holding `score_first.txt`, `score_next.txt`, `corrective.txt`.
    pub fn from_dir(dir: &Path) -> std::io::Result<Self> {
        let read = |n: &str| std::fs::read_to_string(dir.join(n));
        Ok(Self {
            score_first: read("score_first.txt")?,
            score_next: read("score_next.txt")?,
            corrective: read("corrective.txt")?,
        })
    }

    fn fill(template: &str, req: &ScoreRequest) -> String {
        template
            .replace("{question}", req.question.trim())
            .replace("{ground_truth}", req.ground_truth.trim())
            .replace("{answer}", req.answer.trim())
    }

    /// The opening prompt.
    pub fn first(&self, req: &ScoreRequest) -> String {
        Self::fill(&self.score_first, req)
    }

    /// A later prompt, showing the previous score with one decimal.
    pub fn next(&self, req: &ScoreRequest, previous: f64) -> String {
        Self::fill(&self.score_next, req).replace("{previous_score}", &format!("{previous:.1}"))
    }

    /// The corrective message.
    pub fn corrective(&self, problem: &str) -> String {
        self.corrective.replace("{problem}", problem)
    }
}
