//! `cargo xtask`: project automation. Depends on no workspace crate; shells out to `cargo`.
//!
//! * `cargo xtask train [--config PIPELINE.toml] [--cuda] [ARGS]`: `mmedpo pipeline` (Algorithm 1:
//!   text pairs → relevance → visual pairs → assemble → train → evaluation, ending with the
//!   base/MMedPO table). Without `--config`, the embedded default `models/tiny-llava/pipeline.toml`:
//!   random weights for `models/tiny-llava/config.json` (seed 0, drawn once into `out/tiny-llava`
//!   with the Mistral tokenizer beside them) on `data/default/`. ARGS go to `mmedpo pipeline`
//!   (`--ablations`, `--from STAGE`); `--cuda` builds with the `cuda` feature.
//! * `cargo xtask bench llm [ARGS]`: `mmedpo bench llm` (Flex, release) and, with `--torch`, the
//!   PyTorch reference `crates/llm/scripts/bench_torch.py` on the same config and machine
//!   (`MMEDPO_PYTHON` names the interpreter; default `python3`).
//! * `cargo xtask bench train [--torch] [--reps N] [ARGS]`: `mmedpo bench train ARGS` and, with
//!   `--torch`, `crates/dpo/scripts/bench_train_torch.py ARGS` (same config, pairs, LoRA targets,
//!   thread count), interleaved N times (default 3); prints each run's seconds per pair and
//!   phases, the medians and the ratio mmedpo / PyTorch. Without `--config`, bench-mid at T 256.
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
            eprintln!("usage: cargo xtask <train [--config PIPELINE.toml] [--cuda] [ARGS] | bench llm [--torch] [ARGS] | validate | goldens>");
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

/// `cargo xtask train [--config PIPELINE.toml] [ARGS]`: `mmedpo pipeline`; without `--config`, the
/// embedded default (its tiny model drawn once).
fn train(args: &[&str]) -> Result<()> {
    let cuda = args.windows(2).any(|w| w == ["--device", "cuda"]);
    if cuda {
        bail!("--device cuda: set `device = \"cuda\"` in the pipeline file (cargo xtask train --cuda builds with CUDA)");
    }
    let cuda = args.contains(&"--cuda");
    let args: Vec<&str> = args.iter().copied().filter(|a| *a != "--cuda").collect();
    if args.contains(&"--config") {
        return run(mmedpo(cuda).arg("pipeline").args(&args));
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
        .args(["pipeline", "--config", "models/tiny-llava/pipeline.toml"])
        .args(&args))
}

