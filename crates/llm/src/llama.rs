//! Llama / Mistral decoder-only transformer (`LlamaForCausalLM`, `MistralForCausalLM`).
//!
//! Papers: Touvron et al. 2023, *Llama 2* (arXiv:2307.09288); Jiang et al. 2023, *Mistral 7B*
//! (arXiv:2310.06825). Reference implementation: transformers v4.57
//! `src/transformers/models/llama/modeling_llama.py` and `.../mistral/modeling_mistral.py`; the
//! Mistral file is a copy of the Llama one ("Copied from transformers.models.llama") plus the sliding
//! window, so both live here as one architecture with [`DecoderConfig::sliding_window`].
//!
//! Structure mirrors the checkpoint keys (`model.embed_tokens`, `model.layers.N.self_attn.q_proj`,
//! `model.layers.N.mlp.gate_proj`, `model.norm`, `lm_head`), so the loader is a straight map.
//! Burn's `Linear` stores `[d_in, d_out]` (transposed on load) and `RmsNorm` calls its weight `gamma`.
//!
//! RoPE is the rotate-half form HF uses (not Burn's interleaved `RotaryEncoding`), with frequencies
//! computed in f32 exactly as `LlamaRotaryEmbedding` does.
//!
//! The training forward ([`LlamaForCausalLM::forward`]) is pure: full-sequence logits, no cache. The
//! generation path passes an explicit [`KvCache`] owned by the caller (see `generate.rs`).

use burn::module::Module;
use burn::nn::{
    Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig, RmsNorm, RmsNormConfig,
};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use mmedpo_core::precision::{attention, rms_norm};

use mmedpo_lora::LoraLinear;

use crate::config::{DecoderConfig, RopeScaling};

/// The causal LM: decoder stack plus `lm_head`.
#[derive(Module, Debug)]
pub struct LlamaForCausalLM<B: Backend> {
    /// The decoder (`model.*` keys).
    pub model: LlamaModel<B>,
    /// The output projection (`lm_head.weight`); `None` when tied to `model.embed_tokens`.
    pub lm_head: Option<Linear<B>>,
}

/// Embedding, decoder layers and final norm.
#[derive(Module, Debug)]
pub struct LlamaModel<B: Backend> {
    /// Token embedding `[vocab, hidden]`.
    pub embed_tokens: Embedding<B>,
    /// Decoder layers.
    pub layers: Vec<DecoderLayer<B>>,
    /// Final RMSNorm.
    pub norm: RmsNorm<B>,
    /// RoPE inverse frequencies (recomputed from the config, never loaded).
    #[module(skip)]
    pub inv_freq: Vec<f32>,
    /// Sliding attention window (Mistral), in tokens.
    #[module(skip)]
    pub sliding_window: Option<usize>,
    /// The last positions' cos/sin tables (host values): a training step asks for the same
    /// positions for the policy and the reference, and every step of one length does again.
    #[module(skip)]
    pub rope_cache: RopeCache,
    /// The last padding pattern's positions and mask (host values), likewise.
    #[module(skip)]
    pub mask_cache: MaskCache,
}

/// The value computed for the last key asked for, shared by clones of the model (the policy and
/// its reference).
#[derive(Debug, Clone)]
pub struct LastCache<K, V>(std::sync::Arc<std::sync::Mutex<Option<Entry<K, V>>>>);

type Entry<K, V> = (K, std::sync::Arc<V>);

impl<K, V> Default for LastCache<K, V> {
    fn default() -> Self {
        Self(Default::default())
    }
}

impl<K, V> LastCache<K, V> {
    /// The value for `key`: the cached one when `key` was the last asked for, else `compute()`'s,
    /// which replaces it.
    pub fn get<Q>(&self, key: &Q, compute: impl FnOnce() -> V) -> std::sync::Arc<V>
    where
        Q: PartialEq + ToOwned<Owned = K> + ?Sized,
        K: std::borrow::Borrow<Q>,
    {
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match cache.as_ref().filter(|(k, _)| k.borrow() == key) {
            Some((_, v)) => v.clone(),
            None => {
                let v = std::sync::Arc::new(compute());
                *cache = Some((key.to_owned(), v.clone()));
                v
            }
        }
    }

