//! `mmedpo curate-text`: MMedPO's text preference pairs. For each (image, question, ground truth)
//! item the target LLaVA model samples `--n` answers (per-item seeds, so order and restarts do not
//! change them), and the judge (`--judge openai=URL@MODEL` or `local=DIR`) picks the most
//! hallucinated one or writes one. The output is the MMedPO preference format (chosen = ground
//! truth, rejected = that answer, same image), without weights: `mmedpo score-relevance` sets them.
//!
//! Resumable like `score-relevance`: `OUT.progress.jsonl` (one line per curated item, written after
//! its transcript in `OUT.transcripts.jsonl`); a restart skips curated items and retries failed
//! ones; the output file is written at the end in input order.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use mmedpo_core::journal::{write_json, Journal};
use mmedpo_core::record::{fingerprint_u64, read_items, RecordId};
use mmedpo_curation::{judge, to_record, CandidateSampler, Item, JudgePrompts, Verdict};
use mmedpo_llm::{GenerationConfig, Sampling, Template, Tokenizer};
use mmedpo_lvlm::generate::generate_answers;
use mmedpo_lvlm::LlavaForConditionalGeneration;
use mmedpo_vision::AspectRatio;

use crate::common::{load_llava_checked, load_tokenizer};
use crate::common::{side, Outcome};
use crate::relevance::{agent_input, parse_agent, LocalArgs};
use crate::{with_backend, DeviceKind, Dtype};

/// Arguments of `mmedpo curate-text`.
#[derive(Args, Debug)]
pub struct CurateArgs {
    /// Items (MMedPO format; `rejected_conversations` may be absent): image, question, ground truth.
    #[arg(long)]
    data: PathBuf,
    /// Folder the items' `image` paths are relative to.
    #[arg(long)]
    image_root: PathBuf,
    /// The target Med-LVLM (a LLaVA directory, original LLaVA-Med or llava-hf layout).
    #[arg(long)]
    model: PathBuf,
    /// CLIP tower directory for a LLaVA whose tower is not in its checkpoint.
    #[arg(long)]
    vision_tower: Option<PathBuf>,
    /// tokenizer.json to use instead of MODEL/tokenizer.json.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// The target model's conversation template (vicuna_v1 or mistral_instruct).
    #[arg(long, default_value = "vicuna_v1")]
    template: String,
    /// Answers sampled per item.
    #[arg(long, default_value_t = 5)]
    n: usize,
    /// Sampling temperature of the target model.
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Nucleus mass of the target model's sampling.
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Most tokens per sampled answer.
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Base seed (each item's draw is seeded from it and the item id).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The judge: `openai=BASE_URL@MODEL` or `local=MODEL_DIR`.
    #[arg(long)]
    judge: String,
    /// Environment variable holding the judge's API key (its value is never logged).
    #[arg(long)]
    api_key_env: Option<String>,
    /// Seconds per HTTP request.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// Items whose judge requests are in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Corrective retries after an unusable verdict.
    #[arg(long, default_value_t = 2)]
    max_retries: usize,
    /// Folder with prompt overrides (judge.txt, judge_corrective.txt).
    #[arg(long)]
    prompts: Option<PathBuf>,
    #[command(flatten)]
    local: LocalArgs,
    /// Output preference file (MMedPO format, no weights yet).
    #[arg(long)]
    out: PathBuf,
    /// Start the journals over when they come from other inputs (instead of refusing).
    #[arg(long)]
    overwrite: bool,
    /// Where the target model runs.
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    device: DeviceKind,
    /// Float type of the target model .
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    dtype: Dtype,
}

fn item_seed(seed: u64, id: &str) -> u64 {
    fingerprint_u64([seed.to_le_bytes().as_slice(), id.as_bytes()])
}

/// The target LLaVA as a candidate sampler.
struct LlavaSampler<'a, B: Backend> {
    model: &'a LlavaForConditionalGeneration<B>,
    tokenizer: &'a Tokenizer,
    template: Template,
    aspect: AspectRatio,
    image_size: u32,
    image_root: &'a Path,
    config: GenerationConfig,
    temperature: f32,
    top_p: f32,
    device: &'a B::Device,
}

