//! Agents as a user names them: `openai=BASE_URL@MODEL` (an OpenAI-compatible chat server) or
//! `local=MODEL_DIR` (a Hugging Face Llama/Mistral directory run in-process), checked before the
//! first request, built into [`Agent`]s, and recorded in a [`Manifest`] by what determines their
//! replies.

use std::path::{Path, PathBuf};
use std::time::Duration;

use burn::tensor::backend::Backend;
use mmedpo_core::manifest::Manifest;

use crate::http::HttpAgent;
use crate::local::{LocalAgent, LocalSettings};
use crate::{Agent, Error, Result};

/// One agent, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentSpec {
    /// An OpenAI-compatible server.
    OpenAi {
        /// `http://…/v1` or `https://…/v1`.
        base_url: String,
        /// The served model's name.
        model: String,
    },
    /// An in-process model.
    Local {
        /// The model directory.
        dir: PathBuf,
    },
}

/// How API agents talk to their servers.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// The environment variable holding the API key (its value is never logged).
    pub api_key_env: Option<String>,
    /// Per request.
    pub timeout: Duration,
    /// Ask for a JSON-schema-constrained reply (`response_format`).
    pub json_schema: bool,
}

impl AgentSpec {
    /// Parses `openai=BASE_URL@MODEL` or `local=MODEL_DIR`.
    pub fn parse(spec: &str) -> Result<Self> {
        let bad = |message: String| Error::Spec {
            spec: spec.to_string(),
            message,
        };
        if let Some(dir) = spec.strip_prefix("local=") {
            let dir = PathBuf::from(dir);
            if !dir.is_dir() {
                return Err(bad(format!("{} is not a model directory", dir.display())));
            }
            return Ok(AgentSpec::Local { dir });
        }
        let Some(rest) = spec.strip_prefix("openai=") else {
            return Err(bad(
                "expected openai=BASE_URL@MODEL or local=MODEL_DIR".into()
            ));
        };
        let Some((url, model)) = rest.rsplit_once('@') else {
            return Err(bad("expected openai=BASE_URL@MODEL".into()));
        };
        // Checked before the first request: each of these would otherwise cost a whole run.
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(bad(format!(
                "the base URL {url:?} needs a scheme (http:// or https://)"
            )));
        }
        Ok(AgentSpec::OpenAi {
            base_url: url.to_string(),
            model: model.to_string(),
        })
    }

    /// The specs of an agents file: one per line in turn order, `#` comments and blank lines
    /// skipped.
    pub fn read_file(path: &Path) -> Result<Vec<String>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Core(mmedpo_core::Error::io(path, e)))?;
        let specs: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect();
        if specs.is_empty() {
            return Err(Error::Spec {
                spec: path.display().to_string(),
                message: "no agent specs in the file".into(),
            });
        }
        Ok(specs)
    }

    /// The agent, with a local model loaded onto `B`.
    pub fn build<B: Backend>(
        &self,
        http: &HttpOptions,
        local: &LocalSettings,
        device: &B::Device,
    ) -> Result<Box<dyn Agent>> {
        match self {
            AgentSpec::Local { dir } => {
                let agent =
                    LocalAgent::load::<B>(dir, local.clone(), device).map_err(|e| Error::Spec {
                        spec: format!("local={}", dir.display()),
                        message: e.to_string(),
                    })?;
                Ok(Box::new(agent))
            }
            AgentSpec::OpenAi { base_url, model } => {
                if http.timeout.is_zero() {
                    return Err(Error::Setting(format!(
                        "timeout {} s: must be a number of seconds > 0",
                        http.timeout.as_secs_f64()
                    )));
                }
                if let Some(name) = &http.api_key_env {
                    if std::env::var(name).map_or(true, |v| v.is_empty()) {
                        return Err(Error::Setting(format!(
                            "--api-key-env {name}: the environment variable {name} is not set (or empty)"
                        )));
                    }
                }
                let mut a =
                    HttpAgent::new(base_url, model, http.api_key_env.as_deref(), http.timeout);
                a.json_schema = http.json_schema;
                Ok(Box::new(a))
            }
        }
    }

    /// Adds the agent to a manifest as `name`: an API agent by its model name (the server may
    /// move: a restarted one on another port serves the same model), a local one by its
    /// directory's weights.
    pub fn record(&self, m: Manifest, name: &str) -> Result<Manifest> {
        Ok(match self {
            AgentSpec::Local { dir } => m
                .value(name, format!("local={}", dir.display()))
                .dir(&format!("{name}.model"), dir)?,
            AgentSpec::OpenAi { model, .. } => m.value(name, format!("openai model {model}")),
        })
    }
}
