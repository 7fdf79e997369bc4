//! Loading and saving Llama/Mistral checkpoints in the Hugging Face layout.
//!
//! Key map (HF → Burn), the only remaps: `Linear.weight` is transposed (`[out, in]` → `[in, out]`),
//! `RmsNorm.weight` becomes `gamma`, and with `tie_word_embeddings` there is no `lm_head`.
//! The strict safetensors machinery ([`Checkpoint`]) lives in `mmedpo-core`; components of a larger
//! checkpoint (LLaVA) take the decoder under a prefix with [`take_llm`] and the caller closes with
//! [`Checkpoint::finish`].

use std::collections::BTreeSet;
use std::path::Path;

use burn::module::Param;
use burn::nn::Embedding;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
pub use mmedpo_core::checkpoint::{write_safetensors, Checkpoint, LoadReport, IGNORED_SUFFIXES};

use mmedpo_lora::LoraLinear;

use crate::config::{DecoderConfig, HfConfig};
use crate::error::{Error, Result};
use crate::llama::{rope_inv_freq, Attention, DecoderLayer, LlamaForCausalLM, LlamaModel, Mlp};

/// Takes a Llama/Mistral decoder whose `model.*` keys sit under `model_prefix` (e.g. `"model."`,
/// `"language_model.model."`) and whose head is `lm_head_key` (e.g. `"lm_head.weight"`).
/// All missing keys are reported together before anything is read.
pub fn take_llm<B: Backend>(
    ckpt: &mut Checkpoint,
    config: &DecoderConfig,
    model_prefix: &str,
    lm_head_key: &str,
    device: &B::Device,
) -> Result<LlamaForCausalLM<B>> {
    let expected = expected_keys(config, model_prefix, lm_head_key);
    ckpt.require(&expected, model_prefix)?;
    if config.tie_word_embeddings {
        ckpt.ignore(
            lm_head_key,
            "tie_word_embeddings: lm_head is model.embed_tokens",
        );
    }
    let (d, v, m) = (
        config.hidden_size,
        config.vocab_size,
        config.intermediate_size,
    );
    let (q, kv) = (
        config.num_attention_heads * config.head_dim,
        config.num_key_value_heads * config.head_dim,
    );
    let p = model_prefix;
    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for i in 0..config.num_hidden_layers {
        let l = format!("{p}layers.{i}.");
        let mut lin = |name: &str, i: usize, o: usize, bias: bool| {
            ckpt.take_linear::<B>(&format!("{l}{name}"), i, o, bias, device)
                .map(LoraLinear::from)
        };
        let (ab, mb) = (config.attention_bias, config.mlp_bias);
        let self_attn = Attention {
            q_proj: lin("self_attn.q_proj", d, q, ab)?,
            k_proj: lin("self_attn.k_proj", d, kv, ab)?,
            v_proj: lin("self_attn.v_proj", d, kv, ab)?,
            o_proj: lin("self_attn.o_proj", q, d, ab)?,
            num_heads: config.num_attention_heads,
            num_kv_heads: config.num_key_value_heads,
            head_dim: config.head_dim,
        };
        let mlp = Mlp {
            gate_proj: lin("mlp.gate_proj", d, m, mb)?,
            up_proj: lin("mlp.up_proj", d, m, mb)?,
            down_proj: lin("mlp.down_proj", m, d, mb)?,
        };
        let input_layernorm =
            take_rms::<B>(ckpt, &format!("{l}input_layernorm.weight"), config, device)?;
        let post_attention_layernorm = take_rms::<B>(
            ckpt,
            &format!("{l}post_attention_layernorm.weight"),
            config,
            device,
        )?;
        ckpt.ignore(
            &format!("{l}self_attn.rotary_emb.inv_freq"),
            IGNORED_SUFFIXES[0].1,
        );
        layers.push(DecoderLayer {
            self_attn,
            mlp,
            input_layernorm,
            post_attention_layernorm,
        });
    }
    let embed = ckpt.take::<B, 2>(&format!("{p}embed_tokens.weight"), [v, d], device)?;
    let norm = take_rms::<B>(ckpt, &format!("{p}norm.weight"), config, device)?;
    let lm_head = if config.tie_word_embeddings {
        None
    } else {
        Some(burn::nn::Linear {
            weight: burn::module::Param::from_tensor(ckpt.take_transposed::<B>(
                lm_head_key,
                [v, d],
                device,
            )?),
            bias: None,
        })
    };
    Ok(LlamaForCausalLM {
        model: LlamaModel {
            embed_tokens: Embedding {
                weight: Param::from_tensor(embed),
            },
            layers,
            norm,
            inv_freq: rope_inv_freq(config),
            sliding_window: config.sliding_window,
            rope_cache: Default::default(),
            mask_cache: Default::default(),
        },
        lm_head,
    })
}

