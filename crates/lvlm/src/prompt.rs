//! Prompt assembly and label masking, exactly as LLaVA does it.
//!
//! Reference: haotian-liu/LLaVA `llava/mm_utils.py::tokenizer_image_token` and
//! `llava/train/train.py::preprocess_v1` / `preprocess_llama_2` (the commit MMedPO vendors).
//!
//! * [`tokenizer_image_token`]: split the prompt at `<image>`, tokenize every chunk on its own (each
//!   gets BOS and SentencePiece's dummy prefix), keep BOS only at the start, and put
//!   [`IMAGE_TOKEN_INDEX`] (−200) where each placeholder was.
//! * [`conversation_labels`]: render the conversation with the template, then mask like
//!   `preprocess_v1`: split at `sep2` (`</s>`) into rounds, split each round at the assistant
//!   separator, mask BOS and `len(tokens(instruction)) − 2` tokens after it (LLaVA's off-by-one, which
//!   leaves the token before the answer scored), and keep the answer and the final `</s>`. On a
//!   length mismatch everything is masked, as LLaVA does.

use mmedpo_core::record::Turn;
use mmedpo_llm::{Role, Template, Tokenizer};

use crate::error::{Error, Result};

/// LLaVA's placeholder id for the image features.
pub const IMAGE_TOKEN_INDEX: i64 = -200;
/// Label of positions that are not scored.
pub const IGNORE_INDEX: i64 = -100;

/// Tokenizes a prompt containing `<image>` placeholders.
pub fn tokenizer_image_token(tok: &Tokenizer, prompt: &str) -> Result<Vec<i64>> {
    let chunks: Vec<Vec<u32>> = prompt
        .split("<image>")
        .map(|c| tok.encode(c, true))
        .collect::<Result<_, _>>()?;
    let bos = tok.token_to_id("<s>");
    let offset =
        usize::from(chunks.first().and_then(|c| c.first()).copied() == bos && bos.is_some());
    let mut ids: Vec<i64> = Vec::new();
    if offset == 1 {
        ids.push(chunks[0][0] as i64);
    }
    for (i, chunk) in chunks.iter().enumerate() {
        if i > 0 {
            ids.push(IMAGE_TOKEN_INDEX);
        }
        ids.extend(chunk.iter().skip(offset).map(|&t| t as i64));
    }
    Ok(ids)
}

/// Renders LLaVA-format turns (`human` / `gpt`) with a template.
pub fn render(template: Template, turns: &[Turn]) -> String {
    let messages: Vec<(Role, Option<&str>)> = turns
        .iter()
        .map(|t| {
            (
                if t.from == "human" {
                    Role::User
                } else {
                    Role::Assistant
                },
                Some(t.value.as_str()),
            )
        })
        .collect();
    template.render(&messages)
}

/// `(sep2, assistant separator)` the label masking splits on.
fn separators(template: Template) -> (&'static str, &'static str) {
    match template {
        Template::VicunaV1 => ("</s>", " ASSISTANT: "),
        Template::MistralInstruct => ("</s>", "[/INST]"),
    }
}

/// Token ids (with −200 placeholders) and labels (−100 = not scored) of a full conversation.
pub fn conversation_labels(
    tok: &Tokenizer,
    template: Template,
    turns: &[Turn],
) -> Result<(Vec<i64>, Vec<i64>)> {
    let conversation = render(template, turns);
    let ids = tokenizer_image_token(tok, &conversation)?;
    let mut target = ids.clone();
    let (sep2, sep) = separators(template);
    let mut cur = 1usize;
    target[0] = IGNORE_INDEX;
    for round in conversation.split(sep2) {
        if round.is_empty() {
            break;
        }
        let parts: Vec<&str> = round.split(sep).collect();
        if parts.len() != 2 {
            break;
        }
        let instruction = format!("{}{sep}", parts[0]);
        let round_len = tokenizer_image_token(tok, round)?.len();
        let instruction_len = tokenizer_image_token(tok, &instruction)?
            .len()
            .saturating_sub(2);
        let end = (cur + instruction_len).min(target.len());
        target[cur.min(end)..end].fill(IGNORE_INDEX);
        cur += round_len;
    }
    if cur < target.len() {
        target[cur..].fill(IGNORE_INDEX);
    }
    if cur != ids.len() {
        tracing::warn!(
            cur,
            total = ids.len(),
            "tokenization mismatch: the whole conversation is masked (as LLaVA does)"
        );
        target.fill(IGNORE_INDEX);
    }
    Ok((ids, target))
}

/// A generation prompt: the first user turn, the assistant's turn left open.
pub fn generation_prompt(tok: &Tokenizer, template: Template, question: &str) -> Result<Vec<i64>> {
    tokenizer_image_token(tok, &template.prompt(question))
}

/// Checks that a prompt has exactly `images` placeholders.
pub fn check_placeholders(ids: &[i64], images: usize, id: &str) -> Result<()> {
    let n = ids.iter().filter(|&&t| t == IMAGE_TOKEN_INDEX).count();
    if n != images {
        return Err(Error::Item {
            id: id.into(),
            message: format!("prompt has {n} <image> placeholder(s), expected {images}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn tok() -> Tokenizer {
        Tokenizer::from_file(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../models/mistral-tokenizer/tokenizer.json"),
        )
        .unwrap()
    }

    fn turns(q: &str, a: &str) -> Vec<Turn> {
        vec![
            Turn {
                from: "human".into(),
                value: q.into(),
            },
            Turn {
                from: "gpt".into(),
                value: a.into(),
            },
        ]
    }

    #[test]
    fn image_token_splices_chunks_and_keeps_one_bos() {
        let t = tok();
        let ids = tokenizer_image_token(&t, "<image>\nIs it?").unwrap();
        assert_eq!(ids[0], 1);
        assert_eq!(ids[1], IMAGE_TOKEN_INDEX);
        let rest: Vec<i64> = t
            .encode("\nIs it?", false)
            .unwrap()
            .iter()
            .map(|&x| x as i64)
            .collect();
        assert_eq!(&ids[2..], &rest[..]);
        assert_eq!(ids.iter().filter(|&&x| x == 1).count(), 1);
        let two = tokenizer_image_token(&t, "a<image>b<image>").unwrap();
        assert_eq!(two.iter().filter(|&&x| x == IMAGE_TOKEN_INDEX).count(), 2);
    }

    #[test]
    fn vicuna_labels_score_the_answer_and_eos_plus_llavas_extra_token() {
        let t = tok();
        let (ids, labels) =
            conversation_labels(&t, Template::VicunaV1, &turns("<image>\nIs it?", " Yes")).unwrap();
        let scored: Vec<i64> = ids
            .iter()
            .zip(&labels)
            .filter(|(_, l)| **l != IGNORE_INDEX)
            .map(|(i, _)| *i)
            .collect();
        // "ASSISTANT:  Yes</s>": the off-by-one leaves the "▁" before "Yes" scored, then Yes, </s>.
        assert_eq!(scored, vec![28705, 5592, 2]);
        assert_eq!(*ids.last().unwrap(), 2);
    }

    #[test]
    fn mistral_instruct_renders_and_scores_the_answer() {
        let t = tok();
        let (ids, labels) = conversation_labels(
            &t,
            Template::MistralInstruct,
            &turns("<image>\nIs it?", "Yes"),
        )
        .unwrap();
        let scored = labels.iter().filter(|l| **l != IGNORE_INDEX).count();
        assert!(scored >= 2, "{ids:?} {labels:?}");
        assert_eq!(*labels.last().unwrap(), 2);
    }
}
