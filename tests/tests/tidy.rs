//! Tidy checks that keep ARCHITECTURE.md and the code true to each other (rust-analyzer's
//! `xtask/src/tidy.rs` in spirit):
//! * every crate under `crates/` has a `### crates/NAME` code-map heading, and every heading names a
//!   crate that exists; the file fits one screen;
//! * workspace crates depend downward only (the allowed edges are the constant below);
//! * every `.rs` file starts with a `//!` doc comment; no should-panic tests; library crates deny
//!   missing docs;
//! * the runner (the `mmedpo` program) is only its command line: it depends on the `mmedpo`
//!   library alone and its sources stay short.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    // Cargo sets CARGO_MANIFEST_DIR when it runs the test too: prefer that to the compile-time
    // value, so a binary reused from a build of another checkout still checks this one.
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into()))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// Allowed dependency edges between workspace packages (`from`, `to`), short names without the
/// `mmedpo-` prefix. Everything not listed is a violation.
const ALLOWED_EDGES: &[(&str, &str)] = &[
    ("llm", "core"),
    ("llm", "lora"),
    ("lvlm", "lora"),
    ("vision", "core"),
    ("lora", "core"),
    ("lvlm", "core"),
    ("lvlm", "llm"),
    ("lvlm", "vision"),
    ("dpo", "core"),
    ("dpo", "lvlm"),
    ("dpo", "lora"),
    ("dpo", "llm"),
    ("curation", "core"),
    ("curation", "scorer"),
    ("curation", "llm"),
    ("curation", "lvlm"),
    ("scorer", "core"),
    ("scorer", "llm"),
    ("medklip", "core"),
    ("medklip", "vision"),
    ("eval", "core"),
    ("mmedpo", "*"),
    ("runner", "mmedpo"),
];

/// The `mmedpo` program is command-line arguments, printing and plots on top of the `mmedpo`
/// library: its sources stay under this many lines.
const RUNNER_LINES: usize = 1_500;

const SCREEN_LINES: usize = 100;

fn crate_dirs() -> BTreeSet<String> {
    std::fs::read_dir(root().join("crates"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn architecture_code_map_names_exactly_the_crates() {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let headings: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("### crates/"))
        .map(|s| {
            s.trim()
                .trim_end_matches('/')
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    let crates = crate_dirs();
    let unmapped: Vec<_> = crates.difference(&headings).collect();
    let stale: Vec<_> = headings.difference(&crates).collect();
    assert!(
        unmapped.is_empty(),
        "crates without a `### crates/NAME` heading in ARCHITECTURE.md: {unmapped:?}"
    );
    assert!(
        stale.is_empty(),
        "ARCHITECTURE.md maps crates that do not exist: {stale:?}"
    );
    let lines = text.lines().count();
    assert!(
        lines <= SCREEN_LINES,
        "ARCHITECTURE.md has {lines} lines; keep it to one screen ({SCREEN_LINES})"
    );
}

#[test]
fn crates_depend_downward_only() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = meta["packages"].as_array().unwrap();
    let ours: BTreeSet<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let mut violations = vec![];
    for p in packages {
        let from = p["name"].as_str().unwrap();
        for d in p["dependencies"].as_array().unwrap() {
            let to = d["name"].as_str().unwrap();
            if !ours.contains(to) || d["kind"].as_str() == Some("dev") {
                continue;
            }
            let (f, t) = (
                from.trim_start_matches("mmedpo-"),
                to.trim_start_matches("mmedpo-"),
            );
            if !ALLOWED_EDGES
                .iter()
                .any(|&(a, b)| a == f && (b == t || b == "*"))
            {
                violations.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "dependency edges not in ALLOWED_EDGES (tests/tests/tidy.rs): {violations:?}"
    );
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if p.is_dir() && name != "target" && !name.starts_with('.') {
            rust_files(&p, out);
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_rust_file_starts_with_a_module_doc_and_nothing_should_panic() {
    let mut files = vec![];
    for d in ["crates", "tests", "xtask"] {
        rust_files(&root().join(d), &mut files);
    }
    assert!(files.len() > 10);
    let mut bad = vec![];
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        if !text.starts_with("//!") {
            bad.push(format!(
                "{}: does not start with a `//!` doc comment",
                f.display()
            ));
        }
        let should_panic = ["#[should", "_panic"].concat();
        if text.contains(&should_panic) {
            bad.push(format!(
                "{}: uses {should_panic}; assert on the Err value instead",
                f.display()
            ));
        }
    }
    for c in crate_dirs() {
        let lib = root().join("crates").join(&c).join("src/lib.rs");
        if lib.is_file()
            && !std::fs::read_to_string(&lib)
                .unwrap()
                .contains("#![deny(missing_docs)]")
        {
            bad.push(format!(
                "{}: library crates carry #![deny(missing_docs)]",
                lib.display()
            ));
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn the_runner_is_only_its_command_line() {
    let mut files = vec![];
    rust_files(&root().join("crates/runner/src"), &mut files);
    let lines: usize = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap().lines().count())
        .sum();
    assert!(
        lines <= RUNNER_LINES,
        "crates/runner/src has {lines} lines (limit {RUNNER_LINES}): stage logic belongs in the \
         `mmedpo` library (crates/mmedpo), the runner keeps arguments, printing and plots"
    );
}
