//! `mmedpo eval` (generate answers, score them as the paper does), `mmedpo eval --compare` and
//! `mmedpo metrics` (score predictions made elsewhere).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use mmedpo_core::journal::{write_atomic, write_json, Entry, Journal};
use mmedpo_core::record::RecordId;
use mmedpo_eval::normalize::normalize_word;
use mmedpo_eval::report_scores;
use mmedpo_eval::vqa::{closed_hit, open_recall};
use mmedpo_eval::wordnet::WordNet;
use mmedpo_llm::{GenerationConfig, Sampling, Template};
use mmedpo_lvlm::generate::generate_answers;
use serde::{Deserialize, Serialize};

use crate::common::{load_llava_checked, load_tokenizer};
use crate::{with_backend, DeviceKind, Dtype};

/// Which benchmark kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Med-VQA (SLAKE, VQA-RAD): closed accuracy, open recall.
    Vqa,
    /// Report generation (IU-Xray, MIMIC-CXR): BLEU, ROUGE-L, METEOR.
    Report,
}

/// The report prompts of the authors' inference script (`inference/llava-med-1.5_report.py`).
pub const REPORT_PROMPTS: [&str; 5] = [
    "<image>\nWalk through the important details of the image",
    "<image>\nClarify the contents of the displayed image with great detail",
    "<image>\nExamine the image closely and share its details",
    "<image>\nClarify the contents of the displayed image with great detail",
    "<image>\nAnalyze the image in a comprehensive and detailed manner",
];

/// One line of a predictions file (what `mmedpo eval` writes and `mmedpo metrics` reads).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Prediction {
    /// Item id.
    pub id: serde_json::Value,
    /// The model's answer.
    pub prediction: String,
    /// The ground truth.
    pub reference: String,
    /// `CLOSED` or `OPEN` (VQA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_type: Option<String>,
}

impl Entry for Prediction {
    fn record_id(&self) -> Option<RecordId> {
        RecordId::from_json(&self.id)
    }
}

/// The longest prediction or reference `score` takes for reports: a report of the test sets has a
/// few hundred words, and ROUGE-L's table of two 20,000-word texts is 100 MB.
pub const MAX_REPORT_WORDS: usize = 20_000;

/// Scores × 100, as the paper reports them; a metric without items is null.
pub fn score(
    task: Task,
    preds: &[Prediction],
    wordnet: Option<&Path>,
) -> Result<serde_json::Value> {
    if preds.is_empty() {
        bail!("no predictions to score: a metric of nothing is not 0");
    }
    match task {
        Task::Vqa => {
            let (mut closed, mut open) = (vec![], vec![]);
            for p in preds {
                match p.answer_type.as_deref().map(str::to_uppercase).as_deref() {
                    Some("CLOSED") => closed.push(closed_hit(&p.prediction, &p.reference)),
                    Some("OPEN") => open.push(open_recall(
                        &normalize_word(&p.prediction.to_lowercase()),
                        &normalize_word(&p.reference.to_lowercase()),
                    )),
                    other => bail!(
                        "item {}: answer_type {:?} (expected CLOSED or OPEN)",
                        p.id,
                        other
                    ),
                }
            }
            // A kind of question the test set does not have has no score (null), not 0.
            let mean =
                |v: &[f64]| (!v.is_empty()).then(|| 100.0 * v.iter().sum::<f64>() / v.len() as f64);
            Ok(serde_json::json!({
                "task": "vqa", "closed_accuracy": mean(&closed), "open_recall": mean(&open),
                "closed_count": closed.len(), "open_count": open.len(),
            }))
        }
        Task::Report => {
            for p in preds {
                for (field, text) in [("prediction", &p.prediction), ("reference", &p.reference)] {
                    let words = text.split_whitespace().count();
                    if words > MAX_REPORT_WORDS {
                        bail!(
                            "item {}: {field} has {words} words, more than the {MAX_REPORT_WORDS} \
                             the report metrics take (ROUGE-L's table grows with the product of the lengths)",
                            p.id
                        );
                    }
                }
            }
            let wn = WordNet::open(wordnet)?;
            let n = preds.len().max(1) as f64;
            let mut sums = [0f64; 7];
            for p in preds {
                let s = report_scores(&p.prediction, &p.reference, &wn);
                for (sum, b) in sums.iter_mut().zip(s.bleu) {
                    *sum += b;
                }
                sums[4] += s.bleu_cumulative;
                sums[5] += s.rouge_l;
                sums[6] += s.meteor;
            }
            let m = sums.map(|x| 100.0 * x / n);
            Ok(serde_json::json!({
                "task": "report", "bleu_1": m[0], "bleu_2": m[1], "bleu_3": m[2], "bleu_4": m[3],
                "bleu": (m[0] + m[1] + m[2] + m[3]) / 4.0, "bleu_cumulative": m[4], "rouge_l": m[5], "meteor": m[6],
                "count": preds.len(),
            }))
        }
    }
}

