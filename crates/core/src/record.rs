//! The MMedPO preference-record file format (the authors' `data/*_dpo_weighted.json`).
//!
//! A file is a JSON list of items: `id` (number or string), `image` (path relative to an image
//! root), `conversations` (human question with `<image>`, then the ground-truth answer: the chosen
//! branch), `rejected_conversations` (the same question, then the dispreferred answer),
//! optional `rejected_image` (a visual pair: the rejected branch sees this image) and
//! `weighted_score` (a number, or a number written as a string). Unknown keys are kept.
//!
//! [`read_records`] reads a whole file and reports **every** bad item (by id or index) at once.

use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};

/// One conversation turn (`{"from": "human"|"gpt", "value": "..."}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    /// `human` or `gpt`.
    pub from: String,
    /// The text.
    pub value: String,
}

/// An item id: the released files use integers (VQA) and strings (reports).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RecordId {
    /// Integer id.
    Int(i64),
    /// String id.
    Str(String),
}

impl std::fmt::Display for RecordId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordId::Int(i) => write!(f, "{i}"),
            RecordId::Str(s) => write!(f, "{s}"),
        }
    }
}

/// One preference pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreferenceRecord {
    /// Item id.
    pub id: RecordId,
    /// Image path, relative to the image root.
    pub image: String,
    /// Chosen conversation.
    pub conversations: Vec<Turn>,
    /// Rejected conversation.
    pub rejected_conversations: Vec<Turn>,
    /// The rejected branch's image (visual pairs); absent = `image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_image: Option<String>,
    /// Clinical-relevance weight.
    #[serde(
        default,
        deserialize_with = "number_or_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub weighted_score: Option<f64>,
    /// Keys this crate does not interpret, kept on rewrite.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn number_or_string<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        Num(f64),
        Str(String),
    }
    match Option::<NumOrStr>::deserialize(d)? {
        None => Ok(None),
        Some(NumOrStr::Num(x)) => Ok(Some(x)),
        Some(NumOrStr::Str(s)) => {
            s.trim().parse::<f64>().map(Some).map_err(|_| {
                serde::de::Error::custom(format!("weighted_score {s:?} is not a number"))
            })
        }
    }
}

/// The image placeholder of LLaVA prompts.
pub const IMAGE_PLACEHOLDER: &str = "<image>";

impl PreferenceRecord {
    /// The question: the first human turn.
    pub fn question(&self) -> Option<&str> {
        self.conversations.first().map(|t| t.value.as_str())
    }

    /// The chosen answer: the last turn of `conversations`.
    pub fn chosen(&self) -> Option<&str> {
        self.conversations.last().map(|t| t.value.as_str())
    }

    /// The rejected answer: the last turn of `rejected_conversations`.
    pub fn rejected(&self) -> Option<&str> {
        self.rejected_conversations.last().map(|t| t.value.as_str())
    }

    /// The rejected branch's image.
    pub fn rejected_image(&self) -> &str {
        self.rejected_image.as_deref().unwrap_or(&self.image)
    }

    /// Everything wrong with this item (empty = valid).
    pub fn problems(&self) -> Vec<String> {
        let mut out = vec![];
        for (name, conv) in [
            ("conversations", &self.conversations),
            ("rejected_conversations", &self.rejected_conversations),
        ] {
            if conv.len() < 2 || conv.len() % 2 != 0 {
                out.push(format!(
                    "{name} must hold human/gpt turn pairs, found {} turn(s)",
                    conv.len()
                ));
                continue;
            }
            for (i, t) in conv.iter().enumerate() {
                let want = if i % 2 == 0 { "human" } else { "gpt" };
                if t.from != want {
                    out.push(format!(
                        "{name}[{i}].from is {:?}, expected {want:?}",
                        t.from
                    ));
                }
            }
            if !conv[0].value.contains(IMAGE_PLACEHOLDER) {
                out.push(format!("{name}[0] has no {IMAGE_PLACEHOLDER} placeholder"));
            }
        }
        if self.image.trim().is_empty() {
            out.push("image is empty".into());
        }
        for (field, path) in [
            ("image", Some(&self.image)),
            ("rejected_image", self.rejected_image.as_ref()),
        ] {
            if let Some(p) = path.filter(|p| climbs_out(p)) {
                out.push(format!(
                    "{field} {p:?} climbs out of the image folder (relative paths stay under --image-root)"
                ));
            }
        }
        if let Some(w) = self.weighted_score {
            if !(0.0..=MAX_WEIGHT).contains(&w) {
                out.push(format!(
                    "weighted_score {w:?} is outside [0, {MAX_WEIGHT}] (relevance scores and MedKLIP \
                     confidences are in [0, 1]; assemble's paper mode writes weights in [0.75, 1.25])"
                ));
            }
        }
        out
    }
}

/// Whether a relative image path leaves the folder it is relative to (`a/../../x`). Image paths
/// are relative to `--image-root` and stay under it; absolute paths are taken as they are (they
/// name a file the user chose; `visual-pairs` writes them when its output is outside that folder).
pub fn climbs_out(path: &str) -> bool {
    let p = Path::new(path);
    if p.is_absolute() {
        return false;
    }
    let mut depth = 0i64;
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => depth -= 1,
            std::path::Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return true;
        }
    }
    false
}