    /// The key of the cached value.
    pub fn key(&self) -> Option<K>
    where
        K: Clone,
    {
        let cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        cache.as_ref().map(|(k, _)| k.clone())
    }
}

/// RoPE positions → host cos/sin tables.
pub type RopeCache = LastCache<Vec<i64>, (Vec<f32>, Vec<f32>)>;

/// Padding pattern (`key_valid`) → host positions and mask.
pub type MaskCache = LastCache<Vec<Vec<bool>>, (Vec<i64>, Vec<bool>)>;

/// One pre-norm decoder layer.
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    /// Grouped-query self-attention.
    pub self_attn: Attention<B>,
    /// SwiGLU MLP.
    pub mlp: Mlp<B>,
    /// Norm before attention.
    pub input_layernorm: RmsNorm<B>,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm<B>,
}

/// Grouped-query attention with rotate-half RoPE.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Query projection `[hidden, heads * head_dim]`.
    pub q_proj: LoraLinear<B>,
    /// Key projection `[hidden, kv_heads * head_dim]`.
    pub k_proj: LoraLinear<B>,
    /// Value projection `[hidden, kv_heads * head_dim]`.
    pub v_proj: LoraLinear<B>,
    /// Output projection `[heads * head_dim, hidden]`.
    pub o_proj: LoraLinear<B>,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
}

/// SwiGLU MLP: `down(silu(gate(x)) * up(x))`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// Gate projection.
    pub gate_proj: LoraLinear<B>,
    /// Up projection.
    pub up_proj: LoraLinear<B>,
    /// Down projection.
    pub down_proj: LoraLinear<B>,
}

/// Per-layer key/value cache for incremental decoding, owned by the caller.
///
/// Slot `t` of the cache holds the keys/values of the `t`-th token fed to the model (padding
/// included), so masks are expressed in slots.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for a model of `num_layers` layers.
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
        }
    }

    /// Number of slots filled.
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map(|(k, _)| k.dims()[2])
            .unwrap_or(0)
    }

    /// Whether nothing has been cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Positions and attention mask of one forward call.
///
/// `positions` are the RoPE positions per token (kept on the host: the cos/sin tables are computed
/// there, in f32 products and correctly rounded cos/sin, so they do not depend on a backend's
/// transcendental approximations); `mask` is `true` where a query must **not** attend to a key, in
/// cache slots (`[batch, 1, new_tokens, cached + new_tokens]`).
#[derive(Debug, Clone)]
pub struct AttentionInput<B: Backend> {
    /// `[batch * new_tokens]` RoPE positions, row-major.
    pub positions: Vec<i64>,
    /// `[batch, 1, new_tokens, total_tokens]`, `true` = masked.
    pub mask: Tensor<B, 4, Bool>,
}

impl<B: Backend> AttentionInput<B> {
    /// Inputs for a batch of sequences, none of them cached yet.
    ///
    /// `key_valid[b][t]` says whether token `t` of row `b` is real (not padding). Padding may sit on
    /// either side. Positions count real tokens only (as HF derives `position_ids` from the attention
    /// mask); a padding query attends to itself only, so no row is fully masked.
    pub fn new(key_valid: &[Vec<bool>], sliding_window: Option<usize>, device: &B::Device) -> Self {
        let len = key_valid.first().map_or(0, Vec::len);
        Self::step(key_valid, 0, len, sliding_window, device)
    }

