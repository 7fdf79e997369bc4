//! `mmedpo pipeline`: Algorithm 1 of the paper from one TOML file.
//!
//! Stages, each in its own folder under `out`: `text` (curate-text), `relevance` (score-relevance),
//! `visual` (visual-pairs), `assemble`, `train`, `eval-base` and `eval` (the base and the aligned
//! model on the test set), then `summary.md` and `summary.json`. A stage's section holds the flags
//! of its subcommand (`mmedpo <subcommand> --help`; key `foo_bar` = `--foo-bar`, `true` = a bare
//! flag, an array = the flag repeated); the pipeline sets the flags that wire the stages together
//! (`data`, `out`, `model`, ...) and refuses them in a section. Paths are relative to the file.
//!
//! A stage records what determines it (`stage.json`: the subcommand's flags without its output,
//! the fingerprints of the files and models they name, the stamps of the stages it reads) when it
//! starts, and again as `done.json` when it ends with no failed item. A rerun skips a stage whose
//! `done.json` matches, resumes one whose `stage.json` matches (through the subcommand's own
//! journals and checkpoints, so a killed run ends with the files of an uninterrupted one), and
//! starts over one whose inputs changed, saying what changed; `--from STAGE` starts over from
//! STAGE. Ablation variants (`--ablations`) reuse the main run's stage folders where their inputs
//! are the same.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, ValueEnum};
use mmedpo_core::journal::write_json;
use mmedpo_core::manifest::{path_fingerprint, Manifest, OutLock};
use mmedpo_core::record::fingerprint;
use serde::Deserialize;

/// Arguments of `mmedpo pipeline`.
#[derive(Args, Debug)]
pub struct PipelineArgs {
    /// Pipeline TOML (e.g. models/tiny-llava/pipeline.toml; docs/pipeline.md).
    #[arg(long)]
    config: PathBuf,
    /// Start over from this stage; the stages before it must be current.
    #[arg(long, value_enum)]
    from: Option<Stage>,
    /// Also run the ablation presets (the paper's Tables 2–4, 8, 9) and write OUT/ablations.md.
    #[arg(long)]
    ablations: bool,
}

/// The stages, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Stage {
    /// Text pairs (`curate-text`).
    Text,
    /// Clinical-relevance weights (`score-relevance`).
    Relevance,
    /// Visual pairs (`visual-pairs`).
    Visual,
    /// One training file (`assemble`).
    Assemble,
    /// Weighted DPO (`train`).
    Train,
    /// The base model on the test set (`eval`).
    EvalBase,
    /// The aligned model on the test set (`eval --adapter`).
    Eval,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Text => "text",
            Stage::Relevance => "relevance",
            Stage::Visual => "visual",
            Stage::Assemble => "assemble",
            Stage::Train => "train",
            Stage::EvalBase => "eval-base",
            Stage::Eval => "eval",
        }
    }
}

fn default_template() -> String {
    "vicuna_v1".into()
}
fn default_device() -> String {
    "cpu".into()
}
fn default_dtype() -> String {
    "f32".into()
}

/// The pipeline file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Output folder (one folder per stage).
    pub out: PathBuf,
    /// LLaVA model directory (the target Med-LVLM, trained with LoRA).
    pub model: PathBuf,
    /// Separate CLIP tower directory.
    #[serde(default)]
    pub vision_tower: Option<PathBuf>,
    /// tokenizer.json (default MODEL/tokenizer.json).
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// Items (image, question, ground truth) in the MMedPO format; without a judge in `[text]`
    /// they must be text pairs already (rejected answers, and weights without `[relevance]` agents).
    pub data: PathBuf,
    /// Image folder of `data` and `test`.
    pub image_root: PathBuf,
    /// Test set of the evaluation.
    pub test: PathBuf,
    /// `vqa` or `report`.
    pub task: String,
    /// Conversation template.
    #[serde(default = "default_template")]
    pub template: String,
    /// cpu | cuda.
    #[serde(default = "default_device")]
    pub device: String,
    /// f32 | bf16.
    #[serde(default = "default_dtype")]
    pub dtype: String,
    /// `curate-text` flags; without `judge` the data's own rejected answers are the text pairs.
    #[serde(default)]
    pub text: toml::Table,
    /// `score-relevance` flags; without `agent` / `agents_file` the pairs keep their weights.
    #[serde(default)]
    pub relevance: toml::Table,
    /// `visual-pairs` flags; `enabled = false` leaves the stage out.
    #[serde(default)]
    pub visual: toml::Table,
    /// `assemble` flags; `use = ["text", "visual"]` names the pairs trained on.
    #[serde(default)]
    pub assemble: toml::Table,
    /// `train` flags; `config = "train.toml"` for the settings that have no flag.
    #[serde(default)]
    pub train: toml::Table,
    /// `eval` flags (both evaluations).
    #[serde(default)]
    pub eval: toml::Table,
}

