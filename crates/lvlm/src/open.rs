//! A LLaVA ready to use: [`open`] loads the model, resolves its config (the tower's included),
//! finds its tokenizer and checks it against the vocabulary, so that callers stop passing the
//! pieces back in.

use std::path::Path;

use burn::tensor::backend::Backend;
use mmedpo_llm::Tokenizer;

use crate::loader::load_llava_as;
use crate::score::PairSettings;
use crate::{Error, LlavaConfig, LlavaForConditionalGeneration, Result};

/// A loaded LLaVA with what every caller needs beside it.
pub struct OpenLlava<B: Backend> {
    /// The model.
    pub model: LlavaForConditionalGeneration<B>,
    /// Its resolved config (with the tower's).
    pub config: LlavaConfig,
    /// Its tokenizer, checked against `config.text.vocab_size`.
    pub tokenizer: Tokenizer,
}

impl<B: Backend> OpenLlava<B> {
    /// The tower's input size in pixels (336 for CLIP ViT-L/14-336).
    pub fn image_size(&self) -> u32 {
        self.config.vision.as_ref().map_or(336, |v| v.image_size) as u32
    }

    /// How preference pairs become this model's inputs.
    pub fn pairs(&self, template: mmedpo_llm::Template, image_root: &Path) -> PairSettings {
        PairSettings {
            template,
            image_root: image_root.to_path_buf(),
            aspect: self.config.aspect,
            image_size: self.image_size(),
        }
    }
}

/// `explicit`, else `MODEL/tokenizer.json`; a clear hint when only a SentencePiece
/// `tokenizer.model` is there (LLaVA-Med's repository ships only that).
pub fn tokenizer_for(model: &Path, explicit: Option<&Path>) -> Result<Tokenizer> {
    let path = explicit
        .map(Path::to_path_buf)
        .unwrap_or_else(|| model.join("tokenizer.json"));
    if explicit.is_none() && !path.is_file() && model.join("tokenizer.model").is_file() {
        return Err(Error::InFile {
            path: model.to_path_buf(),
            message:
                "no tokenizer.json (only a SentencePiece tokenizer.model); for LLaVA-Med v1.5 / \
                      Mistral-7B pass --tokenizer models/mistral-tokenizer/tokenizer.json (shipped \
                      with mmedpo, identical ids)"
                    .into(),
        });
    }
    Ok(Tokenizer::from_file(&path)?)
}

/// The tokenizer must fit the model's vocabulary. Fewer tokens than `vocab_size` is valid: GPU
/// checkpoints pad the embedding (llava-hf/llava-1.5-7b-hf: 32,002 tokens, `vocab_size` 32,064);
/// more is an error, since some ids would have no embedding row.
pub fn check_vocab(tokenizer: &Tokenizer, vocab_size: usize, model: &Path) -> Result<()> {
    if tokenizer.vocab_size() > vocab_size {
        return Err(Error::InFile {
            path: tokenizer.path().to_path_buf(),
            message: format!(
                "tokenizer has {} tokens but {} has vocab_size {} (ids {}..{} would have no \
                 embedding); pass the model's own tokenizer with --tokenizer",
                tokenizer.vocab_size(),
                model.join("config.json").display(),
                vocab_size,
                vocab_size,
                tokenizer.vocab_size() - 1
            ),
        });
    }
    Ok(())
}

/// Loads the LLaVA directory `model` (either key layout; the tower from `vision_tower` or the
/// shards) with its frozen weights in `dtype`, and its tokenizer (`tokenizer`, else the
/// directory's), checked against the vocabulary.
pub fn open<B: Backend>(
    model: &Path,
    vision_tower: Option<&Path>,
    tokenizer: Option<&Path>,
    device: &B::Device,
    dtype: burn::tensor::DType,
) -> Result<OpenLlava<B>> {
    let tokenizer = tokenizer_for(model, tokenizer)?;
    let loaded = load_llava_as::<B>(model, vision_tower, device, dtype)?;
    check_vocab(&tokenizer, loaded.config.text.vocab_size, model)?;
    Ok(OpenLlava {
        model: loaded.model,
        config: loaded.config,
        tokenizer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(name)
    }

    #[test]
    fn a_model_opens_with_its_tokenizer_checked() {
        type B = mmedpo_core::backend::Cpu;
        let tok = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../models/mistral-tokenizer/tokenizer.json");
        let dir = golden("tiny-llava-hf");
        let llava = open::<B>(
            &dir,
            None,
            Some(&tok),
            &Default::default(),
            burn::tensor::DType::F32,
        )
        .unwrap();
        assert_eq!(llava.tokenizer.vocab_size(), 32000);
        assert_eq!(
            llava.image_size(),
            llava.config.vision.as_ref().unwrap().image_size as u32
        );
        let p = llava.pairs(mmedpo_llm::Template::VicunaV1, Path::new("imgs"));
        assert_eq!(
            (p.image_size, p.image_root.as_path()),
            (llava.image_size(), Path::new("imgs"))
        );
        // No tokenizer.json in the directory and none given: named, with the file it needs.
        let e = tokenizer_for(&golden("tiny-llava-med"), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tiny-llava-med") && e.contains("tokenizer.json"),
            "{e}"
        );
        // More tokens than the vocabulary: refused, naming both files.
        let e = check_vocab(&llava.tokenizer, 1000, &dir)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tokenizer has 32000 tokens") && e.contains("vocab_size 1000"),
            "{e}"
        );
    }
}
