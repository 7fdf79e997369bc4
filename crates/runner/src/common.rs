//! Helpers the subcommands share: finding the tokenizer, checking it against the model, reading
//! the items of the data commands.

use std::path::Path;

use anyhow::{bail, Context, Result};
use mmedpo_core::record::PreferenceRecord;
use mmedpo_llm::Tokenizer;

/// `--tokenizer FILE`, else `MODEL/tokenizer.json`; a clear hint when only a SentencePiece
/// `tokenizer.model` is there (LLaVA-Med's repository ships only that).
pub fn load_tokenizer(model: &Path, explicit: Option<&Path>) -> Result<Tokenizer> {
    let path = explicit
        .map(Path::to_path_buf)
        .unwrap_or_else(|| model.join("tokenizer.json"));
    if explicit.is_none() && !path.is_file() && model.join("tokenizer.model").is_file() {
        bail!(
            "{}: no tokenizer.json (only a SentencePiece tokenizer.model); for LLaVA-Med v1.5 / Mistral-7B pass \
             --tokenizer models/mistral-tokenizer/tokenizer.json (shipped with mmedpo, identical ids)",
            model.display()
        );
    }
    Ok(Tokenizer::from_file(&path)?)
}

/// The tokenizer must cover exactly the model's vocabulary.
pub fn check_vocab(tokenizer: &Tokenizer, vocab_size: usize, model: &Path) -> Result<()> {
    if tokenizer.vocab_size() != vocab_size {
        bail!(
            "{}: tokenizer has {} tokens but {} has vocab_size {}; pass the model's own tokenizer with --tokenizer",
            tokenizer.path().display(),
            tokenizer.vocab_size(),
            model.join("config.json").display(),
            vocab_size
        );
    }
    Ok(())
}

/// Reads the items of a data command (`curate-text`, `visual-pairs`): preference records whose
/// `rejected_conversations` may be absent (only the image, question and ground truth are used).
pub fn read_items(path: &Path) -> Result<Vec<PreferenceRecord>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let Some(items) = value.as_array() else {
        bail!(
            "{}: the file must hold a JSON list of items",
            path.display()
        );
    };
    let mut out = Vec::with_capacity(items.len());
    let mut problems = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let mut item = item.clone();
        if let Some(obj) = item.as_object_mut() {
            if !obj.contains_key("rejected_conversations") {
                let conv = obj.get("conversations").cloned().unwrap_or_default();
                obj.insert("rejected_conversations".into(), conv);
            }
        }
        let label = format!(
            "item {} (index {i})",
            item.get("id").unwrap_or(&serde_json::Value::Null)
        );
        match serde_json::from_value::<PreferenceRecord>(item) {
            Ok(r) if r.problems().is_empty() => out.push(r),
            Ok(r) => problems.push(format!("{label}: {}", r.problems().join("; "))),
            Err(e) => problems.push(format!("{label}: {e}")),
        }
    }
    if !problems.is_empty() {
        bail!(
            "{}: {} bad item(s):\n  {}",
            path.display(),
            problems.len(),
            problems.join("\n  ")
        );
    }
    Ok(out)
}
