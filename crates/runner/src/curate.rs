//! `mmedpo curate-text`: [`mmedpo::stage::text`]'s arguments.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use mmedpo::stage::text::{curate, TextPlan};

use crate::relevance::LocalArgs;
use crate::{DeviceKind, Dtype};

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
    #[arg(long, default_value_t = TextPlan::default().template)]
    template: String,
    /// Answers sampled per item.
    #[arg(long, default_value_t = TextPlan::default().n)]
    n: usize,
    /// Sampling temperature of the target model.
    #[arg(long, default_value_t = TextPlan::default().temperature)]
    temperature: f32,
    /// Nucleus mass of the target model's sampling.
    #[arg(long, default_value_t = TextPlan::default().top_p)]
    top_p: f32,
    /// Most tokens per sampled answer.
    #[arg(long, default_value_t = TextPlan::default().max_new_tokens)]
    max_new_tokens: usize,
    /// Base seed (each item's draw is seeded from it and the item id).
    #[arg(long, default_value_t = TextPlan::default().seed)]
    seed: u64,
    /// The judge: `openai=BASE_URL@MODEL` or `local=MODEL_DIR`.
    #[arg(long)]
    judge: String,
    /// Environment variable holding the judge's API key (its value is never logged).
    #[arg(long)]
    api_key_env: Option<String>,
    /// Seconds per HTTP request.
    #[arg(long, default_value_t = TextPlan::default().timeout)]
    timeout: f64,
    /// Items whose judge requests are in flight at once.
    #[arg(long, default_value_t = TextPlan::default().concurrency)]
    concurrency: usize,
    /// Corrective retries after an unusable verdict.
    #[arg(long, default_value_t = TextPlan::default().max_retries)]
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
    /// Where the target model runs (cpu | cuda).
    #[arg(long, default_value_t = DeviceKind::Cpu)]
    device: DeviceKind,
    /// Float type of the target model (f32 | bf16).
    #[arg(long, default_value_t = Dtype::F32)]
    dtype: Dtype,
}

/// Runs `mmedpo curate-text`.
pub fn run(args: CurateArgs) -> Result<()> {
    let plan = TextPlan {
        data: args.data,
        image_root: args.image_root,
        model: args.model,
        vision_tower: args.vision_tower,
        tokenizer: args.tokenizer,
        template: args.template,
        n: args.n,
        temperature: args.temperature,
        top_p: args.top_p,
        max_new_tokens: args.max_new_tokens,
        seed: args.seed,
        judge: args.judge,
        api_key_env: args.api_key_env,
        timeout: args.timeout,
        concurrency: args.concurrency,
        max_retries: args.max_retries,
        prompts: args.prompts,
        local_template: args.local.local_template,
        local_max_new_tokens: args.local.local_max_new_tokens,
        local_device: args.local.local_device,
        out: args.out,
        overwrite: args.overwrite,
        device: args.device,
        dtype: args.dtype,
    };
    curate(&plan, &crate::observe::Cli::default())?;
    Ok(())
}
