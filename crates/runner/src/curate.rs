//! `mmedpo curate-text`: MMedPO's text preference pairs through
//! [`mmedpo_curation::curate_text`] (resumable; see there) with the target LLaVA as the sampler
//! and the judge named by `--judge openai=URL@MODEL` or `local=DIR`: arguments, a bar, the report.

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use mmedpo_core::manifest::Manifest;
use mmedpo_curation::stage::read_curation_items;
use mmedpo_curation::{curate_text, CurateSettings, JudgePrompts, LlavaSampler};
use mmedpo_llm::Template;

use crate::common::Outcome;
use crate::relevance::{agent_input, parse_agent, LocalArgs};
use crate::{with_backend, DeviceKind, Dtype};

/// Arguments of `mmedpo curate-text`.
#[derive(Args, Debug)]
pub struct CurateArgs {
    /// Items (MMedPO format; `rejected_conversations` may be absent): image, question, ground truth.
    #[arg(long)]
    data: PathBuf,
    /// Folder the items' `image` paths are relative to.
    #[arg(long)]
    image_root: PathBuf,
    /// The target Med-LVLM (a LLaVA directory, original LLaVA-Med or llava-hf layout).
    #[arg(long)]
    model: PathBuf,
    /// CLIP tower directory for a LLaVA whose tower is not in its checkpoint.
    #[arg(long)]
    vision_tower: Option<PathBuf>,
    /// tokenizer.json to use instead of MODEL/tokenizer.json.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// The target model's conversation template (vicuna_v1 or mistral_instruct).
    #[arg(long, default_value = "vicuna_v1")]
    template: String,
    /// Answers sampled per item.
    #[arg(long, default_value_t = 5)]
    n: usize,
    /// Sampling temperature of the target model.
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Nucleus mass of the target model's sampling.
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Most tokens per sampled answer.
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Base seed (each item's draw is seeded from it and the item id).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The judge: `openai=BASE_URL@MODEL` or `local=MODEL_DIR`.
    #[arg(long)]
    judge: String,
    /// Environment variable holding the judge's API key (its value is never logged).
    #[arg(long)]
    api_key_env: Option<String>,
    /// Seconds per HTTP request.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// Items whose judge requests are in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Corrective retries after an unusable verdict.
    #[arg(long, default_value_t = 2)]
    max_retries: usize,
    /// Folder with prompt overrides (judge.txt, judge_corrective.txt).
    #[arg(long)]
    prompts: Option<PathBuf>,
    #[command(flatten)]
    local: LocalArgs,
    /// Output preference file (MMedPO format, no weights yet).
    #[arg(long)]
    out: PathBuf,
    /// Start the journals over when they come from other inputs (instead of refusing).
    #[arg(long)]
    overwrite: bool,
    /// Where the target model runs.
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    device: DeviceKind,
    /// Float type of the target model .
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    dtype: Dtype,
}

/// Runs `mmedpo curate-text`.
pub fn run(args: CurateArgs) -> Result<Outcome> {
    with_backend!(args.device, |B, device| run_on::<B>(&args, &device))
}

fn run_on<B: Backend>(args: &CurateArgs, device: &B::Device) -> Result<Outcome> {
    if args.n == 0 {
        anyhow::bail!("--n must be at least 1");
    }
    // The items are checked before any model is loaded.
    read_curation_items(&args.data, &args.image_root)?;
    let prompts = match &args.prompts {
        Some(d) => JudgePrompts::from_dir(d)
            .with_context(|| format!("reading judge prompts from {}", d.display()))?,
        None => JudgePrompts::builtin(),
    };
    let judge = parse_agent(
        &args.judge,
        args.api_key_env.as_deref(),
        args.timeout,
        false,
        &args.local,
    )?;
    let llava = mmedpo_lvlm::open::<B>(
        &args.model,
        args.vision_tower.as_deref(),
        args.tokenizer.as_deref(),
        device,
        args.dtype.burn(),
    )?;
    let mut sampler = LlavaSampler::new(
        &llava,
        Template::from_name(&args.template)?,
        &args.image_root,
        args.max_new_tokens,
        args.temperature,
        args.top_p,
        device,
    );
    // The target model, its sampling and the judge.
    let inputs = Manifest::new("curate-text")
        .dir("model", &args.model)?
        .opt_dir("vision_tower", args.vision_tower.as_deref())?
        .opt_dir("tokenizer", args.tokenizer.as_deref())?
        .value("template", &args.template)
        .value("dtype", args.dtype.name())
        .value("temperature", args.temperature)
        .value("top_p", args.top_p)
        .value("max_new_tokens", args.max_new_tokens)
        .option("local_template", args.local.local_template.as_ref())
        .value("local_max_new_tokens", args.local.local_max_new_tokens);
    let inputs = agent_input(inputs, "judge", &args.judge)?;
    let settings = CurateSettings {
        n: args.n,
        seed: args.seed,
        max_retries: args.max_retries,
        concurrency: args.concurrency,
        overwrite: args.overwrite,
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} items {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let report = curate_text(
        &args.data,
        &args.image_root,
        &args.out,
        &mut sampler,
        judge.as_ref(),
        &prompts,
        inputs,
        &settings,
        &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    );
    bar.finish_and_clear();
    let r = report?;
    note!(
        "{} text pairs in {}: {} picked from the model's answers, {} written by the judge; \
         {} item(s) without a usable verdict{}",
        r.pairs,
        r.output.display(),
        r.picked,
        r.pairs - r.picked,
        r.failed.len(),
        if r.failed.is_empty() {
            String::new()
        } else {
            format!(" (run again to retry): {}", r.failed.join(", "))
        }
    );
    note!(
        "transcripts: {}\nnext: mmedpo score-relevance --data {} --agent ... --out SCORED.json",
        r.transcripts.display(),
        r.output.display()
    );
    Ok(Outcome {
        failed: r.failed.len(),
    })
}
