//! `mmedpo eval` (generate answers, score them as the paper does), `mmedpo eval --compare` and
//! `mmedpo metrics` (score predictions made elsewhere).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use mmedpo::eval::protocol::{read_predictions, score, Task};
use mmedpo::stage::eval::{compare_files, evaluate, EvalPlan};

use crate::{DeviceKind, Dtype};

/// Arguments of `mmedpo metrics`.
#[derive(Args, Debug)]
pub struct MetricsArgs {
    /// vqa or report.
    #[arg(long)]
    task: Task,
    /// JSONL: `id`, `prediction`, `reference` (and `answer_type` for VQA) per line.
    #[arg(long)]
    predictions: PathBuf,
    /// WordNet database folder (default $MMEDPO_WORDNET or /usr/share/wordnet).
    #[arg(long)]
    wordnet: Option<PathBuf>,
}

/// Runs `mmedpo metrics`.
pub fn metrics(args: MetricsArgs) -> Result<()> {
    let preds = read_predictions(&args.predictions)?;
    say!(
        "{}",
        serde_json::to_string_pretty(&score(args.task, &preds, args.wordnet.as_deref())?)?
    );
    Ok(())
}

/// Arguments of `mmedpo eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Print the difference table of two metrics.json files (B − A) and exit.
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    compare: Option<Vec<PathBuf>>,
    /// LLaVA model directory.
    #[arg(long, required_unless_present = "compare")]
    model: Option<PathBuf>,
    /// CLIP tower directory.
    #[arg(long)]
    vision_tower: Option<PathBuf>,
    /// PEFT LoRA adapter.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// tokenizer.json.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Test set: JSON list or JSONL. VQA items: `question_id`/`id`, `image`, `question`/`text`,
    /// `answer`, `answer_type`; report items: `question_id`/`id`, `image`/`image_path`, `report`/`gt_report`.
    #[arg(long, required_unless_present = "compare")]
    data: Option<PathBuf>,
    /// Image folder.
    #[arg(long, required_unless_present = "compare")]
    image_root: Option<PathBuf>,
    /// vqa or report.
    #[arg(long, required_unless_present = "compare")]
    task: Option<Task>,
    /// Output folder: predictions.jsonl, metrics.json, table.md.
    #[arg(long, required_unless_present = "compare")]
    out: Option<PathBuf>,
    /// Sampling temperature (paper: 0.2; 0 = greedy).
    #[arg(long, default_value_t = EvalPlan::default().temperature)]
    temperature: f32,
    /// Seed (paper: 0).
    #[arg(long, default_value_t = EvalPlan::default().seed)]
    seed: u64,
    /// New tokens (default 64 for VQA, 1024 for reports, as the paper).
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// Questions per generation batch.
    #[arg(long, default_value_t = EvalPlan::default().batch_size)]
    batch_size: usize,
    /// Conversation template.
    #[arg(long, default_value_t = EvalPlan::default().template)]
    template: String,
    /// WordNet folder for METEOR.
    #[arg(long)]
    wordnet: Option<PathBuf>,
    /// Backend (cpu | cuda).
    #[arg(long, default_value_t = DeviceKind::Cpu)]
    device: DeviceKind,
    /// Float type (f32 | bf16).
    #[arg(long, default_value_t = Dtype::F32)]
    dtype: Dtype,
    /// Start --out over when it holds the predictions of other inputs (instead of refusing).
    #[arg(long)]
    overwrite: bool,
}

/// Runs `mmedpo eval`.
pub fn run(args: EvalArgs) -> Result<()> {
    if let Some(files) = &args.compare {
        say!("{}", compare_files(&files[0], &files[1])?);
        return Ok(());
    }
    let (Some(model), Some(data), Some(image_root), Some(task), Some(out)) =
        (args.model, args.data, args.image_root, args.task, args.out)
    else {
        bail!("--model, --data, --image-root, --task and --out are required");
    };
    let plan = EvalPlan {
        model,
        vision_tower: args.vision_tower,
        adapter: args.adapter,
        tokenizer: args.tokenizer,
        data,
        image_root,
        task,
        out,
        temperature: args.temperature,
        seed: args.seed,
        max_new_tokens: args.max_new_tokens,
        batch_size: args.batch_size,
        template: args.template,
        wordnet: args.wordnet,
        device: args.device,
        dtype: args.dtype,
        overwrite: args.overwrite,
    };
    evaluate(&plan, &crate::observe::Cli::default())?;
    Ok(())
}
