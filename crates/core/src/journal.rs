//! The append-only JSONL journals that make long commands resumable (`score`, `eval`,
//! `curate-text`, `score-relevance`, `visual-pairs`): one line per finished item, keyed by its
//! typed [`RecordId`].
//!
//! The rules every journal keeps:
//! - an append is one whole line written in one call and flushed before the next item;
//! - on opening, a line cut by a kill (no newline, or not JSON) is dropped, so its item is simply
//!   done again; the kept lines are copied **as bytes** (never re-printed: numbers keep their digits,
//!   so a resumed journal is byte-identical to an uninterrupted one) to a temporary file that is
//!   renamed over the journal (a kill during the rewrite leaves the old journal, not an empty one);
//! - keys are typed: the item `1` and the item `"1"` are different items.
//!
//! [`write_atomic`] is the same rename rule for whole files.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::record::RecordId;

/// A journal entry: anything with an item id.
pub trait Entry: Serialize + DeserializeOwned {
    /// The item this line is about (`None`: the line has no usable id, and the journal is refused).
    fn record_id(&self) -> Option<RecordId>;
}

impl Entry for serde_json::Value {
    fn record_id(&self) -> Option<RecordId> {
        RecordId::from_json(&self["id"])
    }
}

impl RecordId {
    /// The id a JSON value holds: an integer or a string (`None` for anything else).
    pub fn from_json(v: &serde_json::Value) -> Option<RecordId> {
        match v {
            serde_json::Value::Number(n) => n.as_i64().map(RecordId::Int),
            serde_json::Value::String(s) => Some(RecordId::Str(s.clone())),
            _ => None,
        }
    }
}

/// An open journal: its entries so far (the latest line of an id wins) and a file to append to.
pub struct Journal<T: Entry = serde_json::Value> {
    path: PathBuf,
    file: File,
    entries: HashMap<RecordId, T>,
    order: Vec<RecordId>,
}

impl<T: Entry> Journal<T> {
    /// Opens `path` (created when absent), dropping a line cut by a kill.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
            Err(e) => return Err(Error::io(path, e)),
        };
        let (mut entries, mut order) = (HashMap::new(), Vec::new());
        let mut kept: Vec<u8> = Vec::with_capacity(bytes.len());
        let mut dropped = 0usize;
        let mut rest = bytes.as_slice();
        let mut line_no = 0usize;
        while !rest.is_empty() {
            line_no += 1;
            let (line, complete) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let l = &rest[..i];
                    rest = &rest[i + 1..];
                    (l, true)
                }
                None => {
                    let l = rest;
                    rest = &[];
                    (l, false)
                }
            };
            let parsed = complete
                .then(|| serde_json::from_slice::<T>(line).ok())
                .flatten();
            let Some(entry) = parsed else {
                dropped += 1;
                continue;
            };
            let Some(id) = entry.record_id() else {
                return Err(Error::Stale {
                    path: path.to_path_buf(),
                    message: format!(
                        "line {line_no} has no item id (an integer or a string); this is not a \
                         journal this command wrote: remove it or choose another --out"
                    ),
                });
            };
            kept.extend_from_slice(line);
            kept.push(b'\n');
            if entries.insert(id.clone(), entry).is_none() {
                order.push(id);
            }
        }
        if dropped > 0 {
            tracing::warn!(
                path = %path.display(),
                dropped,
                "incomplete journal line(s) dropped; their items are done again"
            );
            write_atomic(path, &kept)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            entries,
            order,
        })
    }

    /// The journal's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The entry of `id`, if the journal has one.
    pub fn get(&self, id: &RecordId) -> Option<&T> {
        self.entries.get(id)
    }

    /// Whether `id` has an entry.
    pub fn contains(&self, id: &RecordId) -> bool {
        self.entries.contains_key(id)
    }

    /// How many items have an entry.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no item has an entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries in the order their ids first appeared.
    pub fn iter(&self) -> impl Iterator<Item = (&RecordId, &T)> {
        self.order.iter().map(|id| (id, &self.entries[id]))
    }

    /// Appends one entry as one whole line, flushed.
    pub fn append(&mut self, entry: T) -> Result<()> {
        let id = entry.record_id().ok_or_else(|| Error::Stale {
            path: self.path.clone(),
            message: "an entry without an item id cannot be journaled".into(),
        })?;
        let mut line = serde_json::to_vec(&entry).map_err(|cause| Error::Json {
            path: self.path.clone(),
            cause,
        })?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|_| self.file.flush())
            .map_err(|e| Error::io(&self.path, e))?;
        if self.entries.insert(id.clone(), entry).is_none() {
            self.order.push(id);
        }
        Ok(())
    }
}

