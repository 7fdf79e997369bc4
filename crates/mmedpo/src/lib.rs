//! MMedPO from Rust: clinical-aware multimodal preference optimization for medical
//! vision-language models (LLaVA-Med v1.5), on Burn.
//!
//! The facade of the workspace, as ripgrep's `grep` crate is of its own: each stage of the
//! paper's Algorithm 1 as a function with a typed plan in and a typed report out ([`stage`]), the
//! resumable pipeline that runs them all from one file ([`pipeline`]), and the crates they are
//! built on, re-exported ([`core`], [`llm`], [`vision`], [`lvlm`], [`lora`], [`dpo`], [`eval`],
//! [`scorer`], [`medklip`], [`curation`]). What happens along the way (progress, results, stage
//! decisions) goes to an [`Observer`]; the `mmedpo` program's observer prints it. Stages draw
//! their figures beside their outputs ([`plot`]).
//!
//! ```no_run
//! use mmedpo::pipeline::{self, Options};
//! let config = pipeline::load(std::path::Path::new("models/tiny-llava/pipeline.toml"))?;
//! let summary = pipeline::run(&config, &Options::default(), &mmedpo::Quiet)?;
//! println!("{}", summary.table);
//! # Ok::<(), mmedpo::Error>(())
//! ```

#![deny(missing_docs)]

pub use mmedpo_core as core;
pub use mmedpo_curation as curation;
pub use mmedpo_dpo as dpo;
pub use mmedpo_eval as eval;
pub use mmedpo_llm as llm;
pub use mmedpo_lora as lora;
pub use mmedpo_lvlm as lvlm;
pub use mmedpo_medklip as medklip;
pub use mmedpo_scorer as scorer;
pub use mmedpo_vision as vision;

pub mod bench;
mod device;
mod error;
pub mod generate;
mod model;
mod observe;
pub mod pipeline;
pub mod plot;
pub mod stage;
pub mod testbed;

pub use device::{DeviceKind, Dtype};
pub use error::{Error, Result};
pub use model::init_model;
pub use observe::{Event, Observer, Quiet};
