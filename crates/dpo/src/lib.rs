//! # mmedpo-dpo
//!
//! MMedPO's clinically weighted DPO (paper-spec §1.2, §1.3, §5.2): LoRA on the LLM, chosen text on
//! the clean image, rejected text on the rejected image, reference = the same network with the
//! adapter off, `loss = mean_b(w_b · ℓ_b)`.
//!
//! Read top to bottom: [`data`] (files → validated pairs, weights, seeded order) → [`loss`] (pure
//! DPO loss) → [`optim`] (AdamW, schedule, clipping as PyTorch/transformers) → [`train`] (the loop,
//! checkpoints, resume, step logs; data-parallel over devices with `parallel`). Pair batching (`[chosen…; rejected…]` rows, right padding) and
//! the summed response log-probs are `mmedpo_lvlm::score::pair_logps`. [`config`]: the training
//! configuration file (one serde schema, defaults, errors naming file, line and key).
#![deny(missing_docs)]

pub mod config;
pub mod data;
pub mod error;
pub mod loss;
pub mod optim;
pub mod parallel;
pub mod train;

pub use config::TrainConfig;
pub use error::{Error, Result};
pub use train::{train, train_on_devices, Reference, StepLog, TrainSettings, TrainSummary};
