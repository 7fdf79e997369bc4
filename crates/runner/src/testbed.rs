//! `mmedpo testbed`: [`mmedpo::testbed::make_world`]'s arguments (the synthetic lesion world).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use mmedpo::testbed::{make_world, WorldSpec};

#[derive(Args, Debug)]
pub struct TestbedArgs {
    /// Output folder: images/, masks/, truth.json, train_pairs.json, test_vqa.json, test_reports.json.
    #[arg(long)]
    out: PathBuf,
    /// Training scans.
    #[arg(long, default_value_t = WorldSpec::default().train)]
    train: usize,
    /// Test scans.
    #[arg(long, default_value_t = WorldSpec::default().test)]
    test: usize,
    /// Seed of the world.
    #[arg(long, default_value_t = WorldSpec::default().seed)]
    seed: u64,
    /// Image side in pixels.
    #[arg(long, default_value_t = WorldSpec::default().size)]
    size: u32,
}

/// Runs `mmedpo testbed`.
pub fn run(a: TestbedArgs) -> Result<()> {
    let spec = WorldSpec {
        train: a.train,
        test: a.test,
        seed: a.seed,
        size: a.size,
    };
    let r = make_world(&spec, &a.out)?;
    note!(
        "{} train + {} test scans in {} (scans with 0, 1, 2, 3 lesions: {:?}); {} training pairs, {} test questions",
        r.scans.0, r.scans.1, r.out.display(), r.by_count, r.pairs, r.questions
    );
    Ok(())
}
