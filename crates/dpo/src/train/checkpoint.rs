//! Checkpoints: `checkpoint-N/` (PEFT adapter, `optimizer.safetensors`, `trainer_state.json`),
//! written to a temporary folder then renamed; the latest complete one is what a resume reads.

use super::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TrainerState {
    pub(crate) step: usize,
    pub(crate) total_steps: usize,
    pub(crate) seed: u64,
    pub(crate) pairs: usize,
}

pub(crate) fn latest_checkpoint(out: &Path) -> Option<(usize, PathBuf)> {
    std::fs::read_dir(out)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("checkpoint-")?.parse::<usize>().ok()?;
            e.path()
                .join("trainer_state.json")
                .is_file()
                .then(|| (step, e.path()))
        })
        .max_by_key(|(s, _)| *s)
}

pub(crate) fn save_checkpoint<B: AutodiffBackend>(
    model: &LlavaForConditionalGeneration<B>,
    moments: &BTreeMap<String, Moments<Inner<B>>>,
    settings: &TrainSettings,
    out: &Path,
    step: usize,
    total: usize,
    pairs: usize,
) -> Result<()> {
    let dir = out.join(format!("checkpoint-{step}"));
    let tmp = out.join(format!(".checkpoint-{step}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| mmedpo_core::Error::io(&tmp, e))?;
    model.save_adapter(&tmp.join("adapter"), &settings.lora, settings.layout)?;
    save_moments(&tmp.join("optimizer.safetensors"), moments)?;
    if settings.projector_lr.is_some() {
        let tensors = model.multi_modal_projector.hf_tensors();
        mmedpo_core::checkpoint::write_safetensors(&tmp.join("projector.safetensors"), &tensors)?;
    }
    let state = TrainerState {
        step,
        total_steps: total,
        seed: settings.seed,
        pairs,
    };
    let path = tmp.join("trainer_state.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&state).unwrap_or_default(),
    )
    .map_err(|e| mmedpo_core::Error::io(&path, e))?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).map_err(|e| mmedpo_core::Error::io(&dir, e))?;
    tracing::info!(step, dir = %dir.display(), "checkpoint saved");
    Ok(())
}
