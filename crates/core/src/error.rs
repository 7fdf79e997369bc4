//! The error type of `mmedpo-core`: checkpoint and file problems, always with the path.

use std::path::{Path, PathBuf};

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong reading checkpoints and data files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An output that was made with other inputs, or that another process is writing.
    #[error("{path}: {message}")]
    Stale {
        /// The output.
        path: PathBuf,
        /// What differs, and the ways on.
        message: String,
    },
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
    /// A safetensors file is malformed.
    #[error("{path}: not a valid safetensors file: {message}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A checkpoint in a format we refuse to read.
    #[error("{path}: {message}")]
    UnsupportedCheckpoint {
        /// The offending file or directory.
        path: PathBuf,
        /// What to do instead.
        message: String,
    },
    /// The checkpoint's keys do not match the model's parameters.
    #[error("{dir}: checkpoint does not match the model: {} missing key(s) [{}], {} unused key(s) [{}]",
        missing.len(), preview(missing), unused.len(), preview(unused))]
    Keys {
        /// The checkpoint.
        dir: PathBuf,
        /// Parameters the checkpoint lacks.
        missing: Vec<String>,
        /// Tensors in the checkpoint no parameter takes.
        unused: Vec<String>,
    },
    /// A data file has invalid items; every problem is listed.
    #[error("{path}: {} problem(s):\n  {}", problems.len(), problems.join("\n  "))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// One line per problem, naming the item.
        problems: Vec<String>,
    },
    /// A tensor has the wrong shape or a dtype we cannot read.
    #[error("{path}: tensor {key}: {message}")]
    Tensor {
        /// The file holding it.
        path: PathBuf,
        /// The tensor's key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn preview(keys: &[String]) -> String {
    const SHOW: usize = 8;
    let mut s = keys
        .iter()
        .take(SHOW)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if keys.len() > SHOW {
        s.push_str(&format!(", ... {} more", keys.len() - SHOW));
    }
    s
}

impl Error {
    /// An IO error on `path`.
    pub fn io(path: &Path, cause: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            cause,
        }
    }
}