fn take_rms<B: Backend>(
    ckpt: &mut Checkpoint,
    key: &str,
    config: &DecoderConfig,
    device: &B::Device,
) -> Result<burn::nn::RmsNorm<B>> {
    let prefix = key.strip_suffix(".weight").unwrap_or(key);
    Ok(ckpt.take_rms_norm::<B>(prefix, config.hidden_size, config.rms_norm_eps, device)?)
}

/// Every parameter key a decoder of this config has, in checkpoint naming.
pub fn expected_keys(config: &DecoderConfig, model_prefix: &str, lm_head_key: &str) -> Vec<String> {
    let p = model_prefix;
    let mut keys = vec![format!("{p}embed_tokens.weight"), format!("{p}norm.weight")];
    for i in 0..config.num_hidden_layers {
        for name in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            keys.push(format!("{p}layers.{i}.self_attn.{name}.weight"));
            if config.attention_bias {
                keys.push(format!("{p}layers.{i}.self_attn.{name}.bias"));
            }
        }
        for name in ["gate_proj", "up_proj", "down_proj"] {
            keys.push(format!("{p}layers.{i}.mlp.{name}.weight"));
            if config.mlp_bias {
                keys.push(format!("{p}layers.{i}.mlp.{name}.bias"));
            }
        }
        keys.push(format!("{p}layers.{i}.input_layernorm.weight"));
        keys.push(format!("{p}layers.{i}.post_attention_layernorm.weight"));
    }
    if !config.tie_word_embeddings {
        keys.push(lm_head_key.to_string());
    }
    keys
}

/// A loaded LLM: the module, its resolved config and the load report.
#[derive(Debug)]
pub struct LoadedLlm<B: Backend> {
    /// The model.
    pub model: LlamaForCausalLM<B>,
    /// Its resolved config.
    pub config: DecoderConfig,
    /// What was loaded.
    pub report: LoadReport,
}

/// Loads an HF Llama/Mistral directory (`config.json` + safetensors), strictly.
pub fn load_llm<B: Backend>(dir: &Path, device: &B::Device) -> Result<LoadedLlm<B>> {
    load_llm_as(dir, device, mmedpo_core::precision::default_float::<B>())
}

