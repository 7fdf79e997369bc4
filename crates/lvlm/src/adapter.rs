//! LoRA on LLaVA's language model, in the PEFT layout the Python side uses.
//!
//! PEFT keys are `base_model.model.<module path>`; the LLM's module path depends on the Python class:
//! `model.language_model.layers.N...` for transformers' `LlavaForConditionalGeneration`,
//! `model.layers.N...` for LLaVA-Med's `LlavaMistralForCausalLM`. Saving uses the path of the
//! checkpoint's layout; loading reads the path from the adapter's own keys, so either loads.

use std::path::Path;

use burn::tensor::backend::Backend;
use mmedpo_lora::config::TargetModules;
use mmedpo_lora::peft::{attach_all, load_adapter, save_adapter, PEFT_PREFIX};
use mmedpo_lora::{LoraConfig, LoraLinear};

use crate::config::Layout;
use crate::error::{Error, Result};
use crate::llava::LlavaForConditionalGeneration;

/// The Python module path of the LLM's decoder in each layout.
pub fn decoder_path(layout: Layout) -> &'static str {
    match layout {
        Layout::Hf => "model.language_model.",
        Layout::Original => "model.",
    }
}

impl<B: Backend> LlavaForConditionalGeneration<B> {
    /// The LLM's projections with their PEFT module paths under `prefix`.
    pub fn lora_layers_with(&self, prefix: &str) -> Vec<(String, &LoraLinear<B>)> {
        self.language_model
            .lora_layers()
            .into_iter()
            .map(|(p, l)| (format!("{prefix}{p}"), l))
            .collect()
    }

    /// Mutable [`Self::lora_layers_with`].
    pub fn lora_layers_mut_with(&mut self, prefix: &str) -> Vec<(String, &mut LoraLinear<B>)> {
        self.language_model
            .lora_layers_mut()
            .into_iter()
            .map(|(p, l)| (format!("{prefix}{p}"), l))
            .collect()
    }

    /// Attaches fresh adapters to the targeted LLM projections (never to the tower or projector).
    pub fn attach_lora(
        &mut self,
        config: &LoraConfig,
        layout: Layout,
        device: &B::Device,
    ) -> usize {
        attach_all(
            self.lora_layers_mut_with(decoder_path(layout)),
            config,
            device,
        )
    }

    /// The DPO reference: the same network with every adapter off (weights shared, not copied).
    pub fn reference(&self) -> Self {
        let mut m = self.clone();
        m.language_model = self.language_model.without_adapters();
        m
    }

    /// Saves the adapters in the PEFT layout of `layout`. `target_modules` is written as a regex
    /// naming exactly the adapted LLM projections, so PEFT does not also wrap the CLIP tower's
    /// `q_proj`/`k_proj`/`v_proj` (which a plain name list would match).
    pub fn save_adapter(&self, dir: &Path, config: &LoraConfig, layout: Layout) -> Result<()> {
        let layers = self.lora_layers_with(decoder_path(layout));
        let mut names: Vec<&str> = layers
            .iter()
            .filter(|(_, l)| l.lora.is_some())
            .filter_map(|(p, _)| p.rsplit('.').next())
            .collect();
        names.sort_unstable();
        names.dedup();
        let prefix = regex_escape(decoder_path(layout));
        let pattern = format!(
            r"{prefix}layers\.\d+\.(self_attn|mlp)\.({})",
            names.join("|")
        );
        let config = LoraConfig {
            target_modules: TargetModules::Regex(pattern),
            ..config.clone()
        };
        Ok(save_adapter(dir, &config, &layers)?)
    }

