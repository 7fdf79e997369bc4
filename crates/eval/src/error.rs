//! The crate's error type.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong reading test sets and predictions or computing metrics.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The WordNet database is missing or unreadable.
    #[error("WordNet file {path}: {message} (install Debian's wordnet-base, or set MMEDPO_WORDNET to the folder holding index.noun, data.noun, noun.exc, ...)")]
    WordNet {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A test set or predictions file is unusable (every problem listed).
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong, item by item.
        message: String,
    },
    /// Predictions that cannot be scored.
    #[error("{0}")]
    Score(String),
}
