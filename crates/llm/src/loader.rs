//! Strict loading of Hugging Face safetensors checkpoints.
//!
//! [`Checkpoint`] opens a model directory: `model.safetensors`, or the shards listed in
//! `model.safetensors.index.json`; f32, f16 and bf16 tensors (converted to the backend's float type).
//! PyTorch pickles (`*.bin`) are refused with the command that converts them.
//!
//! Loading is strict: every parameter the config implies must be present with the right shape, and
//! every tensor in the files must be taken by some parameter, except the named allow-list
//! [`IGNORED_SUFFIXES`]. Missing and unused keys are reported together in one [`Error::Keys`]; the
//! model is never left with random weights. A [`LoadReport`] lists what was applied and ignored.
//!
//! Key map (HF → Burn), the only remaps: `Linear.weight` is transposed (`[out, in]` → `[in, out]`),
//! `RmsNorm.weight` becomes `gamma`, and with `tie_word_embeddings` there is no `lm_head`.
//! Components of a larger checkpoint (LLaVA) take their keys under a prefix
//! ([`Checkpoint::take_llm`]) and the caller closes with [`Checkpoint::finish`].

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::{Embedding, RmsNorm};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use crate::config::{DecoderConfig, HfConfig};
use crate::error::{Error, Result};
use crate::llama::{
    linear_from_hf, rope_inv_freq, Attention, DecoderLayer, LlamaForCausalLM, LlamaModel, Mlp,
};

/// Checkpoint tensors that are derived buffers, not parameters, and are skipped on purpose.
pub const IGNORED_SUFFIXES: &[(&str, &str)] = &[(
    "rotary_emb.inv_freq",
    "RoPE buffer, recomputed from config.json",
)];

/// What a load did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// Keys loaded into parameters.
    pub applied: Vec<String>,
    /// Keys deliberately skipped, with the reason.
    pub ignored: Vec<(String, String)>,
    /// The safetensors files read.
    pub files: Vec<PathBuf>,
    /// Number of tensors per on-disk dtype.
    pub dtypes: BTreeMap<String, usize>,
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dtypes: Vec<String> = self
            .dtypes
            .iter()
            .map(|(d, n)| format!("{n} {d}"))
            .collect();
        write!(
            f,
            "{} tensors applied from {} file(s) ({}), {} ignored, 0 missing, 0 unused",
            self.applied.len(),
            self.files.len(),
            dtypes.join(", "),
            self.ignored.len()
        )
    }
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

struct Entry {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
}

/// An opened safetensors checkpoint (single file or sharded), memory-mapped.
pub struct Checkpoint {
    dir: PathBuf,
    files: Vec<PathBuf>,
    maps: Vec<memmap2::Mmap>,
    entries: BTreeMap<String, Entry>,
    report: LoadReport,
    taken: BTreeSet<String>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("dir", &self.dir)
            .field("files", &self.files)
            .finish()
    }
}

fn refuse_pickle(path: &Path) -> Error {
    Error::UnsupportedCheckpoint {
        path: path.to_path_buf(),
        message: "PyTorch pickle checkpoints (.bin) are not read (unpickling can run code); convert it to safetensors once: \
            python -c \"import sys, transformers as t; m = t.AutoModelForCausalLM.from_pretrained(sys.argv[1]); \
            m.save_pretrained(sys.argv[2], safe_serialization=True)\" IN_DIR OUT_DIR"
            .into(),
    }
}

