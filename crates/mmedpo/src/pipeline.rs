//! Algorithm 1 of the paper from one TOML file ([`load`] → [`run`]).
//!
//! Stages, each in its own folder under `out`: `text` ([`stage::text`]), `relevance`
//! ([`stage::relevance`]), `visual` ([`stage::visual`]), `assemble`, `train`, `eval-base` and
//! `eval` (the base and the aligned model on the test set), then `summary.md` and `summary.json`.
//! A stage's section holds its plan's settings (the fields of [`TextPlan`](stage::text::TextPlan)
//! and the others, as `mmedpo <subcommand> --help` lists them with `_` for `-`); the pipeline sets
//! the settings that wire the stages together (`data`, `out`, `model`, ...) and refuses them in
//! a section. Paths are relative to the file.
//!
//! A stage records what determines it (`stage.json`: its plan without its output, the
//! fingerprints of the files and models the plan names, the stamps of the stages it reads) when it
//! starts, and again as `done.json` when it ends with no failed item. A rerun skips a stage whose
//! `done.json` matches, resumes one whose `stage.json` matches (through the stage's own journals
//! and checkpoints, so a killed run ends with the files of an uninterrupted one), and starts over
//! one whose inputs changed, saying what changed; [`Options::from`] starts over from a stage.
//! Ablation variants ([`Options::ablations`]) reuse the main run's stage folders where their
//! inputs are the same.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::core::journal::{write_atomic, write_json};
use crate::core::manifest::{path_fingerprint, Manifest, OutLock};
use crate::core::record::fingerprint;
use crate::dpo::data::WeightMode;
use crate::error::invalid;
use crate::eval::protocol::Task;
use crate::stage::assemble::AssemblePlan;
use crate::stage::eval::{cell, comparison_table, metric_keys, read_metrics, EvalPlan};
use crate::stage::relevance::RelevancePlan;
use crate::stage::text::TextPlan;
use crate::stage::train::TrainPlan;
use crate::stage::visual::VisualPlan;
use crate::{stage, DeviceKind, Dtype, Error, Observer, Result};

/// The stages, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Text pairs.
    Text,
    /// Clinical-relevance weights.
    Relevance,
    /// Visual pairs.
    Visual,
    /// One training file.
    Assemble,
    /// Weighted DPO.
    Train,
    /// The base model on the test set.
    EvalBase,
    /// The aligned model on the test set.
    Eval,
}

impl Stage {
    /// Every stage, in order.
    pub const ALL: [Stage; 7] = [
        Stage::Text,
        Stage::Relevance,
        Stage::Visual,
        Stage::Assemble,
        Stage::Train,
        Stage::EvalBase,
        Stage::Eval,
    ];

    /// Its folder's name (and `--from`'s value).
    pub fn name(self) -> &'static str {
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

impl std::str::FromStr for Stage {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Stage::ALL
            .into_iter()
            .find(|st| st.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Stage::ALL.iter().map(|s| s.name()).collect();
                Error::Invalid(format!("stage {s:?}: expected one of {}", names.join(", ")))
            })
    }
}

/// Which pairs are trained on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pairs {
    /// The text pairs (stage 1).
    Text,
    /// The visual pairs (stage 2).
    Visual,
}

/// A pipeline: the shared settings and each stage's plan (its wired settings filled in by the
/// pipeline). Built by [`load`] from a file, or in Rust.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    /// The file it was read from (named in messages; any path in Rust).
    pub file: PathBuf,
    /// Output folder (one folder per stage).
    pub out: PathBuf,
    /// LLaVA model directory (the target Med-LVLM, trained with LoRA).
    pub model: PathBuf,
    /// Separate CLIP tower directory.
    pub vision_tower: Option<PathBuf>,
    /// tokenizer.json (default MODEL/tokenizer.json).
    pub tokenizer: Option<PathBuf>,
    /// Items (image, question, ground truth) in the MMedPO format; without a text plan they
    /// must be text pairs already (rejected answers, and weights without a relevance plan).
    pub data: PathBuf,
    /// Image folder of `data` and `test`.
    pub image_root: PathBuf,
    /// Test set of the evaluation.
    pub test: PathBuf,
    /// The evaluation's task.
    pub task: Task,
    /// Conversation template.
    pub template: String,
    /// Where the LLaVA stages run.
    pub device: DeviceKind,
    /// Float type of the LLaVA's frozen weights.
    pub dtype: Dtype,
    /// Text pairs by the target model and a judge; `None`: the data's own pairs.
    pub text: Option<TextPlan>,
    /// Relevance by agents; `None`: the pairs keep their weights.
    pub relevance: Option<RelevancePlan>,
    /// Visual pairs; `None`: no visual stage.
    pub visual: Option<VisualPlan>,
    /// The pairs trained on.
    pub uses: BTreeSet<Pairs>,
    /// Assembly (weight mode, seed).
    pub assemble: AssemblePlan,
    /// Training (a train config file and overrides).
    pub train: TrainPlan,
    /// Both evaluations.
    pub eval: EvalPlan,
}

