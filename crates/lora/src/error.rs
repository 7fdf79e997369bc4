//! The crate's error type.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong with adapters.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A checkpoint or file problem.
    #[error(transparent)]
    Checkpoint(#[from] mmedpo_core::Error),
    /// An adapter config value this crate does not implement.
    #[error(
        "{path}: unsupported adapter_config.json value {field} = {value}: expected {expected}"
    )]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// The key.
        field: String,
        /// Its value.
        value: String,
        /// What is supported.
        expected: String,
    },
    /// The adapter does not fit the model.
    #[error("{path}: {message}")]
    Mismatch {
        /// The adapter directory.
        path: PathBuf,
        /// What does not fit.
        message: String,
    },
}
