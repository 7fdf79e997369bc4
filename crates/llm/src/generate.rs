//! Generation with an explicit KV cache: greedy or temperature + top-p sampling, seeded, batched.
//!
//! Prompts of different lengths are left-padded (as HF does for decoder-only models); positions
//! count real tokens only, so every row generates what it would generate alone. Rows stop at an
//! EOS id; the batch stops when every row has stopped or `max_new_tokens` is reached.
//!
//! Sampling follows transformers' logits processors in order: temperature, then top-p
//! (`TopPLogitsWarper`: drop the smallest-probability tokens whose cumulative mass is at most
//! `1 - top_p`, keeping at least one), then one multinomial draw from a ChaCha8 stream per row,
//! seeded `seed + row index`. Greedy takes the first maximum, like `torch.argmax`.

use std::time::{Duration, Instant};

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::llama::{AttentionInput, KvCache, LlamaForCausalLM};

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// Highest-logit token.
    Greedy,
    /// Temperature + top-p sampling.
    Sample {
        /// Divides the logits; must be > 0.
        temperature: f32,
        /// Nucleus mass in (0, 1].
        top_p: f32,
        /// RNG seed.
        seed: u64,
    },
}

/// Generation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    /// Most tokens generated per row.
    pub max_new_tokens: usize,
    /// Token choice.
    pub sampling: Sampling,
    /// Ids that end a row (included in its output, like HF).
    pub eos_token_ids: Vec<u32>,
    /// Id used for left padding (never attended to).
    pub pad_token_id: u32,
}

/// Why a row stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// It produced an EOS id.
    Eos,
    /// It reached `max_new_tokens`.
    Length,
}

/// The result of one call.
#[derive(Debug, Clone)]
pub struct Generation {
    /// New token ids per row (EOS included when produced).
    pub tokens: Vec<Vec<u32>>,
    /// Why each row stopped.
    pub finish: Vec<FinishReason>,
    /// Time of the prompt forward.
    pub prefill: Duration,
    /// Time of all later steps.
    pub decode: Duration,
    /// Prompt tokens processed (padding excluded).
    pub prompt_tokens: usize,
}

/// Generates continuations of token-id prompts.
pub fn generate<B: Backend>(
    model: &LlamaForCausalLM<B>,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
    device: &B::Device,
) -> Result<Generation> {
    if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
        return Err(Error::Generation(
            "every prompt needs at least one token".into(),
        ));
    }
    let vocab = model.vocab_size();
    if let Some(bad) = prompts.iter().flatten().find(|&&id| id as usize >= vocab) {
        return Err(Error::Generation(format!(
            "token id {bad} is outside the model's vocabulary of {vocab}"
        )));
    }
    let len = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(prompts.len() * len);
    let mut valid = Vec::with_capacity(prompts.len());
    for p in prompts {
        let pad = len - p.len();
        ids.extend(std::iter::repeat_n(config.pad_token_id as i32, pad));
        ids.extend(p.iter().map(|&t| t as i32));
        valid.push((0..len).map(|i| i >= pad).collect::<Vec<_>>());
    }
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [prompts.len(), len]), device);
    generate_from_embeds(model, model.embed(ids), valid, config, device)
}