fn read_predictions(path: &Path) -> Result<Vec<Prediction>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = vec![];
    let mut bad = vec![];
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        match serde_json::from_str::<Prediction>(line) {
            Ok(p) => out.push(p),
            Err(e) => bad.push(format!("line {}: {e}", n + 1)),
        }
    }
    if !bad.is_empty() {
        bail!(
            "{}: {} bad line(s):\n  {}",
            path.display(),
            bad.len(),
            bad.join("\n  ")
        );
    }
    Ok(out)
}

/// Arguments of `mmedpo metrics`.
#[derive(Args, Debug)]
pub struct MetricsArgs {
    /// vqa or report.
    #[arg(long, value_enum)]
    task: Task,
    /// JSONL: `id`, `prediction`, `reference` (and `answer_type` for VQA) per line.
    #[arg(long)]
    predictions: PathBuf,
    /// WordNet database folder (default $MMEDPO_WORDNET or /usr/share/wordnet).
    #[arg(long)]
    wordnet: Option<PathBuf>,
}

/// Runs `mmedpo metrics`.
pub fn metrics(args: MetricsArgs) -> Result<()> {
    let preds = read_predictions(&args.predictions)?;
    say!(
        "{}",
        serde_json::to_string_pretty(&score(args.task, &preds, args.wordnet.as_deref())?)?
    );
    Ok(())
}

/// Arguments of `mmedpo eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Print the difference table of two metrics.json files (B − A) and exit.
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    compare: Option<Vec<PathBuf>>,
    /// LLaVA model directory.
    #[arg(long, required_unless_present = "compare")]
    model: Option<PathBuf>,
    /// CLIP tower directory.
    #[arg(long)]
    vision_tower: Option<PathBuf>,
    /// PEFT LoRA adapter.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// tokenizer.json.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Test set: JSON list or JSONL. VQA items: `question_id`/`id`, `image`, `question`/`text`,
    /// `answer`, `answer_type`; report items: `question_id`/`id`, `image`/`image_path`, `report`/`gt_report`.
    #[arg(long, required_unless_present = "compare")]
    data: Option<PathBuf>,
    /// Image folder.
    #[arg(long, required_unless_present = "compare")]
    image_root: Option<PathBuf>,
    /// vqa or report.
    #[arg(long, value_enum, required_unless_present = "compare")]
    task: Option<Task>,
    /// Output folder: predictions.jsonl, metrics.json, table.md.
    #[arg(long, required_unless_present = "compare")]
    out: Option<PathBuf>,
    /// Sampling temperature (paper: 0.2; 0 = greedy).
    #[arg(long, default_value_t = 0.2)]
    temperature: f32,
    /// Seed (paper: 0).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// New tokens (default 64 for VQA, 1024 for reports, as the paper).
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// Questions per generation batch.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Conversation template.
    #[arg(long, default_value = "vicuna_v1")]
    template: String,
    /// WordNet folder for METEOR.
    #[arg(long)]
    wordnet: Option<PathBuf>,
    /// Backend.
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    device: DeviceKind,
    /// Float type.
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    dtype: Dtype,
    /// Start --out over when it holds the predictions of other inputs (instead of refusing).
    #[arg(long)]
    overwrite: bool,
}

#[derive(Debug, Clone)]
struct Item {
    id: serde_json::Value,
    image: String,
    question: String,
    reference: String,
    answer_type: Option<String>,
}