/// [`load_llm`] with the weights in `dtype` (f32, f16 or bf16): the compute dtype, as
/// `torch_dtype` sets it. Log-softmax and sampling still read f32 logits.
pub fn load_llm_as<B: Backend>(
    dir: &Path,
    device: &B::Device,
    dtype: burn::tensor::DType,
) -> Result<LoadedLlm<B>> {
    let config = HfConfig::from_file(&dir.join("config.json"))?.into_runtime()?;
    let mut ckpt = Checkpoint::open(dir)?;
    ckpt.set_float_dtype(dtype);
    // Report missing and unused keys together, before reading any tensor.
    let expected = expected_keys(&config, "model.", "lm_head.weight");
    let expected_set: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
    let missing: Vec<String> = expected
        .iter()
        .filter(|k| !ckpt.contains(k))
        .cloned()
        .collect();
    let unused: Vec<String> = ckpt
        .keys()
        .filter(|k| !expected_set.contains(k))
        .filter(|k| !IGNORED_SUFFIXES.iter().any(|(s, _)| k.ends_with(s)))
        .filter(|k| !(config.tie_word_embeddings && *k == "lm_head.weight"))
        .map(String::from)
        .collect();
    if !missing.is_empty() || !unused.is_empty() {
        return Err(mmedpo_core::Error::Keys {
            dir: dir.to_path_buf(),
            missing,
            unused,
        }
        .into());
    }
    let model = take_llm(&mut ckpt, &config, "model.", "lm_head.weight", device)?;
    let report = ckpt.finish()?;
    tracing::info!(dir = %dir.display(), "{report}");
    Ok(LoadedLlm {
        model,
        config,
        report,
    })
}

/// The `config.json` text of a decoder config, in the transformers layout (`rope_theta` at the top
/// level, which both transformers 4 and 5 read).
pub fn hf_config_json(config: &DecoderConfig) -> serde_json::Value {
    use crate::config::{ModelType, RopeScaling};
    let (arch, model_type) = match config.model_type {
        ModelType::Llama => ("LlamaForCausalLM", "llama"),
        ModelType::Mistral => ("MistralForCausalLM", "mistral"),
    };
    let rope_scaling = match config.rope_scaling {
        RopeScaling::None => serde_json::Value::Null,
        RopeScaling::Linear { factor } => {
            serde_json::json!({"rope_type": "linear", "factor": factor})
        }
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => {
            serde_json::json!({"rope_type": "llama3", "factor": factor, "low_freq_factor": low_freq_factor,
                "high_freq_factor": high_freq_factor,
                "original_max_position_embeddings": original_max_position_embeddings})
        }
    };
    serde_json::json!({
        "architectures": [arch],
        "model_type": model_type,
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_position_embeddings,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta,
        "rope_scaling": rope_scaling,
        "tie_word_embeddings": config.tie_word_embeddings,
        "attention_bias": config.attention_bias,
        "mlp_bias": config.mlp_bias,
        "sliding_window": config.sliding_window,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": if config.eos_token_ids.len() == 1 {
            serde_json::json!(config.eos_token_ids[0])
        } else {
            serde_json::json!(config.eos_token_ids)
        },
        "pad_token_id": config.pad_token_id,
        "torch_dtype": "float32",
    })
}

/// The model's parameters under their HF keys, as `(key, shape, f32 values)`, with Burn's
/// `[in, out]` linear weights transposed back to `[out, in]`.
pub fn hf_tensors<B: Backend>(model: &LlamaForCausalLM<B>) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    fn vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> (Vec<usize>, Vec<f32>) {
        let shape = t.dims().to_vec();
        let data = t.into_data().convert::<f32>();
        (shape, data.to_vec::<f32>().unwrap_or_default())
    }
    let mut out = Vec::new();
    let mut push =
        |key: String, (shape, data): (Vec<usize>, Vec<f32>)| out.push((key, shape, data));
    let linear = |push: &mut dyn FnMut(String, (Vec<usize>, Vec<f32>)),
                  key: &str,
                  l: &burn::nn::Linear<B>| {
        push(format!("{key}.weight"), vec(l.weight.val().transpose()));
        if let Some(b) = &l.bias {
            push(format!("{key}.bias"), vec(b.val()));
        }
    };
    let m = &model.model;
    push(
        "model.embed_tokens.weight".into(),
        vec(m.embed_tokens.weight.val()),
    );
    push("model.norm.weight".into(), vec(m.norm.gamma.val()));
    for (i, layer) in m.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        let a = &layer.self_attn;
        for (name, l) in [
            ("q_proj", &a.q_proj),
            ("k_proj", &a.k_proj),
            ("v_proj", &a.v_proj),
            ("o_proj", &a.o_proj),
        ] {
            linear(&mut push, &format!("{p}.self_attn.{name}"), &l.base_layer);
        }
        let mlp = &layer.mlp;
        for (name, l) in [
            ("gate_proj", &mlp.gate_proj),
            ("up_proj", &mlp.up_proj),
            ("down_proj", &mlp.down_proj),
        ] {
            linear(&mut push, &format!("{p}.mlp.{name}"), &l.base_layer);
        }
        push(
            format!("{p}.input_layernorm.weight"),
            vec(layer.input_layernorm.gamma.val()),
        );
        push(
            format!("{p}.post_attention_layernorm.weight"),
            vec(layer.post_attention_layernorm.gamma.val()),
        );
    }
    if let Some(head) = &model.lm_head {
        linear(&mut push, "lm_head", head);
    }
    out
}