/// How to run a pipeline.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    /// Start over from this stage; the stages before it must be current.
    pub from: Option<Stage>,
    /// Also run the ablation presets (the paper's Tables 2–4, 8, 9).
    pub ablations: bool,
}

/// What a run ended with.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The task (which metrics the tables show: [`metric_keys`]).
    pub task: Task,
    /// The base model's metrics (`metrics.json`, keys as `mmedpo metrics` prints them).
    pub base: serde_json::Value,
    /// The aligned model's.
    pub mmedpo: serde_json::Value,
    /// The base / MMedPO table (Markdown, `OUT/summary.md`).
    pub table: String,
    /// With ablations: each variant's metrics, base and MMedPO first, and the table
    /// (`OUT/ablations.md`).
    pub ablations: Option<(Vec<(String, serde_json::Value)>, String)>,
    /// Stages that ended with failed items (a rerun retries them).
    pub partial: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    out: PathBuf,
    model: PathBuf,
    #[serde(default)]
    vision_tower: Option<PathBuf>,
    #[serde(default)]
    tokenizer: Option<PathBuf>,
    data: PathBuf,
    image_root: PathBuf,
    test: PathBuf,
    task: Task,
    #[serde(default)]
    template: Option<String>,
    #[serde(default)]
    device: DeviceKind,
    #[serde(default)]
    dtype: Dtype,
    #[serde(default)]
    text: toml::Table,
    #[serde(default)]
    relevance: toml::Table,
    #[serde(default)]
    visual: toml::Table,
    #[serde(default)]
    assemble: toml::Table,
    #[serde(default)]
    train: toml::Table,
    #[serde(default)]
    eval: toml::Table,
}