fn read_items(path: &Path, task: Task) -> Result<Vec<Item>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let values: Vec<serde_json::Value> = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Array(a)) => a,
        _ => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(n, l)| {
                serde_json::from_str(l)
                    .with_context(|| format!("{}: line {}", path.display(), n + 1))
            })
            .collect::<Result<_>>()?,
    };
    if values.is_empty() {
        bail!("{}: no test items", path.display());
    }
    let str_of = |v: &serde_json::Value, keys: &[&str]| {
        keys.iter()
            .find_map(|k| v.get(*k).and_then(|x| x.as_str()).map(String::from))
    };
    let mut items = vec![];
    let mut bad = vec![];
    // The authors' report script: random.seed(42), then one random.choice of the prompts per item.
    let mut prompts = crate::pyrandom::PyRandom::new(42);
    for (i, v) in values.iter().enumerate() {
        let id = v
            .get("question_id")
            .or_else(|| v.get("id"))
            .cloned()
            // An item without an id is named by its index, as a string no numeric id can equal.
            .unwrap_or_else(|| serde_json::json!(format!("#{i}")));
        let image = str_of(v, &["image", "image_path"]);
        let (question, reference, answer_type) = match task {
            Task::Vqa => (
                str_of(v, &["question", "text"]),
                str_of(v, &["answer"]),
                str_of(v, &["answer_type"]),
            ),
            Task::Report => {
                let prompt = REPORT_PROMPTS[prompts.choice(REPORT_PROMPTS.len() as u32) as usize];
                (
                    Some(prompt.to_string()),
                    str_of(v, &["report", "gt_report"]),
                    None,
                )
            }
        };
        let mut missing = vec![];
        if image.is_none() {
            missing.push("image");
        }
        if question.is_none() {
            missing.push("question");
        }
        if reference.is_none() {
            missing.push(if task == Task::Vqa {
                "answer"
            } else {
                "report"
            });
        }
        let mut problems: Vec<String> = vec![];
        if RecordId::from_json(&id).is_none() {
            problems.push(format!("id {id} is not an integer or a string"));
        }
        if let Some(p) = image
            .as_deref()
            .filter(|p| mmedpo_core::record::climbs_out(p))
        {
            problems.push(format!(
                "image {p:?} climbs out of the image folder (relative paths stay under --image-root)"
            ));
        }
        if task == Task::Vqa {
            match answer_type.as_deref().map(str::to_uppercase).as_deref() {
                Some("CLOSED") | Some("OPEN") => {}
                Some(_) => problems.push(format!(
                    "answer_type {:?} is not CLOSED or OPEN",
                    answer_type.as_deref().unwrap_or_default()
                )),
                None => missing.push("answer_type (CLOSED or OPEN)"),
            }
        }
        if !missing.is_empty() {
            problems.insert(0, format!("missing {}", missing.join(", ")));
        }
        if problems.is_empty() {
            items.push(Item {
                id,
                image: image.unwrap_or_default(),
                question: question
                    .unwrap_or_default()
                    .replace("<image>", "")
                    .trim()
                    .to_string(),
                reference: reference.unwrap_or_default(),
                answer_type,
            });
        } else {
            bad.push(format!("item {id} (index {i}): {}", problems.join("; ")));
        }
    }
    // Predictions are resumed by id: two items with one id would share an answer.
    let mut first: HashMap<String, usize> = HashMap::new();
    for (i, it) in items.iter().enumerate() {
        if let Some(j) = first.insert(it.id.to_string(), i) {
            bad.push(format!("id {} is used by items {j} and {i}", it.id));
        }
    }
    if !bad.is_empty() {
        bail!(
            "{}: {} bad item(s):\n  {}",
            path.display(),
            bad.len(),
            bad.join("\n  ")
        );
    }
    Ok(items)
}

fn table(task: Task, m: &serde_json::Value) -> String {
    let f = |k: &str| m[k].as_f64().map_or("n/a".into(), |x| format!("{x:.2}"));
    match task {
        Task::Vqa => format!(
            "| Open (recall) | Closed (accuracy) |\n|---|---|\n| {} | {} |\n",
            f("open_recall"),
            f("closed_accuracy")
        ),
        Task::Report => format!(
            "| BLEU | ROUGE-L | METEOR |\n|---|---|---|\n| {} | {} | {} |\n",
            f("bleu"),
            f("rouge_l"),
            f("meteor")
        ),
    }
}

/// Runs `mmedpo eval`.
pub fn run(args: EvalArgs) -> Result<()> {
    if let Some(files) = &args.compare {
        return compare(&files[0], &files[1]);
    }
    with_backend!(args.device, |B, device| run_on::<B>(&args, &device))
}