    /// [`new`](Self::new) through `model`'s cache: the host loop runs once per padding pattern
    /// (a training step's policy and reference forwards share it).
    pub fn cached(model: &LlamaModel<B>, key_valid: &[Vec<bool>], device: &B::Device) -> Self {
        let (batch, len) = (key_valid.len(), key_valid.first().map_or(0, Vec::len));
        let tables = model.mask_cache.get(key_valid, || {
            Self::host(key_valid, 0, len, model.sliding_window)
        });
        Self {
            positions: tables.0.clone(),
            mask: Tensor::from_data(
                TensorData::new(tables.1.clone(), [batch, 1, len, len]),
                device,
            ),
        }
    }

    /// Inputs for `new_tokens` tokens appended after `past` cached slots.
    ///
    /// `key_valid[b]` covers all `past + new_tokens` slots.
    pub fn step(
        key_valid: &[Vec<bool>],
        past: usize,
        new_tokens: usize,
        sliding_window: Option<usize>,
        device: &B::Device,
    ) -> Self {
        let (batch, total) = (key_valid.len(), past + new_tokens);
        let (positions, mask) = Self::host(key_valid, past, new_tokens, sliding_window);
        let mask = Tensor::from_data(TensorData::new(mask, [batch, 1, new_tokens, total]), device);
        Self { positions, mask }
    }

    fn host(
        key_valid: &[Vec<bool>],
        past: usize,
        new_tokens: usize,
        sliding_window: Option<usize>,
    ) -> (Vec<i64>, Vec<bool>) {
        let batch = key_valid.len();
        let total = past + new_tokens;
        let mut positions = Vec::with_capacity(batch * new_tokens);
        let mut mask = Vec::with_capacity(batch * new_tokens * total);
        for row in key_valid {
            assert_eq!(row.len(), total, "key_valid rows must cover every slot");
            let mut pos = 0i64;
            let mut cum = Vec::with_capacity(total);
            for &valid in row {
                cum.push(pos);
                if valid {
                    pos += 1;
                }
            }
            for q in past..total {
                positions.push(cum[q]);
                for k in 0..total {
                    let causal = k <= q;
                    let in_window = sliding_window.is_none_or(|w| q - k < w);
                    let allowed = (causal && in_window && row[k] && row[q]) || (k == q && !row[q]);
                    mask.push(!allowed);
                }
            }
        }
        (positions, mask)
    }
}

/// RoPE inverse frequencies `1 / theta^(2i/d)`, in f32 like `LlamaRotaryEmbedding`, with the
/// config's scaling applied.
pub fn rope_inv_freq(config: &DecoderConfig) -> Vec<f32> {
    let dim = config.head_dim;
    let base = config.rope_theta as f32;
    let inv: Vec<f32> = (0..dim)
        .step_by(2)
        .map(|i| 1.0 / base.powf(i as f32 / dim as f32))
        .collect();
    match config.rope_scaling {
        RopeScaling::None => inv,
        RopeScaling::Linear { factor } => inv.iter().map(|f| f / factor as f32).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => {
            let old = original_max_position_embeddings as f32;
            let (factor, low, high) = (
                factor as f32,
                low_freq_factor as f32,
                high_freq_factor as f32,
            );
            let low_wavelen = old / low;
            let high_wavelen = old / high;
            inv.iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f32::consts::PI / f;
                    let scaled = if wavelen > low_wavelen { f / factor } else { f };
                    let smooth = (old / wavelen - low) / (high - low);
                    let smoothed = (1.0 - smooth) * scaled / factor + smooth * scaled;
                    let medium = wavelen >= high_wavelen && wavelen <= low_wavelen;
                    if medium {
                        smoothed
                    } else {
                        scaled
                    }
                })
                .collect()
        }
    }
}