/// Settings that take a path (rebased on the pipeline file's folder).
const PATH_KEYS: &[&str] = &[
    "prompts",
    "agents_file",
    "medklip_weights",
    "wordnet",
    "config",
];
/// Settings every LLaVA stage gets from the top level.
const MODEL_KEYS: &[&str] = &[
    "model",
    "vision_tower",
    "tokenizer",
    "template",
    "device",
    "dtype",
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

/// Path settings of a section become absolute; `local=DIR` agents and judges too.
fn rebase(section: &mut toml::Table, folder: &Path) {
    let fix = |s: &str| -> String { absolute(folder, Path::new(s)).display().to_string() };
    for (key, value) in section.iter_mut() {
        let path_key = PATH_KEYS.contains(&key.as_str());
        let agent = key == "agent" || key == "judge";
        let mut one = |v: &mut toml::Value| {
            if let toml::Value::String(s) = v {
                if path_key {
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

/// A section as its stage's plan: wired keys refused, unknown keys refused (by serde).
fn section<T: serde::de::DeserializeOwned>(
    file: &Path,
    name: &str,
    table: toml::Table,
    wired: &[&str],
) -> Result<T> {
    for key in table.keys() {
        if wired.contains(&key.as_str()) {
            invalid!(
                "{}: [{name}] {key}: set by the pipeline (from its top-level settings or the stage before)",
                file.display()
            );
        }
    }
    toml::Value::Table(table)
        .try_into()
        .map_err(|e| Error::Invalid(format!("{}: [{name}] {}", file.display(), e.message())))
}

/// Reads and checks a pipeline file; paths become absolute, relative to the file's folder.
pub fn load(path: &Path) -> Result<PipelineConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let raw: RawConfig = toml::from_str(&text).map_err(|e| {
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
        Error::Invalid(format!("{}: {e}{hint}", path.display()))
    })?;
    let folder = path.parent().unwrap_or(Path::new("")).to_path_buf();
    let abs = |p: &Path| absolute(&folder, p);
    let mut sections = [
        raw.text,
        raw.relevance,
        raw.visual,
        raw.assemble,
        raw.train,
        raw.eval,
    ];
    for s in &mut sections {
        rebase(s, &folder);
    }
    let [text_t, relevance_t, mut visual_t, mut assemble_t, train_t, eval_t] = sections;
    let file = path.to_path_buf();
    let text = if text_t.contains_key("judge") {
        Some(section::<TextPlan>(
            path,
            "text",
            text_t,
            &[MODEL_KEYS, &["data", "image_root", "out", "overwrite"]].concat(),
        )?)
    } else if !text_t.is_empty() {
        invalid!("{}: [text] has settings but no `judge`: name the judge (openai=URL@MODEL or local=DIR), or remove the section to use the data's own pairs", path.display());
    } else {
        None
    };
    let relevance = if relevance_t.contains_key("agent") || relevance_t.contains_key("agents_file")
    {
        Some(section::<RelevancePlan>(
            path,
            "relevance",
            relevance_t,
            &["data", "out", "overwrite"],
        )?)
    } else if !relevance_t.is_empty() {
        invalid!(
            "{}: [relevance] has settings but no `agent` or `agents_file`",
            path.display()
        );
    } else {
        None
    };
    let enabled = match visual_t.remove("enabled") {
        None => true,
        Some(toml::Value::Boolean(b)) => b,
        Some(v) => invalid!(
            "{}: [visual] enabled = {v}: expected true or false",
            path.display()
        ),
    };
    let visual = if enabled {
        Some(section::<VisualPlan>(
            path,
            "visual",
            visual_t,
            &["data", "image_root", "out", "device", "overwrite"],
        )?)
    } else {
        None
    };
    let uses: BTreeSet<Pairs> = match assemble_t.remove("use") {
        None if enabled => [Pairs::Text, Pairs::Visual].into(),
        None => [Pairs::Text].into(),
        Some(v) => {
            let list: Vec<Pairs> = v.clone().try_into().map_err(|_| {
                Error::Invalid(format!(
                    "{}: [assemble] use = {v}: expected a list of \"text\" and \"visual\"",
                    path.display()
                ))
            })?;
            list.into_iter().collect()
        }
    };
    if uses.is_empty() {
        invalid!(
            "{}: [assemble] use is empty: train on \"text\", \"visual\" or both",
            path.display()
        );
    }
    if uses.contains(&Pairs::Visual) && !enabled {
        invalid!(
            "{}: [assemble] use: \"visual\" with [visual] enabled = false",
            path.display()
        );
    }
    let assemble = section::<AssemblePlan>(path, "assemble", assemble_t, &["data", "out"])?;
    let train = section::<TrainPlan>(
        path,
        "train",
        train_t,
        &[MODEL_KEYS, &["data", "image_root", "out", "resume"]].concat(),
    )?;
    let eval = section::<EvalPlan>(
        path,
        "eval",
        eval_t,
        &[
            MODEL_KEYS,
            &["data", "image_root", "task", "adapter", "out", "overwrite"],
        ]
        .concat(),
    )?;
    let c = PipelineConfig {
        file,
        out: abs(&raw.out),
        model: abs(&raw.model),
        vision_tower: raw.vision_tower.as_deref().map(abs),
        tokenizer: raw.tokenizer.as_deref().map(abs),
        data: abs(&raw.data),
        image_root: abs(&raw.image_root),
        test: abs(&raw.test),
        task: raw.task,
        template: raw.template.unwrap_or_else(|| "vicuna_v1".into()),
        device: raw.device,
        dtype: raw.dtype,
        text,
        relevance,
        visual,
        uses,
        assemble,
        train,
        eval,
    };
    Ok(c)
}

impl PipelineConfig {
    fn text_plan(&self) -> Option<TextPlan> {
        self.text.clone().map(|p| TextPlan {
            data: self.data.clone(),
            image_root: self.image_root.clone(),
            model: self.model.clone(),
            vision_tower: self.vision_tower.clone(),
            tokenizer: self.tokenizer.clone(),
            template: self.template.clone(),
            device: self.device,
            dtype: self.dtype,
            ..p
        })
    }

    fn visual_plan(&self) -> Option<VisualPlan> {
        self.visual.clone().map(|p| VisualPlan {
            data: self.data.clone(),
            image_root: self.image_root.clone(),
            device: self.device,
            ..p
        })
    }

    fn train_plan(&self, pairs: &Path) -> TrainPlan {
        TrainPlan {
            data: vec![pairs.to_path_buf()],
            image_root: Some(self.image_root.clone()),
            model: Some(self.model.clone()),
            vision_tower: self.vision_tower.clone(),
            tokenizer: self.tokenizer.clone(),
            template: Some(self.template.clone()),
            device: Some(self.device),
            dtype: Some(self.dtype),
            ..self.train.clone()
        }
    }

    fn eval_plan(&self, adapter: Option<&Path>) -> EvalPlan {
        EvalPlan {
            model: self.model.clone(),
            vision_tower: self.vision_tower.clone(),
            tokenizer: self.tokenizer.clone(),
            template: self.template.clone(),
            device: self.device,
            dtype: self.dtype,
            data: self.test.clone(),
            image_root: self.image_root.clone(),
            task: self.task,
            adapter: adapter.map(Path::to_path_buf),
            ..self.eval.clone()
        }
    }

    /// Every plan's settings that need no stage output, checked (before the first stage runs).
    pub fn check(&self) -> Result<()> {
        let at = |section: &str, e: Error| {
            Error::Invalid(format!("{}: [{section}] {e}", self.file.display()))
        };
        if let Some(p) = self.text_plan() {
            p.check().map_err(|e| at("text", e))?;
        }
        if let Some(p) = &self.relevance {
            p.specs().map_err(|e| at("relevance", e))?;
        }
        if let Some(p) = self.visual_plan() {
            p.settings().map_err(|e| at("visual", e))?;
        }
        let train = TrainPlan {
            out: Some(self.out.join(Stage::Train.name())),
            ..self.train_plan(&self.out.join("assemble/pairs.json"))
        };
        train.resolve().map_err(|e| at("train", e))?;
        crate::llm::Template::from_name(&self.template)
            .map_err(|e| Error::Invalid(format!("{}: template: {e}", self.file.display())))?;
        Ok(())
    }

    /// The ablation presets of the paper's Tables 2–4, 8 and 9 this pipeline can run, by name.
    pub fn presets(&self) -> Vec<(&'static str, PipelineConfig)> {
        let with = |uses: &[Pairs], weights: bool, edit: &dyn Fn(&mut PipelineConfig)| {
            let mut v = self.clone();
            v.uses = uses.iter().copied().collect();
            if !weights {
                v.assemble.weight_mode = WeightMode::None;
            }
            edit(&mut v);
            v
        };
        use Pairs::{Text, Visual};
        let mut out = vec![
            ("stage 1 (text), no weights", with(&[Text], false, &|_| {})),
            ("stage 1 (text)", with(&[Text], true, &|_| {})),
        ];
        if let Some(r) = self.relevance.as_ref().filter(|r| r.agent.len() > 1) {
            let first = r.agent[0].clone();
            out.push((
                "stage 1 (text), one agent",
                with(&[Text], true, &|v| {
                    if let Some(r) = &mut v.relevance {
                        r.agent = vec![first.clone()];
                        r.agents_file = None;
                    }
                }),
            ));
        }
        if self.visual.is_some() {
            out.push((
                "stage 2 (visual), no weights",
                with(&[Visual], false, &|_| {}),
            ));
            out.push(("stage 2 (visual)", with(&[Visual], true, &|_| {})));
            out.push((
                "stage 2 (visual), global noise",
                with(&[Visual], true, &|v| {
                    if let Some(p) = &mut v.visual {
                        p.noise = "global".into();
                    }
                }),
            ));
            out.push((
                "stage 1+2, no weights",
                with(&[Text, Visual], false, &|_| {}),
            ));
        }
        out
    }
}

/// What a stage made: the file the next stages read, and a stamp of everything that determines it.
#[derive(Debug, Clone)]
struct Product {
    path: PathBuf,
    stamp: String,
}

/// One stage to run: its plan (as JSON, for the record) and where its product lands.
struct Step {
    stage: Stage,
    plan: serde_json::Value,
    /// The file downstream stages read, relative to the stage folder.
    product: &'static str,
    /// Stamps of the products it reads.
    upstream: Vec<(&'static str, String)>,
    /// Fingerprints of inputs the plan names only by folder (the images its items name).
    inputs: Vec<(&'static str, String)>,
}

/// The fingerprint of the images the items of `file` name (`image`, `image_path`; JSON list or
/// JSONL), relative path and bytes, in item order: an image replaced in place changes it. An image
/// that cannot be read counts as missing (the stage reports it).
pub fn images_fingerprint(file: &Path, image_root: &Path) -> Result<String> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
    let items: Vec<serde_json::Value> = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Array(a)) => a,
        _ => text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect(),
    };
    let mut names: Vec<&str> = items
        .iter()
        .filter_map(|it| it.get("image").or_else(|| it.get("image_path"))?.as_str())
        .collect();
    names.dedup();
    let mut parts: Vec<Vec<u8>> = vec![];
    for name in names {
        parts.push(name.as_bytes().to_vec());
        parts.push(std::fs::read(image_root.join(name)).unwrap_or_else(|_| b"(missing)".to_vec()));
    }
    Ok(fingerprint(parts.iter().map(Vec::as_slice)))
}

/// Runs stages, skipping current ones.
struct Runner<'a> {
    file: &'a Path,
    from: Option<Stage>,
    /// Stage folders started over in this invocation (`from` forces each once).
    forced: BTreeSet<PathBuf>,
    /// Stages that ended with failed items (a rerun retries them).
    partial: Vec<String>,
    /// The main run (where `from` requires the stages before it to be current), not a variant.
    main: bool,
    observer: &'a dyn Observer,
    /// The fingerprints of the images the items of `data` and of `test` name (every pass reads
    /// the same files: computed once per run).
    images: [String; 2],
}

fn read_manifest(path: &Path) -> Option<Manifest> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// Settings that do not change what a stage makes (where, and whether to start over).
const UNRECORDED: &[&str] = &["out", "overwrite", "resume"];

/// A stage's record: one entry per setting (so that a change reads `max_new_tokens 8 → 6`), the
/// fingerprint of every file or model a setting names, the stamps it reads.
fn manifest(step: &Step) -> Result<Manifest> {
    let mut m = Manifest::new(&format!("pipeline {}", step.stage.name()));
    let fields = step.plan.as_object().cloned().unwrap_or_default();
    for (key, value) in &fields {
        if UNRECORDED.contains(&key.as_str()) || value.is_null() {
            continue;
        }
        let values: Vec<&serde_json::Value> = match value {
            serde_json::Value::Array(a) => a.iter().collect(),
            v => vec![v],
        };
        let text: Vec<String> = values
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), String::from))
            .collect();
        m = m.value(key, text.join(", "));
        // What the settings name: files by their bytes, models by their config and headers.
        for v in &text {
            let p = Path::new(v.strip_prefix("local=").unwrap_or(v));
            if p.is_absolute() && p.exists() {
                m = m.dir(&format!("{key} {v}"), p)?;
            }
        }
    }
    for (name, stamp) in &step.upstream {
        m = m.value(&format!("stage {name}"), stamp);
    }
    for (name, value) in &step.inputs {
        m = m.value(name, value);
    }
    Ok(m)
}

