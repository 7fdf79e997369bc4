//! Text preference pairs (paper §3.1) through [`curate_text`](crate::curation::curate_text): the
//! target LLaVA samples answers, a judge picks the most hallucinated one or writes one.

use std::path::PathBuf;

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::core::manifest::Manifest;
use crate::curation::stage::read_curation_items;
use crate::curation::{curate_text, CurateReport, CurateSettings, JudgePrompts, LlavaSampler};
use crate::error::invalid;
use crate::llm::Template;
use crate::{with_backend, DeviceKind, Dtype, Event, Observer, Result};

/// How to curate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TextPlan {
    /// Items (MMedPO format; `rejected_conversations` may be absent): image, question, truth.
    pub data: PathBuf,
    /// Folder the items' `image` paths are relative to.
    pub image_root: PathBuf,
    /// The target Med-LVLM (a LLaVA directory, original LLaVA-Med or llava-hf layout).
    pub model: PathBuf,
    /// CLIP tower directory for a LLaVA whose tower is not in its checkpoint.
    pub vision_tower: Option<PathBuf>,
    /// tokenizer.json to use instead of MODEL/tokenizer.json.
    pub tokenizer: Option<PathBuf>,
    /// The target model's conversation template (vicuna_v1 or mistral_instruct).
    pub template: String,
    /// Answers sampled per item.
    pub n: usize,
    /// Sampling temperature of the target model.
    pub temperature: f32,
    /// Nucleus mass of the target model's sampling.
    pub top_p: f32,
    /// Most tokens per sampled answer.
    pub max_new_tokens: usize,
    /// Base seed (each item's draw is seeded from it and the item id).
    pub seed: u64,
    /// The judge: `openai=BASE_URL@MODEL` or `local=MODEL_DIR`.
    pub judge: String,
    /// Environment variable holding the judge's API key (its value is never logged).
    pub api_key_env: Option<String>,
    /// Seconds per HTTP request.
    pub timeout: f64,
    /// Items whose judge requests are in flight at once.
    pub concurrency: usize,
    /// Corrective retries after an unusable verdict.
    pub max_retries: usize,
    /// Folder with prompt overrides (judge.txt, judge_corrective.txt).
    pub prompts: Option<PathBuf>,
    /// Built-in chat template for a local judge (llama3, mistral, chatml, zephyr).
    pub local_template: Option<String>,
    /// Most tokens per local-judge reply.
    pub local_max_new_tokens: usize,
    /// Where a local judge runs.
    pub local_device: DeviceKind,
    /// Output preference file (MMedPO format, no weights yet).
    pub out: PathBuf,
    /// Start the journals over when they come from other inputs (instead of refusing).
    pub overwrite: bool,
    /// Where the target model runs.
    pub device: DeviceKind,
    /// Float type of the target model.
    pub dtype: Dtype,
}

impl Default for TextPlan {
    fn default() -> Self {
        Self {
            data: PathBuf::new(),
            image_root: PathBuf::new(),
            model: PathBuf::new(),
            vision_tower: None,
            tokenizer: None,
            template: "vicuna_v1".into(),
            n: 5,
            temperature: 1.0,
            top_p: 0.95,
            max_new_tokens: 64,
            seed: 42,
            judge: String::new(),
            api_key_env: None,
            timeout: 120.0,
            concurrency: 8,
            max_retries: 2,
            prompts: None,
            local_template: None,
            local_max_new_tokens: 128,
            local_device: DeviceKind::Cpu,
            out: PathBuf::new(),
            overwrite: false,
            device: DeviceKind::Cpu,
            dtype: Dtype::F32,
        }
    }
}

impl TextPlan {
    /// The settings that need no file: `n`, the judge's spec, the template.
    pub fn check(&self) -> Result<()> {
        if self.n == 0 {
            invalid!("n = 0: sample at least 1 answer per item");
        }
        crate::scorer::AgentSpec::parse(&self.judge)?;
        Template::from_name(&self.template)?;
        Ok(())
    }
}

/// Curates (or resumes) the text pairs of `plan.data` into `plan.out`.
pub fn curate(plan: &TextPlan, observer: &dyn Observer) -> Result<CurateReport> {
    with_backend!(plan.device, |B, device| curate_on::<B>(
        plan, &device, observer
    ))
}

fn curate_on<B: Backend>(
    plan: &TextPlan,
    device: &B::Device,
    observer: &dyn Observer,
) -> Result<CurateReport> {
    plan.check()?;
    // The items are checked before any model is loaded.
    read_curation_items(&plan.data, &plan.image_root)?;
    let prompts = match &plan.prompts {
        Some(d) => JudgePrompts::from_dir(d).map_err(|e| {
            crate::Error::Invalid(format!("reading judge prompts from {}: {e}", d.display()))
        })?,
        None => JudgePrompts::builtin(),
    };
    let local = super::Local {
        template: plan.local_template.as_deref(),
        max_new_tokens: plan.local_max_new_tokens,
        device: plan.local_device,
    };
    let judge = super::build_agent(
        &plan.judge,
        plan.api_key_env.as_deref(),
        plan.timeout,
        false,
        &local,
    )?;
    let llava = crate::lvlm::open::<B>(
        &plan.model,
        plan.vision_tower.as_deref(),
        plan.tokenizer.as_deref(),
        device,
        plan.dtype.burn(),
    )?;
    let mut sampler = LlavaSampler::new(
        &llava,
        Template::from_name(&plan.template)?,
        &plan.image_root,
        plan.max_new_tokens,
        plan.temperature,
        plan.top_p,
        device,
    );
    // The target model, its sampling and the judge.
    let inputs = Manifest::new("curate-text")
        .dir("model", &plan.model)?
        .opt_dir("vision_tower", plan.vision_tower.as_deref())?
        .opt_dir("tokenizer", plan.tokenizer.as_deref())?
        .value("template", &plan.template)
        .value("dtype", plan.dtype.name())
        .value("temperature", plan.temperature)
        .value("top_p", plan.top_p)
        .value("max_new_tokens", plan.max_new_tokens)
        .option("local_template", plan.local_template.as_ref())
        .value("local_max_new_tokens", plan.local_max_new_tokens);
    let inputs = super::record_agent(inputs, "judge", &plan.judge)?;
    let settings = CurateSettings {
        n: plan.n,
        seed: plan.seed,
        max_retries: plan.max_retries,
        concurrency: plan.concurrency,
        overwrite: plan.overwrite,
    };
    super::create_parent(&plan.out)?;
    let report = curate_text(
        &plan.data,
        &plan.image_root,
        &plan.out,
        &mut sampler,
        judge.as_ref(),
        &prompts,
        inputs,
        &settings,
        &mut |done, total| observer.progress("items", done, total, ""),
    );
    observer.finish();
    let report = report?;
    observer.event(&Event::Curated(&report));
    Ok(report)
}
