//! The paper's evaluation of a LLaVA (with or without an adapter) on a test set: answers
//! generated in batches (resumable, seeded per item), scored by
//! [`protocol::score`](crate::eval::protocol::score); `metrics.json` and `table.md` beside them.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::core::journal::{write_atomic, write_json, Journal};
use crate::core::record::RecordId;
use crate::error::invalid;
use crate::eval::protocol::{
    read_predictions, read_test_set, score, Metrics, Prediction, Task, TestItem,
};
use crate::llm::{GenerationConfig, Sampling, Template};
use crate::lvlm::generate::generate_answers;
use crate::{with_backend, DeviceKind, Dtype, Event, Observer, Result};

/// What to evaluate, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalPlan {
    /// LLaVA model directory.
    pub model: PathBuf,
    /// CLIP tower directory.
    pub vision_tower: Option<PathBuf>,
    /// PEFT LoRA adapter.
    pub adapter: Option<PathBuf>,
    /// tokenizer.json.
    pub tokenizer: Option<PathBuf>,
    /// Test set: JSON list or JSONL ([`read_test_set`]).
    pub data: PathBuf,
    /// Image folder.
    pub image_root: PathBuf,
    /// vqa or report.
    pub task: Task,
    /// Output folder: predictions.jsonl, metrics.json, table.md.
    pub out: PathBuf,
    /// Sampling temperature (paper: 0.2; 0 = greedy).
    pub temperature: f32,
    /// Seed (paper: 0).
    pub seed: u64,
    /// New tokens (default: 64 for VQA, 1024 for reports, as the paper).
    pub max_new_tokens: Option<usize>,
    /// Questions per generation batch.
    pub batch_size: usize,
    /// Conversation template.
    pub template: String,
    /// WordNet folder for METEOR.
    pub wordnet: Option<PathBuf>,
    /// Backend.
    pub device: DeviceKind,
    /// Float type.
    pub dtype: Dtype,
    /// Start `out` over when it holds the predictions of other inputs (instead of refusing).
    pub overwrite: bool,
}

impl Default for EvalPlan {
    fn default() -> Self {
        Self {
            model: PathBuf::new(),
            vision_tower: None,
            adapter: None,
            tokenizer: None,
            data: PathBuf::new(),
            image_root: PathBuf::new(),
            task: Task::Vqa,
            out: PathBuf::new(),
            temperature: 0.2,
            seed: 0,
            max_new_tokens: None,
            batch_size: 8,
            template: "vicuna_v1".into(),
            wordnet: None,
            device: DeviceKind::Cpu,
            dtype: Dtype::F32,
            overwrite: false,
        }
    }
}

/// What an evaluation wrote.
#[derive(Debug, Clone)]
pub struct EvalReport {
    /// The scores.
    pub metrics: Metrics,
    /// Its Markdown row (`table.md`).
    pub table: String,
    /// `predictions.jsonl`.
    pub predictions: PathBuf,
    /// `metrics.json`.
    pub metrics_path: PathBuf,
}

/// Generates the answers `plan.out` does not hold yet, then scores them all.
pub fn evaluate(plan: &EvalPlan, observer: &dyn Observer) -> Result<EvalReport> {
    with_backend!(plan.device, |B, device| evaluate_on::<B>(
        plan, &device, observer
    ))
}

