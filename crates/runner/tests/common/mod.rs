//! Helpers shared by the command-line tests: run the `mmedpo` binary from the repository root,
//! fresh temporary folders, stderr as text.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh, empty folder for this test process.
pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mmedpo-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `mmedpo ARGS` in the repository root (logs at warn level).
pub fn mmedpo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mmedpo"))
        .args(args)
        .env("RUST_LOG", "warn")
        .current_dir(root())
        .output()
        .unwrap()
}

/// The process's stderr.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
