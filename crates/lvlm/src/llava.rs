//! LLaVA (`LlavaForConditionalGeneration` / LLaVA-Med's `LlavaMistralForCausalLM`): CLIP tower →
//! `mlp2x_gelu` projector → image features spliced into the LLM's input embeddings.
//!
//! Paper: Liu et al. 2023, *Improved Baselines with Visual Instruction Tuning* (LLaVA-1.5,
//! arXiv:2310.03744); Li et al. 2023, *LLaVA-Med* (arXiv:2306.00890). Reference:
//! haotian-liu/LLaVA `llava/model/llava_arch.py::prepare_inputs_labels_for_multimodal` and
//! transformers `models/llava/modeling_llava.py` (`LlavaMultiModalProjector`).
//!
//! Fields mirror the llava-hf keys (`vision_tower`, `multi_modal_projector.linear_{1,2}`,
//! `language_model`); the loader maps the original layout's `model.mm_projector.{0,2}` onto them.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::{gelu, log_softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};
use mmedpo_llm::{AttentionInput, LlamaForCausalLM};
use mmedpo_vision::ClipVisionModel;

use crate::config::{LlavaConfig, SelectFeature};
use crate::error::{Error, Result};
use crate::prompt::{IGNORE_INDEX, IMAGE_TOKEN_INDEX};

/// The LLaVA model.
#[derive(Module, Debug)]
pub struct LlavaForConditionalGeneration<B: Backend> {
    /// CLIP vision tower (frozen in MMedPO).
    pub vision_tower: ClipVisionModel<B>,
    /// `mlp2x_gelu`: Linear → GELU(erf) → Linear.
    pub multi_modal_projector: Projector<B>,
    /// The LLM.
    pub language_model: LlamaForCausalLM<B>,
    /// Tower hidden-state index (−2).
    #[module(skip)]
    pub select_layer: i64,
    /// Drop CLS (`patch`).
    #[module(skip)]
    pub drop_cls: bool,
    /// Sequence length after image expansion.
    #[module(skip)]
    pub max_length: usize,
}

/// `LlavaMultiModalProjector` (`mlp2x_gelu`).
#[derive(Module, Debug)]
pub struct Projector<B: Backend> {
    /// Vision width → text width.
    pub linear_1: Linear<B>,
    /// Text width → text width.
    pub linear_2: Linear<B>,
}

impl<B: Backend> Projector<B> {
    /// The parameters under llava-hf keys (`multi_modal_projector.linear_{1,2}.{weight,bias}`),
    /// PyTorch layout, f32.
    pub fn hf_tensors(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> (Vec<usize>, Vec<f32>) {
            (
                t.dims().to_vec(),
                t.into_data()
                    .convert::<f32>()
                    .to_vec::<f32>()
                    .unwrap_or_default(),
            )
        }
        let mut out = Vec::new();
        for (name, lin) in [("linear_1", &self.linear_1), ("linear_2", &self.linear_2)] {
            let (s, d) = host(lin.weight.val().transpose());
            out.push((format!("multi_modal_projector.{name}.weight"), s, d));
            if let Some(b) = &lin.bias {
                let (s, d) = host(b.val());
                out.push((format!("multi_modal_projector.{name}.bias"), s, d));
            }
        }
        out
    }

    /// # Shapes
    /// - `x`: `[n, tokens, vision_hidden]` → `[n, tokens, text_hidden]`
    ///
    /// Runs in the projector's own dtype (f32 when it is trained over a bf16 model).
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = x.cast(self.linear_1.weight.val().dtype());
        self.linear_2.forward(gelu(self.linear_1.forward(x)))
    }
}

/// One sequence to run: token ids with at most one [`IMAGE_TOKEN_INDEX`], and optionally labels
/// (same length, [`IGNORE_INDEX`] where not scored).
#[derive(Debug, Clone, PartialEq)]
pub struct Sequence {
    /// Token ids; −200 marks where the image features go.
    pub ids: Vec<i64>,
    /// Labels aligned with `ids`.
    pub labels: Option<Vec<i64>>,
}