/// Generates from prompt embeddings (e.g. text with image features spliced in).
///
/// `key_valid[b][t]` marks real (non-padding) prompt positions; `embeds` is `[batch, len, hidden]`.
pub fn generate_from_embeds<B: Backend>(
    model: &LlamaForCausalLM<B>,
    embeds: Tensor<B, 3>,
    mut key_valid: Vec<Vec<bool>>,
    config: &GenerationConfig,
    device: &B::Device,
) -> Result<Generation> {
    let [batch, len, _] = embeds.dims();
    // One RNG stream per row, seeded `seed + row`: a row samples the same tokens whatever else is
    // in its batch (so a resumed or re-batched evaluation draws what the first run drew).
    let mut samplers = (0..batch)
        .map(|b| {
            Sampler::new(match config.sampling {
                Sampling::Sample {
                    temperature,
                    top_p,
                    seed,
                } => Sampling::Sample {
                    temperature,
                    top_p,
                    seed: seed.wrapping_add(b as u64),
                },
                greedy => greedy,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let window = model.model.sliding_window;
    let prompt_tokens = key_valid.iter().flatten().filter(|v| **v).count();
    let mut cache = KvCache::new(model.num_layers());
    let mut tokens = vec![Vec::new(); batch];
    let mut finish: Vec<Option<FinishReason>> = vec![None; batch];

    let start = Instant::now();
    let attn = AttentionInput::new(&key_valid, window, device);
    let mut logits = last_logits(model.forward_cached(embeds, &attn, &mut cache));
    let prefill = start.elapsed();
    let start = Instant::now();
    for step in 0..config.max_new_tokens {
        let rows = logits
            .into_data()
            .to_vec::<f32>()
            .map_err(|e| Error::Generation(format!("{e:?}")))?;
        let vocab = rows.len() / batch;
        let mut next = Vec::with_capacity(batch);
        for b in 0..batch {
            if finish[b].is_some() {
                next.push(config.pad_token_id);
                continue;
            }
            let id = samplers[b].pick(&rows[b * vocab..(b + 1) * vocab]);
            tokens[b].push(id);
            if config.eos_token_ids.contains(&id) {
                finish[b] = Some(FinishReason::Eos);
            } else if tokens[b].len() == config.max_new_tokens {
                finish[b] = Some(FinishReason::Length);
            }
            next.push(id);
        }
        if finish.iter().all(Option::is_some) || step + 1 == config.max_new_tokens {
            break;
        }
        for (b, row) in key_valid.iter_mut().enumerate() {
            // A finished row still takes a slot per step; it is masked out.
            row.push(finish[b].is_none());
        }
        let past = len + step;
        let attn = AttentionInput::step(&key_valid, past, 1, window, device);
        let ids: Vec<i32> = next.iter().map(|&t| t as i32).collect();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [batch, 1]), device);
        logits = last_logits(model.forward_cached(model.embed(ids), &attn, &mut cache));
    }
    let finish = finish
        .into_iter()
        .map(|f| f.unwrap_or(FinishReason::Length))
        .collect();
    Ok(Generation {
        tokens,
        finish,
        prefill,
        decode: start.elapsed(),
        prompt_tokens,
    })
}

/// `[batch, seq, vocab]` → `[batch, vocab]` of the last position, in f32 (transformers'
/// `next_token_logits.to(torch.float32)`: a bf16 model samples from f32 logits).
fn last_logits<B: Backend>(logits: Tensor<B, 3>) -> Tensor<B, 2> {
    let [batch, seq, vocab] = logits.dims();
    logits
        .narrow(1, seq - 1, 1)
        .reshape([batch, vocab])
        .cast(burn::tensor::DType::F32)
}

/// Chooses tokens from logits.
#[derive(Debug)]
pub struct Sampler {
    sampling: Sampling,
    rng: ChaCha8Rng,
}

impl Sampler {
    /// A sampler; checks the sampling values.
    pub fn new(sampling: Sampling) -> Result<Self> {
        let seed = match sampling {
            Sampling::Greedy => 0,
            Sampling::Sample {
                temperature,
                top_p,
                seed,
            } => {
                if !(temperature > 0.0 && temperature.is_finite()) {
                    return Err(Error::Generation(format!(
                        "temperature must be > 0, got {temperature}"
                    )));
                }
                if !(top_p > 0.0 && top_p <= 1.0) {
                    return Err(Error::Generation(format!(
                        "top_p must be in (0, 1], got {top_p}"
                    )));
                }
                seed
            }
        };
        Ok(Self {
            sampling,
            rng: ChaCha8Rng::seed_from_u64(seed),
        })
    }

    /// The next token for one row of logits.
    pub fn pick(&mut self, logits: &[f32]) -> u32 {
        match self.sampling {
            Sampling::Greedy => argmax(logits),
            Sampling::Sample {
                temperature, top_p, ..
            } => {
                let probs = top_p_probs(logits, temperature, top_p);
                let mut u: f32 = self.rng.random();
                let mut last = 0;
                for &(id, p) in &probs {
                    last = id;
                    if u < p {
                        return id;
                    }
                    u -= p;
                }
                last
            }
        }
    }
}

/// Index of the first maximum.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// The renormalised distribution left after temperature and top-p, as (id, probability) pairs
/// sorted by descending probability.
pub fn top_p_probs(logits: &[f32], temperature: f32, top_p: f32) -> Vec<(u32, f32)> {
    let scaled: Vec<f32> = logits.iter().map(|l| l / temperature).collect();
    let max = scaled.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<(u32, f32)> = scaled
        .iter()
        .enumerate()
        .map(|(i, l)| (i as u32, (l - max).exp()))
        .collect();
    let total: f32 = probs.iter().map(|p| p.1).sum();
    probs.iter_mut().for_each(|p| p.1 /= total);
    // Ascending, as TopPLogitsWarper sorts; remove while the cumulative mass is <= 1 - top_p.
    probs.sort_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)));
    let mut cum = 0.0f32;
    let mut first_kept = 0;
    for (i, p) in probs.iter().enumerate() {
        cum += p.1;
        if cum <= 1.0 - top_p {
            first_kept = i + 1;
        } else {
            break;
        }
    }
    let first_kept = first_kept.min(probs.len() - 1);
    let mut kept: Vec<(u32, f32)> = probs[first_kept..].to_vec();
    kept.reverse();
    let mass: f32 = kept.iter().map(|p| p.1).sum();
    kept.iter_mut().for_each(|p| p.1 /= mass);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DecoderConfig;
    use mmedpo_core::backend::TestBackend as B;

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.0, 3.0, 1.0, 3.0]), 1);
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        // probabilities 0.5, 0.3, 0.15, 0.05
        let logits: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
        let kept = top_p_probs(&logits, 1.0, 0.75);
        let ids: Vec<u32> = kept.iter().map(|p| p.0).collect();
        assert_eq!(ids, vec![0, 1]);
        assert!((kept[0].1 - 0.625).abs() < 1e-6);
        // top_p = 1 keeps all; a tiny top_p keeps the best one.
        assert_eq!(top_p_probs(&logits, 1.0, 1.0).len(), 4);
        assert_eq!(top_p_probs(&logits, 1.0, 1e-6), vec![(0, 1.0)]);
    }

    #[test]
    fn bad_sampling_values_are_errors() {
        assert!(Sampler::new(Sampling::Sample {
            temperature: 0.0,
            top_p: 0.9,
            seed: 0
        })
        .is_err());
        assert!(Sampler::new(Sampling::Sample {
            temperature: 1.0,
            top_p: 1.5,
            seed: 0
        })
        .is_err());
    }

    fn tiny() -> DecoderConfig {
        DecoderConfig {
            vocab_size: 64,
            hidden_size: 16,
            intermediate_size: 32,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 4,
            ..DecoderConfig::mistral_100m()
        }
    }

    fn cfg(sampling: Sampling, max_new_tokens: usize) -> GenerationConfig {
        GenerationConfig {
            max_new_tokens,
            sampling,
            eos_token_ids: vec![2],
            pad_token_id: 0,
        }
    }

    #[test]
    fn a_batch_of_different_lengths_equals_each_prompt_alone() {
        let device = Default::default();
        let model = tiny().init::<B>(&device);
        let prompts = vec![vec![1, 5, 9, 13, 17, 21], vec![1, 7], vec![1, 30, 31, 32]];
        for sampling in [
            Sampling::Greedy,
            Sampling::Sample {
                temperature: 0.7,
                top_p: 0.9,
                seed: 3,
            },
        ] {
            let config = cfg(sampling, 6);
            let batched = generate(&model, &prompts, &config, &device).unwrap();
            for (i, p) in prompts.iter().enumerate() {
                let alone = generate(&model, std::slice::from_ref(p), &config, &device).unwrap();
                if sampling == Sampling::Greedy {
                    assert_eq!(batched.tokens[i], alone.tokens[0], "row {i}");
                }
                assert!(!alone.tokens[0].is_empty() && alone.tokens[0].len() <= 6);
            }
        }
    }

    #[test]
    fn sampling_is_reproducible_from_the_seed() {
        let device = Default::default();
        let model = tiny().init::<B>(&device);
        let prompts = vec![vec![1, 4, 8]];
        let run = |seed| {
            generate(
                &model,
                &prompts,
                &cfg(
                    Sampling::Sample {
                        temperature: 5.0,
                        top_p: 1.0,
                        seed,
                    },
                    12,
                ),
                &device,
            )
            .unwrap()
            .tokens
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn generation_stops_at_eos_and_reports_why() {
        let device = Default::default();
        let model = tiny().init::<B>(&device);
        let prompts = vec![vec![1, 4, 8]];
        let no_eos = GenerationConfig {
            eos_token_ids: vec![],
            ..cfg(Sampling::Greedy, 3)
        };
        let greedy = generate(&model, &prompts, &no_eos, &device).unwrap();
        let first = greedy.tokens[0][0];
        let config = GenerationConfig {
            eos_token_ids: vec![first],
            ..cfg(Sampling::Greedy, 3)
        };
        let stopped = generate(&model, &prompts, &config, &device).unwrap();
        assert_eq!(stopped.tokens[0], vec![first]);
        assert_eq!(stopped.finish[0], FinishReason::Eos);
        assert_eq!(greedy.finish[0], FinishReason::Length);
        assert_eq!(greedy.tokens[0].len(), 3);
    }

    #[test]
    fn out_of_vocabulary_prompt_is_an_error() {
        let device = Default::default();
        let model = tiny().init::<B>(&device);
        let err =
            generate(&model, &[vec![1, 999]], &cfg(Sampling::Greedy, 2), &device).unwrap_err();
        assert!(err.to_string().contains("999"), "{err}");
    }
}
