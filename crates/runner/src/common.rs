//! Helpers the subcommands share: the tokenizer of a model, checked against it; files beside an
//! output; how a stage over many items ended.

use std::path::Path;

use anyhow::Result;
use mmedpo_llm::Tokenizer;

/// `--tokenizer FILE`, else `MODEL/tokenizer.json` ([`mmedpo_lvlm::open::tokenizer_for`]).
pub fn load_tokenizer(model: &Path, explicit: Option<&Path>) -> Result<Tokenizer> {
    Ok(mmedpo_lvlm::open::tokenizer_for(model, explicit)?)
}

/// The tokenizer fits the model's vocabulary ([`mmedpo_lvlm::open::check_vocab`]).
pub fn check_vocab(tokenizer: &Tokenizer, vocab_size: usize, model: &Path) -> Result<()> {
    Ok(mmedpo_lvlm::open::check_vocab(
        tokenizer, vocab_size, model,
    )?)
}

pub use mmedpo_core::journal::side;

/// How a stage over many items ended: the items that failed are not done (a rerun tries them
/// again), so a caller that caches the stage's output must not mark it complete.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Items without a result.
    pub failed: usize,
}
