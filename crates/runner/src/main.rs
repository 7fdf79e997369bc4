//! `mmedpo`: the command-line front door. Parses arguments, picks the backend, calls the library
//! crates. `anyhow` and the tracing setup live here and nowhere else.

/// `eprintln!` that never panics: a closed stderr (`mmedpo train … 2>&1 | head -1`) must not end
/// a job; what cannot be written is dropped.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `println!` likewise for stdout.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod assemble;
mod bench;
mod curate;
mod eval;
mod generate;
mod merge;
mod observe;
mod pipeline;
mod relevance;
mod score;
mod testbed;
mod train;
mod visual;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// MMedPO: clinical-aware multimodal preference optimization for medical vision-language models.
#[derive(Parser, Debug)]
#[command(name = "mmedpo", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate text with a Llama/Mistral model from a Hugging Face directory.
    Generate(generate::GenerateArgs),
    /// Align a LLaVA model with clinically weighted DPO (LoRA adapter out).
    Train(train::TrainArgs),
    /// Random weights for a LLaVA config (the embedded default model of `cargo xtask train`).
    InitModel(train::InitModelArgs),
    /// Log-probabilities of preference pairs under a LLaVA model (also the reference precompute).
    Score(score::ScoreArgs),
    /// Generate answers for a Med-VQA or report test set and score them as the paper does.
    Eval(eval::EvalArgs),
    /// Score predictions made elsewhere (VQA accuracy/recall, report BLEU/ROUGE-L/METEOR).
    Metrics(eval::MetricsArgs),
    /// Text pairs: sample answers from the target Med-LVLM, a judge picks or writes the hallucination.
    CurateText(curate::CurateArgs),
    /// Clinical-relevance weights of preference pairs by several Med-LLM agents in turns.
    ScoreRelevance(relevance::RelevanceArgs),
    /// Visual pairs: MedKLIP lesion heatmap, localized noise, confidence weight (per item).
    VisualPairs(visual::VisualArgs),
    /// Merge a LoRA adapter into its base LLaVA (the base's layout, sharded as transformers saves).
    Merge(merge::MergeArgs),
    /// Merge text and visual pair files into one training file (weight mode applied, shuffled).
    Assemble(assemble::AssembleArgs),
    /// Algorithm 1 from one config (text pairs → … → evaluation), each stage rerun only when its
    /// inputs changed.
    Pipeline(pipeline::PipelineArgs),
    /// The synthetic lesion world: scans with known lesions, VQA items, reports, training pairs.
    Testbed(testbed::TestbedArgs),
    /// Measure throughput (LLM prefill/decode tokens/s, matmul GFLOP/s, visual-pair images/s).
    Bench(bench::BenchArgs),
}

pub use mmedpo::{with_backend, DeviceKind, Dtype};

/// The log writer: stderr, ignoring write errors (tracing-subscriber reports a failed write with
/// `eprintln!`, which panics when stderr is closed).
struct QuietStderr;

impl std::io::Write for QuietStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// Runs one subcommand.
fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Generate(args) => generate::run(args),
        Command::Score(args) => score::run(args),
        Command::Train(args) => train::run(args),
        Command::InitModel(args) => train::init_model(args),
        Command::Eval(args) => eval::run(args),
        Command::Metrics(args) => eval::metrics(args),
        Command::ScoreRelevance(args) => relevance::run(args),
        Command::CurateText(args) => curate::run(args),
        Command::Assemble(args) => assemble::run(args),
        Command::Merge(args) => merge::run(args),
        Command::VisualPairs(args) => visual::run(args),
        Command::Pipeline(args) => pipeline::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Testbed(args) => testbed::run(args),
    }
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            // The HTTP stack's own trace output dumps request bytes, the judge's API key among
            // them: it is capped at warn whatever RUST_LOG says.
            ["ureq", "ureq_proto", "rustls"].into_iter().fold(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    // burn-collective prints its whole config at info when a device registers.
                    .unwrap_or_else(|_| "info,burn_collective=warn".into()),
                |filter, target| match format!("{target}=warn").parse() {
                    Ok(directive) => filter.add_directive(directive),
                    Err(_) => filter,
                },
            ),
        )
        .with_writer(|| QuietStderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            note!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
