//! The crate's error type.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong preparing data or training.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or checkpoint problem.
    #[error(transparent)]
    Checkpoint(#[from] mmedpo_core::Error),
    /// From the model.
    #[error(transparent)]
    Model(#[from] mmedpo_lvlm::Error),
    /// From LoRA.
    #[error(transparent)]
    Lora(#[from] mmedpo_lora::Error),
    /// The data cannot be trained on; every problem is listed.
    #[error("{} problem(s) in the training data:\n  {}", problems.len(), problems.join("\n  "))]
    Data {
        /// One line per problem, naming the file and item.
        problems: Vec<String>,
    },
    /// A reference log-prob cache that does not belong to this model and data.
    #[error("{path}: {message}")]
    StaleCache {
        /// The cache file.
        path: PathBuf,
        /// Why it is refused.
        message: String,
    },
    /// A bad training setting.
    #[error("invalid training setting: {0}")]
    Setting(String),
    /// A configuration file that cannot be used (the message names the file, line and key).
    #[error("{0}")]
    Config(String),
    /// Data-parallel training: another device's replica stopped at this step (its own error is
    /// the one reported), so this one stops too.
    #[error("step {step}: another device's replica stopped (its error is reported); rank {rank} stops too")]
    PeerStopped {
        /// 1-based optimizer step.
        step: usize,
        /// This replica's rank.
        rank: usize,
    },
    /// A collective operation (all-reduce, registration) failed.
    #[error("data-parallel collective operation failed: {0}")]
    Collective(String),
    /// A step produced a loss, log-prob or gradient that is not a finite number.
    #[error(
        "step {step}: {what} is not finite (pair ids {ids}); nothing of this step was applied"
    )]
    NonFinite {
        /// 1-based optimizer step.
        step: usize,
        /// What was not finite, with its value.
        what: String,
        /// The ids of the step's pairs.
        ids: String,
    },
}
