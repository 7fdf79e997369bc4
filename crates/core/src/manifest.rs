//! What a resumable output was made from, and one writer per output.
//!
//! A [`Manifest`] lists everything that determines an output (model, adapter, tokenizer, data,
//! settings, seeds), each as a short value or fingerprint. It is written beside the output when the
//! output starts; a later run on the same output compares its own manifest with it and refuses,
//! naming every input that changed, unless it was asked to start over. An [`OutLock`] keeps a second
//! process off an output another one is writing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::dir_fingerprint;
use crate::error::{Error, Result};
use crate::record::fingerprint;

/// The inputs of one output, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The command that makes the output (`eval`, `train`, ...).
    pub command: String,
    /// Input name → value or fingerprint.
    pub inputs: BTreeMap<String, String>,
}

/// The fingerprint of a file's bytes, or of a model or adapter directory ([`dir_fingerprint`]).
pub fn path_fingerprint(path: &Path) -> Result<String> {
    if path.is_file() {
        return file_fingerprint(path);
    }
    dir_fingerprint(path)
}

/// The fingerprint of a file's bytes.
pub fn file_fingerprint(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(fingerprint([bytes.as_slice()]))
}

/// What [`Manifest::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prior {
    /// No earlier manifest: a fresh output.
    Fresh,
    /// The same inputs: the output may be resumed.
    Same,
}

impl Manifest {
    /// An empty manifest of `command`.
    pub fn new(command: &str) -> Self {
        Self {
            command: command.into(),
            inputs: BTreeMap::new(),
        }
    }

    /// Adds a plain value (a setting, a seed).
    pub fn value(mut self, name: &str, value: impl std::fmt::Display) -> Self {
        self.inputs.insert(name.into(), value.to_string());
        self
    }

    /// Adds an optional value (`none` when absent).
    pub fn option(self, name: &str, value: Option<impl std::fmt::Display>) -> Self {
        match value {
            Some(v) => self.value(name, v),
            None => self.value(name, "none"),
        }
    }

    /// Adds the fingerprint of a file's bytes.
    pub fn file(self, name: &str, path: &Path) -> Result<Self> {
        Ok(self.value(name, file_fingerprint(path)?))
    }

    /// Adds the fingerprint of a model or adapter directory ([`dir_fingerprint`]), or of a file.
    pub fn dir(self, name: &str, path: &Path) -> Result<Self> {
        Ok(self.value(name, path_fingerprint(path)?))
    }

    /// Adds [`dir`](Self::dir) of an optional path (`none` when absent).
    pub fn opt_dir(self, name: &str, path: Option<&Path>) -> Result<Self> {
        match path {
            Some(p) => self.dir(name, p),
            None => Ok(self.value(name, "none")),
        }
    }

    /// The inputs that differ from `old`, as `name old → new`.
    pub fn changes_from(&self, old: &Manifest) -> Vec<String> {
        let mut names: Vec<&String> = self.inputs.keys().chain(old.inputs.keys()).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .filter_map(|n| {
                let (a, b) = (old.inputs.get(n), self.inputs.get(n));
                (a != b).then(|| {
                    let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "(absent)".into());
                    format!("{n} {} → {}", show(a), show(b))
                })
            })
            .collect()
    }

    /// Starts or resumes `output`, whose progress lives in `journals`: with `overwrite` they and the
    /// manifest at `path` are removed first; journals without a manifest (from an older mmedpo)
    /// cannot be checked and are refused; then [`check`](Self::check).
    pub fn begin(
        &self,
        path: &Path,
        output: &Path,
        overwrite: bool,
        journals: &[&Path],
    ) -> Result<Prior> {
        if overwrite {
            for f in journals.iter().copied().chain([path]) {
                if f.is_file() {
                    std::fs::remove_file(f).map_err(|e| Error::io(f, e))?;
                }
            }
        } else if !path.is_file() {
            if let Some(j) = journals.iter().find(|j| j.is_file()) {
                return Err(Error::Stale {
                    path: output.to_path_buf(),
                    message: format!(
                        "{} without {} (from an older mmedpo?) cannot be checked against this \
                         run's inputs; pass --overwrite or choose another --out",
                        j.display(),
                        path.display()
                    ),
                });
            }
        }
        self.check(path, output, "pass --overwrite")
    }

    /// Compares with the manifest at `path` (written when absent). A different one is an error
    /// naming what changed and `output`, with the ways on: `start_over` (e.g. `pass --overwrite`)
    /// or another `--out`.
    pub fn check(&self, path: &Path, output: &Path, start_over: &str) -> Result<Prior> {
        let Ok(text) = std::fs::read_to_string(path) else {
            self.write(path)?;
            return Ok(Prior::Fresh);
        };
        let old: Manifest = serde_json::from_str(&text).map_err(|cause| Error::Json {
            path: path.to_path_buf(),
            cause,
        })?;
        let changes = self.changes_from(&old);
        if changes.is_empty() && old.command == self.command {
            return Ok(Prior::Same);
        }
        Err(Error::Stale {
            path: output.to_path_buf(),
            message: format!(
                "was made with other inputs ({}; recorded in {}): {start_over} to start it over, \
                 or choose another --out",
                if changes.is_empty() {
                    format!("command {} → {}", old.command, self.command)
                } else {
                    changes.join(", ")
                },
                path.display()
            ),
        })
    }

    /// Writes the manifest (through a temporary file and a rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::journal::write_json(path, self)
    }
}