/// Flags that take a path (rebased on the pipeline file's folder).
const PATH_FLAGS: &[&str] = &[
    "prompts",
    "agents_file",
    "medklip_weights",
    "wordnet",
    "config",
];

/// `folder/p` made absolute, with `.` and `..` resolved on the text (the path need not exist).
fn absolute(folder: &Path, p: &Path) -> PathBuf {
    let joined = std::path::absolute(folder.join(p)).unwrap_or_else(|_| folder.join(p));
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// Reads and checks a pipeline file; paths become absolute, relative to the file's folder.
pub fn load(path: &Path) -> Result<PipelineConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut c: PipelineConfig = toml::from_str(&text).map_err(|e| {
        // A `mmedpo train` file given here is named as one.
        let train = toml::from_str::<toml::Table>(&text).is_ok_and(|t| {
            ["lora", "dpo", "optim"].iter().any(|k| t.contains_key(*k)) && !t.contains_key("test")
        });
        let hint = if train {
            "\n(this looks like a `mmedpo train` file: run it with `mmedpo train --config`, or name it \
             in a pipeline file's [train] config = \"...\"; see models/tiny-llava/pipeline.toml)"
        } else {
            ""
        };
        anyhow::anyhow!("{}: {e}{hint}", path.display())
    })?;
    let folder = path.parent().unwrap_or(Path::new("")).to_path_buf();
    let abs = |p: &Path| absolute(&folder, p);
    for p in [
        &mut c.out,
        &mut c.model,
        &mut c.data,
        &mut c.image_root,
        &mut c.test,
    ] {
        *p = abs(p);
    }
    for p in [&mut c.vision_tower, &mut c.tokenizer]
        .into_iter()
        .flatten()
    {
        *p = abs(p);
    }
    if !["vqa", "report"].contains(&c.task.as_str()) {
        bail!(
            "{}: task = {:?}: expected \"vqa\" or \"report\"",
            path.display(),
            c.task
        );
    }
    for section in [
        &mut c.text,
        &mut c.relevance,
        &mut c.visual,
        &mut c.assemble,
        &mut c.train,
        &mut c.eval,
    ] {
        rebase(section, &folder);
    }
    if let Some(v) = c.visual.get("enabled") {
        if !v.is_bool() {
            bail!(
                "{}: [visual] enabled = {v}: expected true or false",
                path.display()
            );
        }
    }
    let used = uses(&c).map_err(|e| anyhow::anyhow!("{}: [assemble] use: {e}", path.display()))?;
    if used.is_empty() {
        bail!(
            "{}: [assemble] use is empty: train on \"text\", \"visual\" or both",
            path.display()
        );
    }
    Ok(c)
}

/// Path flags of a section become absolute; `local=DIR` agents and judges too.
fn rebase(section: &mut toml::Table, folder: &Path) {
    let fix = |s: &str| -> String { absolute(folder, Path::new(s)).display().to_string() };
    for (key, value) in section.iter_mut() {
        let key = key.replace('-', "_");
        let path_flag = PATH_FLAGS.contains(&key.as_str());
        let agent = key == "agent" || key == "judge";
        let mut one = |v: &mut toml::Value| {
            if let toml::Value::String(s) = v {
                if path_flag {
                    *s = fix(s);
                } else if agent {
                    if let Some(dir) = s.strip_prefix("local=") {
                        *s = format!("local={}", fix(dir));
                    }
                }
            }
        };
        match value {
            toml::Value::Array(a) => a.iter_mut().for_each(&mut one),
            v => one(v),
        }
    }
}

/// `[visual] enabled` (default true).
fn visual_enabled(c: &PipelineConfig) -> bool {
    c.visual.get("enabled").and_then(|v| v.as_bool()) != Some(false)
}

