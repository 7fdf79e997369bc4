//! Test helpers (feature `testing`, and core's own tests).

use std::path::{Path, PathBuf};

/// The folder of the MMedPO preference files the project's tests read but may not commit:
/// `$MMEDPO_SHARED_DIR/data`, else `../shared/data` beside the workspace. Returns `None` (after
/// saying so) only when it is missing and `MMEDPO_ALLOW_NO_SHARED` is set; otherwise a missing
/// folder fails the test, so no check is skipped silently.
pub fn shared_data_dir() -> Option<PathBuf> {
    let shared = std::env::var_os("MMEDPO_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    let data = shared.join("data");
    if data.is_dir() {
        return Some(data);
    }
    if std::env::var_os("MMEDPO_ALLOW_NO_SHARED").is_some() {
        eprintln!(
            "NOTICE: {} not found; MMEDPO_ALLOW_NO_SHARED is set, shared-data check NOT run",
            data.display()
        );
        return None;
    }
    panic!(
        "{} not found: set MMEDPO_SHARED_DIR to the folder holding data/*_dpo_weighted.json",
        data.display()
    );
}
