//! Sequence log-probabilities of preference pairs: `log π(y_w | x)` with the chosen text on the
//! item's `image` and `log π(y_l | x*)` with the rejected text on its `rejected_image` (MMedPO
//! Eq. 3), summed over the response tokens LLaVA's `preprocess_v1` labels.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use mmedpo_core::checkpoint::dir_fingerprint;
use mmedpo_core::record::{fingerprint, PreferenceRecord, RecordId};
use mmedpo_llm::{Template, Tokenizer};
use mmedpo_vision::preprocess::{normalize, preprocess_u8};
use mmedpo_vision::AspectRatio;

use crate::error::{Error, Result};
use crate::llava::{LlavaForConditionalGeneration, Sequence};
use crate::prompt::{check_placeholders, conversation_labels};

/// Log-probabilities of one pair (one line of `mmedpo score`'s output).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PairScore {
    /// The item's id.
    pub id: RecordId,
    /// `log π(chosen | image)`.
    pub chosen_logp: f64,
    /// `log π(rejected | rejected_image)`.
    pub rejected_logp: f64,
    /// Scored tokens of the chosen answer.
    pub chosen_tokens: usize,
    /// Scored tokens of the rejected answer.
    pub rejected_tokens: usize,
}

impl mmedpo_core::journal::Entry for PairScore {
    fn record_id(&self) -> Option<RecordId> {
        Some(self.id.clone())
    }
}

/// A pair ready to run: both sequences and both image files.
#[derive(Debug, Clone)]
pub struct PreparedPair {
    /// The item's id.
    pub id: RecordId,
    /// Chosen conversation with labels.
    pub chosen: Sequence,
    /// Rejected conversation with labels.
    pub rejected: Sequence,
    /// The chosen branch's image (preprocessed, `[3, size, size]` values).
    pub chosen_pixels: Vec<f32>,
    /// The rejected branch's image.
    pub rejected_pixels: Vec<f32>,
}

/// How pairs are turned into model inputs.
#[derive(Debug, Clone)]
pub struct PairSettings {
    /// Conversation template (MMedPO: vicuna_v1).
    pub template: Template,
    /// Folder the records' image paths are relative to.
    pub image_root: PathBuf,
    /// Pad-to-square or not.
    pub aspect: AspectRatio,
    /// Tower input size (336).
    pub image_size: u32,
}

fn image_pixels(settings: &PairSettings, rel: &str, id: &RecordId) -> Result<Vec<f32>> {
    let path = settings.image_root.join(rel);
    let img = mmedpo_vision::preprocess::load_rgb(&path).map_err(|e| Error::Item {
        id: id.to_string(),
        message: e.to_string(),
    })?;
    Ok(normalize(&preprocess_u8(
        &img,
        settings.image_size,
        settings.aspect,
    )))
}

/// Tokenizes, labels and loads the images of one record; every problem names the item and file.
pub fn prepare_pair(
    tok: &Tokenizer,
    settings: &PairSettings,
    record: &PreferenceRecord,
) -> Result<PreparedPair> {
    let id = &record.id;
    let problems = record.problems();
    if !problems.is_empty() {
        return Err(Error::Item {
            id: id.to_string(),
            message: problems.join("; "),
        });
    }
    let (cids, clab) = conversation_labels(tok, settings.template, &record.conversations)?;
    let (rids, rlab) = conversation_labels(tok, settings.template, &record.rejected_conversations)?;
    check_placeholders(&cids, 1, &id.to_string())?;
    check_placeholders(&rids, 1, &id.to_string())?;
    Ok(PreparedPair {
        id: id.clone(),
        chosen: Sequence {
            ids: cids,
            labels: Some(clab),
        },
        rejected: Sequence {
            ids: rids,
            labels: Some(rlab),
        },
        chosen_pixels: image_pixels(settings, &record.image, id)?,
        rejected_pixels: image_pixels(settings, record.rejected_image(), id)?,
    })
}

/// Stacks preprocessed images into `[n, 3, size, size]`.
pub fn stack_pixels<B: Backend>(
    images: &[&[f32]],
    size: usize,
    device: &B::Device,
) -> Tensor<B, 4> {
    let data: Vec<f32> = images.iter().flat_map(|i| i.iter().copied()).collect();
    Tensor::from_data(
        burn::tensor::TensorData::new(data, [images.len(), 3, size, size]),
        device,
    )
}