impl Runner<'_> {
    /// Runs `step` in `dir` (by `exec(dir)`, which returns its failed items) unless a
    /// folder in `shared` or `dir` already holds it current.
    fn run(
        &mut self,
        step: Step,
        dir: &Path,
        shared: Option<&Path>,
        exec: &mut dyn FnMut(&Path) -> Result<usize>,
    ) -> Result<Product> {
        let name = step.stage.name();
        let note = |m: String| self.observer.note(&m);
        let manifest = manifest(&step)?;
        let stamp = fingerprint([serde_json::to_string(&manifest)
            .map_err(|e| Error::Invalid(e.to_string()))?
            .as_bytes()]);
        let current = |d: &Path| {
            read_manifest(&d.join("done.json")).as_ref() == Some(&manifest)
                && d.join(step.product).exists()
        };
        // `from` starts each stage folder over once; a variant takes a shared folder when it is
        // current and, under `from`, has been started over by this invocation.
        let from_here = self.from.is_some_and(|f| step.stage >= f);
        if let Some(s) = shared.filter(|s| current(s) && (!from_here || self.forced.contains(*s))) {
            note(format!("[{name}] current (shared with {})", s.display()));
            return Ok(Product {
                path: s.join(step.product),
                stamp,
            });
        }
        let force = from_here && !self.forced.contains(dir);
        if !force && current(dir) {
            note(format!("[{name}] current, skipped ({})", dir.display()));
            return Ok(Product {
                path: dir.join(step.product),
                stamp,
            });
        }
        if self.main && self.from.is_some_and(|f| step.stage < f) {
            invalid!(
                "--from {}: stage {name} is not current in {}; run without --from first",
                self.from.map_or("", |f| f.name()),
                dir.display()
            );
        }
        let started = dir.join("stage.json");
        match read_manifest(&started) {
            Some(old) if old == manifest && !force => {
                note(format!("[{name}] resuming in {}", dir.display()))
            }
            Some(old) => {
                let changes = manifest.changes_from(&old);
                note(format!(
                    "[{name}] starting over in {}{}",
                    dir.display(),
                    if force {
                        " (--from)".to_string()
                    } else {
                        format!(": changed {}", changes.join("; "))
                    }
                ));
                // Moved aside first (atomic), so that a kill mid-removal leaves either the whole
                // old folder, with its stage.json, or none.
                let old = dir.with_extension("old");
                if old.exists() {
                    std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
                }
                std::fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
                std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
            }
            None if dir.exists() => invalid!(
                "{}: exists but is not a pipeline stage folder (no stage.json); move it away or choose another `out` in {}",
                dir.display(),
                self.file.display()
            ),
            None => note(format!("[{name}] running in {}", dir.display())),
        }
        self.forced.insert(dir.to_path_buf());
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        manifest.write(&started)?;
        let _ = std::fs::remove_file(dir.join("done.json"));
        let failed = exec(dir).map_err(|e| Error::Stage {
            stage: name,
            source: Box::new(e),
        })?;
        if failed == 0 {
            manifest.write(&dir.join("done.json"))?;
        } else {
            self.partial
                .push(format!("{name} ({failed} failed item(s))"));
        }
        Ok(Product {
            path: dir.join(step.product),
            stamp,
        })
    }
}

