//! Text from a model directory: a Llama/Mistral LLM on a prompt, or a LLaVA on an image and a
//! question (the Med-LVLM's answer, as the evaluation and curation sample it).

use std::path::PathBuf;

use burn::tensor::backend::Backend;

use crate::error::invalid;
use crate::llm::generate::generate as generate_ids;
use crate::llm::{load_llm_as, Generation, GenerationConfig, Sampling, Template};
use crate::lvlm::generate::generate_answers;
use crate::{with_backend, DeviceKind, Dtype, Result};

/// What to generate from.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    /// Model directory: an LLM, or with `image` a LLaVA.
    pub model: PathBuf,
    /// An image: the model is a LLaVA and the prompt a question about it.
    pub image: Option<PathBuf>,
    /// CLIP tower directory for a LLaVA whose tower is not in its checkpoint.
    pub vision_tower: Option<PathBuf>,
    /// tokenizer.json to use instead of MODEL/tokenizer.json.
    pub tokenizer: Option<PathBuf>,
    /// The prompt (used as given, BOS prepended, unless `template` is set).
    pub prompt: String,
    /// A conversation template (for a LLaVA: default vicuna_v1).
    pub template: Option<String>,
    /// Most new tokens.
    pub max_new_tokens: usize,
    /// Greedy, or sampled with a temperature, top-p and seed.
    pub sampling: Sampling,
    /// Backend.
    pub device: DeviceKind,
    /// Float type.
    pub dtype: Dtype,
}

/// The answer, its token ids and the generation's figures.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The decoded new tokens.
    pub text: String,
    /// The generation (ids, finish reason, prefill and decode times).
    pub generation: Generation,
}

/// Generates from `p`.
pub fn generate(p: &Prompt) -> Result<Generated> {
    with_backend!(p.device, |B, device| generate_on::<B>(p, &device))
}

fn generate_on<B: Backend>(p: &Prompt, device: &B::Device) -> Result<Generated> {
    if !p.model.is_dir() {
        invalid!("{}: model directory not found", p.model.display());
    }
    let template = p.template.as_deref().map(Template::from_name).transpose()?;
    let (generation, tokenizer) = if let Some(image) = &p.image {
        let llava = crate::lvlm::open::<B>(
            &p.model,
            p.vision_tower.as_deref(),
            p.tokenizer.as_deref(),
            device,
            p.dtype.burn(),
        )?;
        let config = GenerationConfig {
            max_new_tokens: p.max_new_tokens,
            sampling: p.sampling,
            eos_token_ids: llava.config.text.eos_token_ids.clone(),
            pad_token_id: llava.config.text.pad_token_id,
        };
        let items = [(image.as_path(), p.prompt.as_str())];
        let out = generate_answers(
            &llava.model,
            &llava.tokenizer,
            template.unwrap_or(Template::VicunaV1),
            &items,
            llava.config.aspect,
            llava.image_size(),
            &config,
            device,
        )?;
        (out, llava.tokenizer)
    } else {
        let tokenizer = crate::lvlm::open::tokenizer_for(&p.model, p.tokenizer.as_deref())?;
        let llm = load_llm_as::<B>(&p.model, device, p.dtype.burn())?;
        crate::lvlm::open::check_vocab(&tokenizer, llm.config.vocab_size, &p.model)?;
        let text = match template {
            Some(t) => t.prompt(&p.prompt),
            None => p.prompt.clone(),
        };
        let prompt = tokenizer.encode(&text, true)?;
        let config = GenerationConfig {
            max_new_tokens: p.max_new_tokens,
            sampling: p.sampling,
            eos_token_ids: llm.config.eos_token_ids.clone(),
            pad_token_id: llm.config.pad_token_id,
        };
        (
            generate_ids(&llm.model, &[prompt], &config, device)?,
            tokenizer,
        )
    };
    let text = tokenizer.decode(&generation.tokens[0], true)?;
    Ok(Generated { text, generation })
}