/// Writes `bytes` to `path` whole: a temporary file beside it (a name no output of ours has:
/// a leading dot and `.partial`), flushed to disk, then renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if is_special(path) {
        return std::fs::write(path, bytes).map_err(|e| Error::io(path, e));
    }
    write_atomic_with(path, |tmp| {
        let mut f = File::create(tmp).map_err(|e| Error::io(tmp, e))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io(tmp, e))
    })
}

/// A value as pretty JSON with a final newline, written whole ([`write_atomic`]).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_vec_pretty(value).map_err(|cause| Error::Json {
        path: path.to_path_buf(),
        cause,
    })?;
    text.push(b'\n');
    write_atomic(path, &text)
}

/// As [`write_atomic`], with `write` making the temporary file (an encoder that writes a path).
/// A path that is a device or a FIFO is written in place.
pub fn write_atomic_with<E>(
    path: &Path,
    write: impl FnOnce(&Path) -> std::result::Result<(), E>,
) -> std::result::Result<(), E>
where
    E: From<Error>,
{
    if is_special(path) {
        return write(path);
    }
    let tmp = partial_path(path);
    write(&tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| E::from(Error::io(path, e)))
}

/// A device or a FIFO (`--out /dev/stdout`): written in place, since renaming a file over it would
/// replace the device node (and there is no half-written file to guard against).
fn is_special(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir())
}

/// `OUT.suffix`: a file kept beside an output file (its journals, manifest, transcripts).
pub fn side(out: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}.{suffix}", out.display()))
}

/// The temporary name [`write_atomic`] writes `path` under.
pub fn partial_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.partial"))
}

/// Whether a file name is one of [`write_atomic`]'s temporaries (left by a kill; safe to remove).
pub fn is_partial(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".partial")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn a_device_is_written_in_place_not_replaced() {
        use std::os::unix::fs::FileTypeExt;
        let full = Path::new("/dev/full");
        assert!(std::fs::metadata(full)
            .unwrap()
            .file_type()
            .is_char_device());
        let err = write_json(full, &serde_json::json!({"a": 1})).unwrap_err();
        assert!(err.to_string().contains("No space left on device"), "{err}");
        assert!(std::fs::metadata(full)
            .unwrap()
            .file_type()
            .is_char_device());
        write_atomic(Path::new("/dev/null"), b"x").unwrap();
        assert!(std::fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device());
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mmedpo-journal-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d.join("j.jsonl")
    }

    #[test]
    fn cut_lines_are_dropped_and_kept_lines_keep_their_bytes() {
        let p = tmp("cut");
        std::fs::write(
            &p,
            "{\"id\": 1, \"x\": 0.30000000000000004e0}\n{\"id\": \"a\"}\nnot json\n{\"id\": 3, \"x\"",
        )
        .unwrap();
        let mut j = Journal::<Value>::open(&p).unwrap();
        assert_eq!(j.len(), 2);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"id\": 1, \"x\": 0.30000000000000004e0}\n{\"id\": \"a\"}\n",
            "kept lines are kept as written"
        );
        assert!(j.contains(&RecordId::Int(1)));
        assert!(!j.contains(&RecordId::Str("1".into())), "ids are typed");
        j.append(serde_json::json!({"id": 3, "x": 1})).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap().lines().last(),
            Some("{\"id\":3,\"x\":1}")
        );
        let j = Journal::<Value>::open(&p).unwrap();
        let ids: Vec<String> = j.iter().map(|(id, _)| id.to_string()).collect();
        assert_eq!(ids, ["1", "a", "3"]);
    }

    #[test]
    fn a_last_line_without_its_newline_is_incomplete() {
        let p = tmp("nl");
        std::fs::write(&p, "{\"id\": 1}\n{\"id\": 2}").unwrap();
        let j = Journal::<Value>::open(&p).unwrap();
        assert_eq!(j.len(), 1, "a kill can cut exactly before the newline");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"id\": 1}\n");
    }

    #[test]
    fn a_file_without_ids_is_refused_naming_the_line() {
        let p = tmp("noid");
        std::fs::write(&p, "{\"id\": 1}\n{\"x\": 2}\n").unwrap();
        let e = Journal::<Value>::open(&p).err().unwrap().to_string();
        assert!(e.contains("line 2") && e.contains("j.jsonl"), "{e}");
    }

    #[test]
    fn atomic_writes_leave_no_temporary_and_temporaries_are_recognised() {
        let p = tmp("atomic");
        write_atomic(&p, b"x\n").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"x\n");
        let partial = partial_path(&p);
        assert!(!partial.exists());
        let name = partial.file_name().unwrap().to_string_lossy().into_owned();
        assert!(is_partial(&name), "{name}");
        assert!(!is_partial("x.tmp.png") && !is_partial("a.partial"));
    }
}