impl DecoderConfig {
    /// A randomly initialised model (weights N(0, 0.02) as HF's `_init_weights`, norms at 1).
    pub fn init<B: Backend>(&self, device: &B::Device) -> LlamaForCausalLM<B> {
        let init = Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        };
        let linear = |i: usize, o: usize, bias: bool| {
            LinearConfig::new(i, o)
                .with_bias(bias)
                .with_initializer(init.clone())
                .init(device)
        };
        let lora = |i: usize, o: usize, bias: bool| LoraLinear::from(linear(i, o, bias));
        let norm = || {
            RmsNormConfig::new(self.hidden_size)
                .with_epsilon(self.rms_norm_eps)
                .init(device)
        };
        let (d, q, kv) = (
            self.hidden_size,
            self.num_attention_heads * self.head_dim,
            self.num_key_value_heads * self.head_dim,
        );
        let layers = (0..self.num_hidden_layers)
            .map(|_| DecoderLayer {
                self_attn: Attention {
                    q_proj: lora(d, q, self.attention_bias),
                    k_proj: lora(d, kv, self.attention_bias),
                    v_proj: lora(d, kv, self.attention_bias),
                    o_proj: lora(q, d, self.attention_bias),
                    num_heads: self.num_attention_heads,
                    num_kv_heads: self.num_key_value_heads,
                    head_dim: self.head_dim,
                },
                mlp: Mlp {
                    gate_proj: lora(d, self.intermediate_size, self.mlp_bias),
                    up_proj: lora(d, self.intermediate_size, self.mlp_bias),
                    down_proj: lora(self.intermediate_size, d, self.mlp_bias),
                },
                input_layernorm: norm(),
                post_attention_layernorm: norm(),
            })
            .collect();
        LlamaForCausalLM {
            model: LlamaModel {
                embed_tokens: EmbeddingConfig::new(self.vocab_size, d)
                    .with_initializer(init.clone())
                    .init(device),
                layers,
                norm: norm(),
                inv_freq: rope_inv_freq(self),
                sliding_window: self.sliding_window,
                rope_cache: RopeCache::default(),
                mask_cache: MaskCache::default(),
            },
            lm_head: (!self.tie_word_embeddings).then(|| linear(d, self.vocab_size, false)),
        }
    }
}