/// The largest `weighted_score` a file may hold: scores are in [0, 1], and the paper's
/// normalisation (written by `mmedpo assemble --weight-mode paper`) clips weights to [0.75, 1.25].
pub const MAX_WEIGHT: f64 = 1.25;

/// Reads a preference file, validating every item; all problems are reported in one error.
pub fn read_records(path: &Path) -> Result<Vec<PreferenceRecord>> {
    let (records, problems) = parse_file(path, false)?;
    if problems.is_empty() {
        Ok(records)
    } else {
        Err(Error::Invalid {
            path: path.to_path_buf(),
            problems: problems.into_iter().map(|(_, p)| p).collect(),
        })
    }
}

/// An invalid item: its `id` when it has one, and what is wrong.
pub type ItemProblem = (Option<serde_json::Value>, String);

/// Reads a preference file, returning the valid items and, for each invalid one, its id (when it
/// has one) and the problem. Fails only when the file itself cannot be read or is not a JSON list.
pub fn read_records_lenient(path: &Path) -> Result<(Vec<PreferenceRecord>, Vec<ItemProblem>)> {
    parse_file(path, false)
}

/// Reads items whose `rejected_conversations` may be absent (plain QA items: image, question and
/// ground truth, as text curation and visual pairs use them); a missing rejected side is a copy of
/// `conversations`. Otherwise validated like [`read_records`].
pub fn read_items(path: &Path) -> Result<Vec<PreferenceRecord>> {
    let (records, problems) = parse_file(path, true)?;
    if problems.is_empty() {
        Ok(records)
    } else {
        Err(Error::Invalid {
            path: path.to_path_buf(),
            problems: problems.into_iter().map(|(_, p)| p).collect(),
        })
    }
}

fn parse_file(
    path: &Path,
    fill_rejected: bool,
) -> Result<(Vec<PreferenceRecord>, Vec<ItemProblem>)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    // A UTF-8 byte-order mark (Windows editors write one) is not JSON; it is skipped, as Python's
    // `utf-8-sig` does.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let value: serde_json::Value = serde_json::from_str(text).map_err(|cause| Error::Json {
        path: path.to_path_buf(),
        cause,
    })?;
    let items = value.as_array().ok_or_else(|| Error::Invalid {
        path: path.to_path_buf(),
        problems: vec!["the file must hold a JSON list of preference items".into()],
    })?;
    let mut records = Vec::with_capacity(items.len());
    let mut problems = vec![];
    // Ids key journals, caches and reference log-probs: two items with one id would get each
    // other's results.
    let mut first_at: std::collections::HashMap<String, usize> = Default::default();
    for (index, item) in items.iter().enumerate() {
        let label = match item.get("id") {
            Some(id) if !id.is_null() => format!("item id {id} (index {index})"),
            _ => format!("item at index {index}"),
        };
        let id = item.get("id").cloned();
        let mut item = item.clone();
        if let Some(obj) = item.as_object_mut().filter(|_| fill_rejected) {
            if !obj.contains_key("rejected_conversations") {
                let conv = obj.get("conversations").cloned().unwrap_or_default();
                obj.insert("rejected_conversations".into(), conv);
            }
        }
        match serde_json::from_value::<PreferenceRecord>(item) {
            Ok(r) => {
                let p = r.problems();
                if let Some(first) = first_at.insert(r.id.to_string(), index) {
                    problems.push((
                        id,
                        format!(
                            "{label}: the same id as the item at index {first}; ids must be unique"
                        ),
                    ));
                } else if p.is_empty() {
                    records.push(r);
                } else {
                    problems.push((id, format!("{label}: {}", p.join("; "))));
                }
            }
            Err(e) => problems.push((id, format!("{label}: {e}"))),
        }
    }
    Ok((records, problems))
}

/// The ids that an earlier record already has, in order (empty when all are unique). Ids key
/// journals, caches and reference log-probs.
pub fn repeated_ids(records: &[PreferenceRecord]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    records
        .iter()
        .map(|r| r.id.to_string())
        .filter(|id| !seen.insert(id.clone()))
        .collect()
}

/// FNV-1a 64 of some byte strings (each followed by a 0xff separator): a cheap fingerprint to
/// detect stale caches or derive per-item seeds (not a security hash).
pub fn fingerprint_u64<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for part in parts {
        for &b in part.iter().chain(&[0xff]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01B3);
        }
    }
    h
}