impl<B: Backend> CandidateSampler for LlavaSampler<'_, B> {
    fn sample(&mut self, items: &[Item], n: usize, seed: u64) -> Result<Vec<Vec<String>>, String> {
        let mut all = Vec::with_capacity(items.len());
        for item in items {
            let path = self.image_root.join(&item.image);
            let batch: Vec<(&Path, &str)> = (0..n)
                .map(|_| (path.as_path(), item.question.as_str()))
                .collect();
            let mut config = self.config.clone();
            // Row r samples with seed + r: n different answers, the same ones on every run.
            config.sampling = Sampling::Sample {
                temperature: self.temperature,
                top_p: self.top_p,
                seed: item_seed(seed, &item.id),
            };
            let out = generate_answers(
                self.model,
                self.tokenizer,
                self.template,
                &batch,
                self.aspect,
                self.image_size,
                &config,
                self.device,
            )
            .map_err(|e| format!("item {}: {e}", item.id))?;
            let texts = out
                .tokens
                .iter()
                .map(|t| self.tokenizer.decode(t, true).map(|s| s.trim().to_string()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            all.push(texts);
        }
        Ok(all)
    }
}

/// Runs `mmedpo curate-text`.
pub fn run(args: CurateArgs) -> Result<Outcome> {
    with_backend!(args.device, |B, device| run_on::<B>(&args, &device))
}

fn run_on<B: Backend>(args: &CurateArgs, device: &B::Device) -> Result<Outcome> {
    if args.n == 0 {
        bail!("--n must be at least 1");
    }
    let records = read_items(&args.data)?;
    let items: Vec<Item> = records
        .iter()
        .map(|r| Item::from_record(r).context("an item without a question"))
        .collect::<Result<_>>()?;
    for it in &items {
        let p = args.image_root.join(&it.image);
        if !p.is_file() {
            bail!(
                "{}: item {}: image {} not found",
                args.data.display(),
                it.id,
                p.display()
            );
        }
    }
    let prompts = match &args.prompts {
        Some(d) => JudgePrompts::from_dir(d)
            .with_context(|| format!("reading judge prompts from {}", d.display()))?,
        None => JudgePrompts::builtin(),
    };
    let judge_agent = parse_agent(
        &args.judge,
        args.api_key_env.as_deref(),
        args.timeout,
        false,
        &args.local,
    )?;
    let tokenizer = load_tokenizer(&args.model, args.tokenizer.as_deref())?;
    let llava = load_llava_checked::<B>(
        &args.model,
        args.vision_tower.as_deref(),
        &tokenizer,
        device,
        args.dtype.burn(),
    )?;
    let mut sampler = LlavaSampler {
        model: &llava.model,
        tokenizer: &tokenizer,
        template: Template::from_name(&args.template)?,
        aspect: llava.config.aspect,
        image_size: llava.config.vision.as_ref().map_or(336, |v| v.image_size) as u32,
        image_root: &args.image_root,
        config: GenerationConfig {
            max_new_tokens: args.max_new_tokens,
            sampling: Sampling::Greedy,
            eos_token_ids: llava.config.text.eos_token_ids.clone(),
            pad_token_id: llava.config.text.pad_token_id,
        },
        temperature: args.temperature,
        top_p: args.top_p,
        device,
    };

    let _lock = mmedpo_core::manifest::OutLock::acquire(&args.out)?;
    let (progress_path, transcript_path) = (
        side(&args.out, "progress.jsonl"),
        side(&args.out, "transcripts.jsonl"),
    );
    // Pairs are resumed by id: only from a run with the same target model, sampling, judge, data.
    let manifest = mmedpo_core::manifest::Manifest::new("curate-text")
        .file("data", &args.data)?
        .value("image_root", args.image_root.display())
        .dir("model", &args.model)?
        .opt_dir("vision_tower", args.vision_tower.as_deref())?
        .opt_dir("tokenizer", args.tokenizer.as_deref())?
        .value("template", &args.template)
        .value("dtype", args.dtype.name())
        .value("n", args.n)
        .value("temperature", args.temperature)
        .value("top_p", args.top_p)
        .value("max_new_tokens", args.max_new_tokens)
        .value("seed", args.seed)
        .value("max_retries", args.max_retries)
        .value(
            "prompts",
            mmedpo_core::record::fingerprint([format!("{prompts:?}").as_bytes()]),
        )
        .option("local_template", args.local.local_template.as_ref())
        .value("local_max_new_tokens", args.local.local_max_new_tokens);
    let manifest = agent_input(manifest, "judge", &args.judge)?;
    manifest.begin(
        &side(&args.out, "manifest.json"),
        &args.out,
        args.overwrite,
        &[&progress_path, &transcript_path],
    )?;
    let mut progress = Journal::<serde_json::Value>::open(&progress_path)?;
    let mut transcripts = Journal::<serde_json::Value>::open(&transcript_path)?;
    tracing::info!(items = items.len(), already = progress.len(), n = args.n, judge = %judge_agent.name(), "curating text pairs");
    let bar = ProgressBar::new(items.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} items {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(progress.len() as u64);
    let mut failed = Vec::new();
    // Items go in chunks: the target model samples each chunk's answers (one item per batch of
    // `n` rows), then the judge sees the chunk's items concurrently, so a judge server is kept busy
    // while the next chunk's answers are sampled on the next iteration.
    let todo: Vec<(&RecordId, &Item)> = records
        .iter()
        .zip(&items)
        .filter(|(r, _)| !progress.contains(&r.id))
        .map(|(r, it)| (&r.id, it))
        .collect();
    for chunk in todo.chunks(args.concurrency.max(1)) {
        let owned: Vec<Item> = chunk.iter().map(|&(_, it)| it.clone()).collect();
        let candidates = sampler
            .sample(&owned, args.n, args.seed)
            .map_err(|e| anyhow::anyhow!("sampling answers: {e}"))?;
        let outcomes: Vec<mmedpo_curation::Outcome> = std::thread::scope(|s| {
            let handles: Vec<_> = owned
                .iter()
                .zip(&candidates)
                .map(|(item, cands)| {
                    let (agent, prompts) = (judge_agent.as_ref(), &prompts);
                    s.spawn(move || judge(agent, item, cands, prompts, args.max_retries))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a judge thread panicked"))
                .collect()
        });
        // Transcript first: an item counts as curated only once its transcript is saved.
        for (((id, item), cands), outcome) in chunk.iter().zip(&candidates).zip(&outcomes) {
            transcripts
                .append(serde_json::json!({"id": id, "candidates": cands, "outcome": outcome}))?;
            match &outcome.verdict {
                Some(v) => {
                    let kind = match v {
                        Verdict::Picked { .. } => "picked",
                        Verdict::Written { .. } => "written",
                    };
                    progress.append(
                        serde_json::json!({"id": id, "rejected": v.text(), "source": kind}),
                    )?;
                }
                None => failed.push(item.id.clone()),
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();

    let (mut out, mut picked) = (Vec::new(), 0usize);
    for r in &records {
        if let Some(v) = progress.get(&r.id) {
            out.push(to_record(r, v["rejected"].as_str().unwrap_or_default()));
            picked += usize::from(v["source"] == "picked");
        }
    }
    write_json(&args.out, &out)?;
    note!(
        "{} text pairs in {}: {picked} picked from the model's answers, {} written by the judge; \
         {} item(s) without a usable verdict{}",
        out.len(),
        args.out.display(),
        out.len() - picked,
        failed.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(" (run again to retry): {}", failed.join(", "))
        }
    );
    note!(
        "transcripts: {}\nnext: mmedpo score-relevance --data {} --agent ... --out SCORED.json",
        transcript_path.display(),
        args.out.display()
    );
    if out.is_empty() && !failed.is_empty() {
        bail!(
            "every item failed: no usable verdict for any of the {} item(s) (see {})",
            failed.len(),
            transcript_path.display()
        );
    }
    Ok(Outcome {
        failed: failed.len(),
    })
}
