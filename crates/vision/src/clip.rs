//! CLIP vision transformer (`CLIPVisionModel`), as LLaVA uses it: hidden states of a selected layer.
//!
//! Paper: Radford et al. 2021, *Learning Transferable Visual Models From Natural Language
//! Supervision* (arXiv:2103.00020). Reference: transformers v4.57
//! `src/transformers/models/clip/modeling_clip.py` (`CLIPVisionEmbeddings`, `CLIPEncoderLayer`,
//! `CLIPVisionTransformer`); LLaVA `llava/model/multimodal_encoder/clip_encoder.py`
//! (`feature_select`: `hidden_states[select_layer]`, `patch` drops CLS).
//!
//! Fields mirror the checkpoint keys under `vision_model.`, including HF's `pre_layrnorm` typo.
//! `post_layernorm` is loaded (strict loading) but only [`ClipVisionModel::forward_full`] uses it.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, sigmoid};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor};
use mmedpo_core::precision::{attention, layer_norm};

use crate::config::{ClipActivation, ClipVisionConfig};

/// `CLIPVisionModel`: `vision_model.*`.
#[derive(Module, Debug)]
pub struct ClipVisionModel<B: Backend> {
    /// The transformer.
    pub vision_model: ClipVisionTransformer<B>,
}

/// `CLIPVisionTransformer`.
#[derive(Module, Debug)]
pub struct ClipVisionTransformer<B: Backend> {
    /// Patch, class and position embeddings.
    pub embeddings: ClipVisionEmbeddings<B>,
    /// LayerNorm before the encoder (HF spells it `pre_layrnorm`).
    pub pre_layrnorm: LayerNorm<B>,
    /// The encoder.
    pub encoder: ClipEncoder<B>,
    /// LayerNorm on the pooled CLS token.
    pub post_layernorm: LayerNorm<B>,
}

/// `CLIPVisionEmbeddings`.
#[derive(Module, Debug)]
pub struct ClipVisionEmbeddings<B: Backend> {
    /// `[hidden]` learned CLS embedding.
    pub class_embedding: Param<Tensor<B, 1>>,
    /// Conv `[hidden, 3, patch, patch]`, stride = patch, no bias.
    pub patch_embedding: Conv2d<B>,
    /// `[1 + patches, hidden]`.
    pub position_embedding: Embedding<B>,
}

/// `CLIPEncoder`.
#[derive(Module, Debug)]
pub struct ClipEncoder<B: Backend> {
    /// The layers.
    pub layers: Vec<ClipEncoderLayer<B>>,
}

/// `CLIPEncoderLayer` (pre-norm).
#[derive(Module, Debug)]
pub struct ClipEncoderLayer<B: Backend> {
    /// Multi-head self-attention.
    pub self_attn: ClipAttention<B>,
    /// Norm before attention.
    pub layer_norm1: LayerNorm<B>,
    /// MLP.
    pub mlp: ClipMlp<B>,
    /// Norm before the MLP.
    pub layer_norm2: LayerNorm<B>,
}

/// `CLIPAttention`: full (non-causal) attention with biases.
#[derive(Module, Debug)]
pub struct ClipAttention<B: Backend> {
    /// Query projection.
    pub q_proj: Linear<B>,
    /// Key projection.
    pub k_proj: Linear<B>,
    /// Value projection.
    pub v_proj: Linear<B>,
    /// Output projection.
    pub out_proj: Linear<B>,
    /// Heads.
    pub num_heads: usize,
}

/// `CLIPMLP`: `fc2(act(fc1(x)))`.
#[derive(Module, Debug)]
pub struct ClipMlp<B: Backend> {
    /// First projection.
    pub fc1: Linear<B>,
    /// Second projection.
    pub fc2: Linear<B>,
    /// `quick_gelu` (1) or `gelu` (0).
    pub quick_gelu: bool,
}