/// [`fingerprint_u64`] as 16 hex digits.
pub fn fingerprint<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    format!("{:016x}", fingerprint_u64(parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> std::path::PathBuf {
        let p =
            std::env::temp_dir().join(format!("mmedpo-record-{}-{name}.json", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    const GOOD: &str = r#"[{"id": 0, "image": "a.jpg",
        "conversations": [{"from": "human", "value": "<image>\nIs it normal?"}, {"from": "gpt", "value": " Yes"}],
        "rejected_conversations": [{"from": "human", "value": "<image>\nIs it normal?"}, {"from": "gpt", "value": " No"}],
        "weighted_score": "0.8", "note": "kept"},
        {"id": "CXR1_IM-1/0.png", "image": "b.png", "rejected_image": "b_noised.png",
        "conversations": [{"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": "Clear."}],
        "rejected_conversations": [{"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": "Clear."}],
        "weighted_score": 0.93}]"#;

    #[test]
    fn reads_both_id_kinds_string_scores_and_keeps_unknown_keys() {
        let recs = read_records(&write("good", GOOD)).unwrap();
        assert_eq!(recs[0].id, RecordId::Int(0));
        assert_eq!(recs[0].weighted_score, Some(0.8));
        assert_eq!(recs[0].extra["note"], "kept");
        assert_eq!(recs[0].rejected_image(), "a.jpg");
        assert_eq!(recs[1].id.to_string(), "CXR1_IM-1/0.png");
        assert_eq!(recs[1].rejected_image(), "b_noised.png");
        assert_eq!(recs[0].chosen(), Some(" Yes"));
        let round: Vec<PreferenceRecord> =
            serde_json::from_str(&serde_json::to_string(&recs).unwrap()).unwrap();
        assert_eq!(round, recs);
    }

    #[test]
    fn plain_qa_items_are_items_but_not_preference_records() {
        let qa = r#"[{"id": 3, "image": "a.png",
            "conversations": [{"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "A"}]},
            {"id": 4, "image": "b.png", "conversations": [{"from": "human", "value": "no placeholder"},
            {"from": "gpt", "value": "A"}]}]"#;
        let path = write("qa", qa);
        let e = read_items(&path).unwrap_err().to_string();
        assert!(
            e.contains("item id 4") && e.contains("placeholder") && !e.contains("item id 3"),
            "{e}"
        );
        let path = write("qa1", &qa.replace("no placeholder", "<image>\\nQ2?"));
        let items = read_items(&path).unwrap();
        assert_eq!(items[0].rejected_conversations, items[0].conversations);
        assert!(
            read_records(&path).is_err(),
            "a preference file needs its rejected side"
        );
    }

    #[test]
    fn every_bad_item_is_reported_by_id() {
        let bad = GOOD
            .replace("\"0.8\"", "\"high\"")
            .replace("<image>\\nDescribe.\"}, {\"from\": \"gpt\", \"value\": \"Clear.\"}],\n        \"rejected", "Describe.\"}, {\"from\": \"gpt\", \"value\": \"Clear.\"}],\n        \"rejected");
        let err = read_records(&write("bad", &bad)).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("item id 0 (index 0)") && msg.contains("\"high\" is not a number"),
            "{msg}"
        );
        assert!(
            msg.contains("CXR1_IM-1/0.png") && msg.contains("conversations[0] has no <image>"),
            "{msg}"
        );
    }

    #[test]
    fn relative_image_paths_stay_under_the_image_folder() {
        assert!(climbs_out("../../etc/hostname"));
        assert!(climbs_out("a/../../b.png"));
        assert!(!climbs_out("a/../b.png"));
        assert!(!climbs_out("scans/ct.png"));
        assert!(!climbs_out("/data/visual/x.png"));
        let text = r#"[{"id": 1, "image": "../../etc/hostname",
            "conversations": [{"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "A"}],
            "rejected_conversations": [{"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "B"}]}]"#;
        let err = read_records(&write("climb", text)).unwrap_err().to_string();
        assert!(err.contains("climbs out of the image folder"), "{err}");
    }

    #[test]
    fn duplicate_ids_in_a_file_are_refused_naming_both_places() {
        let item = r#"{"id": ID, "image": "a.png",
            "conversations": [{"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "A"}],
            "rejected_conversations": [{"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "B"}]}"#;
        let text = format!(
            "[{}, {}, {}]",
            item.replace("ID", "7"),
            item.replace("ID", "8"),
            item.replace("ID", "\"7\"")
        );
        let err = read_records(&write("dup", &text)).unwrap_err().to_string();
        assert!(
            err.contains("item id \"7\" (index 2): the same id as the item at index 0"),
            "{err}"
        );
        let (good, bad) = read_records_lenient(&write("dup2", &text)).unwrap();
        assert_eq!((good.len(), bad.len()), (2, 1));
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        let path = write("bom", "\u{feff}[]");
        assert_eq!(std::fs::read(&path).unwrap()[..3], [0xef, 0xbb, 0xbf]);
        assert!(read_records(&path).unwrap().is_empty());
    }

    #[test]
    fn the_released_files_are_valid() {
        for set in crate::testing::released_data("the_released_files_are_valid") {
            let recs = read_records(&set.dir.join("vqa-rad_dpo_weighted.json")).unwrap();
            assert_eq!(recs.len(), 1797_usize.div_ceil(set.stride), "{}", set.label);
            assert!(recs
                .iter()
                .all(|r| r.weighted_score.is_some() && r.rejected_image.is_none()));
            let slake = read_records(&set.dir.join("slake_dpo_weighted.json")).unwrap();
            assert_eq!(
                slake.len(),
                4919_usize.div_ceil(set.stride),
                "{}",
                set.label
            );
        }
    }
}
