//! Strict loading of a CLIP vision tower from a safetensors checkpoint.
//!
//! The tower's keys sit under a prefix that depends on who saved it: `vision_model.` (hub CLIP
//! checkpoints), nothing (transformers 5 `CLIPVisionModel`), `vision_tower.vision_model.`
//! (llava-hf), `model.vision_tower.vision_model.` (transformers 5 llava-hf), or
//! `model.vision_tower.vision_tower.vision_model.` (LLaVA-Med shards). [`find_prefix`] finds it.
//! Remaps: Linear transpose, LayerNorm `weight`/`bias` → `gamma`/`beta`; nothing else.

use std::path::Path;

use burn::module::Param;
use burn::nn::conv::Conv2dConfig;
use burn::nn::Embedding;
use burn::tensor::backend::Backend;
use mmedpo_core::checkpoint::{Checkpoint, LoadReport};

use crate::clip::{
    ClipAttention, ClipEncoder, ClipEncoderLayer, ClipMlp, ClipVisionEmbeddings, ClipVisionModel,
    ClipVisionTransformer,
};
use crate::config::{ClipActivation, ClipVisionConfig};
use crate::error::Result;

const ANCHOR: &str = "embeddings.class_embedding";

/// The key prefix of the vision tower in `ckpt` (the text before `embeddings.class_embedding`),
/// if there is exactly one tower.
pub fn find_prefix(ckpt: &Checkpoint) -> Option<String> {
    let found: Vec<&str> = ckpt.keys().filter(|k| k.ends_with(ANCHOR)).collect();
    match found.as_slice() {
        [one] => Some(one[..one.len() - ANCHOR.len()].to_string()),
        _ => None,
    }
}

/// Every parameter key of a tower with this config under `prefix`.
pub fn expected_keys(config: &ClipVisionConfig, prefix: &str) -> Vec<String> {
    let p = prefix;
    let mut keys: Vec<String> = [
        "embeddings.class_embedding",
        "embeddings.patch_embedding.weight",
        "embeddings.position_embedding.weight",
        "pre_layrnorm.weight",
        "pre_layrnorm.bias",
        "post_layernorm.weight",
        "post_layernorm.bias",
    ]
    .iter()
    .map(|k| format!("{p}{k}"))
    .collect();
    for i in 0..config.num_hidden_layers {
        for name in [
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.out_proj",
            "mlp.fc1",
            "mlp.fc2",
            "layer_norm1",
            "layer_norm2",
        ] {
            keys.push(format!("{p}encoder.layers.{i}.{name}.weight"));
            keys.push(format!("{p}encoder.layers.{i}.{name}.bias"));
        }
    }
    keys
}

/// Takes a tower whose keys sit under `prefix`; every missing key is reported at once.
pub fn take_clip<B: Backend>(
    ckpt: &mut Checkpoint,
    config: &ClipVisionConfig,
    prefix: &str,
    device: &B::Device,
) -> Result<ClipVisionModel<B>> {
    ckpt.require(&expected_keys(config, prefix), prefix)?;
    ckpt.ignore(
        &format!("{prefix}embeddings.position_ids"),
        "buffer, recomputed",
    );
    let p = prefix;
    let (d, m, eps) = (
        config.hidden_size,
        config.intermediate_size,
        config.layer_norm_eps,
    );
    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for i in 0..config.num_hidden_layers {
        let l = format!("{p}encoder.layers.{i}.");
        layers.push(ClipEncoderLayer {
            self_attn: ClipAttention {
                q_proj: ckpt.take_linear(&format!("{l}self_attn.q_proj"), d, d, true, device)?,
                k_proj: ckpt.take_linear(&format!("{l}self_attn.k_proj"), d, d, true, device)?,
                v_proj: ckpt.take_linear(&format!("{l}self_attn.v_proj"), d, d, true, device)?,
                out_proj: ckpt.take_linear(
                    &format!("{l}self_attn.out_proj"),
                    d,
                    d,
                    true,
                    device,
                )?,
                num_heads: config.num_attention_heads,
            },
            layer_norm1: ckpt.take_layer_norm(&format!("{l}layer_norm1"), d, eps, device)?,
            mlp: ClipMlp {
                fc1: ckpt.take_linear(&format!("{l}mlp.fc1"), d, m, true, device)?,
                fc2: ckpt.take_linear(&format!("{l}mlp.fc2"), m, d, true, device)?,
                quick_gelu: config.hidden_act == ClipActivation::QuickGelu,
            },
            layer_norm2: ckpt.take_layer_norm(&format!("{l}layer_norm2"), d, eps, device)?,
        });
    }
    let ps = config.patch_size;
    let mut patch_embedding = Conv2dConfig::new([config.num_channels, d], [ps, ps])
        .with_stride([ps, ps])
        .with_bias(false)
        .init(device);
    patch_embedding.weight = Param::from_tensor(ckpt.take::<B, 4>(
        &format!("{p}embeddings.patch_embedding.weight"),
        [d, config.num_channels, ps, ps],
        device,
    )?);
    let embeddings = ClipVisionEmbeddings {
        class_embedding: Param::from_tensor(ckpt.take::<B, 1>(
            &format!("{p}embeddings.class_embedding"),
            [d],
            device,
        )?),
        patch_embedding,
        position_embedding: Embedding {
            weight: Param::from_tensor(ckpt.take::<B, 2>(
                &format!("{p}embeddings.position_embedding.weight"),
                [config.num_positions(), d],
                device,
            )?),
        },
    };
    Ok(ClipVisionModel {
        vision_model: ClipVisionTransformer {
            embeddings,
            pre_layrnorm: ckpt.take_layer_norm(&format!("{p}pre_layrnorm"), d, eps, device)?,
            encoder: ClipEncoder { layers },
            post_layernorm: ckpt.take_layer_norm(&format!("{p}post_layernorm"), d, eps, device)?,
        },
    })
}

