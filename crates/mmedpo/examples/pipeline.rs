//! MMedPO's Algorithm 1 from Rust, without the command line: a tiny random LLaVA is drawn, then
//! the pipeline runs on the shipped sample (the data's own text pairs and weights, MedKLIP visual
//! pairs, assembly, weighted DPO with LoRA, evaluation of the base and the aligned model) and the
//! comparison table is printed.
//!
//! ```text
//! cargo run --release -p mmedpo --example pipeline [OUT]
//! ```
//!
//! Every stage lands in its own folder under OUT (default `out/example-pipeline`); a second run
//! finds them current and only prints the table again.

use std::path::{Path, PathBuf};

use mmedpo::eval::protocol::Task;
use mmedpo::pipeline::{self, Pairs, PipelineConfig, Summary};
use mmedpo::stage::{assemble::AssemblePlan, eval::EvalPlan, train::TrainPlan, visual::VisualPlan};
use mmedpo::{DeviceKind, Dtype, Observer};

/// Prints the stages' notes.
struct Print;

impl Observer for Print {
    fn note(&self, message: &str) {
        eprintln!("{message}");
    }
}

/// The repository's root (where `data/` and `models/` are).
fn root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// The pipeline into `out`, on a model drawn into `out/model` (once).
pub fn config(out: &Path) -> mmedpo::Result<PipelineConfig> {
    let root = root();
    let model = out.join("model");
    if !model.join("model.safetensors").is_file() {
        mmedpo::init_model(
            &root.join("models/tiny-llava/config.json"),
            0,
            &model,
            Some(&root.join("models/mistral-tokenizer/tokenizer.json")),
        )?;
    }
    Ok(PipelineConfig {
        file: PathBuf::from("examples/pipeline.rs"),
        out: out.to_path_buf(),
        model,
        vision_tower: None,
        tokenizer: None,
        data: root.join("data/default/pairs.json"),
        image_root: root.join("data/images"),
        test: root.join("data/default/vqa_test.json"),
        task: Task::Vqa,
        template: "vicuna_v1".into(),
        device: DeviceKind::Cpu,
        dtype: Dtype::F32,
        // The sample's pairs are curated and weighted already: no judge, no agents.
        text: None,
        relevance: None,
        visual: Some(VisualPlan::default()),
        uses: [Pairs::Text, Pairs::Visual].into(),
        assemble: AssemblePlan::default(),
        train: TrainPlan {
            lora_r: Some(8),
            lora_alpha: Some(16.0),
            learning_rate: Some(1e-2),
            max_steps: Some(20),
            batch_size: Some(4),
            ..TrainPlan::default()
        },
        eval: EvalPlan {
            temperature: 0.0,
            max_new_tokens: Some(8),
            ..EvalPlan::default()
        },
    })
}

/// Runs [`config`]'s pipeline, printing its notes.
pub fn run(out: &Path) -> mmedpo::Result<Summary> {
    pipeline::run(&config(out)?, &pipeline::Options::default(), &Print)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .map_or_else(|| root().join("out/example-pipeline"), PathBuf::from);
    let summary = run(&out)?;
    println!("{}", summary.table);
    println!("summary: {}", out.join("summary.json").display());
    Ok(())
}
