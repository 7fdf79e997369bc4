//! Chat templates: how a chat model wants its messages written.
//!
//! A Hugging Face model directory usually carries its template in `tokenizer_config.json`
//! (`chat_template`, a Jinja text, or a list of named ones of which `default` is used). It is
//! rendered here with minijinja plus Python string methods (`.strip()`, `.title()`, …) and HF's
//! `raise_exception`, with `messages`, `bos_token`, `eos_token` and `add_generation_prompt` as
//! transformers' `apply_chat_template` passes them. A model without one gets a named built-in
//! template (`llama3`, `mistral`, `chatml`, `zephyr`). Rendered text already holds the BOS token,
//! so it is tokenized without adding another.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// Built-in templates for models whose directory has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltinChat {
    /// Llama 3 instruct (`<|start_header_id|>role<|end_header_id|>\n\n…<|eot_id|>`), e.g. Med42-v2.
    Llama3,
    /// Mistral instruct v0.1 (`<s>[INST] … [/INST]`), e.g. BioMistral-7B; a system message is put
    /// before the first user message.
    Mistral,
    /// ChatML (`<|im_start|>role\n…<|im_end|>`).
    ChatMl,
    /// Zephyr (`<|role|>\n…</s>`).
    Zephyr,
}

impl BuiltinChat {
    /// Parses a built-in name.
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(match name {
            "llama3" => Self::Llama3,
            "mistral" => Self::Mistral,
            "chatml" => Self::ChatMl,
            "zephyr" => Self::Zephyr,
            other => {
                return Err(Error::Template(format!(
                "unknown built-in chat template {other:?}: use llama3, mistral, chatml or zephyr"
            )))
            }
        })
    }
}

/// A chat template, ready to render.
#[derive(Debug, Clone)]
pub enum ChatTemplate {
    /// A Jinja template from `tokenizer_config.json`.
    Jinja {
        /// The template text.
        source: String,
        /// `bos_token` as the template sees it.
        bos_token: String,
        /// `eos_token` as the template sees it.
        eos_token: String,
    },
    /// A built-in template.
    Builtin(BuiltinChat),
}

/// A token in `tokenizer_config.json`: a string or an AddedToken object.
#[derive(Deserialize)]
#[serde(untagged)]
enum TokenField {
    Text(String),
    Added { content: String },
}

