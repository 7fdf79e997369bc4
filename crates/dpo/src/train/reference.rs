//! Where the reference log-probs come from: the policy with its adapters off, or a `mmedpo score`
//! file checked against its `.meta.json` and the training records.

use super::*;

/// Where reference log-probs come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Reference {
    /// The policy with its adapters switched off (MMedPO's code).
    AdapterOff,
    /// A `mmedpo score` JSONL file of the base model (checked against its `.meta.json`).
    File(PathBuf),
}

pub(crate) fn read_reference(
    path: &Path,
    records: &[PreferenceRecord],
    expected: &ScoreMeta,
) -> Result<HashMap<RecordId, (f64, f64)>> {
    let meta_path = ScoreMeta::path(path);
    let text =
        std::fs::read_to_string(&meta_path).map_err(|e| mmedpo_core::Error::io(&meta_path, e))?;
    let meta: ScoreMeta =
        serde_json::from_str(&text).map_err(|cause| mmedpo_core::Error::Json {
            path: meta_path.clone(),
            cause,
        })?;
    // The reference is the base model (no adapter) on the same data, template and dtype.
    let changed = meta.differences(expected);
    if !changed.is_empty() {
        return Err(Error::StaleCache {
            path: path.to_path_buf(),
            message: format!(
                "reference log-probs were computed for other inputs ({}; the file's value first); \
                 rerun `mmedpo score` on the base model without --adapter",
                changed.join(", ")
            ),
        });
    }
    let text = std::fs::read_to_string(path).map_err(|e| mmedpo_core::Error::io(path, e))?;
    let mut map = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let s: PairScore = serde_json::from_str(line)
            .map_err(|cause| mmedpo_core::Error::Json {
                path: path.to_path_buf(),
                cause,
            })
            .map_err(|e| Error::Setting(format!("line {}: {e}", n + 1)))?;
        map.insert(s.id, (s.chosen_logp, s.rejected_logp));
    }
    let missing: Vec<String> = records
        .iter()
        .filter(|r| !map.contains_key(&r.id))
        .map(|r| format!("item id {}: not in {}", r.id, path.display()))
        .collect();
    if !missing.is_empty() {
        return Err(Error::Data { problems: missing });
    }
    Ok(map)
}