/// `[assemble] use`: which pairs are trained on (default: text, and visual unless disabled).
fn uses(c: &PipelineConfig) -> std::result::Result<BTreeSet<String>, String> {
    let visual_on = visual_enabled(c);
    match c.assemble.get("use") {
        None => Ok(if visual_on {
            ["text", "visual"].map(String::from).into()
        } else {
            ["text".to_string()].into()
        }),
        Some(toml::Value::Array(a)) => a
            .iter()
            .map(|v| match v.as_str() {
                Some(s @ ("text" | "visual")) => {
                    if s == "visual" && !visual_on {
                        Err("\"visual\" with [visual] enabled = false".to_string())
                    } else {
                        Ok(s.to_string())
                    }
                }
                _ => Err(format!("{v}: expected \"text\" or \"visual\"")),
            })
            .collect(),
        Some(v) => Err(format!(
            "{v}: expected a list such as [\"text\", \"visual\"]"
        )),
    }
}

/// A section's flags as command-line arguments; `skip` keys are the pipeline's own settings.
fn flags(section: &toml::Table, name: &str, wired: &[&str], skip: &[&str]) -> Result<Vec<String>> {
    let mut out = vec![];
    for (key, value) in section {
        let k = key.replace('-', "_");
        if skip.contains(&k.as_str()) {
            continue;
        }
        if wired.contains(&k.as_str()) {
            bail!("[{name}] {key}: set by the pipeline (from its top-level settings or the stage before)");
        }
        let flag = format!("--{}", k.replace('_', "-"));
        let values: Vec<&toml::Value> = match value {
            toml::Value::Array(a) => a.iter().collect(),
            v => vec![v],
        };
        for v in values {
            match v {
                toml::Value::Boolean(true) => out.push(flag.clone()),
                toml::Value::Boolean(false) => {}
                toml::Value::String(s) => out.extend([flag.clone(), s.clone()]),
                toml::Value::Integer(i) => out.extend([flag.clone(), i.to_string()]),
                toml::Value::Float(f) => out.extend([flag.clone(), f.to_string()]),
                other => bail!("[{name}] {key} = {other}: not a flag value (a string, number, boolean or a list of them)"),
            }
        }
    }
    Ok(out)
}

/// What a stage made: the file the next stages read, and a stamp of everything that determines it.
#[derive(Debug, Clone)]
struct Product {
    path: PathBuf,
    stamp: String,
}

/// One stage to run: its subcommand and arguments without `--out`, and where the output lands
/// inside the stage folder.
struct Step {
    stage: Stage,
    command: &'static str,
    args: Vec<String>,
    /// `--out` relative to the stage folder (`""`: the folder itself).
    out: &'static str,
    /// The file downstream stages read, relative to the stage folder.
    product: &'static str,
    /// Stamps of the products it reads.
    upstream: Vec<(&'static str, String)>,
}

/// Runs stages, skipping current ones.
struct Runner<'a> {
    file: &'a Path,
    from: Option<Stage>,
    /// Stage folders started over in this invocation (`--from` forces each once).
    forced: BTreeSet<PathBuf>,
    /// Stages that ended with failed items (a rerun retries them).
    partial: Vec<String>,
    /// The main run (where `--from` requires the stages before it to be current), not a variant.
    main: bool,
    /// Only parse every stage's arguments (a typo in the last stage's section is found before the
    /// first stage runs).
    dry: bool,
}

fn read_manifest(path: &Path) -> Option<Manifest> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

