//! # mmedpo-vision
//!
//! The CLIP ViT vision tower of LLaVA-Med v1.5 (`openai/clip-vit-large-patch14-336`) on Burn, and
//! LLaVA's image preprocessing (pad to square, Pillow-exact bicubic resize, centre crop, CLIP
//! normalisation), both checked against Hugging Face goldens.
//!
//! * [`config`]: `CLIPVisionConfig`. [`clip`]: the modules; `features` returns a chosen layer's
//!   hidden states (LLaVA: layer −2, CLS dropped → 576 × hidden for 336 px).
//! * [`loader`]: strict loading under any key prefix (`vision_model.`, `vision_tower.vision_model.`, ...).
//! * [`preprocess`]: images → `[batch, 3, 336, 336]`.
#![deny(missing_docs)]

pub mod clip;
pub mod config;
pub mod error;
pub mod loader;
pub mod preprocess;

pub use clip::ClipVisionModel;
pub use config::{ClipActivation, ClipVisionConfig};
pub use error::{Error, Result};
pub use preprocess::AspectRatio;
