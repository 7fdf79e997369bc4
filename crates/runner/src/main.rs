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
mod bench_train;
mod common;
mod curate;
mod eval;
mod generate;
mod merge;
mod pipeline;
mod plot;
mod relevance;
mod score;
mod train;
mod visual;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

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
    /// Algorithm 1 from one config: text pairs → relevance → visual pairs → assemble → train →
    /// evaluation of the base and the aligned model, each stage in its own folder, rerun only when
    /// its inputs changed.
    Pipeline(pipeline::PipelineArgs),
    /// Measure throughput (LLM prefill/decode tokens/s, matmul GFLOP/s, visual-pair images/s).
    Bench(bench::BenchArgs),
}

/// Where tensors live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceKind {
    /// Burn's Flex CPU backend.
    Cpu,
    /// CUDA GPU 0 (needs a binary built with `--features cuda`).
    Cuda,
}

impl DeviceKind {
    /// The name used on the command line and in files (`cpu`, `cuda`).
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
        }
    }
}

/// Compute dtype of a model: the dtype its frozen weights are held and multiplied in. Adapters
/// (and a trained projector) stay f32, as do log-softmax, log-prob sums, losses and sampling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Dtype {
    /// 32-bit floats.
    F32,
    /// bfloat16 (LLaVA-Med's stored dtype; half the memory; on the CPU as on CUDA).
    Bf16,
}

impl Dtype {
    /// The Burn dtype.
    pub fn burn(self) -> burn::tensor::DType {
        match self {
            Dtype::F32 => burn::tensor::DType::F32,
            Dtype::Bf16 => burn::tensor::DType::BF16,
        }
    }

    /// The name used on the command line and in files (`f32`, `bf16`).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::Bf16 => "bf16",
        }
    }
}

/// Runs `$body` with the type alias `B` and value `device` bound to the chosen backend. The
/// backend's default float type is f32 on both; a bf16 model is bf16 *tensors* on it.
#[macro_export]
macro_rules! with_backend {
    ($kind:expr, |$B:ident, $device:ident| $body:expr) => {{
        match $kind {
            $crate::DeviceKind::Cpu => {
                type $B = mmedpo_core::backend::Cpu;
                let $device = Default::default();
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::DeviceKind::Cuda => {
                type $B = mmedpo_core::backend::Gpu;
                let $device = burn::backend::cuda::CudaDevice::new(0);
                $body
            }
            #[cfg(not(feature = "cuda"))]
            $crate::DeviceKind::Cuda => {
                anyhow::bail!("this mmedpo was built without CUDA; rebuild with `cargo build --release --features cuda`")
            }
        }
    }};
}

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

/// Runs one subcommand; stages over many items say how many failed.
fn dispatch(command: Command) -> Result<common::Outcome> {
    let done = |r: Result<()>| r.map(|()| common::Outcome::default());
    match command {
        Command::Generate(args) => done(generate::run(args)),
        Command::Score(args) => done(score::run(args)),
        Command::Train(args) => done(train::run(args)),
        Command::InitModel(args) => done(train::init_model(args)),
        Command::Eval(args) => done(eval::run(args)),
        Command::Metrics(args) => done(eval::metrics(args)),
        Command::ScoreRelevance(args) => relevance::run(args),
        Command::CurateText(args) => curate::run(args),
        Command::Assemble(args) => done(assemble::run(args)),
        Command::Merge(args) => done(merge::run(args)),
        Command::VisualPairs(args) => visual::run(args),
        Command::Pipeline(args) => done(pipeline::run(args)),
        Command::Bench(args) => done(bench::run(args)),
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
    match dispatch(cli.command).map(|_| ()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            note!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