/// An exclusive claim on an output (a folder or a file): `OUTPUT.lock` (inside a folder: `.lock`)
/// holding the owner's pid, removed on drop. A lock whose process is gone is taken over.
#[derive(Debug)]
pub struct OutLock {
    path: PathBuf,
}

impl OutLock {
    /// Claims `output`; a live other claimant is an error naming its pid.
    pub fn acquire(output: &Path) -> Result<Self> {
        let path = if output.is_dir() {
            output.join(".lock")
        } else {
            PathBuf::from(format!("{}.lock", output.display()))
        };
        // The claim appears whole: the pid is written to a file of this process's own, which is
        // then hard-linked to the lock name (the link fails if the lock exists), so another
        // process never sees a lock without its owner.
        let mine = PathBuf::from(format!("{}.{}", path.display(), std::process::id()));
        std::fs::write(&mine, format!("{}\n", std::process::id()))
            .map_err(|e| Error::io(&mine, e))?;
        let result = Self::claim(output, &path, &mine);
        let _ = std::fs::remove_file(&mine);
        result
    }

    fn claim(output: &Path, path: &Path, mine: &Path) -> Result<Self> {
        for _ in 0..3 {
            match std::fs::hard_link(mine, path) {
                Ok(()) => {
                    return Ok(Self {
                        path: path.to_path_buf(),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = std::fs::read_to_string(path).unwrap_or_default();
                    let pid: Option<u32> = owner.trim().parse().ok();
                    let alive = |p: u32| {
                        p != std::process::id() && Path::new(&format!("/proc/{p}")).exists()
                    };
                    if pid.map_or(!owner.is_empty(), alive) {
                        return Err(Error::Stale {
                            path: output.to_path_buf(),
                            message: format!(
                                "is being written by another mmedpo (pid {}, {}); wait for it to \
                                 finish or choose another --out",
                                owner.trim(),
                                path.display()
                            ),
                        });
                    }
                    // A stale lock (its process is gone): moved aside (one taker wins the rename),
                    // and put back if it turns out to be a live claim made in between.
                    let aside = PathBuf::from(format!("{}.stale", mine.display()));
                    if std::fs::rename(path, &aside).is_ok() {
                        let moved = std::fs::read_to_string(&aside).unwrap_or_default();
                        if moved != owner {
                            let _ = std::fs::hard_link(&aside, path);
                        }
                        let _ = std::fs::remove_file(&aside);
                    }
                }
                Err(e) => return Err(Error::io(path, e)),
            }
        }
        Err(Error::Stale {
            path: output.to_path_buf(),
            message: format!("could not claim {}", path.display()),
        })
    }
}

impl Drop for OutLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mmedpo-manifest-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_changed_input_is_named_with_both_values() {
        let d = tmp("m");
        let path = d.join("manifest.json");
        let m = Manifest::new("eval")
            .value("temperature", 0.2)
            .value("seed", 0);
        assert_eq!(
            m.check(&path, &d, "pass --overwrite").unwrap(),
            Prior::Fresh
        );
        assert_eq!(m.check(&path, &d, "pass --overwrite").unwrap(), Prior::Same);
        let other = Manifest::new("eval")
            .value("temperature", 0)
            .value("seed", 0);
        let e = other
            .check(&path, &d, "pass --overwrite")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("temperature 0.2 → 0") && e.contains("--overwrite"),
            "{e}"
        );
        let more = m.clone().option("adapter", Some("abc"));
        let e = more
            .check(&path, &d, "pass --overwrite")
            .unwrap_err()
            .to_string();
        assert!(e.contains("adapter (absent) → abc"), "{e}");
    }

    #[test]
    fn journals_without_a_manifest_are_refused_and_overwrite_clears_them() {
        let d = tmp("b");
        let (path, journal) = (d.join("manifest.json"), d.join("progress.jsonl"));
        std::fs::write(&journal, "{}\n").unwrap();
        let m = Manifest::new("visual-pairs").value("seed", 1);
        let e = m
            .begin(&path, &d, false, &[&journal])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("progress.jsonl without") && e.contains("--overwrite"),
            "{e}"
        );
        assert_eq!(m.begin(&path, &d, true, &[&journal]).unwrap(), Prior::Fresh);
        assert!(!journal.exists());
        assert_eq!(m.begin(&path, &d, false, &[&journal]).unwrap(), Prior::Same);
    }

    #[test]
    fn one_writer_per_output_and_stale_locks_are_taken_over() {
        let d = tmp("l");
        let lock = OutLock::acquire(&d).unwrap();
        std::fs::write(d.join(".lock"), "1\n").unwrap(); // pid 1 (init) is alive
        let e = OutLock::acquire(&d).unwrap_err().to_string();
        assert!(e.contains("another mmedpo (pid 1"), "{e}");
        std::fs::write(d.join(".lock"), "999999999\n").unwrap(); // no such process
        drop(lock);
        std::fs::write(d.join(".lock"), "999999999\n").unwrap();
        let again = OutLock::acquire(&d).unwrap();
        drop(again);
        assert!(!d.join(".lock").exists());
    }
}