fn json(plan: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(plan).unwrap_or_default()
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
    let observer = r.observer;
    let mut stamps = vec![];
    let [data_images, test_images] = r.images.clone();
    // Stage 1: text pairs.
    let text = match c.text_plan() {
        Some(plan) => {
            let step = Step {
                stage: Stage::Text,
                plan: json(&plan),
                product: "text_pairs.json",
                upstream: vec![],
                inputs: vec![("images", data_images.clone())],
            };
            r.run(
                step,
                &folder(Stage::Text),
                shared_of(Stage::Text).as_deref(),
                &mut |dir| {
                    let plan = TextPlan {
                        out: dir.join("text_pairs.json"),
                        ..plan.clone()
                    };
                    Ok(stage::text::curate(&plan, observer)?.failed.len())
                },
            )?
        }
        None => {
            observer.note(&format!(
                "[text] the data's own pairs ({}; no judge in [text])",
                c.data.display()
            ));
            Product {
                path: c.data.clone(),
                stamp: path_fingerprint(&c.data)?,
            }
        }
    };
    stamps.push(("text".into(), text.stamp.clone()));
    // Stage 1': clinical relevance.
    let scored = match &c.relevance {
        Some(plan) => {
            let plan = RelevancePlan {
                data: text.path.clone(),
                ..plan.clone()
            };
            let step = Step {
                stage: Stage::Relevance,
                plan: json(&plan),
                product: "scored_pairs.json",
                upstream: vec![("text", text.stamp.clone())],
                inputs: vec![],
            };
            let dir = folder(Stage::Relevance);
            r.run(
                step,
                &dir,
                shared_of(Stage::Relevance).as_deref(),
                &mut |dir| {
                    let plan = RelevancePlan {
                        out: dir.join("scored_pairs.json"),
                        ..plan.clone()
                    };
                    Ok(stage::relevance::score(&plan, observer)?.failed.len())
                },
            )?
        }
        None => {
            observer.note("[relevance] the pairs keep their weights (no agents in [relevance])");
            text.clone()
        }
    };
    stamps.push(("relevance".into(), scored.stamp.clone()));
    // Stage 2: visual pairs.
    let visual = match c.visual_plan().filter(|_| c.uses.contains(&Pairs::Visual)) {
        Some(plan) => {
            let step = Step {
                stage: Stage::Visual,
                plan: json(&plan),
                product: stage::visual::OUTPUT_FILE,
                upstream: vec![],
                inputs: vec![("images", data_images.clone())],
            };
            let dir = folder(Stage::Visual);
            let p = r.run(
                step,
                &dir,
                shared_of(Stage::Visual).as_deref(),
                &mut |dir| {
                    let plan = VisualPlan {
                        out: dir.to_path_buf(),
                        ..plan.clone()
                    };
                    Ok(stage::visual::make(&plan, observer)?.unreadable.len())
                },
            )?;
            stamps.push(("visual".into(), p.stamp.clone()));
            Some(p)
        }
        None => None,
    };
    // Assemble.
    let mut data = vec![];
    let mut upstream = vec![];
    if c.uses.contains(&Pairs::Text) {
        data.push(scored.path.clone());
        upstream.push(("relevance", scored.stamp.clone()));
    }
    if let Some(v) = &visual {
        data.push(v.path.clone());
        upstream.push(("visual", v.stamp.clone()));
    }
    let plan = AssemblePlan {
        data,
        ..c.assemble.clone()
    };
    let step = Step {
        stage: Stage::Assemble,
        plan: json(&plan),
        product: "pairs.json",
        upstream,
        inputs: vec![],
    };
    let dir = folder(Stage::Assemble);
    let pairs = r.run(
        step,
        &dir,
        shared_of(Stage::Assemble).as_deref(),
        &mut |dir| {
            let plan = AssemblePlan {
                out: dir.join("pairs.json"),
                ..plan.clone()
            };
            stage::assemble::assemble(&plan, observer)?;
            Ok(0)
        },
    )?;
    stamps.push(("assemble".into(), pairs.stamp.clone()));
    // Train.
    let plan = c.train_plan(&pairs.path);
    let step = Step {
        stage: Stage::Train,
        plan: json(&plan),
        product: "adapter",
        upstream: vec![("assemble", pairs.stamp.clone())],
        inputs: vec![("images", data_images.clone())],
    };
    let dir = folder(Stage::Train);
    let adapter = r.run(step, &dir, shared_of(Stage::Train).as_deref(), &mut |dir| {
        let plan = TrainPlan {
            out: Some(dir.to_path_buf()),
            resume: dir.join("manifest.json").is_file(),
            ..plan.clone()
        };
        stage::train::train(&plan, observer)?;
        Ok(0)
    })?;
    stamps.push(("train".into(), adapter.stamp.clone()));
    // Evaluation of the base and of the aligned model.
    let mut evaluate = |stage: Stage, adapter: Option<&Product>| -> Result<Product> {
        let plan = c.eval_plan(adapter.map(|a| a.path.as_path()));
        let step = Step {
            stage,
            plan: json(&plan),
            product: "metrics.json",
            upstream: adapter
                .map(|a| ("train", a.stamp.clone()))
                .into_iter()
                .collect(),
            inputs: vec![("images", test_images.clone())],
        };
        r.run(
            step,
            &folder(stage),
            shared_of(stage).as_deref(),
            &mut |dir| {
                let plan = EvalPlan {
                    out: dir.to_path_buf(),
                    ..plan.clone()
                };
                stage::eval::evaluate(&plan, observer)?;
                Ok(0)
            },
        )
    };
    let base = evaluate(Stage::EvalBase, None)?;
    stamps.push(("eval-base".into(), base.stamp.clone()));
    let aligned = evaluate(Stage::Eval, Some(&adapter))?;
    stamps.push(("eval".into(), aligned.stamp.clone()));
    Ok(Results {
        base,
        aligned,
        stamps,
    })
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

/// Runs the pipeline `c` (and with `options.ablations` its presets): every stage that is not
/// current, then `OUT/summary.md`, `.json`, `.png` (and `OUT/ablations.md`, `.json`, `.png`).
pub fn run(c: &PipelineConfig, options: &Options, observer: &dyn Observer) -> Result<Summary> {
    // Every plan is checked before anything runs.
    c.check()?;
    let presets = if options.ablations {
        c.presets()
    } else {
        vec![]
    };
    for (_, v) in &presets {
        v.check()?;
    }
    std::fs::create_dir_all(&c.out).map_err(|e| Error::io(&c.out, e))?;
    let _lock = OutLock::acquire(&c.out)?;
    let mut r = Runner {
        file: &c.file,
        from: options.from,
        forced: BTreeSet::new(),
        partial: vec![],
        main: true,
        observer,
        // The images the items name, by content (the plans name only their folder); the
        // variants change neither the items nor the image folder.
        images: [
            images_fingerprint(&c.data, &c.image_root)?,
            images_fingerprint(&c.test, &c.image_root)?,
        ],
    };
    let main = pass(&mut r, c, &c.out, None)?;
    r.main = false;
    let (base, aligned) = (
        read_metrics(&main.base.path)?,
        read_metrics(&main.aligned.path)?,
    );
    let table = comparison_table(c.task, ["base", "MMedPO"], &base, &aligned);
    let md = c.out.join("summary.md");
    write_atomic(&md, table.as_bytes())?;
    let stamps: serde_json::Map<String, serde_json::Value> = main
        .stamps
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into()))
        .collect();
    write_json(
        &c.out.join("summary.json"),
        &serde_json::json!({"task": c.task, "base": base, "mmedpo": aligned, "stages": stamps}),
    )?;
    let keys = metric_keys(c.task);
    let values = |m: &serde_json::Value| -> Vec<Option<f64>> {
        keys.iter().map(|k| m[*k].as_f64()).collect()
    };
    let bars = [
        ("base".to_string(), values(&base)),
        ("MMedPO".to_string(), values(&aligned)),
    ];
    let png = c.out.join("summary.png");
    match crate::plot::plot_metric_bars(keys, &bars, "base vs MMedPO (test set)", &png) {
        Ok(()) => observer.note(&format!("plot: {}", png.display())),
        Err(e) => tracing::warn!("no comparison plot: {e}"),
    }
    let ablations = if options.ablations {
        let mut rows = vec![
            ("base".to_string(), base.clone()),
            ("stage 1+2 (MMedPO)".to_string(), aligned.clone()),
        ];
        for (name, v) in &presets {
            observer.note(&format!("== ablation: {name}"));
            let root = c.out.join("ablations").join(slug(name));
            let res = pass(&mut r, v, &root, Some(&c.out))?;
            rows.push((name.to_string(), read_metrics(&res.aligned.path)?));
        }
        let mut t = format!(
            "| variant | {} |\n|---|{}\n",
            keys.join(" | "),
            "---|".repeat(keys.len())
        );
        for (name, m) in &rows {
            let cells: Vec<String> = keys.iter().map(|k| cell(&m[*k])).collect();
            t.push_str(&format!("| {name} | {} |\n", cells.join(" | ")));
        }
        write_atomic(&c.out.join("ablations.md"), t.as_bytes())?;
        let bars: Vec<_> = rows.iter().map(|(n, m)| (n.clone(), values(m))).collect();
        let png = c.out.join("ablations.png");
        match crate::plot::plot_metric_bars(keys, &bars, "ablations (test set)", &png) {
            Ok(()) => observer.note(&format!("plot: {}", png.display())),
            Err(e) => tracing::warn!("no ablation plot: {e}"),
        }
        let json: serde_json::Map<String, serde_json::Value> = rows.iter().cloned().collect();
        write_json(&c.out.join("ablations.json"), &json)?;
        Some((rows, t))
    } else {
        None
    };
    Ok(Summary {
        task: c.task,
        base,
        mmedpo: aligned,
        table,
        ablations,
        partial: r.partial,
    })
}
