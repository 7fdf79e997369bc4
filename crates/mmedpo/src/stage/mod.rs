//! The stages of Algorithm 1, each a function from a typed plan to a typed report:
//! [`text::curate`] (text pairs), [`relevance::score`] (clinical-relevance weights),
//! [`visual::make`] (visual pairs), [`assemble::assemble`] (one training file),
//! [`train::train`] (weighted DPO with LoRA; [`score::score`] precomputes its reference) and
//! [`eval::evaluate`] (the paper's protocol on a
//! test set). A plan deserializes from the pipeline file's section of its stage (unknown keys
//! refused) and starts from the paper's or the released code's defaults.

pub mod assemble;
pub mod eval;
pub mod relevance;
pub mod score;
pub mod text;
pub mod train;
pub mod visual;

use std::path::Path;

use crate::Result;

/// The agent or judge named by `spec` (`openai=BASE_URL@MODEL` or `local=MODEL_DIR`), recorded in
/// a manifest under `name` ([`crate::scorer::AgentSpec::record`]).
pub fn record_agent(
    m: crate::core::manifest::Manifest,
    name: &str,
    spec: &str,
) -> Result<crate::core::manifest::Manifest> {
    Ok(crate::scorer::AgentSpec::parse(spec)?.record(m, name)?)
}

/// How local (`local=DIR`) agents and judges run.
#[derive(Debug, Clone, PartialEq)]
pub struct Local<'a> {
    /// Built-in chat template for agents whose tokenizer_config.json has none.
    pub template: Option<&'a str>,
    /// Most tokens per reply.
    pub max_new_tokens: usize,
    /// Where they run.
    pub device: crate::DeviceKind,
}

/// Builds an agent from its spec; `timeout` (seconds) is checked for HTTP agents.
pub fn build_agent(
    spec: &str,
    api_key_env: Option<&str>,
    timeout: f64,
    json_schema: bool,
    local: &Local,
) -> Result<Box<dyn crate::scorer::Agent>> {
    use crate::scorer::{local::LocalSettings, AgentSpec, HttpOptions};
    let parsed = AgentSpec::parse(spec)?;
    // Checked here: a Duration cannot hold a negative or NaN number of seconds.
    let valid = timeout.is_finite() && timeout > 0.0;
    if matches!(parsed, AgentSpec::OpenAi { .. }) && !valid {
        crate::error::invalid!("timeout = {timeout}: must be a number of seconds > 0");
    }
    let http = HttpOptions {
        api_key_env: api_key_env.map(String::from),
        timeout: std::time::Duration::from_secs_f64(if valid { timeout } else { 1.0 }),
        json_schema,
    };
    let settings = LocalSettings {
        template: local.template.map(String::from),
        max_new_tokens: local.max_new_tokens,
        ..LocalSettings::default()
    };
    crate::with_backend!(local.device, |B, device| Ok(
        parsed.build::<B>(&http, &settings, &device)?
    ))
}

/// `path`'s parent folder is created.
pub(crate) fn create_parent(path: &Path) -> Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => std::fs::create_dir_all(p).map_err(|e| crate::Error::io(p, e)),
        None => Ok(()),
    }
}
