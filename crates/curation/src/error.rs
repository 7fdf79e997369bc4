//! The errors of the text-pair stage.

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can stop the text-pair stage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting that cannot work.
    #[error("{0}")]
    Setting(String),
    /// An unusable input file.
    #[error("{path}: {message}")]
    Data {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The target model could not sample answers.
    #[error("sampling answers: {0}")]
    Sampling(String),
    /// No item got a usable verdict.
    #[error("{0}")]
    AllFailed(String),
    /// Reading the items, the journals or the manifest, or writing the output, failed.
    #[error(transparent)]
    Core(#[from] mmedpo_core::Error),
}