/// Embedded, padded multimodal inputs of a batch.
#[derive(Debug, Clone)]
pub struct MultimodalInputs<B: Backend> {
    /// `[batch, len, hidden]`, zero embeddings at padding.
    pub embeds: Tensor<B, 3>,
    /// Real (non-padding) positions per row.
    pub key_valid: Vec<Vec<bool>>,
    /// Labels per row after image expansion, truncation and padding (`IGNORE_INDEX` elsewhere).
    pub labels: Vec<Vec<i64>>,
}

impl LlavaConfig {
    /// A randomly initialised LLaVA of this config (tests, embedded defaults).
    pub fn init<B: Backend>(&self, device: &B::Device) -> LlavaForConditionalGeneration<B> {
        let vision = self
            .vision
            .clone()
            .unwrap_or_else(mmedpo_vision::ClipVisionConfig::vit_large_patch14_336);
        let d = self.text.hidden_size;
        LlavaForConditionalGeneration {
            vision_tower: vision.init(device),
            multi_modal_projector: Projector {
                linear_1: LinearConfig::new(vision.hidden_size, d).init(device),
                linear_2: LinearConfig::new(d, d).init(device),
            },
            language_model: self.text.init(device),
            select_layer: self.select_layer,
            drop_cls: self.select_feature == SelectFeature::Patch,
            max_length: self.max_length,
        }
    }
}

impl<B: Backend> LlavaForConditionalGeneration<B> {
    /// Projected image features.
    ///
    /// # Shapes
    /// - `pixels`: `[n, 3, 336, 336]` → `[n, 576, text_hidden]`
    pub fn image_features(&self, pixels: Tensor<B, 4>) -> Tensor<B, 3> {
        self.multi_modal_projector
            .forward(self.tower_features(pixels))
    }

    /// The tower's selected hidden states, before the projector.
    ///
    /// # Shapes
    /// - `pixels`: `[n, 3, 336, 336]` → `[n, 576, vision_hidden]`
    pub fn tower_features(&self, pixels: Tensor<B, 4>) -> Tensor<B, 3> {
        self.vision_tower
            .features(pixels, self.select_layer, self.drop_cls)
    }

