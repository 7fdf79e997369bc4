//! # mmedpo-llm
//!
//! The decoder-only LLM that LLaVA-Med v1.5 (Mistral-7B) and the Med-LLM judges (Llama3-Med42,
//! BioMistral) share, on Burn, numerically the same function as Hugging Face transformers'
//! `LlamaForCausalLM` / `MistralForCausalLM` (parity tests against committed goldens).
//!
//! * [`config`]: `config.json` → [`DecoderConfig`].
//! * [`llama`]: the modules; pure training forward, explicit [`KvCache`] for decoding.
//! * [`loader`]: strict safetensors loading (single or sharded, f32/f16/bf16) with a report.
//! * [`generate`]: greedy / temperature + top-p, seeded, batched prompts of different lengths.
//! * [`tokenizer`]: `tokenizer.json` via the `tokenizers` crate; [`template`]: LLaVA conversation templates.
//!
//! ```no_run
//! use mmedpo_core::backend::Cpu;
//! use mmedpo_llm::{generate, loader, Sampling, GenerationConfig, Tokenizer};
//! # fn main() -> mmedpo_llm::Result<()> {
//! let dir = std::path::Path::new("models/my-mistral");
//! let device = Default::default();
//! let llm = loader::load_llm::<Cpu>(dir, &device)?;
//! let tok = Tokenizer::from_file(&dir.join("tokenizer.json"))?;
//! let prompt = tok.encode("The chest X-ray shows", true)?;
//! let config = GenerationConfig {
//!     max_new_tokens: 16,
//!     sampling: Sampling::Greedy,
//!     eos_token_ids: llm.config.eos_token_ids.clone(),
//!     pad_token_id: llm.config.pad_token_id,
//! };
//! let out = generate::generate(&llm.model, &[prompt], &config, &device)?;
//! println!("{}", tok.decode(&out.tokens[0], true)?);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod chat;
pub mod config;
pub mod error;
pub mod generate;
pub mod llama;
pub mod loader;
pub mod template;
pub mod tokenizer;

pub use chat::{BuiltinChat, ChatTemplate};
pub use config::{DecoderConfig, HfConfig, ModelType};
pub use error::{Error, Result};
pub use generate::{FinishReason, Generation, GenerationConfig, Sampling};
pub use llama::{AttentionInput, KvCache, LlamaForCausalLM};
pub use loader::{load_llm, load_llm_as, Checkpoint, LoadReport, LoadedLlm};
pub use template::{Role, Template};
pub use tokenizer::Tokenizer;