impl TokenField {
    fn text(self) -> String {
        match self {
            TokenField::Text(s) | TokenField::Added { content: s } => s,
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TemplateField {
    One(String),
    Named(Vec<NamedTemplate>),
}

#[derive(Deserialize)]
struct NamedTemplate {
    name: String,
    template: String,
}

#[derive(Deserialize)]
struct TokenizerConfig {
    chat_template: Option<TemplateField>,
    bos_token: Option<TokenField>,
    eos_token: Option<TokenField>,
}

impl ChatTemplate {
    /// The template of a model directory (`tokenizer_config.json`'s `chat_template`), if it has one.
    pub fn from_model_dir(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join("tokenizer_config.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(None);
        };
        let config: TokenizerConfig = serde_json::from_str(&text).map_err(|cause| Error::Json {
            path: path.clone(),
            cause,
        })?;
        let source = match config.chat_template {
            None => return Ok(None),
            Some(TemplateField::One(s)) => s,
            Some(TemplateField::Named(list)) => {
                match list.into_iter().find(|t| t.name == "default") {
                    Some(t) => t.template,
                    None => {
                        return Err(Error::Template(format!(
                            "{}: chat_template is a list without a \"default\" entry",
                            path.display()
                        )))
                    }
                }
            }
        };
        let template = ChatTemplate::Jinja {
            source,
            bos_token: config.bos_token.map(TokenField::text).unwrap_or_default(),
            eos_token: config.eos_token.map(TokenField::text).unwrap_or_default(),
        };
        // Fail at load time, naming the file, rather than at the first request.
        template
            .render(&[("user", "test")], true)
            .map_err(|e| Error::Template(format!("{}: chat_template: {e}", path.display())))?;
        Ok(Some(template))
    }

    /// The directory's template, else the named built-in, else an error that says what to pass.
    pub fn resolve(dir: &Path, builtin: Option<&str>) -> Result<Self> {
        if let Some(name) = builtin {
            return Ok(ChatTemplate::Builtin(BuiltinChat::from_name(name)?));
        }
        ChatTemplate::from_model_dir(dir)?.ok_or_else(|| {
            Error::Template(format!(
                "{}: tokenizer_config.json has no chat_template; name a built-in one \
                 (llama3, mistral, chatml, zephyr)",
                dir.display()
            ))
        })
    }

    /// Renders `(role, content)` messages; `add_generation_prompt` opens the assistant's turn.
    pub fn render(&self, messages: &[(&str, &str)], add_generation_prompt: bool) -> Result<String> {
        match self {
            ChatTemplate::Jinja {
                source,
                bos_token,
                eos_token,
            } => render_jinja(
                source,
                bos_token,
                eos_token,
                messages,
                add_generation_prompt,
            ),
            ChatTemplate::Builtin(b) => Ok(render_builtin(*b, messages, add_generation_prompt)),
        }
    }
}

fn render_jinja(
    source: &str,
    bos: &str,
    eos: &str,
    messages: &[(&str, &str)],
    add_generation_prompt: bool,
) -> Result<String> {
    let mut env = minijinja::Environment::new();
    // transformers renders with trim_blocks and lstrip_blocks.
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    env.add_template("chat", source)
        .map_err(|e| Error::Template(format!("the template does not parse: {e}")))?;
    let msgs: Vec<minijinja::Value> = messages
        .iter()
        .map(|(role, content)| minijinja::context! { role => *role, content => *content })
        .collect();
    env.get_template("chat")
        .and_then(|t| {
            t.render(minijinja::context! {
                messages => msgs,
                bos_token => bos,
                eos_token => eos,
                add_generation_prompt => add_generation_prompt,
            })
        })
        .map_err(|e| Error::Template(format!("rendering failed: {e}")))
}

fn render_builtin(b: BuiltinChat, messages: &[(&str, &str)], gen: bool) -> String {
    let mut out = String::new();
    match b {
        BuiltinChat::Llama3 => {
            out.push_str("<|begin_of_text|>");
            for (role, content) in messages {
                out.push_str(&format!(
                    "<|start_header_id|>{role}<|end_header_id|>\n\n{}<|eot_id|>",
                    content.trim()
                ));
            }
            if gen {
                out.push_str("<|start_header_id|>assistant<|end_header_id|>\n\n");
            }
        }
        BuiltinChat::Mistral => {
            out.push_str("<s>");
            let mut system = None;
            for (role, content) in messages {
                match *role {
                    "system" => system = Some(*content),
                    "user" => {
                        let text = match system.take() {
                            Some(s) => format!("{s}\n\n{content}"),
                            None => content.to_string(),
                        };
                        out.push_str(&format!("[INST] {text} [/INST]"));
                    }
                    _ => out.push_str(&format!("{content}</s>")),
                }
            }
        }
        BuiltinChat::ChatMl => {
            for (role, content) in messages {
                out.push_str(&format!("<|im_start|>{role}\n{content}<|im_end|>\n"));
            }
            if gen {
                out.push_str("<|im_start|>assistant\n");
            }
        }
        BuiltinChat::Zephyr => {
            for (role, content) in messages {
                out.push_str(&format!("<|{role}|>\n{content}</s>\n"));
            }
            if gen {
                out.push_str("<|assistant|>\n");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONV: [(&str, &str); 3] = [
        ("system", "You are a radiologist."),
        ("user", "Score it."),
        ("assistant", "{\"score\": 0.5}"),
    ];

    #[test]
    fn builtins_write_their_formats() {
        let t = ChatTemplate::Builtin(BuiltinChat::Mistral);
        assert_eq!(
            t.render(&CONV[..2], true).unwrap(),
            "<s>[INST] You are a radiologist.\n\nScore it. [/INST]"
        );
        assert_eq!(
            t.render(&CONV, false).unwrap(),
            "<s>[INST] You are a radiologist.\n\nScore it. [/INST]{\"score\": 0.5}</s>"
        );
        let l3 = ChatTemplate::Builtin(BuiltinChat::Llama3)
            .render(&CONV[1..2], true)
            .unwrap();
        assert_eq!(
            l3,
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nScore it.<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        assert!(BuiltinChat::from_name("alpaca").is_err());
    }

    #[test]
    fn jinja_templates_render_with_python_methods_and_raise_exception() {
        let t = ChatTemplate::Jinja {
            source: "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}\
                     [U] {{ m['content'].strip() }}\n{% elif m['role'] == 'system' %}\
                     {{ raise_exception('no system messages') }}{% endif %}{% endfor %}\
                     {% if add_generation_prompt %}[A]{% endif %}"
                .into(),
            bos_token: "<s>".into(),
            eos_token: "</s>".into(),
        };
        assert_eq!(
            t.render(&[("user", "  hi ")], true).unwrap(),
            "<s>[U] hi\n[A]"
        );
        let e = t.render(&CONV, true).unwrap_err().to_string();
        assert!(e.contains("no system messages"), "{e}");
    }
}
