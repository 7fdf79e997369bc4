//! Answers for (image, question) prompts: LLaVA's inference path (`<image>\n` prepended when the
//! question has no placeholder, the template's open assistant turn, left padding, KV cache).

use std::path::Path;

use burn::tensor::backend::Backend;
use mmedpo_llm::generate::generate_from_embeds;
use mmedpo_llm::{Generation, GenerationConfig, Template, Tokenizer};
use mmedpo_vision::preprocess::{normalize, preprocess_u8};
use mmedpo_vision::AspectRatio;

use crate::error::{Error, Result};
use crate::llava::{LlavaForConditionalGeneration, Sequence};
use crate::prompt::{check_placeholders, generation_prompt};
use crate::score::stack_pixels;

/// LLaVA's eval scripts put the image first: `<image>\n{question}`.
pub fn with_image_placeholder(question: &str) -> String {
    if question.contains("<image>") {
        question.to_string()
    } else {
        format!("<image>\n{question}")
    }
}

/// Generates one answer per (image file, question).
#[allow(clippy::too_many_arguments)]
pub fn generate_answers<B: Backend>(
    model: &LlavaForConditionalGeneration<B>,
    tok: &Tokenizer,
    template: Template,
    items: &[(&Path, &str)],
    aspect: AspectRatio,
    image_size: u32,
    config: &GenerationConfig,
    device: &B::Device,
) -> Result<Generation> {
    let mut seqs = Vec::with_capacity(items.len());
    let mut pixels = Vec::with_capacity(items.len());
    for (i, (image, question)) in items.iter().enumerate() {
        let ids = generation_prompt(tok, template, &with_image_placeholder(question))?;
        check_placeholders(&ids, 1, &i.to_string())?;
        seqs.push(Sequence { ids, labels: None });
        let img = mmedpo_vision::preprocess::load_rgb(image).map_err(|e| Error::Item {
            id: i.to_string(),
            message: e.to_string(),
        })?;
        pixels.push(normalize(&preprocess_u8(&img, image_size, aspect)));
    }
    let refs: Vec<&[f32]> = pixels.iter().map(Vec::as_slice).collect();
    let features = model.image_features(stack_pixels::<B>(&refs, image_size as usize, device));
    // `prepare` cuts training sequences at max_length; a prompt is never cut silently.
    let image_tokens = features.dims()[1];
    for (i, seq) in seqs.iter().enumerate() {
        let len = seq.ids.len() - 1 + image_tokens;
        if len > model.max_length {
            return Err(Error::Item {
                id: i.to_string(),
                message: format!(
                    "the prompt is {len} tokens with the image, more than the model's {} (max_length)",
                    model.max_length
                ),
            });
        }
    }
    let image_of: Vec<usize> = (0..items.len()).collect();
    let inputs = model.prepare(&seqs, features, &image_of, true)?;
    Ok(generate_from_embeds(
        &model.language_model,
        inputs.embeds,
        inputs.key_valid,
        config,
        device,
    )?)
}
