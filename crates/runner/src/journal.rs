//! The append-only JSONL journals that make the data commands resumable (`score-relevance`,
//! `curate-text`, `visual-pairs`): one line per finished item, keyed by its id. A line cut by a
//! kill is dropped (and rewritten away) on the next start, so that item is simply redone.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

/// Adds an agent to a manifest: an API agent's model name, a `local=DIR` agent's weights.
pub fn agent_input(
    m: mmedpo_core::manifest::Manifest,
    name: &str,
    spec: &str,
) -> Result<mmedpo_core::manifest::Manifest> {
    // An API agent is its model name (the server may move: a restarted one on another port serves
    // the same model); a local one is its directory's weights.
    Ok(match spec.strip_prefix("local=") {
        Some(dir) => m
            .value(name, spec)
            .dir(&format!("{name}.model"), Path::new(dir))?,
        None => match spec.rsplit_once('@') {
            Some((_, model)) => m.value(name, format!("openai model {model}")),
            None => m.value(name, spec),
        },
    })
}

/// `OUT.suffix`: a file kept beside an output file.
pub fn side(out: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}.{suffix}", out.display()))
}

/// The complete lines of a journal (none if it does not exist yet). Lines that do not parse (a
/// line cut by a kill) are dropped from the file: the kept lines are written back byte for byte
/// (never re-printed, so numbers keep their digits) to a temporary file renamed over the journal,
/// so a kill during the rewrite leaves the old journal, not an empty one.
pub fn complete_lines(path: &Path) -> Result<Vec<Value>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(vec![]);
    };
    let mut good = vec![];
    let mut kept = String::with_capacity(text.len());
    for line in text.lines() {
        if let Ok(v) = serde_json::from_str::<Value>(line) {
            good.push(v);
            kept.push_str(line);
            kept.push('\n');
        }
    }
    if kept != text {
        let tmp = side(path, "rewrite.tmp");
        std::fs::write(&tmp, &kept).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    }
    Ok(good)
}

/// An item id as a map key: a string id as it is, a number as its digits.
pub fn id_key(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The journal's lines by item id (a later line for the same id wins).
pub fn by_id(path: &Path) -> Result<HashMap<String, Value>> {
    Ok(complete_lines(path)?
        .into_iter()
        .map(|v| (id_key(&v["id"]), v))
        .collect())
}

/// Opens a journal for appending.
pub fn append(path: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_last_line_is_dropped_and_ids_key_alike() {
        let p = std::env::temp_dir().join(format!("mmedpo-journal-{}.jsonl", std::process::id()));
        std::fs::write(
            &p,
            "{\"id\": 1, \"x\": 1}\n{\"id\": \"a\"}\n{\"id\": 3, \"x\"",
        )
        .unwrap();
        let m = by_id(&p).unwrap();
        assert_eq!(m.len(), 2);
        std::fs::write(&p, "{\"id\": 1, \"x\": 0.30000000000000004e0}\n{\"id\": 2").unwrap();
        complete_lines(&p).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"id\": 1, \"x\": 0.30000000000000004e0}\n",
            "kept lines are kept as written"
        );
        std::fs::write(
            &p,
            "{\"id\": 1, \"x\": 1}\n{\"id\": \"a\"}\n{\"id\": 3, \"x\"",
        )
        .unwrap();
        let m = by_id(&p).unwrap();
        assert_eq!(m["1"]["x"], 1);
        assert!(m.contains_key("a"));
        assert_eq!(
            std::fs::read_to_string(&p).unwrap().lines().count(),
            2,
            "rewritten"
        );
        std::fs::remove_file(&p).unwrap();
    }
}