/// Saves a model as an HF directory: `config.json` + `model.safetensors` (f32).
pub fn save_llm<B: Backend>(
    model: &LlamaForCausalLM<B>,
    config: &DecoderConfig,
    dir: &Path,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let cfg_path = dir.join("config.json");
    let text =
        serde_json::to_string_pretty(&hf_config_json(config)).map_err(|cause| Error::Json {
            path: cfg_path.clone(),
            cause,
        })?;
    std::fs::write(&cfg_path, text).map_err(|e| Error::io(&cfg_path, e))?;
    Ok(write_safetensors(
        &dir.join("model.safetensors"),
        &hf_tensors(model),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Int, TensorData, Tolerance};
    use mmedpo_core::backend::TestBackend as B;
    use safetensors::Dtype;
    use std::path::PathBuf;

    fn tiny() -> DecoderConfig {
        DecoderConfig {
            vocab_size: 40,
            hidden_size: 16,
            intermediate_size: 24,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 4,
            attention_bias: true,
            ..DecoderConfig::mistral_100m()
        }
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mmedpo-loader-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn ids() -> Tensor<B, 2, Int> {
        Tensor::from_data(
            TensorData::new(vec![1i32, 5, 7, 30, 2], [1, 5]),
            &Default::default(),
        )
    }

    #[test]
    fn f32_round_trip_gives_the_same_logits() {
        let device = Default::default();
        let cfg = tiny();
        let model = cfg.init::<B>(&device);
        let dir = tmp("roundtrip");
        save_llm(&model, &cfg, &dir).unwrap();
        let loaded = load_llm::<B>(&dir, &device).unwrap();
        assert_eq!(loaded.config, cfg);
        assert_eq!(
            loaded.report.applied.len(),
            expected_keys(&cfg, "model.", "lm_head.weight").len()
        );
        assert!(loaded.report.to_string().contains("0 missing, 0 unused"));
        loaded
            .model
            .forward(ids())
            .into_data()
            .assert_approx_eq::<f32>(&model.forward(ids()).into_data(), Tolerance::absolute(1e-6));
    }

    fn rewrite(dir: &Path, edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<f32>)>)) {
        let model = tiny().init::<B>(&Default::default());
        save_llm(&model, &tiny(), dir).unwrap();
        let mut t = hf_tensors(&model);
        edit(&mut t);
        write_safetensors(&dir.join("model.safetensors"), &t).unwrap();
    }

    #[test]
    fn missing_and_unused_keys_are_reported_together() {
        let dir = tmp("keys");
        rewrite(&dir, |t| {
            t.retain(|(k, _, _)| k != "model.layers.1.mlp.up_proj.weight" && k != "lm_head.weight");
            t.push((
                "model.layers.1.mlp.extra.weight".into(),
                vec![2],
                vec![0.0, 1.0],
            ));
            t.push((
                "model.layers.0.self_attn.rotary_emb.inv_freq".into(),
                vec![2],
                vec![1.0, 0.1],
            ));
        });
        let err = load_llm::<B>(&dir, &Default::default()).unwrap_err();
        match &err {
            Error::Checkpoint(mmedpo_core::Error::Keys {
                missing, unused, ..
            }) => {
                assert_eq!(
                    missing,
                    &vec![
                        "model.layers.1.mlp.up_proj.weight".to_string(),
                        "lm_head.weight".into()
                    ]
                );
                assert_eq!(unused, &vec!["model.layers.1.mlp.extra.weight".to_string()]);
            }
            other => panic!("expected a key error, got {other}"),
        }
        assert!(err.to_string().contains("2 missing key(s)"), "{err}");
    }

    #[test]
    fn rotary_buffers_are_ignored_and_reported() {
        let dir = tmp("inv_freq");
        rewrite(&dir, |t| {
            t.push((
                "model.layers.0.self_attn.rotary_emb.inv_freq".into(),
                vec![2],
                vec![1.0, 0.1],
            ))
        });
        let loaded = load_llm::<B>(&dir, &Default::default()).unwrap();
        assert_eq!(loaded.report.ignored.len(), 1);
        assert!(loaded.report.ignored[0].0.ends_with("rotary_emb.inv_freq"));
    }

    #[test]
    fn wrong_shape_names_the_tensor() {
        let dir = tmp("shape");
        rewrite(&dir, |t| {
            let e = t
                .iter_mut()
                .find(|(k, _, _)| k == "model.norm.weight")
                .unwrap();
            *e = (e.0.clone(), vec![8], vec![1.0; 8]);
        });
        let err = load_llm::<B>(&dir, &Default::default()).unwrap_err();
        assert!(
            err.to_string().contains("model.norm.weight") && err.to_string().contains("[8]"),
            "{err}"
        );
    }

    #[test]
    fn pickle_checkpoints_are_refused_with_a_conversion_hint() {
        let dir = tmp("pickle");
        std::fs::write(dir.join("pytorch_model.bin"), b"not read").unwrap();
        let err = Checkpoint::open(&dir).unwrap_err();
        assert!(matches!(
            err,
            mmedpo_core::Error::UnsupportedCheckpoint { .. }
        ));
        assert!(err.to_string().contains("scripts/convert_bin.py"), "{err}");
        let err = Checkpoint::open(&dir.join("pytorch_model.bin")).unwrap_err();
        assert!(matches!(
            err,
            mmedpo_core::Error::UnsupportedCheckpoint { .. }
        ));
    }

    #[test]
    fn missing_dir_and_corrupt_file_name_the_path() {
        let err = Checkpoint::open(Path::new("/nonexistent/model")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/model"), "{err}");
        let dir = tmp("corrupt");
        std::fs::write(
            dir.join("model.safetensors"),
            b"\x05\x00\x00\x00\x00\x00\x00\x00{bad}",
        )
        .unwrap();
        let err = Checkpoint::open(&dir).unwrap_err();
        assert!(
            err.to_string().contains("model.safetensors")
                && err.to_string().contains("not a valid safetensors"),
            "{err}"
        );
    }

    #[test]
    fn an_index_that_points_at_the_wrong_shard_is_an_error() {
        let dir = tmp("index");
        rewrite(&dir, |_| {});
        std::fs::rename(dir.join("model.safetensors"), dir.join("a.safetensors")).unwrap();
        std::fs::write(dir.join("b.safetensors"), {
            let v = safetensors::tensor::TensorView::new(Dtype::F32, vec![1], &[0u8; 4]).unwrap();
            safetensors::serialize(vec![("x".to_string(), v)], None).unwrap()
        })
        .unwrap();
        let index = serde_json::json!({"weight_map": {"model.norm.weight": "b.safetensors", "x": "b.safetensors"}});
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
        let err = Checkpoint::open(&dir).unwrap_err();
        assert!(err.to_string().contains("model.norm.weight"), "{err}");
    }
}