impl Runner<'_> {
    fn manifest(&self, step: &Step) -> Result<Manifest> {
        let mut m = Manifest::new(&format!("pipeline {}", step.stage.name()))
            .value("command", step.command);
        // One entry per flag, so that a change reads `--max-new-tokens 8 → 6`.
        let mut by_flag: Vec<(String, Vec<String>)> = vec![];
        for (i, a) in step.args.iter().enumerate() {
            if !a.starts_with("--") {
                continue;
            }
            let value = step.args.get(i + 1).filter(|v| !v.starts_with("--"));
            let value = value.cloned().unwrap_or_else(|| "(set)".into());
            match by_flag.iter_mut().find(|(f, _)| f == a) {
                Some((_, vs)) => vs.push(value),
                None => by_flag.push((a.clone(), vec![value])),
            }
        }
        for (flag, values) in by_flag {
            m = m.value(&flag, values.join(", "));
        }
        // What the arguments name: files by their bytes, models by their config and headers.
        for (i, a) in step.args.iter().enumerate() {
            let value = a.strip_prefix("local=").unwrap_or(a);
            let p = Path::new(value);
            if i > 0 && p.is_absolute() && p.exists() && step.args[i - 1].starts_with("--") {
                m = m.dir(&format!("{} {value}", step.args[i - 1]), p)?;
            }
        }
        for (name, stamp) in &step.upstream {
            m = m.value(&format!("stage {name}"), stamp);
        }
        Ok(m)
    }

    /// The stage's command line, parsed as `mmedpo` parses it.
    fn parse(&self, step: &Step, out: &Path, resume: bool) -> Result<crate::Cli> {
        let mut argv: Vec<String> = vec!["mmedpo".into(), step.command.into()];
        argv.extend(step.args.iter().cloned());
        argv.extend(["--out".into(), out.display().to_string()]);
        if resume {
            argv.push("--resume".into());
        }
        crate::Cli::try_parse_from(&argv).map_err(|e| {
            let message = e.to_string();
            let first = message.lines().next().unwrap_or_default();
            anyhow::anyhow!(
                "{}: [{}] flags for `mmedpo {}`: {}",
                self.file.display(),
                section_of(step.stage),
                step.command,
                first.strip_prefix("error: ").unwrap_or(first)
            )
        })
    }

    /// Runs `step` in `dir` unless a folder in `shared` or `dir` already holds it current.
    fn run(&mut self, step: Step, dir: &Path, shared: Option<&Path>) -> Result<Product> {
        let name = step.stage.name();
        if self.dry {
            self.parse(&step, dir, false)?;
            return Ok(Product {
                path: dir.join(step.product),
                stamp: String::new(),
            });
        }
        let manifest = self.manifest(&step)?;
        let stamp = fingerprint([serde_json::to_string(&manifest)?.as_bytes()]);
        let current = |d: &Path| {
            read_manifest(&d.join("done.json")).as_ref() == Some(&manifest)
                && d.join(step.product).exists()
        };
        // `--from` starts each stage folder over once; a variant takes a shared folder when it is
        // current and, under `--from`, has been started over by this invocation.
        let from_here = self.from.is_some_and(|f| step.stage >= f);
        if let Some(s) = shared.filter(|s| current(s) && (!from_here || self.forced.contains(*s))) {
            note!("[{name}] current (shared with {})", s.display());
            return Ok(Product {
                path: s.join(step.product),
                stamp,
            });
        }
        let force = from_here && !self.forced.contains(dir);
        if !force && current(dir) {
            note!("[{name}] current, skipped ({})", dir.display());
            return Ok(Product {
                path: dir.join(step.product),
                stamp,
            });
        }
        if self.main && self.from.is_some_and(|f| step.stage < f) {
            bail!(
                "--from {}: stage {name} is not current in {}; run without --from first",
                self.from.map_or("", |f| f.name()),
                dir.display()
            );
        }
        let started = dir.join("stage.json");
        match read_manifest(&started) {
            Some(old) if old == manifest && !force => note!("[{name}] resuming in {}", dir.display()),
            Some(old) => {
                let changes = manifest.changes_from(&old);
                note!(
                    "[{name}] starting over in {}{}",
                    dir.display(),
                    if force {
                        " (--from)".to_string()
                    } else {
                        format!(": changed {}", changes.join("; "))
                    }
                );
                // Moved aside first (atomic), so that a kill mid-removal leaves either the whole
                // old folder, with its stage.json, or none.
                let old = dir.with_extension("old");
                if old.exists() {
                    std::fs::remove_dir_all(&old)
                        .with_context(|| format!("removing {}", old.display()))?;
                }
                std::fs::rename(dir, &old)
                    .with_context(|| format!("moving {} aside", dir.display()))?;
                std::fs::remove_dir_all(&old)
                    .with_context(|| format!("removing {}", old.display()))?;
            }
            None if dir.exists() => bail!(
                "{}: exists but is not a pipeline stage folder (no stage.json); move it away or choose another `out` in {}",
                dir.display(),
                self.file.display()
            ),
            None => note!("[{name}] running in {}", dir.display()),
        }
        self.forced.insert(dir.to_path_buf());
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        manifest.write(&started)?;
        let _ = std::fs::remove_file(dir.join("done.json"));
        let out = if step.out.is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(step.out)
        };
        let resume = step.stage == Stage::Train && out.join("manifest.json").is_file();
        let cli = self.parse(&step, &out, resume)?;
        let outcome = crate::dispatch(cli.command).with_context(|| format!("stage {name}"))?;
        if outcome.failed == 0 {
            manifest.write(&dir.join("done.json"))?;
        } else {
            self.partial
                .push(format!("{name} ({} failed item(s))", outcome.failed));
        }
        Ok(Product {
            path: dir.join(step.product),
            stamp,
        })
    }
}

fn section_of(stage: Stage) -> &'static str {
    match stage {
        Stage::EvalBase | Stage::Eval => "eval",
        s => s.name(),
    }
}

