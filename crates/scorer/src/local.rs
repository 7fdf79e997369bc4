//! An agent that runs in-process on `mmedpo-llm`: any supported Llama/Mistral Hugging Face
//! directory (e.g. Llama3-Med42-8B, BioMistral-7B), prompted with its chat template
//! (`tokenizer_config.json`'s `chat_template`, else a named built-in one).
//!
//! The model runs on a worker thread that serves requests in batches: greedy requests that arrive
//! while a batch is generating are decoded together in the next one (left-padded; a row's tokens
//! do not depend on its batch), so several pairs in flight (`score-relevance --concurrency`) share
//! the model's forward passes. Replies are greedy by default, so a run is reproducible; with a
//! temperature, requests are served one at a time, each seeded from the agent's seed and a counter.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

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
    /// Most requests decoded together (greedy only).
    pub max_batch: usize,
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
            max_batch: 8,
            template: None,
            max_new_tokens: 128,
            temperature: None,
            seed: 0,
        }
    }
}

struct Request {
    ids: Vec<u32>,
    reply: mpsc::Sender<Result<Vec<u32>, String>>,
}

/// A chat agent on an in-process LLM.
pub struct LocalAgent {
    name: String,
    queue: mpsc::Sender<Request>,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    settings: LocalSettings,
    largest_batch: Arc<AtomicUsize>,
}

impl std::fmt::Debug for LocalAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalAgent")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .finish()
    }
}

/// The worker: takes the first waiting request, then every other one already queued (up to
/// `max_batch`), generates them as one batch and answers each. Ends when the agent is dropped.
fn serve<B: Backend>(
    model: LlamaForCausalLM<B>,
    config: GenerationConfig,
    settings: LocalSettings,
    device: B::Device,
    queue: mpsc::Receiver<Request>,
    largest_batch: Arc<AtomicUsize>,
) {
    let max_batch = if settings.temperature.is_some() {
        1
    } else {
        settings.max_batch.max(1)
    };
    let mut served = 0u64;
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match queue.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        largest_batch.fetch_max(batch.len(), Ordering::Relaxed);
        let mut config = config.clone();
        if let Some(temperature) = settings.temperature {
            served += 1;
            config.sampling = Sampling::Sample {
                temperature,
                top_p: 1.0,
                seed: settings.seed.wrapping_add(served),
            };
        }
        let prompts: Vec<Vec<u32>> = batch.iter().map(|r| r.ids.clone()).collect();
        match generate(&model, &prompts, &config, &device) {
            Ok(out) => {
                for (r, tokens) in batch.into_iter().zip(out.tokens) {
                    let _ = r.reply.send(Ok(tokens));
                }
            }
            Err(e) => {
                for r in batch {
                    let _ = r.reply.send(Err(e.to_string()));
                }
            }
        }
    }
}

/// Extra end-of-turn tokens chat templates use besides the config's EOS.
const END_OF_TURN: [&str; 4] = ["<|eot_id|>", "<|im_end|>", "<|end|>", "</s>"];

impl LocalAgent {
    /// Loads `dir` (config.json, safetensors, tokenizer.json, tokenizer_config.json) strictly onto
    /// backend `B` and starts its worker thread.
    pub fn load<B: Backend>(
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
        let (queue, requests) = mpsc::channel();
        let largest_batch = Arc::new(AtomicUsize::new(0));
        let (model, worker_settings, worker_device, largest) = (
            llm.model,
            settings.clone(),
            device.clone(),
            largest_batch.clone(),
        );
        std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                serve(
                    model,
                    config,
                    worker_settings,
                    worker_device,
                    requests,
                    largest,
                )
            })
            .map_err(|e| {
                mmedpo_llm::Error::Generation(format!("starting the agent's thread: {e}"))
            })?;
        Ok(Self {
            name,
            queue,
            tokenizer,
            template,
            settings,
            largest_batch,
        })
    }

    /// The most requests decoded together so far.
    pub fn largest_batch(&self) -> usize {
        self.largest_batch.load(Ordering::Relaxed)
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

impl Agent for LocalAgent {
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
        let (reply, answer) = mpsc::channel();
        self.queue
            .send(Request { ids, reply })
            .map_err(|_| "the local model's thread has stopped".to_string())?;
        let tokens = answer
            .recv()
            .map_err(|_| "the local model's thread has stopped".to_string())??;
        self.tokenizer
            .decode(&tokens, true)
            .map_err(|e| e.to_string())
    }
}
