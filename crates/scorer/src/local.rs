//! An agent that runs in-process on `mmedpo-llm`: any supported Llama/Mistral Hugging Face
//! directory (e.g. Llama3-Med42-8B, BioMistral-7B), prompted with its chat template
//! (`tokenizer_config.json`'s `chat_template`, else a named built-in one).
//!
//! Replies are greedy by default, so a run is reproducible; with a temperature, each request is
//! seeded from the agent's seed and a counter. Requests are served one at a time (the model is
//! behind a lock); several pairs in flight simply queue.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use burn::tensor::backend::Backend;
use mmedpo_llm::generate::generate;
use mmedpo_llm::{load_llm, ChatTemplate, GenerationConfig, LlamaForCausalLM, Sampling, Tokenizer};

use crate::protocol::{Agent, Message};

/// What can go wrong loading a local agent.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The model, tokenizer or template could not be loaded.
    #[error(transparent)]
    Llm(#[from] mmedpo_llm::Error),
    /// The tokenizer does not fit the model.
    #[error("{tokenizer}: {tokens} tokens, but {model} has vocab_size {vocab}")]
    Vocab {
        /// The tokenizer file.
        tokenizer: PathBuf,
        /// Its size.
        tokens: usize,
        /// The model directory.
        model: PathBuf,
        /// The model's vocabulary.
        vocab: usize,
    },
}

/// How a local agent generates.
#[derive(Debug, Clone)]
pub struct LocalSettings {
    /// A built-in chat template to use instead of the directory's (`llama3`, `mistral`, …).
    pub template: Option<String>,
    /// Most tokens per reply.
    pub max_new_tokens: usize,
    /// Sampling temperature; `None` = greedy.
    pub temperature: Option<f32>,
    /// Seed for sampling.
    pub seed: u64,
}

impl Default for LocalSettings {
    fn default() -> Self {
        Self {
            template: None,
            max_new_tokens: 128,
            temperature: None,
            seed: 0,
        }
    }
}

struct State<B: Backend> {
    model: LlamaForCausalLM<B>,
    requests: u64,
}

/// A chat agent on an in-process LLM.
pub struct LocalAgent<B: Backend> {
    name: String,
    state: Mutex<State<B>>,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    config: GenerationConfig,
    settings: LocalSettings,
    device: B::Device,
}

impl<B: Backend> std::fmt::Debug for LocalAgent<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalAgent")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .finish()
    }
}

/// Extra end-of-turn tokens chat templates use besides the config's EOS.
const END_OF_TURN: [&str; 4] = ["<|eot_id|>", "<|im_end|>", "<|end|>", "</s>"];

impl<B: Backend> LocalAgent<B> {
    /// Loads `dir` (config.json, safetensors, tokenizer.json, tokenizer_config.json) strictly.
    pub fn load(
        dir: &Path,
        settings: LocalSettings,
        device: &B::Device,
    ) -> Result<Self, LocalError> {
        let template = ChatTemplate::resolve(dir, settings.template.as_deref())?;
        let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json"))?;
        let llm = load_llm::<B>(dir, device)?;
        if tokenizer.vocab_size() > llm.config.vocab_size {
            return Err(LocalError::Vocab {
                tokenizer: tokenizer.path().to_path_buf(),
                tokens: tokenizer.vocab_size(),
                model: dir.to_path_buf(),
                vocab: llm.config.vocab_size,
            });
        }
        let mut eos = llm.config.eos_token_ids.clone();
        eos.extend(END_OF_TURN.iter().filter_map(|t| tokenizer.token_to_id(t)));
        eos.sort_unstable();
        eos.dedup();
        let config = GenerationConfig {
            max_new_tokens: settings.max_new_tokens,
            sampling: Sampling::Greedy,
            eos_token_ids: eos,
            pad_token_id: llm.config.pad_token_id,
        };
        let name = format!(
            "local:{}",
            dir.file_name().map_or_else(
                || dir.display().to_string(),
                |n| n.to_string_lossy().into_owned()
            )
        );
        Ok(Self {
            name,
            state: Mutex::new(State {
                model: llm.model,
                requests: 0,
            }),
            tokenizer,
            template,
            config,
            settings,
            device: device.clone(),
        })
    }

    /// The prompt text for `messages` (with the assistant turn opened).
    pub fn prompt(&self, messages: &[Message]) -> Result<String, String> {
        let msgs: Vec<(&str, &str)> = messages
            .iter()
            .map(|m| (m.role.as_str(), m.content.as_str()))
            .collect();
        match self.template.render(&msgs, true) {
            Ok(text) => Ok(text),
            // Templates that refuse a system role (Mistral's) get it folded into the first user turn.
            Err(e) if msgs.iter().any(|(r, _)| *r == "system") => {
                let system: Vec<&str> = msgs
                    .iter()
                    .filter(|(r, _)| *r == "system")
                    .map(|(_, c)| *c)
                    .collect();
                let mut rest: Vec<(String, String)> = msgs
                    .iter()
                    .filter(|(r, _)| *r != "system")
                    .map(|(r, c)| (r.to_string(), c.to_string()))
                    .collect();
                match rest.iter_mut().find(|(r, _)| r == "user") {
                    Some(first) => first.1 = format!("{}\n\n{}", system.join("\n\n"), first.1),
                    None => return Err(format!("chat template: {e}")),
                }
                let refs: Vec<(&str, &str)> =
                    rest.iter().map(|(r, c)| (r.as_str(), c.as_str())).collect();
                self.template
                    .render(&refs, true)
                    .map_err(|e| format!("chat template: {e}"))
            }
            Err(e) => Err(format!("chat template: {e}")),
        }
    }
}

impl<B: Backend> Agent for LocalAgent<B> {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn complete(&self, messages: &[Message]) -> Result<String, String> {
        let text = self.prompt(messages)?;
        // The rendered text carries the template's BOS; special tokens in it are parsed.
        let ids = self
            .tokenizer
            .encode(&text, false)
            .map_err(|e| e.to_string())?;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.requests += 1;
        let mut config = self.config.clone();
        if let Some(temperature) = self.settings.temperature {
            config.sampling = Sampling::Sample {
                temperature,
                top_p: 1.0,
                seed: self.settings.seed.wrapping_add(state.requests),
            };
        }
        let out =
            generate(&state.model, &[ids], &config, &self.device).map_err(|e| e.to_string())?;
        drop(state);
        self.tokenizer
            .decode(&out.tokens[0], true)
            .map_err(|e| e.to_string())
    }
}
