//! The crate's error type. Every IO error carries the path it happened on.

use std::path::{Path, PathBuf};

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong loading, configuring or running an LLM.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause (shown in the message, so not chained as `source`).
        cause: std::io::Error,
    },
    /// A JSON file does not parse or lacks a required field.
    #[error("{path}: {cause}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause (names the field and line).
        cause: serde_json::Error,
    },
    /// A config value this crate does not implement.
    #[error("unsupported config value {field} = {value}: expected {expected}")]
    UnsupportedConfig {
        /// The `config.json` key.
        field: String,
        /// Its value.
        value: String,
        /// What is supported.
        expected: String,
    },
    /// A checkpoint problem (missing/unused keys, bad shapes, unreadable files).
    #[error(transparent)]
    Checkpoint(#[from] mmedpo_core::Error),
    /// The tokenizer could not be loaded or used.
    #[error("{path}: tokenizer: {message}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What the tokenizers crate said.
        message: String,
    },
    /// A generation request is malformed (empty prompt, bad sampling values, ...).
    #[error("invalid generation request: {0}")]
    Generation(String),
    /// A chat template is missing, unknown or fails to render.
    #[error("chat template: {0}")]
    Template(String),
}

impl Error {
    /// An IO error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            cause: source,
        }
    }
}
