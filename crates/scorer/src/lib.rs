//! # mmedpo-scorer
//!
//! MMedPO's clinical-relevance weights: several Med-LLM agents score each rejected answer in turns
//! until they agree (or the mean after `max_rounds`), as the paper's §3.2.1 describes.
//!
//! * [`protocol`]: the turn-taking protocol over any [`protocol::Agent`], with full transcripts.
//! * [`parse`]: robust reading of a score from a reply (JSON, fenced JSON, a bare number).
//! * [`prompts`]: the prompt texts of `data/prompts/`, overridable.
//! * [`http`]: an agent behind the OpenAI chat-completions API, with timeouts and retries.
//!
//! Not yet here (issue 6): the local agent on `mmedpo-llm`, text
//! curation and the `curate-text` / `score-relevance` / `assemble` commands.
#![deny(missing_docs)]

pub mod http;
pub mod parse;
pub mod prompts;
pub mod protocol;

pub use protocol::{Agent, Message, Protocol, ScoreOutcome, ScoreRequest};