impl<B: Backend> LlamaForCausalLM<B> {
    /// Training forward on unpadded token ids: logits for every position.
    ///
    /// # Shapes
    /// - `input_ids`: `[batch, seq]`
    /// - output: `[batch, seq, vocab]`
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [batch, seq] = input_ids.dims();
        let valid = vec![vec![true; seq]; batch];
        let attn = AttentionInput::new(&valid, self.model.sliding_window, &input_ids.device());
        self.forward_embeds(self.model.embed_tokens.forward(input_ids), &attn)
    }

    /// Training forward on input embeddings (LLaVA splices image features into them).
    ///
    /// # Shapes
    /// - `embeds`: `[batch, seq, hidden]`
    /// - output: `[batch, seq, vocab]`
    pub fn forward_embeds(&self, embeds: Tensor<B, 3>, attn: &AttentionInput<B>) -> Tensor<B, 3> {
        let hidden = self.model.forward(embeds, attn, None);
        self.logits(hidden)
    }

    /// Incremental forward: appends the new tokens to `cache` and returns their logits.
    ///
    /// # Shapes
    /// - `embeds`: `[batch, new_tokens, hidden]`
    /// - output: `[batch, new_tokens, vocab]`
    pub fn forward_cached(
        &self,
        embeds: Tensor<B, 3>,
        attn: &AttentionInput<B>,
        cache: &mut KvCache<B>,
    ) -> Tensor<B, 3> {
        let hidden = self.model.forward(embeds, attn, Some(cache));
        self.logits(hidden)
    }

    /// Projects hidden states to vocabulary logits (`lm_head`, or the tied embedding).
    ///
    /// # Shapes
    /// - `hidden`: `[batch, seq, hidden]` → `[batch, seq, vocab]`
    pub fn logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.lm_head {
            // Burn's `Linear::forward`, without the weight copy in its backward when frozen.
            Some(head) => mmedpo_core::linear::linear(
                hidden,
                head.weight.val(),
                head.bias.as_ref().map(|b| b.val()),
            ),
            None => {
                let weight = self.model.embed_tokens.weight.val(); // [vocab, hidden]
                hidden.matmul(weight.transpose().unsqueeze::<3>())
            }
        }
    }

    /// The compute dtype: that of the (frozen) weights; activations stay in it except where
    /// [`mmedpo_core::precision`] says.
    pub fn dtype(&self) -> burn::tensor::DType {
        self.model.embed_tokens.weight.val().dtype()
    }

    /// Embeds token ids.
    ///
    /// # Shapes
    /// - `input_ids`: `[batch, seq]` → `[batch, seq, hidden]`
    pub fn embed(&self, input_ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.model.embed_tokens.forward(input_ids)
    }

    /// Number of decoder layers (the size of a [`KvCache`]).
    pub fn num_layers(&self) -> usize {
        self.model.layers.len()
    }

    /// The LoRA-capable projections with their paths relative to the decoder
    /// (`layers.N.self_attn.q_proj`, ..., `layers.N.mlp.down_proj`).
    pub fn lora_layers(&self) -> Vec<(String, &LoraLinear<B>)> {
        let mut out = Vec::with_capacity(self.model.layers.len() * 7);
        for (i, l) in self.model.layers.iter().enumerate() {
            let a = &l.self_attn;
            for (n, p) in [
                ("q_proj", &a.q_proj),
                ("k_proj", &a.k_proj),
                ("v_proj", &a.v_proj),
                ("o_proj", &a.o_proj),
            ] {
                out.push((format!("layers.{i}.self_attn.{n}"), p));
            }
            let m = &l.mlp;
            for (n, p) in [
                ("gate_proj", &m.gate_proj),
                ("up_proj", &m.up_proj),
                ("down_proj", &m.down_proj),
            ] {
                out.push((format!("layers.{i}.mlp.{n}"), p));
            }
        }
        out
    }

    /// [`Self::lora_layers`], mutably.
    pub fn lora_layers_mut(&mut self) -> Vec<(String, &mut LoraLinear<B>)> {
        let mut out = Vec::with_capacity(self.model.layers.len() * 7);
        for (i, l) in self.model.layers.iter_mut().enumerate() {
            let a = &mut l.self_attn;
            for (n, p) in [
                ("q_proj", &mut a.q_proj),
                ("k_proj", &mut a.k_proj),
                ("v_proj", &mut a.v_proj),
                ("o_proj", &mut a.o_proj),
            ] {
                out.push((format!("layers.{i}.self_attn.{n}"), p));
            }
            let m = &mut l.mlp;
            for (n, p) in [
                ("gate_proj", &mut m.gate_proj),
                ("up_proj", &mut m.up_proj),
                ("down_proj", &mut m.down_proj),
            ] {
                out.push((format!("layers.{i}.mlp.{n}"), p));
            }
        }
        out
    }

    /// The same model with every adapter switched off (the DPO reference): base tensors shared,
    /// not copied.
    pub fn without_adapters(&self) -> Self {
        let mut m = self.clone();
        for (_, layer) in m.lora_layers_mut() {
            layer.lora = None;
        }
        m
    }

    /// Folds every adapter into its base weight.
    pub fn merge_adapters(self) -> Self {
        let mut m = self;
        for (_, layer) in m.lora_layers_mut() {
            let merged =
                std::mem::replace(layer, LoraLinear::from(layer.base_layer.clone())).merge();
            *layer = LoraLinear::from(merged);
        }
        m
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.model.embed_tokens.weight.dims()[0]
    }
}

