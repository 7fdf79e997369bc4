//! `mmedpo eval` (generate answers, score them as the paper does), `mmedpo eval --compare` and
//! `mmedpo metrics` (score predictions made elsewhere).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use mmedpo_core::journal::{write_atomic, write_json, Journal};
use mmedpo_core::record::RecordId;
use mmedpo_eval::protocol::{read_predictions, read_test_set, score, Prediction, Task, TestItem};
use mmedpo_llm::{GenerationConfig, Sampling, Template};
use mmedpo_lvlm::generate::generate_answers;

use crate::{with_backend, DeviceKind, Dtype};

/// Arguments of `mmedpo metrics`.
#[derive(Args, Debug)]
pub struct MetricsArgs {
    /// vqa or report.
    #[arg(long)]
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
    #[arg(long, required_unless_present = "compare")]
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
    let items = read_test_set(data, task)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let _lock = mmedpo_core::manifest::OutLock::acquire(out)?;
    let max_new = args.max_new_tokens.unwrap_or(task.max_new_tokens());
    // Everything that determines the predictions: a rerun with any of it changed refuses.
    let manifest = mmedpo_core::manifest::Manifest::new("eval")
        .dir("model", model_dir)?
        .opt_dir("vision_tower", args.vision_tower.as_deref())?
        .opt_dir("adapter", args.adapter.as_deref())?
        .opt_dir("tokenizer", args.tokenizer.as_deref())?
        .file("data", data)?
        .value("task", task.name())
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
    let todo: Vec<(usize, &TestItem)> = items
        .iter()
        .enumerate()
        .filter(|(_, it)| !RecordId::from_json(&it.id).is_some_and(|id| journal.contains(&id)))
        .collect();
    let mut llava = mmedpo_lvlm::open::<B>(
        model_dir,
        args.vision_tower.as_deref(),
        args.tokenizer.as_deref(),
        device,
        args.dtype.burn(),
    )?;
    let tokenizer = &llava.tokenizer;
    if let Some(a) = &args.adapter {
        llava.model.load_adapter(a, device)?;
    }
    let size = llava.image_size();
    let bar = ProgressBar::new(items.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} answers {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position((items.len() - todo.len()) as u64);
    // Batches of consecutive items: row r of a batch seeded `seed + first index` samples with
    // `seed + its own index`, so a resumed run draws what an uninterrupted one drew.
    let mut chunks: Vec<Vec<(usize, &TestItem)>> = vec![];
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
            tokenizer,
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
    let md = metrics.table();
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
