//! # mmedpo-lora
//!
//! LoRA (Hu et al. 2021, *LoRA: Low-Rank Adaptation of Large Language Models*, arXiv:2106.09685)
//! for Burn linear layers, interoperable with Hugging Face PEFT:
//!
//! * [`LoraLinear`]: a frozen base `Linear` (`base_layer`, PEFT's name) plus an optional adapter
//!   (`lora_A`: Kaiming-uniform, `lora_B`: zero, scaling `alpha / r` or `alpha / sqrt(r)` with
//!   rsLoRA); [`LoraLinear::without_adapter`] is the reference model's layer (same base tensors, no
//!   copy) and [`LoraLinear::merge`] folds the adapter into the base.
//! * [`LoraConfig`]: PEFT's `adapter_config.json`.
//! * [`peft`]: save/load `adapter_model.safetensors` with PEFT keys
//!   (`base_model.model.<module path>.lora_A.weight`).
#![deny(missing_docs)]

pub mod config;
pub mod error;
pub mod linear;
pub mod peft;

pub use config::LoraConfig;
pub use error::{Error, Result};
pub use linear::{LoraAdapter, LoraLinear};