fn bench(args: &[&str]) -> Result<()> {
    if let Some((&"train", rest)) = args.split_first() {
        return bench_train(rest);
    }
    let Some((&"llm", rest)) = args.split_first() else {
        bail!("usage: cargo xtask bench <llm|train> [--torch] [ARGS]");
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

/// One figure of a benchmark's JSON line: `"key": number`, searched as text (xtask depends on no
/// JSON crate).
fn json_number(text: &str, key: &str) -> Option<f64> {
    let at = text.rfind(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = text[at..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn captured(cmd: &mut Command) -> Result<String> {
    eprintln!("$ {cmd:?}");
    let out = cmd
        .current_dir(root())
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("starting {cmd:?}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    print!(
        "{}",
        text.lines()
            .filter(|l| !l.starts_with('{'))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    );
    if !out.status.success() {
        bail!("{cmd:?} failed with {}", out.status);
    }
    Ok(text)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `cargo xtask bench train [--torch] [--reps N] [ARGS]`.
fn bench_train(args: &[&str]) -> Result<()> {
    let torch = args.contains(&"--torch");
    let mut reps = 3usize;
    let mut pass: Vec<String> = vec![];
    let mut it = args.iter().copied().filter(|a| *a != "--torch");
    while let Some(a) = it.next() {
        if a == "--reps" {
            reps = it
                .next()
                .and_then(|n| n.parse().ok())
                .filter(|n| *n > 0)
                .context("--reps needs a positive number")?;
        } else {
            pass.push(a.to_string());
        }
    }
    if !pass.iter().any(|a| a == "--config") {
        pass.extend(["--config", "models/bench-mid/config.json"].map(String::from));
    }
    // The PyTorch script takes the shared options only.
    let shared = [
        "--config",
        "--seq-len",
        "--answer-len",
        "--steps",
        "--batch",
        "--lora-r",
    ];
    let mut torch_args: Vec<String> = vec![];
    let mut i = 0;
    while i < pass.len() {
        if shared.contains(&pass[i].as_str()) && i + 1 < pass.len() {
            torch_args.extend([pass[i].clone(), pass[i + 1].clone()]);
            i += 2;
        } else {
            i += 1;
        }
    }
    run(cargo().args(["build", "--release", "-q", "-p", "mmedpo-runner"]))?;
    let target =
        std::env::var("CARGO_TARGET_DIR").map_or_else(|_| root().join("target"), PathBuf::from);
    let bin = target.join("release/mmedpo");
    let phases = [
        "tower_s",
        "policy_forward_s",
        "reference_forward_s",
        "backward_s",
        "optimizer_s",
    ];
    let (mut ours, mut theirs) = (vec![], vec![]);
    let (mut our_phases, mut their_phases) =
        (vec![vec![]; phases.len()], vec![vec![]; phases.len()]);
    for rep in 1..=reps {
        eprintln!("== rep {rep}/{reps}");
        let text = captured(Command::new(&bin).args(["bench", "train"]).args(&pass))?;
        ours.push(
            json_number(&text, "s_per_pair").context("mmedpo bench train printed no s_per_pair")?,
        );
        for (p, v) in phases.iter().zip(our_phases.iter_mut()) {
            v.extend(json_number(&text, p));
        }
        if torch {
            let text = captured(
                python()
                    .arg("crates/dpo/scripts/bench_train_torch.py")
                    .args(&torch_args),
            )?;
            theirs.push(
                json_number(&text, "s_per_pair")
                    .context("the PyTorch script printed no s_per_pair")?,
            );
            for (p, v) in phases.iter().zip(their_phases.iter_mut()) {
                v.extend(json_number(&text, p));
            }
        }
    }
    let show = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.3}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("== bench train {}: {} reps", pass.join(" "), reps);
    println!(
        "mmedpo  s/pair: {}  median {:.3}",
        show(&ours),
        median(&mut ours.clone())
    );
    if torch {
        println!(
            "PyTorch s/pair: {}  median {:.3}",
            show(&theirs),
            median(&mut theirs.clone())
        );
        let ratios: Vec<f64> = ours.iter().zip(&theirs).map(|(a, b)| a / b).collect();
        println!(
            "ratio mmedpo / PyTorch: median {:.2} (per rep {})",
            median(&mut ours.clone()) / median(&mut theirs.clone()),
            show(&ratios)
        );
    }
    // On the CPU mmedpo runs the reference forward beside the policy's (its own phase is then 0):
    // a row of the two forwards together compares like with like.
    let forwards =
        |p: &[Vec<f64>]| -> Vec<f64> { p[1].iter().zip(&p[2]).map(|(a, b)| a + b).collect() };
    let (f_ours, f_theirs) = (forwards(&our_phases), forwards(&their_phases));
    our_phases.push(f_ours);
    their_phases.push(f_theirs);
    let phases = [&phases[..], &["policy+reference forwards"]].concat();
    println!(
        "phase medians, s/pair ({}):",
        if torch { "mmedpo / PyTorch" } else { "mmedpo" }
    );
    for (i, p) in phases.iter().enumerate() {
        let ours = if our_phases[i].is_empty() {
            f64::NAN
        } else {
            median(&mut our_phases[i])
        };
        if torch && !their_phases[i].is_empty() {
            println!(
                "  {:<26} {ours:.3} / {:.3}",
                p.trim_end_matches("_s"),
                median(&mut their_phases[i])
            );
        } else {
            println!("  {:<26} {ours:.3}", p.trim_end_matches("_s"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::json_number;

    #[test]
    fn json_numbers_are_found_by_key() {
        let line = r#"{"s_per_pair": 2.5, "phases": {"tower_s": 1e-3, "backward_s": 0.75}, "min_s_per_pair":2}"#;
        assert_eq!(json_number(line, "s_per_pair"), Some(2.5));
        assert_eq!(json_number(line, "tower_s"), Some(1e-3));
        assert_eq!(json_number(line, "backward_s"), Some(0.75));
        assert_eq!(json_number(line, "min_s_per_pair"), Some(2.0));
        assert_eq!(json_number(line, "loss"), None);
    }
}