impl ClipVisionConfig {
    /// A randomly initialised tower (for tests and the embedded default model).
    pub fn init<B: Backend>(&self, device: &B::Device) -> ClipVisionModel<B> {
        let d = self.hidden_size;
        let ln = || {
            LayerNormConfig::new(d)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let lin = |i, o| LinearConfig::new(i, o).init(device);
        let layers = (0..self.num_hidden_layers)
            .map(|_| ClipEncoderLayer {
                self_attn: ClipAttention {
                    q_proj: lin(d, d),
                    k_proj: lin(d, d),
                    v_proj: lin(d, d),
                    out_proj: lin(d, d),
                    num_heads: self.num_attention_heads,
                },
                layer_norm1: ln(),
                mlp: ClipMlp {
                    fc1: lin(d, self.intermediate_size),
                    fc2: lin(self.intermediate_size, d),
                    quick_gelu: self.hidden_act == ClipActivation::QuickGelu,
                },
                layer_norm2: ln(),
            })
            .collect();
        let p = self.patch_size;
        ClipVisionModel {
            vision_model: ClipVisionTransformer {
                embeddings: ClipVisionEmbeddings {
                    class_embedding: Param::from_tensor(Tensor::random(
                        [d],
                        Distribution::Normal(0.0, 0.02),
                        device,
                    )),
                    patch_embedding: Conv2dConfig::new([self.num_channels, d], [p, p])
                        .with_stride([p, p])
                        .with_bias(false)
                        .init(device),
                    position_embedding: EmbeddingConfig::new(self.num_positions(), d).init(device),
                },
                pre_layrnorm: ln(),
                encoder: ClipEncoder { layers },
                post_layernorm: ln(),
            },
        }
    }
}

impl<B: Backend> ClipVisionModel<B> {
    /// LLaVA's image features: the hidden states after `select_layer` (negative = from the end of
    /// HF's `hidden_states` tuple, whose entry 0 is the embedding output), CLS dropped when
    /// `drop_cls`. Only the layers needed are run.
    ///
    /// # Shapes
    /// - `pixels`: `[batch, 3, image, image]` → `[batch, patches, hidden]` (or `patches + 1`)
    pub fn features(
        &self,
        pixels: Tensor<B, 4>,
        select_layer: i64,
        drop_cls: bool,
    ) -> Tensor<B, 3> {
        let n = self.vision_model.encoder.layers.len() as i64;
        let index = if select_layer < 0 {
            n + 1 + select_layer
        } else {
            select_layer
        };
        let index = index.clamp(0, n) as usize;
        let x = self.vision_model.embeddings.forward(pixels);
        let mut x = layer_norm(&self.vision_model.pre_layrnorm, x);
        for layer in &self.vision_model.encoder.layers[..index] {
            x = layer.forward(x);
        }
        if drop_cls {
            let [b, t, d] = x.dims();
            x.slice([0..b, 1..t, 0..d])
        } else {
            x
        }
    }

    /// The whole tower: (`last_hidden_state` `[batch, 1 + patches, hidden]`, `pooler_output`
    /// `[batch, hidden]` = post-LayerNorm of the CLS token).
    pub fn forward_full(&self, pixels: Tensor<B, 4>) -> (Tensor<B, 3>, Tensor<B, 2>) {
        let last = self.features(pixels, self.vision_model.encoder.layers.len() as i64, false);
        let [b, _, d] = last.dims();
        let cls = last.clone().slice([0..b, 0..1, 0..d]).reshape([b, d]);
        (last, layer_norm(&self.vision_model.post_layernorm, cls))
    }
}

impl<B: Backend> ClipVisionEmbeddings<B> {
    /// # Shapes
    /// - `pixels`: `[batch, 3, image, image]` → `[batch, 1 + patches, hidden]`
    pub fn forward(&self, pixels: Tensor<B, 4>) -> Tensor<B, 3> {
        // Pixels come in f32 and run in the tower's dtype (`pixel_values.to(self.dtype)`).
        let pixels = pixels.cast(self.patch_embedding.weight.val().dtype());
        let patches = self.patch_embedding.forward(pixels); // [b, d, g, g]
        let [b, d, gh, gw] = patches.dims();
        let patches = patches.reshape([b, d, gh * gw]).swap_dims(1, 2); // [b, g*g, d]
        let cls = self
            .class_embedding
            .val()
            .reshape([1, 1, d])
            .expand([b, 1, d]);
        let x = Tensor::cat(vec![cls, patches], 1);
        let positions = Tensor::<B, 1, Int>::arange(0..(1 + gh * gw) as i64, &x.device())
            .reshape([1, 1 + gh * gw]);
        x + self.position_embedding.forward(positions)
    }
}

impl<B: Backend> ClipEncoderLayer<B> {
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = x.clone() + self.self_attn.forward(layer_norm(&self.layer_norm1, x));
        h.clone() + self.mlp.forward(layer_norm(&self.layer_norm2, h))
    }
}

impl<B: Backend> ClipAttention<B> {
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, d] = x.dims();
        let h = self.num_heads;
        let split = |y: Tensor<B, 3>| y.reshape([b, t, h, d / h]).swap_dims(1, 2);
        let q = split(self.q_proj.forward(x.clone()));
        let k = split(self.k_proj.forward(x.clone()));
        let v = split(self.v_proj.forward(x));
        let out = attention(q, k, v, None);
        self.out_proj
            .forward(out.swap_dims(1, 2).reshape([b, t, d]))
    }
}

impl<B: Backend> ClipMlp<B> {
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = self.fc1.forward(x);
        let x = if self.quick_gelu {
            x.clone() * sigmoid(x * 1.702)
        } else {
            gelu(x)
        };
        self.fc2.forward(x)
    }
}
