//! The error type of the stages and the pipeline: each crate's own, or a setting that cannot work.

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in a stage or the pipeline.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting or an input that cannot work; the message names the file, the setting and the
    /// value.
    #[error("{0}")]
    Invalid(String),
    /// A stage of the pipeline failed.
    #[error("stage {stage}: {source}")]
    Stage {
        /// The stage's name.
        stage: &'static str,
        /// Why.
        source: Box<Error>,
    },
    /// Every item of a stage failed.
    #[error("{0}")]
    AllFailed(String),
    /// A figure could not be drawn or written.
    #[error("plot: {0}")]
    Plot(String),
    /// `device = "cuda"` in a build without the `cuda` feature.
    #[error(
        "this mmedpo was built without CUDA; rebuild with `cargo build --release --features cuda`"
    )]
    NoCuda,
    /// Files, records, manifests, journals.
    #[error(transparent)]
    Core(#[from] mmedpo_core::Error),
    /// Tokenizer, templates, LLM checkpoints.
    #[error(transparent)]
    Llm(#[from] mmedpo_llm::Error),
    /// LLaVA checkpoints, images, scoring, generation.
    #[error(transparent)]
    Lvlm(#[from] mmedpo_lvlm::Error),
    /// LoRA adapters.
    #[error(transparent)]
    Lora(#[from] mmedpo_lora::Error),
    /// The trainer and its configuration.
    #[error(transparent)]
    Dpo(#[from] mmedpo_dpo::Error),
    /// Test sets, predictions, metrics.
    #[error(transparent)]
    Eval(#[from] mmedpo_eval::Error),
    /// Relevance agents and their pool.
    #[error(transparent)]
    Scorer(#[from] mmedpo_scorer::Error),
    /// MedKLIP and the visual pairs.
    #[error(transparent)]
    Medklip(#[from] mmedpo_medklip::Error),
    /// The text-pair stage and its judge.
    #[error(transparent)]
    Curation(#[from] mmedpo_curation::Error),
}

impl Error {
    /// An IO error on `path`.
    pub fn io(path: &std::path::Path, cause: std::io::Error) -> Self {
        Error::Core(mmedpo_core::Error::io(path, cause))
    }
}

/// `Err(Error::Invalid(format!(...)))`.
macro_rules! invalid {
    ($($arg:tt)*) => {
        return Err($crate::Error::Invalid(format!($($arg)*)))
    };
}
pub(crate) use invalid;
