//! `mmedpo pipeline`: [`mmedpo::pipeline`] (Algorithm 1 from one TOML file, docs/pipeline.md)
//! with the comparison tables printed.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use mmedpo::pipeline::{load, run as run_pipeline, Options, Stage};

/// Arguments of `mmedpo pipeline`.
#[derive(Args, Debug)]
pub struct PipelineArgs {
    /// Pipeline TOML (e.g. models/tiny-llava/pipeline.toml; docs/pipeline.md).
    #[arg(long)]
    config: PathBuf,
    /// Start over from this stage (text, relevance, visual, assemble, train, eval-base, eval);
    /// the stages before it must be current.
    #[arg(long)]
    from: Option<Stage>,
    /// Also run the ablation presets (the paper's Tables 2–4, 8, 9) and write OUT/ablations.md.
    #[arg(long)]
    ablations: bool,
}

/// Runs `mmedpo pipeline`.
pub fn run(args: PipelineArgs) -> Result<()> {
    let config = load(&args.config)?;
    let options = Options {
        from: args.from,
        ablations: args.ablations,
    };
    let s = run_pipeline(&config, &options, &crate::observe::Cli::default())?;
    if let Some((_, table)) = &s.ablations {
        say!("{table}");
        note!("ablations: {}", config.out.join("ablations.md").display());
    }
    say!("{}", s.table);
    note!(
        "summary: {} and {}",
        config.out.join("summary.md").display(),
        config.out.join("summary.json").display()
    );
    if !s.partial.is_empty() {
        note!(
            "not complete (run again to retry the failed items): {}",
            s.partial.join(", ")
        );
    }
    Ok(())
}