impl<B: Backend> LlamaModel<B> {
    /// Decoder stack: embeddings in, final-normed hidden states out.
    ///
    /// # Shapes
    /// - `embeds`: `[batch, seq, hidden]` → `[batch, seq, hidden]`
    pub fn forward(
        &self,
        embeds: Tensor<B, 3>,
        attn: &AttentionInput<B>,
        mut cache: Option<&mut KvCache<B>>,
    ) -> Tensor<B, 3> {
        let [batch, seq, _] = embeds.dims();
        let rope = self.rope(&attn.positions, batch, seq, &embeds.device());
        let mut x = embeds;
        for (i, layer) in self.layers.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            x = layer.forward(x, &rope, &attn.mask, slot);
        }
        rms_norm(&self.norm, x)
    }

    /// The cos/sin tables for the given positions, one pair per head count (queries, keys).
    ///
    /// As `LlamaRotaryEmbedding`: `freq = position * inv_freq` in f32, then cos/sin (computed here in
    /// f64 and rounded, i.e. correctly rounded like torch's), duplicated over both halves. The
    /// tables are laid out as the projections come out of their `Linear`, `[batch, seq, heads,
    /// head_dim]`, and repeated over the heads on the host: the products are then same-shape
    /// element-wise ops on contiguous tensors (a table broadcast over heads made every product a
    /// strided one, 5× slower on the CPU; docs/benchmarks.md).
    fn rope(&self, positions: &[i64], batch: usize, seq: usize, device: &B::Device) -> Rope<B> {
        let half = self.inv_freq.len();
        let tables = self.rope_cache.get(positions, || {
            let mut cos = Vec::with_capacity(positions.len() * half * 2);
            let mut sin = Vec::with_capacity(positions.len() * half * 2);
            for &p in positions {
                let freqs: Vec<f32> = self.inv_freq.iter().map(|f| p as f32 * f).collect();
                for _ in 0..2 {
                    cos.extend(freqs.iter().map(|&f| (f as f64).cos() as f32));
                    sin.extend(freqs.iter().map(|&f| (f as f64).sin() as f32));
                }
            }
            (cos, sin)
        });
        let head_dim = 2 * half;
        // Computed in f32 and rounded to the compute dtype, as `LlamaRotaryEmbedding` returns
        // `cos.to(x.dtype)`.
        let dtype = self.embed_tokens.weight.val().dtype();
        let table = |values: &[f32], heads: usize| {
            let mut out = Vec::with_capacity(values.len() * heads);
            for row in values.chunks(head_dim) {
                for _ in 0..heads {
                    out.extend_from_slice(row);
                }
            }
            Tensor::from_data(
                TensorData::new(out, [batch, seq, heads, head_dim]),
                (device, dtype),
            )
        };
        // Every layer has the same head counts (a stack without layers uses no table).
        let (h, kvh) = self.layers.first().map_or((1, 1), |l| {
            (l.self_attn.num_heads, l.self_attn.num_kv_heads)
        });
        Rope {
            cos_q: table(&tables.0, h),
            sin_q: table(&tables.1, h),
            cos_k: table(&tables.0, kvh),
            sin_k: table(&tables.1, kvh),
        }
    }
}

/// RoPE tables of one forward, `[batch, seq, heads, head_dim]` for the queries' and the keys'
/// head counts.
struct Rope<B: Backend> {
    cos_q: Tensor<B, 4>,
    sin_q: Tensor<B, 4>,
    cos_k: Tensor<B, 4>,
    sin_k: Tensor<B, 4>,
}

impl<B: Backend> DecoderLayer<B> {
    fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        mask: &Tensor<B, 4, Bool>,
        cache: Option<&mut Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    ) -> Tensor<B, 3> {
        let h = x.clone()
            + self
                .self_attn
                .forward(rms_norm(&self.input_layernorm, x), rope, mask, cache);
        h.clone()
            + self
                .mlp
                .forward(rms_norm(&self.post_attention_layernorm, h))
    }
}

fn rotate_half<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let half = x.dims()[3] / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.narrow(3, half, half);
    Tensor::cat(vec![x2.neg(), x1], 3)
}