/// Summed response log-probabilities of a batch of pairs.
#[derive(Debug, Clone)]
pub struct PairLogps<B: Backend> {
    /// `[b]` log π(chosen | image); differentiable when `B` is an autodiff backend.
    pub chosen: Tensor<B, 1>,
    /// `[b]` log π(rejected | rejected_image).
    pub rejected: Tensor<B, 1>,
    /// Scored tokens per chosen answer.
    pub chosen_tokens: Vec<usize>,
    /// Scored tokens per rejected answer.
    pub rejected_tokens: Vec<usize>,
}

/// The distinct images of a batch of pairs and, for each of the `2b` rows `[chosen…; rejected…]`,
/// the index of its image: a text pair's chosen and rejected answers share one image, so the tower
/// runs once for both.
pub fn pair_images(pairs: &[PreparedPair]) -> (Vec<&[f32]>, Vec<usize>) {
    let rows: Vec<&[f32]> = pairs
        .iter()
        .map(|p| p.chosen_pixels.as_slice())
        .chain(pairs.iter().map(|p| p.rejected_pixels.as_slice()))
        .collect();
    let mut images: Vec<&[f32]> = Vec::new();
    let mut image_of = Vec::with_capacity(rows.len());
    for row in rows {
        match images.iter().position(|i| *i == row) {
            Some(i) => image_of.push(i),
            None => {
                image_of.push(images.len());
                images.push(row);
            }
        }
    }
    (images, image_of)
}

/// Log-probabilities of a batch of pairs: rows `[chosen…; rejected…]`, one forward, the tower
/// once per distinct image.
pub fn pair_logps<B: Backend>(
    model: &LlavaForConditionalGeneration<B>,
    pairs: &[PreparedPair],
    image_size: usize,
    device: &B::Device,
) -> Result<PairLogps<B>> {
    let (images, image_of) = pair_images(pairs);
    let features = model.image_features(stack_pixels::<B>(&images, image_size, device));
    pair_logps_with_features(model, pairs, features, &image_of)
}

/// [`pair_logps`] on projected image features computed by the caller (`[n, tokens, hidden]`, row
/// `r` of `[chosen…; rejected…]` using image `image_of[r]`, as [`pair_images`] gives them): the
/// trainer computes them once for the policy and the reference.
pub fn pair_logps_with_features<B: Backend>(
    model: &LlavaForConditionalGeneration<B>,
    pairs: &[PreparedPair],
    features: Tensor<B, 3>,
    image_of: &[usize],
) -> Result<PairLogps<B>> {
    let b = pairs.len();
    let seqs: Vec<Sequence> = pairs
        .iter()
        .map(|p| p.chosen.clone())
        .chain(pairs.iter().map(|p| p.rejected.clone()))
        .collect();
    let inputs = model.prepare(&seqs, features, image_of, false)?;
    let (logps, counts) = model.labelled_logps(&inputs);
    Ok(PairLogps {
        chosen: logps.clone().narrow(0, 0, b),
        rejected: logps.narrow(0, b, b),
        chosen_tokens: counts[..b].to_vec(),
        rejected_tokens: counts[b..].to_vec(),
    })
}

/// Scores pairs (no gradients kept beyond the call).
pub fn score_pairs<B: Backend>(
    model: &LlavaForConditionalGeneration<B>,
    pairs: &[PreparedPair],
    image_size: usize,
    device: &B::Device,
) -> Result<Vec<PairScore>> {
    let out = pair_logps(model, pairs, image_size, device)?;
    let (cn, rn) = (out.chosen_tokens, out.rejected_tokens);
    let c: Vec<f32> = out
        .chosen
        .into_data()
        .convert::<f32>()
        .to_vec()
        .unwrap_or_default();
    let r: Vec<f32> = out
        .rejected
        .into_data()
        .convert::<f32>()
        .to_vec()
        .unwrap_or_default();
    Ok(pairs
        .iter()
        .enumerate()
        .map(|(i, p)| PairScore {
            id: p.id.clone(),
            chosen_logp: c[i] as f64,
            rejected_logp: r[i] as f64,
            chosen_tokens: cn[i],
            rejected_tokens: rn[i],
        })
        .collect())
}

