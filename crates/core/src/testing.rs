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