    /// `prepare_inputs_labels_for_multimodal`: embeds each sequence's text, splices its image's
    /// features at the placeholder, truncates to `max_length`, pads (right for training, left for
    /// generation) with zero embeddings.
    ///
    /// `features` is `[n, tokens, hidden]`; sequence `i` uses image `image_of[i]`.
    pub fn prepare(
        &self,
        seqs: &[Sequence],
        features: Tensor<B, 3>,
        image_of: &[usize],
        pad_left: bool,
    ) -> Result<MultimodalInputs<B>> {
        let device = features.device();
        let dtype = self.language_model.dtype();
        let features = features.cast(dtype);
        let [n_img, tokens, hidden] = features.dims();
        let mut rows = Vec::with_capacity(seqs.len());
        let mut labels = Vec::with_capacity(seqs.len());
        for (i, seq) in seqs.iter().enumerate() {
            let image = *image_of.get(i).ok_or_else(|| Error::Item {
                id: i.to_string(),
                message: "no image index".into(),
            })?;
            if image >= n_img {
                return Err(Error::Item {
                    id: i.to_string(),
                    message: format!("image index {image} of {n_img}"),
                });
            }
            let places: Vec<usize> = seq
                .ids
                .iter()
                .enumerate()
                .filter(|(_, &t)| t == IMAGE_TOKEN_INDEX)
                .map(|(p, _)| p)
                .collect();
            if places.len() > 1 {
                return Err(Error::Item {
                    id: i.to_string(),
                    message: format!(
                        "{} <image> placeholders; LLaVA-Med takes one image",
                        places.len()
                    ),
                });
            }
            // Truncate the token sequence first (the collator does), then after expansion.
            let ids: Vec<i64> = seq.ids.iter().copied().take(self.max_length).collect();
            let lab: Vec<i64> = seq
                .labels
                .clone()
                .unwrap_or_else(|| vec![IGNORE_INDEX; seq.ids.len()])
                .into_iter()
                .take(self.max_length)
                .collect();
            let text: Vec<i32> = ids
                .iter()
                .filter(|&&t| t != IMAGE_TOKEN_INDEX)
                .map(|&t| t as i32)
                .collect();
            let text_emb = if text.is_empty() {
                None
            } else {
                let t = Tensor::<B, 2, Int>::from_data(
                    TensorData::new(text.clone(), [1, text.len()]),
                    &device,
                );
                Some(self.language_model.embed(t).reshape([text.len(), hidden]))
            };
            let mut parts = vec![];
            let mut row_labels = vec![];
            match ids.iter().position(|&t| t == IMAGE_TOKEN_INDEX) {
                Some(p) => {
                    if let Some(e) = &text_emb {
                        if p > 0 {
                            parts.push(e.clone().narrow(0, 0, p));
                        }
                    }
                    parts.push(
                        features
                            .clone()
                            .narrow(0, image, 1)
                            .reshape([tokens, hidden]),
                    );
                    if let Some(e) = &text_emb {
                        if text.len() > p {
                            parts.push(e.clone().narrow(0, p, text.len() - p));
                        }
                    }
                    row_labels.extend_from_slice(&lab[..p]);
                    row_labels.extend(std::iter::repeat_n(IGNORE_INDEX, tokens));
                    row_labels.extend_from_slice(&lab[p + 1..]);
                }
                None => {
                    // LLaVA still "consumes" the image (features[0:0]); nothing is spliced.
                    parts.extend(text_emb);
                    row_labels.extend_from_slice(&lab);
                }
            }
            let mut row = Tensor::cat(parts, 0);
            let len = row.dims()[0].min(self.max_length);
            if len < row.dims()[0] {
                row = row.narrow(0, 0, len);
                row_labels.truncate(len);
            }
            rows.push(row);
            labels.push(row_labels);
        }
        let max = rows.iter().map(|r| r.dims()[0]).max().unwrap_or(0);
        let mut key_valid = Vec::with_capacity(rows.len());
        let mut padded = Vec::with_capacity(rows.len());
        for (row, lab) in rows.into_iter().zip(labels.iter_mut()) {
            let len = row.dims()[0];
            let pad = max - len;
            let (row, valid) = if pad == 0 {
                (row, vec![true; len])
            } else {
                let zeros = Tensor::<B, 2>::zeros([pad, hidden], (&device, dtype));
                if pad_left {
                    lab.splice(0..0, std::iter::repeat_n(IGNORE_INDEX, pad));
                    (
                        Tensor::cat(vec![zeros, row], 0),
                        (0..max).map(|t| t >= pad).collect(),
                    )
                } else {
                    lab.extend(std::iter::repeat_n(IGNORE_INDEX, pad));
                    (
                        Tensor::cat(vec![row, zeros], 0),
                        (0..max).map(|t| t < len).collect(),
                    )
                }
            };
            padded.push(row.unsqueeze_dim::<3>(0));
            key_valid.push(valid);
        }
        Ok(MultimodalInputs {
            embeds: Tensor::cat(padded, 0),
            key_valid,
            labels,
        })
    }

    /// Training forward: logits for every position of the prepared batch.
    ///
    /// # Shapes
    /// - output: `[batch, len, vocab]`
    pub fn forward(&self, inputs: &MultimodalInputs<B>) -> Tensor<B, 3> {
        let attn = AttentionInput::cached(
            &self.language_model.model,
            &inputs.key_valid,
            &inputs.embeds.device(),
        );
        self.language_model
            .forward_embeds(inputs.embeds.clone(), &attn)
    }
}

