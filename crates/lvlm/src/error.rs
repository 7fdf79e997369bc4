//! The crate's error type.

use std::path::{Path, PathBuf};

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong configuring, loading or running LLaVA.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A checkpoint or file problem.
    #[error(transparent)]
    Checkpoint(#[from] mmedpo_core::Error),
    /// From the language model.
    #[error(transparent)]
    Llm(#[from] mmedpo_llm::Error),
    /// From the vision tower or image loading.
    #[error(transparent)]
    Vision(#[from] mmedpo_vision::Error),
    /// From LoRA adapter handling.
    #[error(transparent)]
    Lora(#[from] mmedpo_lora::Error),
    /// A LLaVA config value this crate does not implement.
    #[error("unsupported LLaVA config value {field} = {value}: expected {expected}")]
    UnsupportedConfig {
        /// The key.
        field: String,
        /// Its value.
        value: String,
        /// What is supported.
        expected: String,
    },
    /// An error attributed to a file.
    #[error("{path}: {message}")]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A data item that cannot be used.
    #[error("item {id}: {message}")]
    Item {
        /// The item's id.
        id: String,
        /// What is wrong (names the file where there is one).
        message: String,
    },
}

impl Error {
    /// Attributes a config error to the file it came from.
    pub fn in_file(self, path: &Path) -> Self {
        match self {
            Error::Checkpoint(mmedpo_core::Error::Io { .. }) | Error::InFile { .. } => self,
            other => Error::InFile {
                path: path.to_path_buf(),
                message: other.to_string(),
            },
        }
    }
}