    /// Loads a PEFT adapter (either layout's module paths), and the projector trained with it when
    /// the adapter folder holds [`NON_LORA_FILE`].
    pub fn load_adapter(&mut self, dir: &Path, device: &B::Device) -> Result<LoraConfig> {
        let file = dir.join("adapter_model.safetensors");
        let ckpt = mmedpo_core::checkpoint::Checkpoint::open(&file)?;
        let prefix = ckpt
            .keys()
            .find_map(|k| {
                let rest = k.strip_prefix(PEFT_PREFIX)?;
                rest.find("layers.").map(|i| rest[..i].to_string())
            })
            .ok_or_else(|| Error::InFile {
                path: file.clone(),
                message: "no `base_model.model.*layers.N.*` LoRA keys".into(),
            })?;
        drop(ckpt);
        let config = load_adapter(dir, self.lora_layers_mut_with(&prefix), device)?;
        if self.load_projector(dir, device)? {
            tracing::info!(dir = %dir.display(), "trained projector loaded with the adapter");
        }
        Ok(config)
    }
}

/// The file beside an adapter that holds trained non-LoRA weights (the projector), as LLaVA's
/// `non_lora_trainables.bin` but in safetensors; keys `base_model.model.<module path>.weight|bias`.
pub const NON_LORA_FILE: &str = "non_lora_trainables.safetensors";

/// The projector's Python module paths in each layout (`linear_1`, `linear_2`).
fn projector_paths(layout: Layout) -> [&'static str; 2] {
    match layout {
        Layout::Hf => [
            "model.multi_modal_projector.linear_1",
            "model.multi_modal_projector.linear_2",
        ],
        Layout::Original => ["model.mm_projector.0", "model.mm_projector.2"],
    }
}

impl<B: Backend> LlavaForConditionalGeneration<B> {
    /// Writes the projector into `dir`/[`NON_LORA_FILE`] (f32, PyTorch layout) under the module
    /// paths of `layout`, for a run that trained it.
    pub fn save_projector(&self, dir: &Path, layout: Layout) -> Result<()> {
        let [p1, p2] = projector_paths(layout);
        let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = self
            .multi_modal_projector
            .hf_tensors()
            .into_iter()
            .map(|(k, shape, v)| {
                let k = k
                    .replace("multi_modal_projector.linear_1", p1)
                    .replace("multi_modal_projector.linear_2", p2);
                (format!("{PEFT_PREFIX}{k}"), shape, v)
            })
            .collect();
        mmedpo_core::checkpoint::write_safetensors(&dir.join(NON_LORA_FILE), &tensors)?;
        Ok(())
    }

    /// Loads the projector from `dir`/[`NON_LORA_FILE`] when the adapter has one (either layout's
    /// keys, with or without LLaVA's `base_model.model.` prefix); strict. Returns whether it did.
    pub fn load_projector(&mut self, dir: &Path, device: &B::Device) -> Result<bool> {
        let file = dir.join(NON_LORA_FILE);
        if !file.is_file() {
            return Ok(false);
        }
        let mut ckpt = mmedpo_core::checkpoint::Checkpoint::open(&file)?;
        let find = |ckpt: &mmedpo_core::checkpoint::Checkpoint| {
            for layout in [Layout::Hf, Layout::Original] {
                let [p1, _] = projector_paths(layout);
                for prefix in [PEFT_PREFIX, ""] {
                    let key = format!("{prefix}{p1}.weight");
                    if ckpt.contains(&key) {
                        return Some((prefix, layout));
                    }
                }
            }
            None
        };
        let (prefix, layout) = find(&ckpt).ok_or_else(|| Error::InFile {
            path: file.clone(),
            message: "no projector keys (`*multi_modal_projector.linear_1.weight` or                       `*mm_projector.0.weight`)"
                .into(),
        })?;
        let [p1, p2] = projector_paths(layout);
        let proj = &self.multi_modal_projector;
        let (d1, d2) = (proj.linear_1.weight.dims(), proj.linear_2.weight.dims());
        let (b1, b2) = (proj.linear_1.bias.is_some(), proj.linear_2.bias.is_some());
        let linear_1 = ckpt.take_linear(&format!("{prefix}{p1}"), d1[0], d1[1], b1, device)?;
        let linear_2 = ckpt.take_linear(&format!("{prefix}{p2}"), d2[0], d2[1], b2, device)?;
        ckpt.finish()?;
        self.multi_modal_projector.linear_1 = linear_1;
        self.multi_modal_projector.linear_2 = linear_2;
        Ok(true)
    }
}

fn regex_escape(s: &str) -> String {
    s.replace('.', r"\.")
}