impl<B: Backend> Attention<B> {
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]`; `rope`: `[batch, seq, heads, head_dim]` tables;
    ///   `mask`: `[batch, 1, seq, past + seq]` → `[batch, seq, hidden]`
    fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        mask: &Tensor<B, 4, Bool>,
        cache: Option<&mut Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    ) -> Tensor<B, 3> {
        let [batch, seq, _] = x.dims();
        let (h, kvh, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let split = |t: Tensor<B, 3>, heads: usize| t.reshape([batch, seq, heads, hd]);
        let q = split(self.q_proj.forward(x.clone()), h); // [batch, seq, h, hd]
        let k = split(self.k_proj.forward(x.clone()), kvh); // [batch, seq, kvh, hd]
        let v = split(self.v_proj.forward(x), kvh).swap_dims(1, 2); // [batch, kvh, seq, hd]
                                                                    // RoPE in the projections' own layout, then heads first for attention.
        let q =
            (q.clone() * rope.cos_q.clone() + rotate_half(q) * rope.sin_q.clone()).swap_dims(1, 2);
        let k =
            (k.clone() * rope.cos_k.clone() + rotate_half(k) * rope.sin_k.clone()).swap_dims(1, 2);
        let (k, v) = match cache {
            Some(slot) => {
                let (k, v) = match slot.take() {
                    Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
                    None => (k, v),
                };
                *slot = Some((k.clone(), v.clone()));
                (k, v)
            }
            None => (k, v),
        };
        let total = k.dims()[2];
        let repeat = |t: Tensor<B, 4>| {
            if h == kvh {
                t
            } else {
                t.unsqueeze_dim::<5>(2)
                    .expand([batch, kvh, h / kvh, total, hd])
                    .reshape([batch, h, total, hd])
            }
        };
        // The mask stays `[batch, 1, seq, total]`: broadcast over heads where it is read.
        let out = attention(q, repeat(k), repeat(v), Some(mask.clone()));
        self.o_proj
            .forward(out.swap_dims(1, 2).reshape([batch, seq, h * hd]))
    }
}

impl<B: Backend> Mlp<B> {
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let gate = self.gate_proj.forward(x.clone());
        self.down_proj
            .forward(mmedpo_core::swiglu::swiglu(gate, self.up_proj.forward(x)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::{DecoderConfig, RopeScaling};
    use burn::tensor::Tolerance;
    use mmedpo_core::backend::TestBackend as B;

    fn tiny(window: Option<usize>, tied: bool) -> DecoderConfig {
        DecoderConfig {
            vocab_size: 50,
            hidden_size: 16,
            intermediate_size: 24,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 4,
            rope_theta: 10_000.0,
            sliding_window: window,
            tie_word_embeddings: tied,
            ..DecoderConfig::mistral_100m()
        }
    }

    fn ids(rows: &[&[i32]]) -> Tensor<B, 2, Int> {
        let (b, l) = (rows.len(), rows[0].len());
        let flat: Vec<i32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_data(TensorData::new(flat, [b, l]), &Default::default())
    }

    #[test]
    fn cached_decoding_equals_the_full_forward() {
        for (window, tied) in [(None, false), (Some(3), true)] {
            let model = tiny(window, tied).init::<B>(&Default::default());
            let seq: &[i32] = &[3, 14, 15, 9, 26, 5, 35];
            let full = model.forward(ids(&[seq]));
            let mut cache = KvCache::new(model.num_layers());
            let dev = Default::default();
            // Prefill 4 tokens, then one at a time.
            let valid = vec![vec![true; 4]];
            let attn = AttentionInput::new(&valid, window, &dev);
            let mut parts =
                vec![model.forward_cached(model.embed(ids(&[&seq[..4]])), &attn, &mut cache)];
            for t in 4..seq.len() {
                let valid = vec![vec![true; t + 1]];
                let attn = AttentionInput::step(&valid, t, 1, window, &dev);
                parts.push(model.forward_cached(
                    model.embed(ids(&[&seq[t..t + 1]])),
                    &attn,
                    &mut cache,
                ));
            }
            assert_eq!(cache.len(), seq.len());
            Tensor::cat(parts, 1)
                .into_data()
                .assert_approx_eq::<f32>(&full.into_data(), Tolerance::absolute(1e-5));
        }
    }

    #[test]
    fn left_padding_does_not_change_a_row() {
        let model = tiny(None, false).init::<B>(&Default::default());
        let dev = Default::default();
        let alone = model.forward(ids(&[&[7, 8, 9]]));
        let padded = ids(&[&[0, 0, 7, 8, 9], &[1, 2, 3, 4, 5]]);
        let valid = vec![vec![false, false, true, true, true], vec![true; 5]];
        let attn = AttentionInput::new(&valid, None, &dev);
        let out = model.forward_embeds(model.embed(padded), &attn);
        let row = out.slice([0..1, 2..5]);
        row.into_data()
            .assert_approx_eq::<f32>(&alone.into_data(), Tolerance::absolute(1e-5));
    }

    #[test]
    fn sliding_window_mask_in_slots() {
        let dev = Default::default();
        let attn = AttentionInput::<B>::new(&[vec![true; 4]], Some(2), &dev);
        let mask: Vec<bool> = attn.mask.into_data().to_vec().unwrap();
        #[rustfmt::skip]
        let expected = [
            false, true, true, true,
            false, false, true, true,
            true, false, false, true,
            true, true, false, false,
        ];
        assert_eq!(mask, expected);
    }

    #[test]
    fn the_rope_cache_holds_the_last_positions_only() {
        let model = tiny(None, false).init::<B>(&Default::default());
        let dev = Default::default();
        let host = |t: Tensor<B, 4>| -> Vec<f32> { t.into_data().to_vec().unwrap() };
        let (a, b) = (vec![0i64, 1, 2, 3], vec![5i64, 6, 7, 8]);
        let ra = model.model.rope(&a, 1, 4, &dev);
        let rb = model.model.rope(&b, 1, 4, &dev);
        assert_ne!(
            host(ra.cos_q.clone()),
            host(rb.cos_q),
            "other positions, other tables"
        );
        let ra2 = model.model.rope(&a, 1, 4, &dev);
        assert_eq!(
            (host(ra.cos_q), host(ra.sin_k)),
            (host(ra2.cos_q), host(ra2.sin_k))
        );
        assert_eq!(model.model.rope_cache.key(), Some(a));
        // The mask cache gives what a fresh build gives, for each of two padding patterns.
        let masks =
            |i: &AttentionInput<B>| -> Vec<bool> { i.mask.clone().into_data().to_vec().unwrap() };
        for valid in [
            vec![vec![true, true, false]],
            vec![vec![false, true, true]],
            vec![vec![true, true, false]],
        ] {
            let (c, n) = (
                AttentionInput::cached(&model.model, &valid, &dev),
                AttentionInput::<B>::new(&valid, None, &dev),
            );
            assert_eq!(
                (c.positions.clone(), masks(&c)),
                (n.positions.clone(), masks(&n))
            );
        }
    }

    #[test]
    fn llama3_rope_scaling_matches_transformers() {
        // transformers' `_compute_llama3_parameters` for head_dim 8, theta 500000, factor 8,
        // low 1, high 4, original 8192: one unchanged high frequency pair, one smoothed, one divided.
        let cfg = DecoderConfig {
            head_dim: 8,
            rope_theta: 500_000.0,
            rope_scaling: RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192,
            },
            ..tiny(None, false)
        };
        let inv = rope_inv_freq(&cfg);
        let expected = [1.0f32, 0.037_606_03, 0.000_524_846_2, 0.000_006_647_87];
        for (a, e) in inv.iter().zip(expected) {
            assert!((a - e).abs() <= 1e-5 * e, "{inv:?}");
        }
    }
}