fn run_on<B: Backend>(args: &EvalArgs, device: &B::Device) -> Result<()> {
    let (Some(model_dir), Some(data), Some(image_root), Some(task), Some(out)) = (
        &args.model,
        &args.data,
        &args.image_root,
        args.task,
        &args.out,
    ) else {
        bail!("--model, --data, --image-root, --task and --out are required");
    };
    let template = Template::from_name(&args.template)?;
    let items = read_items(data, task)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let _lock = mmedpo_core::manifest::OutLock::acquire(out)?;
    let max_new = args.max_new_tokens.unwrap_or(match task {
        Task::Vqa => 64,
        Task::Report => 1024,
    });
    // Everything that determines the predictions: a rerun with any of it changed refuses.
    let manifest = mmedpo_core::manifest::Manifest::new("eval")
        .dir("model", model_dir)?
        .opt_dir("vision_tower", args.vision_tower.as_deref())?
        .opt_dir("adapter", args.adapter.as_deref())?
        .opt_dir("tokenizer", args.tokenizer.as_deref())?
        .file("data", data)?
        .value("task", format!("{task:?}").to_lowercase())
        .value("template", &args.template)
        .value("temperature", args.temperature)
        .value("seed", args.seed)
        .value("max_new_tokens", max_new)
        .value("dtype", args.dtype.name());
    let pred_path = out.join("predictions.jsonl");
    let (metrics_path, table_path) = (out.join("metrics.json"), out.join("table.md"));
    manifest.begin(
        &out.join("manifest.json"),
        out,
        args.overwrite,
        &[&pred_path, &metrics_path, &table_path],
    )?;
    let mut journal = Journal::<Prediction>::open(&pred_path)?;
    let todo: Vec<(usize, &Item)> = items
        .iter()
        .enumerate()
        .filter(|(_, it)| !RecordId::from_json(&it.id).is_some_and(|id| journal.contains(&id)))
        .collect();
    let tokenizer = load_tokenizer(model_dir, args.tokenizer.as_deref())?;
    let mut llava = load_llava_checked::<B>(
        model_dir,
        args.vision_tower.as_deref(),
        &tokenizer,
        device,
        args.dtype.burn(),
    )?;
    if let Some(a) = &args.adapter {
        llava.model.load_adapter(a, device)?;
    }
    let size = llava.config.vision.as_ref().map_or(336, |v| v.image_size) as u32;
    let bar = ProgressBar::new(items.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} answers {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position((items.len() - todo.len()) as u64);
    // Batches of consecutive items: row r of a batch seeded `seed + first index` samples with
    // `seed + its own index`, so a resumed run draws what an uninterrupted one drew.
    let mut chunks: Vec<Vec<(usize, &Item)>> = vec![];
    for &(i, it) in &todo {
        match chunks.last_mut() {
            Some(c)
                if c.len() < args.batch_size.max(1)
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
            .map(|(_, it)| image_root.join(&it.image))
            .collect();
        for ((_, it), p) in chunk.iter().zip(&paths) {
            if !p.is_file() {
                bail!("item {}: image {} not found", it.id, p.display());
            }
        }
        let qs: Vec<(&Path, &str)> = chunk
            .iter()
            .zip(&paths)
            .map(|((_, it), p)| (p.as_path(), it.question.as_str()))
            .collect();
        let sampling = if args.temperature > 0.0 {
            Sampling::Sample {
                temperature: args.temperature,
                top_p: 1.0,
                seed: args.seed.wrapping_add(chunk[0].0 as u64),
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
            &tokenizer,
            template,
            &qs,
            llava.config.aspect,
            size,
            &config,
            device,
        )?;
        for ((_, it), ids) in chunk.iter().zip(&gen.tokens) {
            let p = Prediction {
                id: it.id.clone(),
                prediction: tokenizer.decode(ids, true)?.trim().to_string(),
                reference: it.reference.clone(),
                answer_type: it.answer_type.clone(),
            };
            journal.append(p)?;
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let preds = read_predictions(&pred_path)?;
    let metrics = score(task, &preds, args.wordnet.as_deref())?;
    write_json(&metrics_path, &metrics)?;
    let md = table(task, &metrics);
    write_atomic(&table_path, md.as_bytes())?;
    say!("{md}");
    note!(
        "predictions: {}\nmetrics:     {}",
        pred_path.display(),
        metrics_path.display()
    );
    Ok(())
}

fn compare(a: &Path, b: &Path) -> Result<()> {
    let read = |p: &Path| -> Result<serde_json::Value> {
        Ok(serde_json::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )?)
    };
    let (ma, mb) = (read(a)?, read(b)?);
    if ma["task"] != mb["task"] {
        bail!(
            "{} is a {} result and {} a {} result",
            a.display(),
            ma["task"],
            b.display(),
            mb["task"]
        );
    }
    let keys: &[&str] = if ma["task"] == "vqa" {
        &["open_recall", "closed_accuracy"]
    } else {
        &[
            "bleu", "bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "meteor",
        ]
    };
    say!("| metric | A | B | B − A |\n|---|---|---|---|");
    for k in keys {
        let cell = |v: Option<f64>| v.map_or("n/a".to_string(), |x| format!("{x:.2}"));
        let (x, y) = (ma[*k].as_f64(), mb[*k].as_f64());
        let diff = x
            .zip(y)
            .map_or("n/a".to_string(), |(x, y)| format!("{:+.2}", y - x));
        say!("| {k} | {} | {} | {diff} |", cell(x), cell(y));
    }
    Ok(())
}
