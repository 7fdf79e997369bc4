//! `mmedpo-medklip`: MMedPO's visual tool (paper §3.1, shared/docs/medklip.md).
//!
//! MedKLIP is imported at build time from ONNX with burn-onnx ([`model`]): by default a tiny test
//! model with the real graph's I/O contract ([`contract`]), or a user's own export named by the
//! `MEDKLIP_ONNX` environment variable (docs/medklip-export.md). Its weights are loaded at run time.
//! On top of it: the authors' heatmap (mean of the decoder layers' cross-attention for the query
//! "disease", nearest ×16, OpenCV bilinear to the original size, OpenCV Gaussian blur 15×15,
//! mask = blurred > mean − std) and confidence `softmax(logits[29])[1]` ([`heatmap`]), seeded
//! localized noise ([`noise`]) and overlays for inspection ([`overlay`]). [`stage`]: the whole
//! visual-pair stage (items in, resumable folder of noised images and pairs out).

#![deny(missing_docs)]

// The generated model code names `alloc::vec::Vec`.
extern crate alloc;

pub mod contract;
pub mod error;
pub mod heatmap;
pub mod model;
pub mod noise;
pub mod overlay;
pub mod stage;

pub use error::{Error, Result};
pub use heatmap::{lesion_map, LesionMap};
pub use model::{observation_index, Analysis, Medklip, OBSERVATIONS};
pub use noise::{add_noise, NoiseMode};
pub use stage::{make_visual_pairs, VisualReport, VisualSettings};
