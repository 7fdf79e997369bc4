//! # mmedpo-scorer
//!
//! MMedPO's clinical-relevance weights: several Med-LLM agents score each rejected answer in turns
//! until they agree (or the mean after `max_rounds`), as the paper's §3.2.1 describes.
//!
//! * [`protocol`]: the turn-taking protocol over any [`protocol::Agent`], with full transcripts.
//! * [`parse`]: robust reading of a score from a reply (JSON, fenced JSON, a bare number).
//! * [`prompts`]: the prompt texts of `data/prompts/`, overridable.
//! * [`http`]: an agent behind the OpenAI chat-completions API, with timeouts and retries.
//! * [`local`]: an agent on an in-process `mmedpo-llm` model with its chat template.
//! * [`spec`]: agents as users name them (`openai=URL@MODEL`, `local=DIR`), built and recorded.
//! * [`pool`]: a whole preference file scored, many pairs in flight, resumable.
#![deny(missing_docs)]

pub mod error;
pub mod http;
pub mod local;
pub mod parse;
pub mod pool;
pub mod prompts;
pub mod protocol;
pub mod spec;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{Error, Result};
pub use pool::{score_file, RelevanceReport};
pub use protocol::{Agent, Message, Protocol, ScoreOutcome, ScoreRequest};
pub use spec::{AgentSpec, HttpOptions};
