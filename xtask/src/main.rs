//! `cargo xtask`: project automation. Depends on no workspace crate; shells out to `cargo`.
//!
//! * `cargo xtask train [--config FILE] [ARGS]`: `mmedpo train`. Without `--config`, the embedded
//!   default: random weights for `models/tiny-llava/config.json` (seed 0, drawn once into
//!   `out/tiny-llava` with the Mistral tokenizer beside them) trained on `data/default/pairs.json` with `models/tiny-llava/train.toml`.
//!   `--device cuda` builds with the `cuda` feature.
//! * `cargo xtask bench llm [ARGS]`: `mmedpo bench llm` (Flex, release) and, with `--torch`, the
//!   PyTorch reference `crates/llm/scripts/bench_torch.py` on the same config and machine
//!   (`MMEDPO_PYTHON` names the interpreter; default `python3`).
//! * `cargo xtask validate`: fmt check, clippy, tests (the CI sequence).
//! * `cargo xtask goldens`: reruns the Python golden scripts (needs torch/transformers; see
//!   docs/goldens.md).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {cmd:?}");
    let status = cmd
        .current_dir(root())
        .status()
        .with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn python() -> Command {
    Command::new(std::env::var("MMEDPO_PYTHON").unwrap_or_else(|_| "python3".into()))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    match args.first().map(String::as_str) {
        Some("train") => train(&rest),
        Some("bench") => bench(&rest),
        Some("validate") => {
            run(cargo().args(["fmt", "--all", "--check"]))?;
            run(cargo().args([
                "clippy",
                "--release",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))?;
            run(cargo().args(["test", "--release", "--workspace"]))
        }
        Some("goldens") => {
            // In dependency order: the sample feeds the tokenizer and WordNet goldens, the lvlm
            // fixtures use the llm/vision ones, dpo uses lvlm's.
            for script in [
                "data/released-sample/make_sample.py",
                "crates/llm/tests/golden/make_llm_goldens.py",
                "crates/llm/tests/golden/make_tokenizer_goldens.py",
                "crates/llm/tests/golden/make_chat_goldens.py",
                "crates/vision/tests/golden/make_vision_goldens.py",
                "crates/lvlm/tests/golden/make_llava_goldens.py",
                "crates/dpo/tests/golden/make_dpo_goldens.py",
                "crates/eval/tests/golden/make_eval_goldens.py",
                "crates/eval/tests/golden/make_wordnet_subset.py",
                "scripts/tests/make_bin_fixtures.py",
                "crates/medklip/fixture/make_tiny_medklip.py",
            ] {
                run(python().arg(script))?;
            }
            Ok(())
        }
        _ => {
            eprintln!("usage: cargo xtask <train [--config FILE] [ARGS] | bench llm [--torch] [ARGS] | validate | goldens>");
            std::process::exit(2);
        }
    }
}

fn mmedpo(cuda: bool) -> Command {
    let mut c = cargo();
    c.args(["run", "--release", "-q", "-p", "mmedpo-runner"]);
    if cuda {
        c.args(["--features", "cuda"]);
    }
    c.arg("--");
    c
}

fn train(args: &[&str]) -> Result<()> {
    let cuda = args.windows(2).any(|w| w == ["--device", "cuda"]);
    if args.contains(&"--config") {
        return run(mmedpo(cuda).arg("train").args(args));
    }
    let model = root().join("out/tiny-llava");
    if !model.join("model.safetensors").is_file() || !model.join("tokenizer.json").is_file() {
        run(mmedpo(cuda).args([
            "init-model",
            "--config",
            "models/tiny-llava/config.json",
            "--seed",
            "0",
            "--tokenizer",
            "models/mistral-tokenizer/tokenizer.json",
            "--out",
            "out/tiny-llava",
        ]))?;
    }
    run(mmedpo(cuda)
        .args(["train", "--config", "models/tiny-llava/train.toml"])
        .args(args))
}

fn bench(args: &[&str]) -> Result<()> {
    let Some((&"llm", rest)) = args.split_first() else {
        bail!("usage: cargo xtask bench llm [--torch] [mmedpo bench llm ARGS]");
    };
    let torch = rest.contains(&"--torch");
    let pass: Vec<&str> = rest.iter().copied().filter(|a| *a != "--torch").collect();
    run(cargo()
        .args([
            "run",
            "--release",
            "-q",
            "-p",
            "mmedpo-runner",
            "--",
            "bench",
            "llm",
        ])
        .args(&pass))?;
    if torch {
        run(python()
            .arg("crates/llm/scripts/bench_torch.py")
            .args(&pass))?;
    }
    Ok(())
}
