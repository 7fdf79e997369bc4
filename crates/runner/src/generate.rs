//! `mmedpo generate`: text generation from an HF Llama/Mistral directory.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use clap::Args;
use mmedpo_llm::generate::generate;
use mmedpo_llm::{load_llm_as, Generation, GenerationConfig, Sampling, Template, Tokenizer};
use mmedpo_lvlm::generate::generate_answers;

use crate::common::{check_vocab, load_tokenizer};

use crate::{with_backend, DeviceKind, Dtype};

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
    /// Backend.
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    device: DeviceKind,
    /// Float type .
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    dtype: Dtype,
}

/// Runs `mmedpo generate`.
pub fn run(args: GenerateArgs) -> Result<()> {
    with_backend!(args.device, |B, device| run_on::<B>(&args, &device))
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
    let sampling = match args.temperature {
        None => Sampling::Greedy,
        Some(temperature) => Sampling::Sample {
            temperature,
            top_p: args.top_p,
            seed: args.seed,
        },
    };
    if let Some(image) = &args.image {
        let llava = mmedpo_lvlm::open::<B>(
            &args.model,
            args.vision_tower.as_deref(),
            args.tokenizer.as_deref(),
            device,
            args.dtype.burn(),
        )?;
        let tokenizer = &llava.tokenizer;
        let config = GenerationConfig {
            max_new_tokens: args.max_new_tokens,
            sampling,
            eos_token_ids: llava.config.text.eos_token_ids.clone(),
            pad_token_id: llava.config.text.pad_token_id,
        };
        let size = llava.image_size();
        let items = [(image.as_path(), args.prompt.as_str())];
        let template = template.unwrap_or(Template::VicunaV1);
        let out = generate_answers(
            &llava.model,
            tokenizer,
            template,
            &items,
            llava.config.aspect,
            size,
            &config,
            device,
        )?;
        return print_result(tokenizer, &out, args.json);
    }
    let tokenizer = load_tokenizer(&args.model, args.tokenizer.as_deref())?;
    let llm = load_llm_as::<B>(&args.model, device, args.dtype.burn())
        .with_context(|| format!("loading {}", args.model.display()))?;
    check_vocab(&tokenizer, llm.config.vocab_size, &args.model)?;
    let text = match template {
        Some(t) => t.prompt(&args.prompt),
        None => args.prompt.clone(),
    };
    let prompt = tokenizer.encode(&text, true)?;
    let config = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        sampling,
        eos_token_ids: llm.config.eos_token_ids.clone(),
        pad_token_id: llm.config.pad_token_id,
    };
    let out = generate(&llm.model, &[prompt], &config, device)?;
    print_result(&tokenizer, &out, args.json)
}

fn print_result(tokenizer: &Tokenizer, out: &Generation, json: bool) -> Result<()> {
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
    say!("{text}");
    if json {
        say!("{}", serde_json::json!({ "ids": ids, "text": text }));
    }
    Ok(())
}