/// The sidecar of a score file.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScoreMeta {
    /// `dir_fingerprint` of the model directory.
    pub model_fingerprint: String,
    /// `dir_fingerprint` of the vision tower directory, when separate.
    pub vision_tower_fingerprint: Option<String>,
    /// Fingerprint of the data files' bytes (in order).
    pub data_fingerprint: String,
    /// Template used.
    pub template: String,
    /// `dir_fingerprint` of the LoRA adapter, when one was applied.
    #[serde(default)]
    pub adapter_fingerprint: Option<String>,
    /// Compute dtype of the model (`f32`, `bf16`); files from before it was recorded are f32.
    #[serde(default = "f32_name")]
    pub dtype: String,
    /// `dir_fingerprint` of a tokenizer given apart from the model (`--tokenizer`).
    #[serde(default)]
    pub tokenizer_fingerprint: Option<String>,
}

fn f32_name() -> String {
    "f32".into()
}

impl ScoreMeta {
    /// The meta of a scoring run's inputs.
    pub fn of(
        model: &Path,
        vision_tower: Option<&Path>,
        data: &[PathBuf],
        template: &str,
    ) -> Result<Self> {
        let mut bytes = Vec::new();
        for d in data {
            bytes.push(std::fs::read(d).map_err(|e| mmedpo_core::Error::io(d, e))?);
        }
        Ok(Self {
            model_fingerprint: dir_fingerprint(model)?,
            vision_tower_fingerprint: vision_tower.map(dir_fingerprint).transpose()?,
            data_fingerprint: fingerprint(bytes.iter().map(Vec::as_slice)),
            template: template.to_string(),
            adapter_fingerprint: None,
            dtype: f32_name(),
            tokenizer_fingerprint: None,
        })
    }

    /// What differs between two metas, one phrase per field (`model A vs B`), empty when equal.
    pub fn differences(&self, other: &ScoreMeta) -> Vec<String> {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".into());
        let mut out = Vec::new();
        let mut cmp = |what: &str, a: String, b: String| {
            if a != b {
                out.push(format!("{what} {a} vs {b}"));
            }
        };
        cmp(
            "model",
            self.model_fingerprint.clone(),
            other.model_fingerprint.clone(),
        );
        cmp(
            "vision tower",
            show(&self.vision_tower_fingerprint),
            show(&other.vision_tower_fingerprint),
        );
        cmp(
            "data",
            self.data_fingerprint.clone(),
            other.data_fingerprint.clone(),
        );
        cmp("template", self.template.clone(), other.template.clone());
        cmp(
            "adapter",
            show(&self.adapter_fingerprint),
            show(&other.adapter_fingerprint),
        );
        cmp("dtype", self.dtype.clone(), other.dtype.clone());
        cmp(
            "tokenizer",
            show(&self.tokenizer_fingerprint),
            show(&other.tokenizer_fingerprint),
        );
        out
    }

    /// The sidecar path of a score file.
    pub fn path(out: &Path) -> PathBuf {
        let mut p = out.as_os_str().to_owned();
        p.push(".meta.json");
        PathBuf::from(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(id: u64, chosen: f32, rejected: f32) -> PreparedPair {
        let seq = Sequence {
            ids: vec![1],
            labels: None,
        };
        PreparedPair {
            id: RecordId::Int(id as i64),
            chosen: seq.clone(),
            rejected: seq,
            chosen_pixels: vec![chosen; 3],
            rejected_pixels: vec![rejected; 3],
        }
    }

    #[test]
    fn the_tower_sees_each_distinct_image_once() {
        // A text pair (one image), a visual pair (clean + noised), and a text pair on the first
        // pair's image: 3 distinct images for 6 rows.
        let pairs = [pair(0, 1.0, 1.0), pair(1, 2.0, 3.0), pair(2, 1.0, 1.0)];
        let (images, image_of) = pair_images(&pairs);
        assert_eq!(images.len(), 3);
        assert_eq!(image_of, vec![0, 1, 0, 0, 2, 0]);
        for (row, &i) in image_of.iter().enumerate() {
            let p = &pairs[row % 3];
            let want = if row < 3 {
                &p.chosen_pixels
            } else {
                &p.rejected_pixels
            };
            assert_eq!(images[i], want.as_slice());
        }
    }
}
