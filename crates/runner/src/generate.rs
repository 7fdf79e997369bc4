//! `mmedpo generate`: [`mmedpo::generate`]'s arguments (an LLM on a prompt, or a LLaVA on an
//! image and a question).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use mmedpo::generate::{generate, Prompt};
use mmedpo::llm::Sampling;

use crate::{DeviceKind, Dtype};

/// Arguments of `mmedpo generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Hugging Face model directory (config.json, *.safetensors, tokenizer.json): a Llama/Mistral
    /// LLM, or with --image a LLaVA (original LLaVA-Med or llava-hf layout).
    #[arg(long)]
    model: PathBuf,
    /// An image: the model is then a LLaVA and the prompt a question about the image
    /// (`<image>\n` is prepended when the prompt has no placeholder; template default vicuna_v1).
    #[arg(long)]
    image: Option<PathBuf>,
    /// CLIP tower directory for a LLaVA whose tower is not in its checkpoint.
    #[arg(long, requires = "image")]
    vision_tower: Option<PathBuf>,
    /// The prompt, used as given (BOS prepended) unless --template is set.
    #[arg(long)]
    prompt: String,
    /// Wrap the prompt in a conversation template: vicuna_v1 or mistral_instruct.
    #[arg(long)]
    template: Option<String>,
    /// tokenizer.json to use instead of MODEL/tokenizer.json.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Sample with this temperature (greedy when absent).
    #[arg(long)]
    temperature: Option<f32>,
    /// Nucleus mass for sampling.
    #[arg(long, default_value_t = 1.0, requires = "temperature")]
    top_p: f32,
    /// Sampling seed.
    #[arg(long, default_value_t = 0, requires = "temperature")]
    seed: u64,
    /// Print `{"ids": [...], "text": "..."}` as the last line.
    #[arg(long)]
    json: bool,
    /// Backend (cpu | cuda).
    #[arg(long, default_value_t = DeviceKind::Cpu)]
    device: DeviceKind,
    /// Float type (f32 | bf16).
    #[arg(long, default_value_t = Dtype::F32)]
    dtype: Dtype,
}

/// Runs `mmedpo generate`.
pub fn run(args: GenerateArgs) -> Result<()> {
    let sampling = match args.temperature {
        None => Sampling::Greedy,
        Some(temperature) => Sampling::Sample {
            temperature,
            top_p: args.top_p,
            seed: args.seed,
        },
    };
    let out = generate(&Prompt {
        model: args.model,
        image: args.image,
        vision_tower: args.vision_tower,
        tokenizer: args.tokenizer,
        prompt: args.prompt,
        template: args.template,
        max_new_tokens: args.max_new_tokens,
        sampling,
        device: args.device,
        dtype: args.dtype,
    })?;
    let (g, ids) = (&out.generation, &out.generation.tokens[0]);
    tracing::info!(
        prompt_tokens = g.prompt_tokens,
        new_tokens = ids.len(),
        finish = ?g.finish[0],
        prefill_ms = g.prefill.as_millis() as u64,
        decode_ms = g.decode.as_millis() as u64,
        "generated"
    );
    say!("{}", out.text);
    if args.json {
        say!("{}", serde_json::json!({ "ids": ids, "text": out.text }));
    }
    Ok(())
}
