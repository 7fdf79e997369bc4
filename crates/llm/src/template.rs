//! Named conversation templates, as LLaVA's `conversation.py` renders them.
//!
//! Reference: haotian-liu/LLaVA `llava/conversation.py` (`conv_vicuna_v1`, `SeparatorStyle.TWO`;
//! `conv_mistral_instruct`, `SeparatorStyle.LLAMA_2`), the templates MMedPO (vicuna_v1) and
//! LLaVA-Med v1.5 (mistral_instruct) train and evaluate with.

use crate::error::{Error, Result};

/// A built-in conversation template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// `conv_vicuna_v1`: `"{system} USER: {q} ASSISTANT: {a}</s>USER: ..."`.
    VicunaV1,
    /// `conv_mistral_instruct`: `"[INST] {q} [/INST] {a} </s>[INST] ..."` (empty system).
    MistralInstruct,
}

/// Who speaks a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The user (LLaVA's `human`).
    User,
    /// The model (LLaVA's `gpt`).
    Assistant,
}

/// vicuna_v1's system prompt.
pub const VICUNA_SYSTEM: &str =
    "A chat between a curious user and an artificial intelligence assistant. \
The assistant gives helpful, detailed, and polite answers to the user's questions.";

impl Template {
    /// Every template name, for help texts.
    pub const NAMES: &'static [&'static str] = &["vicuna_v1", "mistral_instruct"];

    /// The template of a name (`vicuna_v1`, `mistral_instruct`).
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "vicuna_v1" => Ok(Template::VicunaV1),
            "mistral_instruct" => Ok(Template::MistralInstruct),
            other => Err(Error::UnsupportedConfig {
                field: "template".into(),
                value: other.into(),
                expected: Self::NAMES.join(" or "),
            }),
        }
    }

    /// Renders turns alternating user/assistant from the user; a `None` message leaves the turn open
    /// for the model to complete (LLaVA's `append_message(role, None)`).
    pub fn render(&self, messages: &[(Role, Option<&str>)]) -> String {
        match self {
            Template::VicunaV1 => {
                let seps = [" ", "</s>"];
                let mut out = format!("{VICUNA_SYSTEM}{}", seps[0]);
                for (i, (role, message)) in messages.iter().enumerate() {
                    let name = match role {
                        Role::User => "USER",
                        Role::Assistant => "ASSISTANT",
                    };
                    match message {
                        Some(m) => out.push_str(&format!("{name}: {m}{}", seps[i % 2])),
                        None => out.push_str(&format!("{name}:")),
                    }
                }
                out
            }
            Template::MistralInstruct => {
                let mut out = String::new();
                for (i, (_, message)) in messages.iter().enumerate() {
                    match message {
                        Some(m) if i % 2 == 0 => out.push_str(&format!("[INST] {m} [/INST]")),
                        Some(m) => out.push_str(&format!(" {m} </s>")),
                        None => {}
                    }
                }
                out
            }
        }
    }

    /// A one-question prompt for generation.
    pub fn prompt(&self, user: &str) -> String {
        self.render(&[(Role::User, Some(user)), (Role::Assistant, None)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vicuna_v1_as_llava_renders_it() {
        let t = Template::VicunaV1;
        assert_eq!(
            t.prompt("<image>\nIs there a nodule?"),
            format!("{VICUNA_SYSTEM} USER: <image>\nIs there a nodule? ASSISTANT:")
        );
        let full = t.render(&[(Role::User, Some("Q")), (Role::Assistant, Some("A"))]);
        assert_eq!(full, format!("{VICUNA_SYSTEM} USER: Q ASSISTANT: A</s>"));
    }

    #[test]
    fn mistral_instruct_as_llava_renders_it() {
        let t = Template::MistralInstruct;
        assert_eq!(t.prompt("Q"), "[INST] Q [/INST]");
        let full = t.render(&[(Role::User, Some("Q")), (Role::Assistant, Some("A"))]);
        assert_eq!(full, "[INST] Q [/INST] A </s>");
    }

    #[test]
    fn unknown_template_names_the_choices() {
        let err = Template::from_name("chatml").unwrap_err().to_string();
        assert!(err.contains("chatml") && err.contains("vicuna_v1"), "{err}");
    }
}
