//! The crate's error type.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong computing metrics.
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
}
