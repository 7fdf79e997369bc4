//! The target Med-LVLM as a [`CandidateSampler`]: a loaded LLaVA answering each item's question
//! about its image `n` times with top-p sampling, seeded per item.

use std::path::Path;

use burn::tensor::backend::Backend;
use mmedpo_core::record::fingerprint_u64;
use mmedpo_llm::{GenerationConfig, Sampling, Template};
use mmedpo_lvlm::generate::generate_answers;
use mmedpo_lvlm::OpenLlava;

use crate::{CandidateSampler, Item};

/// A LLaVA drawing candidate answers.
pub struct LlavaSampler<'a, B: Backend> {
    llava: &'a OpenLlava<B>,
    template: Template,
    image_root: &'a Path,
    config: GenerationConfig,
    temperature: f32,
    top_p: f32,
    device: &'a B::Device,
}

impl<'a, B: Backend> LlavaSampler<'a, B> {
    /// Answers of at most `max_new_tokens`, drawn at `temperature` with nucleus `top_p`, with the
    /// conversation `template`; images are read from `image_root`.
    pub fn new(
        llava: &'a OpenLlava<B>,
        template: Template,
        image_root: &'a Path,
        max_new_tokens: usize,
        temperature: f32,
        top_p: f32,
        device: &'a B::Device,
    ) -> Self {
        Self {
            llava,
            template,
            image_root,
            config: GenerationConfig {
                max_new_tokens,
                sampling: Sampling::Greedy,
                eos_token_ids: llava.config.text.eos_token_ids.clone(),
                pad_token_id: llava.config.text.pad_token_id,
            },
            temperature,
            top_p,
            device,
        }
    }
}

/// The sampling seed of an item: the base seed and the item id, so order and restarts do not
/// change its answers.
pub fn item_seed(seed: u64, id: &str) -> u64 {
    fingerprint_u64([seed.to_le_bytes().as_slice(), id.as_bytes()])
}

impl<B: Backend> CandidateSampler for LlavaSampler<'_, B> {
    fn sample(&mut self, items: &[Item], n: usize, seed: u64) -> Result<Vec<Vec<String>>, String> {
        let image_size = self.llava.image_size();
        let mut all = Vec::with_capacity(items.len());
        for item in items {
            let path = self.image_root.join(&item.image);
            let batch: Vec<(&Path, &str)> = (0..n)
                .map(|_| (path.as_path(), item.question.as_str()))
                .collect();
            let mut config = self.config.clone();
            // Row r samples with seed + r: n different answers, the same ones on every run.
            config.sampling = Sampling::Sample {
                temperature: self.temperature,
                top_p: self.top_p,
                seed: item_seed(seed, &item.id),
            };
            let out = generate_answers(
                &self.llava.model,
                &self.llava.tokenizer,
                self.template,
                &batch,
                self.llava.config.aspect,
                image_size,
                &config,
                self.device,
            )
            .map_err(|e| format!("item {}: {e}", item.id))?;
            let texts = out
                .tokens
                .iter()
                .map(|t| {
                    self.llava
                        .tokenizer
                        .decode(t, true)
                        .map(|s| s.trim().to_string())
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            all.push(texts);
        }
        Ok(all)
    }
}
