//! Test helpers (feature `testing`, and core's own tests).
//!
//! Tests that read the MMedPO preference files run on the committed sample
//! (`data/released-sample`: every 20th item of each released file, see its SOURCE.md) in every
//! clone, and on the full released files as well when they are beside the clone. Which data a
//! test used is written to the test process's stderr past the test harness's capture, so it shows
//! in a plain `cargo test` run: no check is skipped silently.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The workspace root (two folders above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One set of the released preference files.
#[derive(Debug, Clone)]
pub struct ReleasedData {
    /// `sample` or `full`.
    pub label: &'static str,
    /// The folder holding `*_dpo_weighted.json`.
    pub dir: PathBuf,
    /// Item `k` of a file here is item `k * stride` of the released file (1 for the full files).
    pub stride: usize,
}

/// Every `stride`-th item of the released files is in the committed sample.
pub const SAMPLE_STRIDE: usize = 20;

/// Writes a line to the test process's stderr directly: libtest captures `println!`/`eprintln!`
/// of passing tests, not writes to the stream itself, so this shows in a plain `cargo test`.
pub fn notice(message: &str) {
    let _ = writeln!(std::io::stderr(), "NOTICE: {message}");
}

/// The committed sample, always; then the full released files when `$MMEDPO_SHARED_DIR/data` (or
/// `../shared/data` beside the workspace) holds them. Says which were found.
pub fn released_data(test: &str) -> Vec<ReleasedData> {
    let mut out = vec![ReleasedData {
        label: "sample",
        dir: workspace_root().join("data/released-sample"),
        stride: SAMPLE_STRIDE,
    }];
    match full_released_dir() {
        Some(dir) => {
            notice(&format!(
                "{test}: the committed sample and the full released files in {}",
                dir.display()
            ));
            out.push(ReleasedData {
                label: "full",
                dir,
                stride: 1,
            });
        }
        None => notice(&format!(
            "{test}: the committed sample only; the full released files are not beside this clone \
             (../shared/data or $MMEDPO_SHARED_DIR/data), so their check did not run"
        )),
    }
    out
}

/// The folder of the full released files, if present.
pub fn full_released_dir() -> Option<PathBuf> {
    let shared = std::env::var_os("MMEDPO_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared"));
    let data = shared.join("data");
    data.join("vqa-rad_dpo_weighted.json")
        .is_file()
        .then(|| data.canonicalize().unwrap_or(data))
}

/// A scratch path `TMP/{prefix}-{pid}-{name}` for this test process (removed first, not
/// created). The first call for a prefix also removes what earlier test processes left under
/// `TMP/{prefix}-{pid}-*` when that process is gone (Linux: no `/proc/{pid}`), so repeated test runs
/// do not fill the disk with old model copies.
pub fn scratch(prefix: &str, name: &str) -> PathBuf {
    static SWEPT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let tmp = std::env::temp_dir();
    let mut swept = SWEPT.lock().unwrap_or_else(|e| e.into_inner());
    if !swept.iter().any(|p| p == prefix) {
        swept.push(prefix.to_string());
        if Path::new("/proc/self").exists() {
            for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
                let file = entry.file_name().to_string_lossy().into_owned();
                let Some(rest) = file.strip_prefix(&format!("{prefix}-")) else {
                    continue;
                };
                let pid = rest.split('-').next().unwrap_or_default();
                let gone = pid.parse::<u32>().is_ok_and(|p| {
                    p != std::process::id() && !Path::new(&format!("/proc/{p}")).exists()
                });
                if gone {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }
    let d = tmp.join(format!("{prefix}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[cfg(test)]
mod scratch_tests {
    #[test]
    fn scratch_sweeps_what_dead_processes_left_and_keeps_the_living() {
        let tmp = std::env::temp_dir();
        // Pid 0x7ffffffe does not run on Linux (pid_max is at most 2^22).
        let dead = tmp.join("mmedpo-sweeptest-2147483646-x");
        let alive = tmp.join(format!("mmedpo-sweeptest-{}-y", std::process::id()));
        for d in [&dead, &alive] {
            std::fs::create_dir_all(d).unwrap();
        }
        let mine = super::scratch("mmedpo-sweeptest", "z");
        assert!(mine.ends_with(format!("mmedpo-sweeptest-{}-z", std::process::id())));
        assert!(alive.exists());
        assert_eq!(dead.exists(), !std::path::Path::new("/proc/self").exists());
        let _ = std::fs::remove_dir_all(&dead);
        std::fs::remove_dir_all(&alive).unwrap();
    }
}
