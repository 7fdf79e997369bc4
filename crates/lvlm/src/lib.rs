//! # mmedpo-lvlm
//!
//! LLaVA-Med v1.5, the model MMedPO aligns, on Burn: CLIP tower (`mmedpo-vision`) → `mlp2x_gelu`
//! projector → Mistral/Llama (`mmedpo-llm`), loaded from the original LLaVA-Med layout or the
//! llava-hf layout, numerically the same function as Hugging Face's `LlavaForConditionalGeneration`.
//!
//! * [`config`]: both `config.json` layouts → [`LlavaConfig`].
//! * [`llava`]: the model; `prepare` splices image features like LLaVA's
//!   `prepare_inputs_labels_for_multimodal`; [`llava::sequence_logps`] sums response log-probs.
//! * [`prompt`]: `tokenizer_image_token`, templates, `preprocess_v1` label masking.
//! * [`loader`]: strict loading with a report; [`open()`]: a model with its tokenizer, checked.
//!   [`score`]: log π(y|x) of preference pairs.
//! * [`generate`]: answers for (image, question) prompts. [`adapter`]: LoRA on the LLM, PEFT layout.
//! * [`merge`]: a LoRA adapter merged into the checkpoint, written in the input's layout.
#![deny(missing_docs)]

pub mod adapter;
pub mod config;
pub mod error;
pub mod generate;
pub mod llava;
pub mod loader;
pub mod merge;
pub mod open;
pub mod prompt;
pub mod score;

pub use config::{Layout, LlavaConfig};
pub use error::{Error, Result};
pub use llava::{LlavaForConditionalGeneration, MultimodalInputs, Sequence};
pub use loader::save_llava;
pub use loader::{load_llava, load_llava_as, LoadedLlava};
pub use mmedpo_llm::Tokenizer;
pub use open::{open, OpenLlava};
