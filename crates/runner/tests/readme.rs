//! Every `bash` block of README.md works as written.
//!
//! Blocks of `cargo` commands only (the main job, the tests, the build) must each appear as a line
//! of `.ci/run`, which runs them. Every other block is run, in README order, by bash in one scratch
//! copy of the repository (`models/`, `data/`, `docs/` copied, `crates/` and `scripts/` linked, an
//! empty `out/`), with `mmedpo` (and `cargo run --release -p mmedpo-runner --`) being the binary
//! these tests built; each must exit 0.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

mod common;
use common::{root, tmp};

/// The ```bash blocks of the README, in order.
fn bash_blocks(readme: &str) -> Vec<String> {
    let mut blocks = vec![];
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```bash") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), l) => {
                block.push_str(l);
                block.push('\n');
            }
            _ => {}
        }
    }
    assert!(current.is_none(), "README.md: an unclosed ```bash block");
    blocks
}

/// The commands of a block: comment and blank lines dropped, `\` continuations joined.
fn commands(block: &str) -> Vec<String> {
    let mut out = vec![];
    let mut pending = String::new();
    for line in block.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let command = line.split(" #").next().unwrap_or(line).trim();
        match command.strip_suffix('\\') {
            Some(head) => pending.push_str(&format!("{} ", head.trim())),
            None => {
                pending.push_str(command);
                out.push(std::mem::take(&mut pending));
            }
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let dest = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &dest);
        } else {
            std::fs::copy(&path, &dest).unwrap();
        }
    }
}

/// A scratch copy of the repository for the README's commands.
fn scratch() -> PathBuf {
    let dir = tmp("readme");
    for d in ["models", "data", "docs"] {
        copy_dir(&root().join(d), &dir.join(d));
    }
    for d in ["crates", "scripts"] {
        std::os::unix::fs::symlink(root().join(d).canonicalize().unwrap(), dir.join(d)).unwrap();
    }
    std::fs::create_dir(dir.join("out")).unwrap();
    dir
}

const PRELUDE: &str = r#"set -euo pipefail
mmedpo() { "$MMEDPO_BIN" "$@"; }
cargo() {
  if [ "$#" -ge 5 ] && [ "$1 $2 $3 $4 $5" = "run --release -p mmedpo-runner --" ]; then
    shift 5; mmedpo "$@"
  else
    echo "README test: this block runs cargo $*, which only .ci/run may run" >&2; return 1
  fi
}
"#;

#[test]
fn every_bash_block_of_the_readme_runs_as_written() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    let ci_lines: Vec<&str> = ci.lines().map(str::trim).collect();
    let blocks = bash_blocks(&readme);
    assert!(
        blocks.len() >= 8,
        "README.md has {} bash blocks",
        blocks.len()
    );
    let dir = scratch();
    let (mut by_ci, mut run) = (0, 0);
    for block in &blocks {
        let cmds = commands(block);
        assert!(
            !cmds.is_empty(),
            "an empty bash block in README.md:\n{block}"
        );
        let cargo_only = cmds.iter().all(|c| {
            c.starts_with("cargo ") && !c.starts_with("cargo run --release -p mmedpo-runner --")
        });
        if cargo_only {
            for c in &cmds {
                assert!(
                    ci_lines.contains(&c.as_str()),
                    "README.md's `{c}` is not run by .ci/run"
                );
                by_ci += 1;
            }
            continue;
        }
        let start = Instant::now();
        let out = Command::new("timeout")
            .args(["600", "bash", "-c", &format!("{PRELUDE}{block}")])
            .env("MMEDPO_BIN", env!("CARGO_BIN_EXE_mmedpo"))
            .env("RUST_LOG", "warn")
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "README.md block failed ({}):\n{block}\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        run += cmds.len();
        println!("{:5.1} s  {}", start.elapsed().as_secs_f64(), cmds[0]);
    }
    println!("{run} README command(s) run here, {by_ci} checked to be run by .ci/run");
    assert!(run >= 15 && by_ci == 4, "run {run}, by .ci/run {by_ci}");
    // What the blocks promise exists.
    for f in [
        "out/default-run/adapter/adapter_model.safetensors",
        "out/tiny-llava-mmedpo/model.safetensors",
        "out/eval-mmedpo/metrics.json",
        "out/train.json",
        "out/llava-med-safetensors/model.safetensors.index.json",
    ] {
        assert!(
            dir.join(f).is_file(),
            "{f} missing after the README's commands"
        );
    }
}

#[test]
fn block_parsing_joins_continuations_and_drops_comments() {
    let b =
        "# a comment\nmmedpo a \\\n    --b c\n\ncargo test --release --workspace   # trailing\n";
    assert_eq!(
        commands(b),
        vec!["mmedpo a --b c", "cargo test --release --workspace"]
    );
    assert_eq!(
        bash_blocks("x\n```bash\nls\n```\n```text\nno\n```\n"),
        vec!["ls\n"]
    );
}
