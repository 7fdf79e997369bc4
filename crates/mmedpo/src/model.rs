//! A LLaVA with random weights for a config (the embedded default model and the tests' models).

use std::path::Path;

use burn::tensor::backend::Backend;

use crate::lvlm::{save_llava, LlavaConfig};
use crate::{Error, Result};

/// Draws random weights (seeded) for the llava-hf `config.json` at `config` and saves them as a
/// llava-hf directory `out`, with `tokenizer` (checked against the vocabulary) and the
/// `tokenizer_config.json` beside it copied in, so that stages find it without naming it.
pub fn init_model(
    config: &Path,
    seed: u64,
    out: &Path,
    tokenizer: Option<&Path>,
) -> Result<LlavaConfig> {
    let config = LlavaConfig::from_file(config)?;
    type B = crate::core::backend::Cpu;
    let device = Default::default();
    if let Some(path) = tokenizer {
        let t = crate::llm::Tokenizer::from_file(path)?;
        crate::lvlm::open::check_vocab(&t, config.text.vocab_size, out)?;
    }
    B::seed(&device, seed);
    let model = config.init::<B>(&device);
    save_llava(&model, &config, out)?;
    if let Some(path) = tokenizer {
        let copy = |from: &Path, name: &str| -> Result<()> {
            let to = out.join(name);
            std::fs::copy(from, &to).map_err(|e| Error::io(&to, e))?;
            Ok(())
        };
        copy(path, "tokenizer.json")?;
        let tokenizer_config = path.with_file_name("tokenizer_config.json");
        if tokenizer_config.is_file() {
            copy(&tokenizer_config, "tokenizer_config.json")?;
        }
    }
    Ok(config)
}
