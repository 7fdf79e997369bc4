//! An agent behind the OpenAI chat-completions API (`POST {base_url}/chat/completions`): GPT-4o,
//! vLLM, llama.cpp, Ollama.
//!
//! Timeouts, and bounded retries with exponential backoff on timeouts, connection errors, 429 (its
//! `Retry-After` is honoured) and 5xx; other 4xx fail at once. The API key is read from an
//! environment variable whose *name* is configured; it is sent as a bearer token and never logged
//! (the `Debug` output shows only whether one is set). Optional `response_format` JSON schema.

use std::time::Duration;

use serde_json::json;

use crate::protocol::{Agent, Message};

/// Settings of an HTTP agent.
#[derive(Clone)]
pub struct HttpAgent {
    /// Base URL including the API prefix, e.g. `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    /// Model name sent in the request.
    pub model: String,
    api_key: Option<String>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub max_retries: usize,
    /// First backoff; doubled per retry.
    pub backoff: Duration,
    /// Sampling temperature.
    pub temperature: f64,
    /// Ask for `{"score": number, "rationale": string}` via `response_format` (vLLM, OpenAI).
    pub json_schema: bool,
    /// Most wall time one `complete` spends, retries and waits included.
    pub max_total: Duration,
    /// After this many calls in a row that failed (all retries spent, or the budget), the agent
    /// stops sending and fails at once: a dead or throttling server costs seconds, not hours.
    pub circuit_after: usize,
    breaker: std::sync::Arc<Breaker>,
    client: ureq::Agent,
}

/// Failed calls in a row and the last failure, shared by clones of an agent (one server).
#[derive(Debug, Default)]
struct Breaker {
    in_a_row: std::sync::atomic::AtomicUsize,
    last: std::sync::Mutex<String>,
}

impl std::fmt::Debug for HttpAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpAgent")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

impl HttpAgent {
    /// An agent for `base_url` and `model`; the key (if any) is read from the environment variable
    /// named `api_key_env`.
    pub fn new(base_url: &str, model: &str, api_key_env: Option<&str>, timeout: Duration) -> Self {
        let client: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            base_url: base_url.trim_end_matches('/').to_string(),
            model: model.to_string(),
            api_key: api_key_env
                .and_then(|n| std::env::var(n).ok())
                .filter(|k| !k.is_empty()),
            timeout,
            max_retries: 4,
            backoff: Duration::from_millis(500),
            temperature: 0.0,
            json_schema: false,
            max_total: (timeout * 2).max(Duration::from_secs(10)),
            circuit_after: 3,
            breaker: Default::default(),
            client,
        }
    }

    fn body(&self, messages: &[Message]) -> String {
        let mut body =
            json!({ "model": self.model, "messages": messages, "temperature": self.temperature });
        if self.json_schema {
            body["response_format"] = json!({
                "type": "json_schema",
                "json_schema": {"name": "clinical_relevance", "schema": {
                    "type": "object",
                    "properties": {"score": {"type": "number", "minimum": 0, "maximum": 1}, "rationale": {"type": "string"}},
                    "required": ["score"]
                }}
            });
        }
        body.to_string()
    }

    /// `text` with the API key replaced by `<redacted>`: a server may quote the key back (in an
    /// error body, or in a reply), and what the agent returns ends up in logs and transcripts.
    fn redact(&self, text: String) -> String {
        match &self.api_key {
            Some(key) if !key.is_empty() && text.contains(key.as_str()) => {
                text.replace(key.as_str(), "<redacted>")
            }
            _ => text,
        }
    }

    /// One attempt: `Ok(content)`, or `Err((retryable, message, retry_after))`.
    fn attempt(&self, body: &str) -> Result<String, (bool, String, Option<Duration>)> {
        let mut req = self
            .client
            .post(format!("{}/chat/completions", self.base_url))
            .header("Content-Type", "application/json");
        if let Some(key) = &self.api_key {
            req = req.header("Authorization", format!("Bearer {key}"));
        }
        let mut resp = match req.send(body) {
            Ok(r) => r,
            Err(e) => return Err((true, format!("request failed: {e}"), None)),
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|s| Duration::from_secs_f64(s.clamp(0.0, 60.0)));
        let text = match resp.body_mut().read_to_string() {
            Ok(t) => t,
            Err(e) => return Err((true, format!("reading the response failed: {e}"), None)),
        };
        if status == 429 || status >= 500 {
            return Err((true, format!("HTTP {status}"), retry_after));
        }
        if status >= 400 {
            return Err((
                false,
                format!(
                    "HTTP {status}: {}",
                    text.chars().take(200).collect::<String>()
                ),
                None,
            ));
        }
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|_| {
            (
                false,
                format!(
                    "malformed response: {}",
                    text.chars().take(120).collect::<String>()
                ),
                None,
            )
        })?;
        v["choices"][0]["message"]["content"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| {
                (
                    false,
                    "response has no choices[0].message.content".to_string(),
                    None,
                )
            })
    }
}

impl Agent for HttpAgent {
    fn name(&self) -> String {
        format!("{}@{}", self.model, self.base_url)
    }

    fn complete(&self, messages: &[Message]) -> Result<String, String> {
        use std::sync::atomic::Ordering;
        let in_a_row = self.breaker.in_a_row.load(Ordering::SeqCst);
        if in_a_row >= self.circuit_after {
            let last = self
                .breaker
                .last
                .lock()
                .map(|l| l.clone())
                .unwrap_or_default();
            return Err(format!(
                "{}: not sent: the last {in_a_row} calls failed (circuit open; last: {last})",
                self.name()
            ));
        }
        let body = self.body(messages);
        tracing::trace!(agent = %self.name(), bytes = body.len(), "request");
        let start = std::time::Instant::now();
        let mut last = String::new();
        for attempt in 0..=self.max_retries {
            match self.attempt(&body) {
                Ok(content) => {
                    self.breaker.in_a_row.store(0, Ordering::SeqCst);
                    return Ok(self.redact(content));
                }
                Err((retryable, msg, retry_after)) => {
                    last = self.redact(msg);
                    if !retryable || attempt == self.max_retries {
                        break;
                    }
                    let wait =
                        retry_after.unwrap_or(self.backoff * 2u32.saturating_pow(attempt as u32));
                    if start.elapsed() + wait + self.timeout > self.max_total {
                        last = format!(
                            "{last}; gave up after {:.1} s (the budget per call is {:.1} s)",
                            start.elapsed().as_secs_f64(),
                            self.max_total.as_secs_f64()
                        );
                        break;
                    }
                    tracing::debug!(agent = %self.name(), attempt, error = %last, ?wait, "retrying");
                    std::thread::sleep(wait);
                }
            }
        }
        self.breaker.in_a_row.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut l) = self.breaker.last.lock() {
            l.clone_from(&last);
        }
        Err(format!("{}: {last}", self.name()))
    }
}
