//! What a stage or the pipeline tells its caller while it runs: progress, notes, finished results.

/// A finished piece of work, for the caller to print or draw.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// Text pairs curated into `output`.
    Curated(&'a crate::curation::CurateReport),
    /// Relevance scores written (to the report's `output`).
    Scored(&'a crate::scorer::RelevanceReport),
    /// Visual pairs made.
    Visual(&'a crate::medklip::stage::VisualReport),
    /// One training file assembled.
    Assembled(&'a crate::stage::assemble::AssembleReport),
    /// Training finished.
    Trained {
        /// The trainer's summary (adapter, log, every step's figures).
        summary: &'a crate::dpo::TrainSummary,
        /// The configuration it ran with.
        config: &'a crate::dpo::TrainConfig,
        /// Pairs trained on.
        pairs: usize,
    },
    /// A test set scored.
    Evaluated(&'a crate::stage::eval::EvalReport),
}

/// Receives what happens; every method has a default that does nothing (notes go to `tracing`).
pub trait Observer: Sync {
    /// `done` of `total` units (`unit`: "items", "pairs", "answers", "steps") with a status line.
    fn progress(&self, unit: &'static str, done: usize, total: usize, message: &str) {
        let _ = (unit, done, total, message);
    }
    /// The unit of work whose progress was reported has ended (a bar may be cleared).
    fn finish(&self) {}
    /// A line for the user (stage decisions, what a stage is about to do).
    fn note(&self, message: &str) {
        tracing::info!("{message}");
    }
    /// A finished result.
    fn event(&self, event: &Event<'_>) {
        let _ = event;
    }
}

/// An observer that keeps quiet (notes still go to `tracing`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl Observer for Quiet {}