impl<B: Backend> LlavaForConditionalGeneration<B> {
    /// Summed log-probabilities of the labelled tokens per row, computing the LM head only at the
    /// positions that predict a labelled token (the same numbers as [`sequence_logps`] on the full
    /// logits, with a fraction of the vocabulary-sized activations: for a 776-token LLaVA-Med pair
    /// with a 20-token answer, 21 rows of logits instead of 776).
    ///
    /// Returns `[batch]` sums and the token counts.
    pub fn labelled_logps(&self, inputs: &MultimodalInputs<B>) -> (Tensor<B, 1>, Vec<usize>) {
        let device = inputs.embeds.device();
        let attn = AttentionInput::cached(&self.language_model.model, &inputs.key_valid, &device);
        let hidden = self
            .language_model
            .model
            .forward(inputs.embeds.clone(), &attn, None); // [b, len, d]
        let [batch, len, d] = hidden.dims();
        let (mut rows, mut targets, mut owner, mut counts) =
            (vec![], vec![], vec![], vec![0usize; batch]);
        for (b, labels) in inputs.labels.iter().enumerate() {
            for t in 1..len {
                let l = labels.get(t).copied().unwrap_or(IGNORE_INDEX);
                if l != IGNORE_INDEX {
                    rows.push((b * len + t - 1) as i32);
                    targets.push(l as i32);
                    owner.push(b);
                    counts[b] += 1;
                }
            }
        }
        let n = rows.len();
        if n == 0 {
            return (Tensor::zeros([batch], &device), counts);
        }
        let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [n]), &device);
        let picked = hidden
            .reshape([batch * len, d])
            .select(0, idx)
            .reshape([1, n, d]);
        // Logits in the compute dtype, log-softmax and sums in f32 (`logits.float()`).
        let logp = log_softmax(
            self.language_model
                .logits(picked)
                .reshape([n, self.language_model.vocab_size()])
                .cast(DType::F32),
            1,
        );
        let targets = Tensor::<B, 2, Int>::from_data(TensorData::new(targets, [n, 1]), &device);
        let per_token = logp.gather(1, targets); // [n, 1]
        let mut member = vec![0f32; batch * n];
        for (i, &b) in owner.iter().enumerate() {
            member[b * n + i] = 1.0;
        }
        let member = Tensor::<B, 2>::from_data(TensorData::new(member, [batch, n]), &device);
        (member.matmul(per_token).reshape([batch]), counts)
    }
}

/// Summed log-probabilities of the labelled tokens, per row: `Σ_t log p(label[t] | < t)` over
/// positions whose label is not [`IGNORE_INDEX`] (labels shifted by one against the logits, as
/// `_get_batch_logps` with `average_log_prob=False`). Returns the sums `[batch]` and token counts.
pub fn sequence_logps<B: Backend>(
    logits: Tensor<B, 3>,
    labels: &[Vec<i64>],
) -> (Tensor<B, 1>, Vec<usize>) {
    let [batch, len, _] = logits.dims();
    let device = logits.device();
    if len < 2 {
        return (Tensor::zeros([batch], &device), vec![0; batch]);
    }
    let mut targets = Vec::with_capacity(batch * (len - 1));
    let mut mask = Vec::with_capacity(batch * (len - 1));
    let mut counts = vec![0usize; batch];
    for (b, row) in labels.iter().enumerate() {
        for t in 1..len {
            let l = row.get(t).copied().unwrap_or(IGNORE_INDEX);
            let scored = l != IGNORE_INDEX;
            counts[b] += usize::from(scored);
            targets.push(if scored { l as i32 } else { 0 });
            mask.push(if scored { 1f32 } else { 0f32 });
        }
    }
    let logp = log_softmax(logits.narrow(1, 0, len - 1).cast(DType::F32), 2);
    let targets =
        Tensor::<B, 3, Int>::from_data(TensorData::new(targets, [batch, len - 1, 1]), &device);
    let mask = Tensor::<B, 2>::from_data(TensorData::new(mask, [batch, len - 1]), &device);
    let picked = logp.gather(2, targets).reshape([batch, len - 1]);
    ((picked * mask).sum_dim(1).reshape([batch]), counts)
}
