//! The tokenizer, via the `tokenizers` crate from a `tokenizer.json`.
//!
//! Two encodings of text are offered because the two upstream tools disagree on one point:
//! * [`Tokenizer::encode`] behaves like Hugging Face's tokenizers (and so like LLaVA's
//!   preprocessing): special tokens written in the text, such as `</s>` in a vicuna_v1 conversation,
//!   become their ids.
//! * [`Tokenizer::encode_literal`] behaves like SentencePiece's `encode`: `</s>` in the text is
//!   just text. On ordinary text the two are identical.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A loaded tokenizer.
#[derive(Clone)]
pub struct Tokenizer {
    parse: tokenizers::Tokenizer,
    literal: tokenizers::Tokenizer,
    path: PathBuf,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("path", &self.path)
            .finish()
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no tokenizer.json"),
            ));
        }
        let parse = tokenizers::Tokenizer::from_file(path).map_err(|e| Error::Tokenizer {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut literal = parse.clone();
        literal.set_encode_special_tokens(true);
        Ok(Self {
            parse,
            literal,
            path: path.to_path_buf(),
        })
    }

    fn err(&self, e: tokenizers::Error) -> Error {
        Error::Tokenizer {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// Encodes like HF tokenizers: special tokens in `text` are recognised; BOS is added by the
    /// tokenizer's post-processor when `add_bos`.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        Ok(self
            .parse
            .encode(text, add_bos)
            .map_err(|e| self.err(e))?
            .get_ids()
            .to_vec())
    }

    /// Encodes like SentencePiece: special-token strings in `text` are ordinary text.
    pub fn encode_literal(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        Ok(self
            .literal
            .encode(text, add_bos)
            .map_err(|e| self.err(e))?
            .get_ids()
            .to_vec())
    }

    /// Decodes ids to text, dropping special tokens when `skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.parse
            .decode(ids, skip_special)
            .map_err(|e| self.err(e))
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.parse.get_vocab_size(true)
    }

    /// The id of a token string, e.g. `"</s>"`.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.parse.token_to_id(token)
    }

    /// The file this tokenizer was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
