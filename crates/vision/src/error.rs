//! The crate's error type.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong loading the tower or an image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A checkpoint or file problem.
    #[error(transparent)]
    Checkpoint(#[from] mmedpo_core::Error),
    /// An image that cannot be read or decoded.
    #[error("{path}: cannot read image: {message}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// The decoder's message.
        message: String,
    },
    /// A config value this crate does not implement.
    #[error("unsupported vision config value {field} = {value}: expected {expected}")]
    UnsupportedConfig {
        /// The key.
        field: String,
        /// Its value.
        value: String,
        /// What is supported.
        expected: String,
    },
}
