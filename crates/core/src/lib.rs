//! # mmedpo-core
//!
//! What every other mmedpo crate shares and nothing more: the Burn backend aliases the project runs on.
//! The preference-record schema joins it with the DPO trainer, so that the trainer and the curation
//! stages agree on a *file format*, not on each other's code (see ARCHITECTURE.md).
#![deny(missing_docs)]

pub mod backend;