/// The model arguments every LLaVA stage takes.
fn model_args(c: &PipelineConfig) -> Vec<String> {
    let mut a = vec!["--model".into(), c.model.display().to_string()];
    if let Some(v) = &c.vision_tower {
        a.extend(["--vision-tower".into(), v.display().to_string()]);
    }
    if let Some(t) = &c.tokenizer {
        a.extend(["--tokenizer".into(), t.display().to_string()]);
    }
    a.extend(["--template".into(), c.template.clone()]);
    a.extend(["--device".into(), c.device.clone()]);
    a.extend(["--dtype".into(), c.dtype.clone()]);
    a
}

/// The products of one pass of the pipeline (the main run or an ablation variant).
struct Results {
    base: Product,
    aligned: Product,
    stamps: Vec<(String, String)>,
}

/// Runs every stage of `c` into `root`; `shared`, when given, is the main run's folder whose
/// current stages a variant reuses.
fn pass(r: &mut Runner, c: &PipelineConfig, root: &Path, shared: Option<&Path>) -> Result<Results> {
    let folder = |s: Stage| root.join(s.name());
    let shared_of = |s: Stage| shared.map(|d| d.join(s.name()));
    let ir = c.image_root.display().to_string();
    let mut stamps = vec![];
    const MODEL: &[&str] = &[
        "model",
        "vision_tower",
        "tokenizer",
        "template",
        "device",
        "dtype",
        "out",
    ];
    let wired = |extra: &[&'static str]| -> Vec<&'static str> {
        MODEL.iter().copied().chain(extra.iter().copied()).collect()
    };
    // Stage 1: text pairs.
    let text = if c.text.contains_key("judge") {
        let mut args = vec![
            "--data".into(),
            c.data.display().to_string(),
            "--image-root".into(),
            ir.clone(),
        ];
        args.extend(model_args(c));
        args.extend(flags(
            &c.text,
            "text",
            &wired(&["data", "image_root", "overwrite"]),
            &[],
        )?);
        let step = Step {
            stage: Stage::Text,
            command: "curate-text",
            args,
            out: "text_pairs.json",
            product: "text_pairs.json",
            upstream: vec![],
        };
        r.run(
            step,
            &folder(Stage::Text),
            shared_of(Stage::Text).as_deref(),
        )?
    } else {
        if !c.text.is_empty() {
            bail!("{}: [text] has flags but no `judge`: name the judge (openai=URL@MODEL or local=DIR), or remove the section to use the data's own pairs", r.file.display());
        }
        if !r.dry {
            note!(
                "[text] the data's own pairs ({}; no judge in [text])",
                c.data.display()
            );
        }
        Product {
            path: c.data.clone(),
            stamp: path_fingerprint(&c.data)?,
        }
    };
    stamps.push(("text".into(), text.stamp.clone()));
    // Stage 1': clinical relevance.
    let scored = if c.relevance.contains_key("agent") || c.relevance.contains_key("agents_file") {
        let mut args = vec!["--data".into(), text.path.display().to_string()];
        args.extend(flags(
            &c.relevance,
            "relevance",
            &["data", "out", "overwrite"],
            &[],
        )?);
        let step = Step {
            stage: Stage::Relevance,
            command: "score-relevance",
            args,
            out: "scored_pairs.json",
            product: "scored_pairs.json",
            upstream: vec![("text", text.stamp.clone())],
        };
        r.run(
            step,
            &folder(Stage::Relevance),
            shared_of(Stage::Relevance).as_deref(),
        )?
    } else {
        if !c.relevance.is_empty() {
            bail!(
                "{}: [relevance] has flags but no `agent` or `agents_file`",
                r.file.display()
            );
        }
        if !r.dry {
            note!("[relevance] the pairs keep their weights (no agents in [relevance])");
        }
        text.clone()
    };
    stamps.push(("relevance".into(), scored.stamp.clone()));
    let used = uses(c).map_err(anyhow::Error::msg)?;
    // Stage 2: visual pairs.
    let visual = if used.contains("visual") {
        let mut args = vec![
            "--data".into(),
            c.data.display().to_string(),
            "--image-root".into(),
            ir.clone(),
            "--device".into(),
            c.device.clone(),
        ];
        args.extend(flags(
            &c.visual,
            "visual",
            &["data", "image_root", "out", "device", "overwrite"],
            &["enabled"],
        )?);
        let step = Step {
            stage: Stage::Visual,
            command: "visual-pairs",
            args,
            out: "",
            product: crate::visual::OUTPUT_FILE,
            upstream: vec![],
        };
        let p = r.run(
            step,
            &folder(Stage::Visual),
            shared_of(Stage::Visual).as_deref(),
        )?;
        stamps.push(("visual".into(), p.stamp.clone()));
        Some(p)
    } else {
        None
    };
    // Assemble.
    let mut args = vec![];
    let mut upstream = vec![];
    if used.contains("text") {
        args.extend(["--data".into(), scored.path.display().to_string()]);
        upstream.push(("relevance", scored.stamp.clone()));
    }
    if let Some(v) = &visual {
        args.extend(["--data".into(), v.path.display().to_string()]);
        upstream.push(("visual", v.stamp.clone()));
    }
    args.extend(flags(&c.assemble, "assemble", &["data", "out"], &["use"])?);
    let step = Step {
        stage: Stage::Assemble,
        command: "assemble",
        args,
        out: "pairs.json",
        product: "pairs.json",
        upstream,
    };
    let pairs = r.run(
        step,
        &folder(Stage::Assemble),
        shared_of(Stage::Assemble).as_deref(),
    )?;
    stamps.push(("assemble".into(), pairs.stamp.clone()));
    // Train.
    let mut args = vec![
        "--data".into(),
        pairs.path.display().to_string(),
        "--image-root".into(),
        ir.clone(),
    ];
    args.extend(model_args(c));
    args.extend(flags(
        &c.train,
        "train",
        &wired(&["data", "image_root", "resume"]),
        &[],
    )?);
    let step = Step {
        stage: Stage::Train,
        command: "train",
        args,
        out: "",
        product: "adapter",
        upstream: vec![("assemble", pairs.stamp.clone())],
    };
    let adapter = r.run(
        step,
        &folder(Stage::Train),
        shared_of(Stage::Train).as_deref(),
    )?;
    stamps.push(("train".into(), adapter.stamp.clone()));
    // Evaluation of the base and of the aligned model.
    let eval_args = |adapter: Option<&Path>| -> Result<Vec<String>> {
        let mut a = vec![
            "--data".into(),
            c.test.display().to_string(),
            "--image-root".into(),
            ir.clone(),
            "--task".into(),
            c.task.clone(),
        ];
        a.extend(model_args(c));
        if let Some(p) = adapter {
            a.extend(["--adapter".into(), p.display().to_string()]);
        }
        a.extend(flags(
            &c.eval,
            "eval",
            &wired(&[
                "data",
                "image_root",
                "task",
                "adapter",
                "compare",
                "overwrite",
            ]),
            &[],
        )?);
        Ok(a)
    };
    let step = Step {
        stage: Stage::EvalBase,
        command: "eval",
        args: eval_args(None)?,
        out: "",
        product: "metrics.json",
        upstream: vec![],
    };
    let base = r.run(
        step,
        &folder(Stage::EvalBase),
        shared_of(Stage::EvalBase).as_deref(),
    )?;
    stamps.push(("eval-base".into(), base.stamp.clone()));
    let step = Step {
        stage: Stage::Eval,
        command: "eval",
        args: eval_args(Some(&adapter.path))?,
        out: "",
        product: "metrics.json",
        upstream: vec![("train", adapter.stamp.clone())],
    };
    let aligned = r.run(
        step,
        &folder(Stage::Eval),
        shared_of(Stage::Eval).as_deref(),
    )?;
    stamps.push(("eval".into(), aligned.stamp.clone()));
    Ok(Results {
        base,
        aligned,
        stamps,
    })
}

/// The metrics a task's table shows, as `mmedpo metrics` names them.
fn metric_keys(task: &str) -> &'static [&'static str] {
    if task == "vqa" {
        &["open_recall", "closed_accuracy"]
    } else {
        &[
            "bleu", "bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "meteor",
        ]
    }
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))
}

