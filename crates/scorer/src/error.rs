//! The errors of agent specs and of scoring a file.

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can stop agents from being built or a file from being scored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An agent spec that cannot be used.
    #[error("--agent {spec}: {message}")]
    Spec {
        /// The spec as given.
        spec: String,
        /// What is wrong.
        message: String,
    },
    /// A setting that cannot work (checked before the first request).
    #[error("{0}")]
    Setting(String),
    /// No pair got a score.
    #[error("{0}")]
    AllFailed(String),
    /// Reading the data, the journals or the manifest, or writing the output, failed.
    #[error(transparent)]
    Core(#[from] mmedpo_core::Error),
}
