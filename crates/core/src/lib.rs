//! # mmedpo-core
//!
//! What every other mmedpo crate shares: the Burn backend aliases, strict safetensors checkpoint
//! loading ([`checkpoint::Checkpoint`]), and the MMedPO preference-record schema ([`record`]), so
//! that the trainer and the curation stages agree on a *file format*, not on each other's code.
//! Feature `testing`: [`testing`] helpers for the workspace's test suites.
#![deny(missing_docs)]

pub mod attention;
pub mod backend;
pub mod checkpoint;
pub mod error;
pub mod journal;
pub mod linear;
pub mod manifest;
pub mod precision;
pub mod record;
pub mod swiglu;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::{Error, Result};