fn cell(v: &serde_json::Value) -> String {
    v.as_f64().map_or("n/a".into(), |x| format!("{x:.2}"))
}

/// The base / MMedPO table in Markdown.
pub fn comparison_table(
    task: &str,
    base: &serde_json::Value,
    aligned: &serde_json::Value,
) -> String {
    let mut t = String::from("| metric | base | MMedPO | Δ |\n|---|---|---|---|\n");
    for k in metric_keys(task) {
        let diff = base[*k]
            .as_f64()
            .zip(aligned[*k].as_f64())
            .map_or("n/a".into(), |(a, b)| format!("{:+.2}", b - a));
        t.push_str(&format!(
            "| {k} | {} | {} | {diff} |\n",
            cell(&base[*k]),
            cell(&aligned[*k])
        ));
    }
    t
}

/// The ablation presets of the paper's Tables 2–4, 8 and 9 that `c` can run, by name.
fn presets(c: &PipelineConfig) -> Vec<(&'static str, PipelineConfig)> {
    let with = |use_: &[&str], weights: bool, edit: &dyn Fn(&mut PipelineConfig)| {
        let mut v = c.clone();
        v.assemble.insert(
            "use".into(),
            toml::Value::Array(
                use_.iter()
                    .map(|s| toml::Value::String(s.to_string()))
                    .collect(),
            ),
        );
        if !weights {
            v.assemble
                .insert("weight_mode".into(), toml::Value::String("none".into()));
        }
        edit(&mut v);
        v
    };
    let visual_on = visual_enabled(c);
    let mut out = vec![
        (
            "stage 1 (text), no weights",
            with(&["text"], false, &|_| {}),
        ),
        ("stage 1 (text)", with(&["text"], true, &|_| {})),
    ];
    if let Some(toml::Value::Array(agents)) = c
        .relevance
        .get("agent")
        .filter(|a| a.as_array().is_some_and(|a| a.len() > 1))
    {
        let first = agents[0].clone();
        out.push((
            "stage 1 (text), one agent",
            with(&["text"], true, &|v| {
                v.relevance
                    .insert("agent".into(), toml::Value::Array(vec![first.clone()]));
            }),
        ));
    }
    if visual_on {
        out.push((
            "stage 2 (visual), no weights",
            with(&["visual"], false, &|_| {}),
        ));
        out.push(("stage 2 (visual)", with(&["visual"], true, &|_| {})));
        out.push((
            "stage 2 (visual), global noise",
            with(&["visual"], true, &|v| {
                v.visual
                    .insert("noise".into(), toml::Value::String("global".into()));
            }),
        ));
        out.push((
            "stage 1+2, no weights",
            with(&["text", "visual"], false, &|_| {}),
        ));
    }
    out
}

