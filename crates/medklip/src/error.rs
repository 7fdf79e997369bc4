//! Errors of the visual tool.

use std::path::PathBuf;

/// What can go wrong when loading MedKLIP or processing an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An image file could not be read or decoded.
    #[error("image {path}: {message}")]
    Image {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The weights file could not be read or does not fit the compiled graph.
    #[error("MedKLIP weights {path}: {message}")]
    Weights {
        /// The `.bpk` file (or `<embedded>`).
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A query name that is not one of MedKLIP's 75 observations.
    #[error("unknown MedKLIP query {0:?}: use one of the 75 observation names (e.g. \"disease\")")]
    UnknownQuery(String),
    /// A noise mode that does not exist.
    #[error(
        "unknown noise mode {0:?}: use speckle-faithful, speckle-clamped, diffusion or global"
    )]
    UnknownNoise(String),
    /// The model returned tensors that do not fit the contract.
    #[error("MedKLIP output: {0}")]
    Output(String),
    /// An input or progress file of the visual-pair stage is unusable.
    #[error("{path}: {message}")]
    Data {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Reading items, journals, manifests or writing outputs failed.
    #[error(transparent)]
    Core(#[from] mmedpo_core::Error),
}

/// Result alias.
pub type Result<T> = std::result::Result<T, Error>;