impl Checkpoint {
    /// Opens `model.safetensors` or `model.safetensors.index.json` in `dir` (or `dir` itself when it
    /// is a `.safetensors` file).
    pub fn open(dir: &Path) -> Result<Self> {
        if dir.extension().is_some_and(|e| e == "bin") {
            return Err(refuse_pickle(dir));
        }
        if dir.is_file() && dir.extension().is_some_and(|e| e == "safetensors") {
            let parent = dir.parent().unwrap_or(Path::new(".")).to_path_buf();
            return Self::from_files(parent, vec![dir.to_path_buf()]);
        }
        if !dir.is_dir() {
            return Err(Error::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such model directory"),
            ));
        }
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        if single.is_file() {
            return Self::from_files(dir.to_path_buf(), vec![single]);
        }
        if index.is_file() {
            let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
            let parsed: ShardIndex = serde_json::from_str(&text).map_err(|cause| Error::Json {
                path: index.clone(),
                cause,
            })?;
            let shards: BTreeSet<&String> = parsed.weight_map.values().collect();
            let files = shards.into_iter().map(|s| dir.join(s)).collect();
            let ckpt = Self::from_files(dir.to_path_buf(), files)?;
            for (key, shard) in &parsed.weight_map {
                let in_file = ckpt.entries.get(key).map(|e| &ckpt.files[e.file]);
                if in_file != Some(&dir.join(shard)) {
                    return Err(Error::Safetensors {
                        path: index,
                        message: format!(
                            "weight_map puts {key} in {shard}, but that file does not hold it"
                        ),
                    });
                }
            }
            return Ok(ckpt);
        }
        for pickle in ["pytorch_model.bin", "pytorch_model.bin.index.json"] {
            if dir.join(pickle).is_file() {
                return Err(refuse_pickle(&dir.join(pickle)));
            }
        }
        Err(Error::io(
            &single,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no model.safetensors or model.safetensors.index.json in this directory",
            ),
        ))
    }

    fn from_files(dir: PathBuf, files: Vec<PathBuf>) -> Result<Self> {
        let mut maps = Vec::with_capacity(files.len());
        let mut entries = BTreeMap::new();
        for (i, path) in files.iter().enumerate() {
            let file = File::open(path).map_err(|e| Error::io(path, e))?;
            let map = map_file(&file).map_err(|e| Error::io(path, e))?;
            let st = SafeTensors::deserialize(&map).map_err(|e| Error::Safetensors {
                path: path.clone(),
                message: e.to_string(),
            })?;
            for (name, view) in st.tensors() {
                let entry = Entry {
                    file: i,
                    dtype: view.dtype(),
                    shape: view.shape().to_vec(),
                };
                if entries.insert(name.clone(), entry).is_some() {
                    return Err(Error::Safetensors {
                        path: path.clone(),
                        message: format!("{name} appears in two shards"),
                    });
                }
            }
            maps.push(map);
        }
        let report = LoadReport {
            files: files.clone(),
            ..LoadReport::default()
        };
        Ok(Self {
            dir,
            files,
            maps,
            entries,
            report,
            taken: BTreeSet::new(),
        })
    }

    /// The checkpoint's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// All tensor keys in the checkpoint.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Whether the checkpoint holds `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Checks that every key is present; reports all missing ones at once.
    pub fn require<S: AsRef<str>>(&self, keys: &[S]) -> Result<()> {
        let missing: Vec<String> = keys
            .iter()
            .map(|k| k.as_ref())
            .filter(|k| !self.contains(k))
            .map(String::from)
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Error::Keys {
                dir: self.dir.clone(),
                missing,
                unused: vec![],
            })
        }
    }

    /// Takes one tensor, checking its shape, converted to the backend's float type.
    pub fn take<B: Backend, const D: usize>(
        &mut self,
        key: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        let entry = self.entries.get(key).ok_or_else(|| Error::Keys {
            dir: self.dir.clone(),
            missing: vec![key.to_string()],
            unused: vec![],
        })?;
        let path = &self.files[entry.file];
        if entry.shape != shape {
            return Err(Error::Tensor {
                path: path.clone(),
                key: key.into(),
                message: format!(
                    "shape {:?}, but the config implies {:?}",
                    entry.shape, shape
                ),
            });
        }
        let dtype = match entry.dtype {
            Dtype::F32 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            other => {
                return Err(Error::Tensor {
                    path: path.clone(),
                    key: key.into(),
                    message: format!("dtype {other:?} is not supported (f32, f16, bf16 are)"),
                })
            }
        };
        let st =
            SafeTensors::deserialize(&self.maps[entry.file]).map_err(|e| Error::Safetensors {
                path: path.clone(),
                message: e.to_string(),
            })?;
        let view = st.tensor(key).map_err(|e| Error::Safetensors {
            path: path.clone(),
            message: e.to_string(),
        })?;
        // Convert on the host to the backend's float type: Flex would otherwise keep (and compute
        // in) bf16/f16 storage.
        let data = TensorData::from_bytes_vec(view.data().to_vec(), shape, dtype)
            .convert::<B::FloatElem>();
        *self
            .report
            .dtypes
            .entry(format!("{:?}", entry.dtype))
            .or_default() += 1;
        self.report.applied.push(key.to_string());
        self.taken.insert(key.to_string());
        Ok(Tensor::from_data(data, device))
    }

    /// Marks keys as deliberately skipped.
    pub fn ignore(&mut self, key: &str, reason: &str) {
        if self.contains(key) && self.taken.insert(key.to_string()) {
            self.report
                .ignored
                .push((key.to_string(), reason.to_string()));
        }
    }

    fn unused(&self) -> Vec<String> {
        self.entries
            .keys()
            .filter(|k| !self.taken.contains(*k))
            .filter(|k| !IGNORED_SUFFIXES.iter().any(|(s, _)| k.ends_with(s)))
            .cloned()
            .collect()
    }

    /// Ends a load: every tensor must have been taken or ignored.
    pub fn finish(mut self) -> Result<LoadReport> {
        let unused = self.unused();
        if !unused.is_empty() {
            return Err(Error::Keys {
                dir: self.dir.clone(),
                missing: vec![],
                unused,
            });
        }
        let skipped: Vec<String> = self
            .entries
            .keys()
            .filter(|k| !self.taken.contains(*k))
            .cloned()
            .collect();
        for key in skipped {
            let reason = IGNORED_SUFFIXES
                .iter()
                .find(|(s, _)| key.ends_with(s))
                .map_or("", |(_, r)| r);
            self.report.ignored.push((key, reason.to_string()));
        }
        Ok(self.report)
    }

    /// Takes a Llama/Mistral decoder whose `model.*` keys sit under `model_prefix` (e.g. `"model."`,
    /// `"language_model.model."`) and whose head is `lm_head_key` (e.g. `"lm_head.weight"`).
    /// All missing keys are reported together before anything is read.
    pub fn take_llm<B: Backend>(
        &mut self,
        config: &DecoderConfig,
        model_prefix: &str,
        lm_head_key: &str,
        device: &B::Device,
    ) -> Result<LlamaForCausalLM<B>> {
        let expected = expected_keys(config, model_prefix, lm_head_key);
        self.require(&expected)?;
        if config.tie_word_embeddings {
            self.ignore(
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
            let mut lin = |name: &str, i: usize, o: usize, bias: bool| -> Result<_> {
                let w = self.take::<B, 2>(&format!("{l}{name}.weight"), [o, i], device)?;
                let b = if bias {
                    Some(self.take::<B, 1>(&format!("{l}{name}.bias"), [o], device)?)
                } else {
                    None
                };
                Ok(linear_from_hf(w, b))
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
                self.take_rms::<B>(&format!("{l}input_layernorm.weight"), config, device)?;
            let post_attention_layernorm = self.take_rms::<B>(
                &format!("{l}post_attention_layernorm.weight"),
                config,
                device,
            )?;
            self.ignore(
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
        let embed = self.take::<B, 2>(&format!("{p}embed_tokens.weight"), [v, d], device)?;
        let norm = self.take_rms::<B>(&format!("{p}norm.weight"), config, device)?;
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(linear_from_hf(
                self.take::<B, 2>(lm_head_key, [v, d], device)?,
                None,
            ))
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
            },
            lm_head,
        })
    }

    fn take_rms<B: Backend>(
        &mut self,
        key: &str,
        config: &DecoderConfig,
        device: &B::Device,
    ) -> Result<RmsNorm<B>> {
        let gamma = self.take::<B, 1>(key, [config.hidden_size], device)?;
        Ok(RmsNorm {
            gamma: Param::from_tensor(gamma),
            epsilon: config.rms_norm_eps,
        })
    }
}