fn slug(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    s.trim_matches('-').to_string()
}

/// Runs `mmedpo pipeline`.
pub fn run(args: PipelineArgs) -> Result<()> {
    let c = load(&args.config)?;
    std::fs::create_dir_all(&c.out).with_context(|| format!("creating {}", c.out.display()))?;
    let _lock = OutLock::acquire(&c.out)?;
    let mut r = Runner {
        file: &args.config,
        from: args.from,
        forced: BTreeSet::new(),
        partial: vec![],
        main: true,
        dry: true,
    };
    // Every section is checked before anything runs.
    pass(&mut r, &c, &c.out, None)?;
    if args.ablations {
        for (_, v) in presets(&c) {
            pass(&mut r, &v, &c.out.join("ablations/check"), None)?;
        }
    }
    r.dry = false;
    let main = pass(&mut r, &c, &c.out, None)?;
    r.main = false;
    let (base, aligned) = (read_json(&main.base.path)?, read_json(&main.aligned.path)?);
    let table = comparison_table(&c.task, &base, &aligned);
    std::fs::write(c.out.join("summary.md"), &table)
        .with_context(|| format!("writing {}", c.out.join("summary.md").display()))?;
    let stamps: serde_json::Map<String, serde_json::Value> = main
        .stamps
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into()))
        .collect();
    write_json(
        &c.out.join("summary.json"),
        &serde_json::json!({"task": c.task, "base": base, "mmedpo": aligned, "stages": stamps}),
    )?;
    let values = |m: &serde_json::Value| -> Vec<Option<f64>> {
        metric_keys(&c.task)
            .iter()
            .map(|k| m[*k].as_f64())
            .collect()
    };
    let png = c.out.join("summary.png");
    let bars = [
        ("base".to_string(), values(&base)),
        ("MMedPO".to_string(), values(&aligned)),
    ];
    match crate::plot::plot_metric_bars(
        metric_keys(&c.task),
        &bars,
        "base vs MMedPO (test set)",
        &png,
    ) {
        Ok(()) => note!("plot: {}", png.display()),
        Err(e) => tracing::warn!("no comparison plot: {e:#}"),
    }
    if args.ablations {
        let mut rows = vec![
            ("base".to_string(), base.clone()),
            ("stage 1+2 (MMedPO)".to_string(), aligned.clone()),
        ];
        for (name, v) in presets(&c) {
            note!("== ablation: {name}");
            let root = c.out.join("ablations").join(slug(name));
            let res = pass(&mut r, &v, &root, Some(&c.out))?;
            rows.push((name.to_string(), read_json(&res.aligned.path)?));
        }
        let keys = metric_keys(&c.task);
        let mut t = format!(
            "| variant | {} |\n|---|{}\n",
            keys.join(" | "),
            "---|".repeat(keys.len())
        );
        for (name, m) in &rows {
            t.push_str(&format!(
                "| {name} | {} |\n",
                keys.iter()
                    .map(|k| cell(&m[*k]))
                    .collect::<Vec<_>>()
                    .join(" | ")
            ));
        }
        let bars: Vec<(String, Vec<Option<f64>>)> =
            rows.iter().map(|(n, m)| (n.clone(), values(m))).collect();
        let png = c.out.join("ablations.png");
        match crate::plot::plot_metric_bars(keys, &bars, "ablations (test set)", &png) {
            Ok(()) => note!("plot: {}", png.display()),
            Err(e) => tracing::warn!("no ablation plot: {e:#}"),
        }
        std::fs::write(c.out.join("ablations.md"), &t)
            .with_context(|| format!("writing {}", c.out.join("ablations.md").display()))?;
        let json: serde_json::Map<String, serde_json::Value> = rows.into_iter().collect();
        write_json(&c.out.join("ablations.json"), &json)?;
        say!("{t}");
        note!("ablations: {}", c.out.join("ablations.md").display());
    }
    say!("{table}");
    note!(
        "summary: {} and {}",
        c.out.join("summary.md").display(),
        c.out.join("summary.json").display()
    );
    if !r.partial.is_empty() {
        note!(
            "not complete (run again to retry the failed items): {}",
            r.partial.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn sections_become_flags() {
        let t = table(
            "n = 3\ntop_p = 0.9\njson-schema = true\nquiet = false\nagent = [\"a\", \"b\"]\n",
        );
        let f = flags(&t, "relevance", &["out"], &[]).unwrap();
        assert_eq!(
            f,
            [
                "--agent",
                "a",
                "--agent",
                "b",
                "--json-schema",
                "--n",
                "3",
                "--top-p",
                "0.9"
            ]
        );
        let err = flags(&table("out = \"x\""), "text", &["out"], &[]).unwrap_err();
        assert!(
            err.to_string().contains("[text] out: set by the pipeline"),
            "{err}"
        );
        let err = flags(&table("x = {a = 1}"), "text", &[], &[]).unwrap_err();
        assert!(err.to_string().contains("not a flag value"), "{err}");
    }

    #[test]
    fn uses_checks_its_values() {
        let dir = std::env::temp_dir().join(format!("mmedpo-pipeline-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("p.toml");
        let base = "out = \"o\"\nmodel = \"m\"\ndata = \"d.json\"\nimage_root = \"i\"\ntest = \"t.json\"\ntask = \"vqa\"\n";
        std::fs::write(&file, format!("{base}[assemble]\nuse = [\"txt\"]\n")).unwrap();
        let e = load(&file).unwrap_err().to_string();
        assert!(
            e.contains("[assemble] use") && e.contains("expected \"text\" or \"visual\""),
            "{e}"
        );
        std::fs::write(
            &file,
            format!("{base}[visual]\nenabled = false\n[assemble]\nuse = [\"visual\"]\n"),
        )
        .unwrap();
        assert!(load(&file)
            .unwrap_err()
            .to_string()
            .contains("enabled = false"));
        std::fs::write(&file, base.replace("vqa", "vq")).unwrap();
        assert!(load(&file)
            .unwrap_err()
            .to_string()
            .contains("task = \"vq\""));
        std::fs::write(&file, format!("{base}oops = 1\n")).unwrap();
        let e = load(&file).unwrap_err().to_string();
        assert!(
            e.contains("p.toml") && e.contains("oops") && e.contains("line 7"),
            "{e}"
        );
        std::fs::write(
            &file,
            format!("{base}[relevance]\nagent = [\"local=agents/a\"]\n"),
        )
        .unwrap();
        let c = load(&file).unwrap();
        let a = c.relevance["agent"].as_array().unwrap()[0]
            .as_str()
            .unwrap()
            .to_string();
        assert!(a.starts_with("local=/") && a.ends_with("agents/a"), "{a}");
        assert!(c.model.is_absolute() && c.model.ends_with("m"));
        let names: Vec<&str> = presets(&c).iter().map(|(n, _)| *n).collect();
        assert!(
            names.contains(&"stage 2 (visual), global noise")
                && !names.contains(&"stage 1 (text), one agent")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
