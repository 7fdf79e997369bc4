//! Helpers the subcommands share: finding the tokenizer, checking it against the model.

use std::path::Path;

use anyhow::{bail, Result};
use mmedpo_llm::Tokenizer;

/// `--tokenizer FILE`, else `MODEL/tokenizer.json`; a clear hint when only a SentencePiece
/// `tokenizer.model` is there (LLaVA-Med's repository ships only that).
pub fn load_tokenizer(model: &Path, explicit: Option<&Path>) -> Result<Tokenizer> {
    let path = explicit
        .map(Path::to_path_buf)
        .unwrap_or_else(|| model.join("tokenizer.json"));
    if explicit.is_none() && !path.is_file() && model.join("tokenizer.model").is_file() {
        bail!(
            "{}: no tokenizer.json (only a SentencePiece tokenizer.model); for LLaVA-Med v1.5 / Mistral-7B pass \
             --tokenizer models/mistral-tokenizer/tokenizer.json (shipped with mmedpo, identical ids)",
            model.display()
        );
    }
    Ok(Tokenizer::from_file(&path)?)
}

/// The tokenizer must fit the model's vocabulary. Fewer tokens than `vocab_size` is valid: GPU
/// checkpoints pad the embedding (llava-hf/llava-1.5-7b-hf: 32,002 tokens, `vocab_size` 32,064);
/// more is an error, since some ids would have no embedding row.
pub fn check_vocab(tokenizer: &Tokenizer, vocab_size: usize, model: &Path) -> Result<()> {
    if tokenizer.vocab_size() > vocab_size {
        bail!(
            "{}: tokenizer has {} tokens but {} has vocab_size {} (ids {}..{} would have no embedding); \
             pass the model's own tokenizer with --tokenizer",
            tokenizer.path().display(),
            tokenizer.vocab_size(),
            model.join("config.json").display(),
            vocab_size,
            vocab_size,
            tokenizer.vocab_size() - 1
        );
    }
    Ok(())
}

/// Loads a LLaVA directory with its weights in `dtype` and checks that `tokenizer` fits its vocabulary.
pub fn load_llava_checked<B: burn::tensor::backend::Backend>(
    model: &Path,
    vision_tower: Option<&Path>,
    tokenizer: &Tokenizer,
    device: &B::Device,
    dtype: burn::tensor::DType,
) -> Result<mmedpo_lvlm::LoadedLlava<B>> {
    let llava = mmedpo_lvlm::load_llava_as::<B>(model, vision_tower, device, dtype)?;
    check_vocab(tokenizer, llava.config.text.vocab_size, model)?;
    Ok(llava)
}

pub use mmedpo_core::journal::side;

/// How a stage over many items ended: the items that failed are not done (a rerun tries them
/// again), so a caller that caches the stage's output must not mark it complete.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Items without a result.
    pub failed: usize,
}