#[allow(unsafe_code)]
fn map_file(file: &File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: the map is read-only and lives inside `Checkpoint`; like every safetensors reader
    // (candle, transformers) we assume nobody truncates a checkpoint while it is being loaded.
    unsafe { memmap2::Mmap::map(file) }
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
    let config = HfConfig::from_file(&dir.join("config.json"))?.into_runtime()?;
    let mut ckpt = Checkpoint::open(dir)?;
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
        return Err(Error::Keys {
            dir: dir.to_path_buf(),
            missing,
            unused,
        });
    }
    let model = ckpt.take_llm(&config, "model.", "lm_head.weight", device)?;
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
            linear(&mut push, &format!("{p}.self_attn.{name}"), l);
        }
        let mlp = &layer.mlp;
        for (name, l) in [
            ("gate_proj", &mlp.gate_proj),
            ("up_proj", &mlp.up_proj),
            ("down_proj", &mlp.down_proj),
        ] {
            linear(&mut push, &format!("{p}.mlp.{name}"), l);
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

/// Writes `tensors` as one f32 safetensors file.
pub fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Result<()> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(k, s, v)| {
            (
                k.clone(),
                s.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(k, s, b)| {
            safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b)
                .map(|v| (k.clone(), v))
                .map_err(|e| Error::Safetensors {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize_to_file(views, None, path).map_err(|e| Error::Safetensors {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
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
    write_safetensors(&dir.join("model.safetensors"), &hf_tensors(model))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Int, Tolerance};
    use mmedpo_core::backend::TestBackend as B;

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
            Error::Keys {
                missing, unused, ..
            } => {
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
        assert!(matches!(err, Error::UnsupportedCheckpoint { .. }));
        assert!(err.to_string().contains("safe_serialization=True"), "{err}");
        let err = Checkpoint::open(&dir.join("pytorch_model.bin")).unwrap_err();
        assert!(matches!(err, Error::UnsupportedCheckpoint { .. }));
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