/// Loads a tower directory (`CLIPVisionModel`, or a full `CLIPModel` whose text tower is ignored
/// with a reason in the report).
pub fn load_clip<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(ClipVisionModel<B>, ClipVisionConfig, LoadReport)> {
    load_clip_as(dir, device, mmedpo_core::precision::default_float::<B>())
}

/// [`load_clip`] with the weights in `dtype` (f32, f16 or bf16; the tower then computes in it).
pub fn load_clip_as<B: Backend>(
    dir: &Path,
    device: &B::Device,
    dtype: burn::tensor::DType,
) -> Result<(ClipVisionModel<B>, ClipVisionConfig, LoadReport)> {
    let config = ClipVisionConfig::from_file(&dir.join("config.json"))?;
    let mut ckpt = Checkpoint::open(dir)?;
    ckpt.set_float_dtype(dtype);
    let prefix = find_prefix(&ckpt).unwrap_or_else(|| "vision_model.".into());
    let model = take_clip(&mut ckpt, &config, &prefix, device)?;
    for (p, why) in [
        ("text_model.", "CLIP text tower, unused by LLaVA"),
        ("text_projection.", "CLIP text projection, unused by LLaVA"),
        (
            "visual_projection.",
            "CLIP image projection, unused by LLaVA (it reads hidden states)",
        ),
        (
            "logit_scale",
            "CLIP contrastive temperature, unused by LLaVA",
        ),
    ] {
        ckpt.ignore_prefix(p, why);
    }
    let report = ckpt.finish()?;
    tracing::info!(dir = %dir.display(), "vision tower: {report}");
    Ok((model, config, report))
}

fn host<B: Backend, const D: usize>(t: burn::tensor::Tensor<B, D>) -> (Vec<usize>, Vec<f32>) {
    let shape = t.dims().to_vec();
    (
        shape,
        t.into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .unwrap_or_default(),
    )
}

/// The tower's parameters under HF keys relative to the tower (`embeddings.*`, `encoder.*`,
/// `pre_layrnorm.*`, `post_layernorm.*`), PyTorch layouts, f32.
pub fn hf_tensors<B: Backend>(model: &ClipVisionModel<B>) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut out = Vec::new();
    let mut push = |k: String, (s, d): (Vec<usize>, Vec<f32>)| out.push((k, s, d));
    let m = &model.vision_model;
    push(
        "embeddings.class_embedding".into(),
        host(m.embeddings.class_embedding.val()),
    );
    push(
        "embeddings.patch_embedding.weight".into(),
        host(m.embeddings.patch_embedding.weight.val()),
    );
    push(
        "embeddings.position_embedding.weight".into(),
        host(m.embeddings.position_embedding.weight.val()),
    );
    let norm = |push: &mut dyn FnMut(String, (Vec<usize>, Vec<f32>)),
                k: &str,
                n: &burn::nn::LayerNorm<B>| {
        push(format!("{k}.weight"), host(n.gamma.val()));
        if let Some(b) = &n.beta {
            push(format!("{k}.bias"), host(b.val()));
        }
    };
    norm(&mut push, "pre_layrnorm", &m.pre_layrnorm);
    norm(&mut push, "post_layernorm", &m.post_layernorm);
    for (i, l) in m.encoder.layers.iter().enumerate() {
        let p = format!("encoder.layers.{i}");
        let a = &l.self_attn;
        for (n, lin) in [
            ("self_attn.q_proj", &a.q_proj),
            ("self_attn.k_proj", &a.k_proj),
            ("self_attn.v_proj", &a.v_proj),
            ("self_attn.out_proj", &a.out_proj),
            ("mlp.fc1", &l.mlp.fc1),
            ("mlp.fc2", &l.mlp.fc2),
        ] {
            push(
                format!("{p}.{n}.weight"),
                host(lin.weight.val().transpose()),
            );
            if let Some(b) = &lin.bias {
                push(format!("{p}.{n}.bias"), host(b.val()));
            }
        }
        norm(&mut push, &format!("{p}.layer_norm1"), &l.layer_norm1);
        norm(&mut push, &format!("{p}.layer_norm2"), &l.layer_norm2);
    }
    out
}