fn evaluate_on<B: Backend>(
    plan: &EvalPlan,
    device: &B::Device,
    observer: &dyn Observer,
) -> Result<EvalReport> {
    let (task, out) = (plan.task, plan.out.as_path());
    let template = Template::from_name(&plan.template)?;
    let items = read_test_set(&plan.data, task)?;
    std::fs::create_dir_all(out).map_err(|e| crate::Error::io(out, e))?;
    let _lock = crate::core::manifest::OutLock::acquire(out)?;
    let max_new = plan.max_new_tokens.unwrap_or(task.max_new_tokens());
    // Everything that determines the predictions: a rerun with any of it changed refuses.
    let manifest = crate::core::manifest::Manifest::new("eval")
        .dir("model", &plan.model)?
        .opt_dir("vision_tower", plan.vision_tower.as_deref())?
        .opt_dir("adapter", plan.adapter.as_deref())?
        .opt_dir("tokenizer", plan.tokenizer.as_deref())?
        .file("data", &plan.data)?
        .value("task", task.name())
        .value("template", &plan.template)
        .value("temperature", plan.temperature)
        .value("seed", plan.seed)
        .value("max_new_tokens", max_new)
        .value("dtype", plan.dtype.name());
    let pred_path = out.join("predictions.jsonl");
    let (metrics_path, table_path) = (out.join("metrics.json"), out.join("table.md"));
    manifest.begin(
        &out.join("manifest.json"),
        out,
        plan.overwrite,
        &[&pred_path, &metrics_path, &table_path],
    )?;
    let mut journal = Journal::<Prediction>::open(&pred_path)?;
    let todo: Vec<(usize, &TestItem)> = items
        .iter()
        .enumerate()
        .filter(|(_, it)| !RecordId::from_json(&it.id).is_some_and(|id| journal.contains(&id)))
        .collect();
    let mut llava = crate::lvlm::open::<B>(
        &plan.model,
        plan.vision_tower.as_deref(),
        plan.tokenizer.as_deref(),
        device,
        plan.dtype.burn(),
    )?;
    if let Some(a) = &plan.adapter {
        llava.model.load_adapter(a, device)?;
    }
    let size = llava.image_size();
    let mut done = items.len() - todo.len();
    observer.progress("answers", done, items.len(), "");
    // Batches of consecutive items: row r of a batch seeded `seed + first index` samples with
    // `seed + its own index`, so a resumed run draws what an uninterrupted one drew.
    let mut chunks: Vec<Vec<(usize, &TestItem)>> = vec![];
    for &(i, it) in &todo {
        match chunks.last_mut() {
            Some(c)
                if c.len() < plan.batch_size.max(1)
                    && c.last().is_some_and(|(j, _)| *j + 1 == i) =>
            {
                c.push((i, it))
            }
            _ => chunks.push(vec![(i, it)]),
        }
    }
    for chunk in &chunks {
        let paths: Vec<PathBuf> = chunk
            .iter()
            .map(|(_, it)| plan.image_root.join(&it.image))
            .collect();
        for ((_, it), p) in chunk.iter().zip(&paths) {
            if !p.is_file() {
                observer.finish();
                invalid!("item {}: image {} not found", it.id, p.display());
            }
        }
        let qs: Vec<(&Path, &str)> = chunk
            .iter()
            .zip(&paths)
            .map(|((_, it), p)| (p.as_path(), it.question.as_str()))
            .collect();
        let sampling = if plan.temperature > 0.0 {
            Sampling::Sample {
                temperature: plan.temperature,
                top_p: 1.0,
                seed: plan.seed.wrapping_add(chunk[0].0 as u64),
            }
        } else {
            Sampling::Greedy
        };
        let config = GenerationConfig {
            max_new_tokens: max_new,
            sampling,
            eos_token_ids: llava.config.text.eos_token_ids.clone(),
            pad_token_id: llava.config.text.pad_token_id,
        };
        let gen = generate_answers(
            &llava.model,
            &llava.tokenizer,
            template,
            &qs,
            llava.config.aspect,
            size,
            &config,
            device,
        )?;
        for ((_, it), ids) in chunk.iter().zip(&gen.tokens) {
            journal.append(Prediction {
                id: it.id.clone(),
                prediction: llava.tokenizer.decode(ids, true)?.trim().to_string(),
                reference: it.reference.clone(),
                answer_type: it.answer_type.clone(),
            })?;
        }
        done += chunk.len();
        observer.progress("answers", done, items.len(), "");
    }
    observer.finish();
    let preds = read_predictions(&pred_path)?;
    let metrics = score(task, &preds, plan.wordnet.as_deref())?;
    write_json(&metrics_path, &metrics)?;
    let table = metrics.table();
    write_atomic(&table_path, table.as_bytes())?;
    let report = EvalReport {
        metrics,
        table,
        predictions: pred_path,
        metrics_path,
    };
    observer.event(&Event::Evaluated(&report));
    Ok(report)
}

/// The metrics a task's tables show, as `mmedpo metrics` names them.
pub fn metric_keys(task: Task) -> &'static [&'static str] {
    match task {
        Task::Vqa => &["open_recall", "closed_accuracy"],
        Task::Report => &[
            "bleu", "bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "meteor",
        ],
    }
}

/// A `metrics.json` file as JSON (keys as `mmedpo metrics` prints them).
pub fn read_metrics(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| crate::Error::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| crate::Error::Invalid(format!("{}: not JSON: {e}", path.display())))
}

/// A metric as a table cell: two decimals, `n/a` where it is null.
pub fn cell(v: &serde_json::Value) -> String {
    v.as_f64().map_or("n/a".into(), |x| format!("{x:.2}"))
}

/// Two results side by side in Markdown, with B − A: `| metric | A | B | Δ |`.
pub fn comparison_table(
    task: Task,
    labels: [&str; 2],
    a: &serde_json::Value,
    b: &serde_json::Value,
) -> String {
    let mut t = format!(
        "| metric | {} | {} | Δ |\n|---|---|---|---|\n",
        labels[0], labels[1]
    );
    for k in metric_keys(task) {
        let diff = a[*k]
            .as_f64()
            .zip(b[*k].as_f64())
            .map_or("n/a".into(), |(x, y)| format!("{:+.2}", y - x));
        t.push_str(&format!(
            "| {k} | {} | {} | {diff} |\n",
            cell(&a[*k]),
            cell(&b[*k])
        ));
    }
    t
}

/// The table of two `metrics.json` files, B − A ([`comparison_table`]); files of two tasks are an
/// error naming both.
pub fn compare_files(a: &Path, b: &Path) -> Result<String> {
    let (ma, mb) = (read_metrics(a)?, read_metrics(b)?);
    if ma["task"] != mb["task"] {
        invalid!(
            "{} is a {} result and {} a {} result",
            a.display(),
            ma["task"],
            b.display(),
            mb["task"]
        );
    }
    let task: Task = serde_json::from_value(ma["task"].clone())
        .map_err(|_| crate::Error::Invalid(format!("{}: no task", a.display())))?;
    Ok(comparison_table(task, ["A", "B"], &ma, &mb))
}
