//! `mmedpo generate`: text generation from an HF Llama/Mistral directory.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use clap::Args;
use mmedpo_llm::generate::generate;
use mmedpo_llm::{load_llm, GenerationConfig, Sampling, Template, Tokenizer};

use crate::{with_backend, DeviceKind, Dtype};

/// Arguments of `mmedpo generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Hugging Face model directory (config.json, *.safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
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
    /// Backend.
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    device: DeviceKind,
    /// Float type (bf16 needs --device cuda).
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    dtype: Dtype,
}

/// Runs `mmedpo generate`.
pub fn run(args: GenerateArgs) -> Result<()> {
    with_backend!(args.device, args.dtype, |B, device| run_on::<B>(
        &args, &device
    ))
}

fn run_on<B: Backend>(args: &GenerateArgs, device: &B::Device) -> Result<()> {
    if !args.model.is_dir() {
        bail!("{}: model directory not found", args.model.display());
    }
    let template = args
        .template
        .as_deref()
        .map(Template::from_name)
        .transpose()?;
    let tok_path = args
        .tokenizer
        .clone()
        .unwrap_or_else(|| args.model.join("tokenizer.json"));
    let tokenizer = Tokenizer::from_file(&tok_path)?;
    let llm = load_llm::<B>(&args.model, device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    if tokenizer.vocab_size() != llm.config.vocab_size {
        bail!(
            "{}: tokenizer has {} tokens but {} has vocab_size {}; pass the model's own tokenizer with --tokenizer",
            tok_path.display(),
            tokenizer.vocab_size(),
            args.model.join("config.json").display(),
            llm.config.vocab_size
        );
    }
    let text = match template {
        Some(t) => t.prompt(&args.prompt),
        None => args.prompt.clone(),
    };
    let prompt = tokenizer.encode(&text, true)?;
    let sampling = match args.temperature {
        None => Sampling::Greedy,
        Some(temperature) => Sampling::Sample {
            temperature,
            top_p: args.top_p,
            seed: args.seed,
        },
    };
    let config = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        sampling,
        eos_token_ids: llm.config.eos_token_ids.clone(),
        pad_token_id: llm.config.pad_token_id,
    };
    let out = generate(&llm.model, &[prompt], &config, device)?;
    let ids = &out.tokens[0];
    let text = tokenizer.decode(ids, true)?;
    tracing::info!(
        prompt_tokens = out.prompt_tokens,
        new_tokens = ids.len(),
        finish = ?out.finish[0],
        prefill_ms = out.prefill.as_millis() as u64,
        decode_ms = out.decode.as_millis() as u64,
        "generated"
    );
    println!("{text}");
    if args.json {
        println!("{}", serde_json::json!({ "ids": ids, "text": text }));
    }
    Ok(())
}
