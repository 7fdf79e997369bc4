//! Strict loading of safetensors checkpoints (single file or sharded), shared by every model crate.
//!
//! [`Checkpoint`] opens a model directory: `model.safetensors`, or the shards listed in
//! `model.safetensors.index.json`; f32, f16 and bf16 tensors, converted on the host to the backend's
//! float type. PyTorch pickles (`*.bin`) are refused with the command that converts them.
//!
//! Loading is strict: model crates `require` every key their config implies, `take` each tensor
//! with its expected shape, `ignore` named keys with a reason, and `finish` fails on any tensor that
//! nothing took. Missing and unused keys are reported together in one [`Error::Keys`]; a model is
//! never left with random weights. A [`LoadReport`] lists what was applied and ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::{LayerNorm, Linear, RmsNorm};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
pub use safetensors::Dtype;
use safetensors::SafeTensors;
use serde::Deserialize;

use crate::error::{Error, Result};

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

/// A tensor as a checkpoint stores it.
#[derive(Debug, Clone)]
pub struct RawTensor<'a> {
    /// On-disk dtype.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Little-endian bytes.
    pub data: &'a [u8],
}

impl RawTensor<'_> {
    /// The values as f32 (f32, f16 and bf16 tensors).
    pub fn to_f32(&self, path: &Path, key: &str) -> Result<Vec<f32>> {
        let dtype = burn_dtype(self.dtype).ok_or_else(|| Error::Tensor {
            path: path.to_path_buf(),
            key: key.into(),
            message: format!(
                "dtype {:?} is not supported (f32, f16, bf16 are)",
                self.dtype
            ),
        })?;
        TensorData::from_bytes_vec(self.data.to_vec(), self.shape.clone(), dtype)
            .convert::<f32>()
            .into_vec()
            .map_err(|e| Error::Tensor {
                path: path.to_path_buf(),
                key: key.into(),
                message: format!("{e:?}"),
            })
    }
}

/// f32 values as little-endian bytes of `dtype` (f32, f16 or bf16; rounding to nearest even).
pub fn f32_to_bytes(values: Vec<f32>, dtype: Dtype) -> Option<Vec<u8>> {
    let target = burn_dtype(dtype)?;
    let n = values.len();
    Some(
        TensorData::new(values, [n])
            .convert_dtype(target)
            .as_bytes()
            .to_vec(),
    )
}

fn burn_dtype(dtype: Dtype) -> Option<DType> {
    match dtype {
        Dtype::F32 => Some(DType::F32),
        Dtype::F16 => Some(DType::F16),
        Dtype::BF16 => Some(DType::BF16),
        _ => None,
    }
}

/// An opened safetensors checkpoint (single file or sharded), memory-mapped.
pub struct Checkpoint {
    dir: PathBuf,
    files: Vec<PathBuf>,
    maps: Vec<memmap2::Mmap>,
    entries: BTreeMap<String, Entry>,
    report: LoadReport,
    taken: BTreeSet<String>,
    float_dtype: Option<DType>,
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
        message: "PyTorch pickle checkpoints (.bin) are not read (unpickling can run code); convert the \
            directory to safetensors once with mmedpo's scripts/convert_bin.py IN_DIR OUT_DIR (standard \
            library only, runs no pickled code; keeps every tensor name, dtype and value)"
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
            float_dtype: None,
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

    fn entry(&self, key: &str) -> Result<&Entry> {
        self.entries.get(key).ok_or_else(|| {
            // What else the missing key's module holds that nothing took is named with it (a
            // key whose name was damaged shows up as both).
            let module = key.rsplit_once('.').map_or("", |(m, _)| m);
            Error::Keys {
                dir: self.dir.clone(),
                missing: vec![key.to_string()],
                unused: self.untaken_under::<&str>(&format!("{module}."), &[]),
            }
        })
    }

    /// Keys starting with `prefix` that nothing took, are not in `expected`, and are not ignored
    /// by name.
    fn untaken_under<S: AsRef<str>>(&self, prefix: &str, expected: &[S]) -> Vec<String> {
        let expected: std::collections::HashSet<&str> =
            expected.iter().map(|k| k.as_ref()).collect();
        self.entries
            .keys()
            .filter(|k| k.starts_with(prefix) && !self.taken.contains(*k))
            .filter(|k| !expected.contains(k.as_str()))
            .filter(|k| !IGNORED_SUFFIXES.iter().any(|(s, _)| k.ends_with(s)))
            .cloned()
            .collect()
    }

    /// A tensor as stored (dtype, shape, little-endian bytes), without conversion: for tools that
    /// rewrite a checkpoint and must keep what they do not change bit for bit.
    pub fn raw(&self, key: &str) -> Result<RawTensor<'_>> {
        let entry = self.entry(key)?;
        let path = &self.files[entry.file];
        let st =
            SafeTensors::deserialize(&self.maps[entry.file]).map_err(|e| Error::Safetensors {
                path: path.clone(),
                message: e.to_string(),
            })?;
        let view = st.tensor(key).map_err(|e| Error::Safetensors {
            path: path.clone(),
            message: e.to_string(),
        })?;
        Ok(RawTensor {
            dtype: entry.dtype,
            shape: entry.shape.clone(),
            data: view.data(),
        })
    }

    /// The file holding `key`.
    pub fn file_of(&self, key: &str) -> Option<&Path> {
        self.entries.get(key).map(|e| self.files[e.file].as_path())
    }

    /// Checks that every key is present; reports all missing ones at once, with the keys under
    /// `scope` (the part's prefix) that none of `keys` explains.
    pub fn require<S: AsRef<str>>(&self, keys: &[S], scope: &str) -> Result<()> {
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
                unused: self.untaken_under(scope, keys),
            })
        }
    }

    /// The float dtype taken tensors get: the backend's float type unless
    /// [`set_float_dtype`](Self::set_float_dtype) chose another (bf16 frozen weights on an f32
    /// backend, as `torch_dtype=bfloat16` loads them).
    pub fn float_dtype<B: Backend>(&self) -> DType {
        self.float_dtype
            .unwrap_or_else(crate::precision::default_float::<B>)
    }

    /// Makes every tensor taken from now on that dtype (f32, f16 or bf16), whatever it is on disk.
    pub fn set_float_dtype(&mut self, dtype: DType) {
        self.float_dtype = Some(dtype);
    }

    /// Takes one tensor, checking its shape, converted to [`float_dtype`](Self::float_dtype).
    pub fn take<B: Backend, const D: usize>(
        &mut self,
        key: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        let dtype = self.float_dtype::<B>();
        let data = self.take_data(key, &shape, dtype)?;
        Ok(Tensor::from_data(data, (device, dtype)))
    }

    /// Takes a 2-D tensor `[rows, cols]` and returns it transposed, `[cols, rows]`, laid out
    /// contiguously: the transpose is done on the host, so matmuls with the result never meet a
    /// strided operand (a lazily transposed weight made decoding ~10× slower on Flex).
    pub fn take_transposed<B: Backend>(
        &mut self,
        key: &str,
        shape: [usize; 2],
        device: &B::Device,
    ) -> Result<Tensor<B, 2>> {
        let dtype = self.float_dtype::<B>();
        let data = self.take_data(key, &shape, dtype)?;
        let [rows, cols] = shape;
        // Transpose the elements as bytes: no value is converted twice.
        let size = dtype.size();
        let bytes = data.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        for c in 0..cols {
            for r in 0..rows {
                let at = (r * cols + c) * size;
                out.extend_from_slice(&bytes[at..at + size]);
            }
        }
        Ok(Tensor::from_data(
            TensorData::from_bytes_vec(out, vec![cols, rows], dtype),
            (device, dtype),
        ))
    }

    fn take_data(&mut self, key: &str, shape: &[usize], target: DType) -> Result<TensorData> {
        let entry = self.entry(key)?;
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
        let dtype = burn_dtype(entry.dtype).ok_or_else(|| Error::Tensor {
            path: path.clone(),
            key: key.into(),
            message: format!(
                "dtype {:?} is not supported (f32, f16, bf16 are)",
                entry.dtype
            ),
        })?;
        let path = path.clone();
        // Convert on the host to the dtype asked for (no conversion when it is the stored one).
        let bytes = self.raw(key)?.data.to_vec();
        let data = TensorData::from_bytes_vec(bytes, shape.to_vec(), dtype).convert_dtype(target);
        // A NaN or infinite weight makes every output NaN, far from where it came from.
        if let Some((i, v)) = data.iter::<f32>().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::Tensor {
                path: path.clone(),
                key: key.into(),
                message: format!(
                    "element {i} is {v}: not a finite number (a corrupt or overflowed checkpoint)"
                ),
            });
        }
        *self
            .report
            .dtypes
            .entry(format!("{:?}", entry.dtype))
            .or_default() += 1;
        self.report.applied.push(key.to_string());
        self.taken.insert(key.to_string());
        Ok(data)
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
}

#[allow(unsafe_code)]
fn map_file(file: &File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: the map is read-only and lives inside `Checkpoint`; like every safetensors reader
    // (candle, transformers) we assume nobody truncates a checkpoint while it is being loaded.
    unsafe { memmap2::Mmap::map(file) }
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

/// The shard size above which a written checkpoint is split, as transformers' `save_pretrained`
/// (`max_shard_size="5GB"`, decimal).
pub const DEFAULT_MAX_SHARD_BYTES: u64 = 5_000_000_000;

/// Which tensors go in which shard, as transformers' `save_pretrained` splits: in order, a new
/// shard whenever the next tensor would take the current one past `max_shard_bytes` (a tensor
/// larger than that gets a shard of its own).
pub fn plan_shards(sizes: &[u64], max_shard_bytes: u64) -> Vec<std::ops::Range<usize>> {
    let mut out = vec![];
    let (mut start, mut size) = (0, 0u64);
    for (i, &n) in sizes.iter().enumerate() {
        if i > start && size + n > max_shard_bytes {
            out.push(start..i);
            (start, size) = (i, 0);
        }
        size += n;
    }
    if start < sizes.len() {
        out.push(start..sizes.len());
    }
    out
}

/// The file name of shard `i` (0-based) of `n`: `model.safetensors` when `n` is 1, else
/// transformers' `model-0000{i+1}-of-0000{n}.safetensors`.
pub fn shard_name(i: usize, n: usize) -> String {
    if n == 1 {
        "model.safetensors".into()
    } else {
        format!("model-{:05}-of-{n:05}.safetensors", i + 1)
    }
}

/// A tensor to write: key, dtype, shape, little-endian bytes.
pub type TensorBytes<'a> = (String, Dtype, Vec<usize>, std::borrow::Cow<'a, [u8]>);

/// Writes one safetensors file with transformers' `{"format": "pt"}` metadata.
pub fn write_safetensors_bytes(path: &Path, tensors: &[TensorBytes<'_>]) -> Result<()> {
    let bad = |message: String| Error::Safetensors {
        path: path.to_path_buf(),
        message,
    };
    let views = tensors
        .iter()
        .map(|(k, dtype, shape, bytes)| {
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (k.clone(), v))
                .map_err(|e| bad(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = Some(std::collections::HashMap::from([(
        "format".to_string(),
        "pt".to_string(),
    )]));
    safetensors::serialize_to_file(views, metadata, path).map_err(|e| bad(e.to_string()))
}

/// Writes `model.safetensors.index.json` as transformers does (`metadata.total_size`, `weight_map`).
pub fn write_shard_index(
    dir: &Path,
    total_size: u64,
    weight_map: &BTreeMap<String, String>,
) -> Result<()> {
    let path = dir.join("model.safetensors.index.json");
    let json =
        serde_json::json!({"metadata": {"total_size": total_size}, "weight_map": weight_map});
    let text = serde_json::to_string_pretty(&json).map_err(|cause| Error::Json {
        path: path.clone(),
        cause,
    })?;
    std::fs::write(&path, text + "\n").map_err(|e| Error::io(&path, e))
}

/// A copy of `t` laid out contiguously (a transposed view becomes a real transpose).
pub fn contiguous<B: Backend, const D: usize>(t: Tensor<B, D>) -> Tensor<B, D> {
    let device = t.device();
    Tensor::from_data(t.into_data(), &device)
}

/// Builds a Burn `Linear` from a PyTorch-layout weight `[d_out, d_in]` (and bias); the weight is
/// stored transposed and contiguous.
pub fn linear_from_torch<B: Backend>(
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Linear<B> {
    Linear {
        weight: Param::from_tensor(contiguous(weight.transpose())),
        bias: bias.map(Param::from_tensor),
    }
}

impl Checkpoint {
    /// Takes `{prefix}.weight` (`[d_out, d_in]`) and, when `bias`, `{prefix}.bias` as a Burn `Linear`.
    pub fn take_linear<B: Backend>(
        &mut self,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        device: &B::Device,
    ) -> Result<Linear<B>> {
        let w = self.take_transposed::<B>(&format!("{prefix}.weight"), [d_out, d_in], device)?;
        let b = if bias {
            Some(self.take::<B, 1>(&format!("{prefix}.bias"), [d_out], device)?)
        } else {
            None
        };
        Ok(Linear {
            weight: Param::from_tensor(w),
            bias: b.map(Param::from_tensor),
        })
    }

    /// Takes `{prefix}.weight` as an `RmsNorm` (`gamma`).
    pub fn take_rms_norm<B: Backend>(
        &mut self,
        prefix: &str,
        dim: usize,
        eps: f64,
        device: &B::Device,
    ) -> Result<RmsNorm<B>> {
        let gamma = self.take::<B, 1>(&format!("{prefix}.weight"), [dim], device)?;
        Ok(RmsNorm {
            gamma: Param::from_tensor(gamma),
            epsilon: eps,
        })
    }

    /// Takes `{prefix}.weight` / `{prefix}.bias` as a `LayerNorm` (`gamma` / `beta`).
    pub fn take_layer_norm<B: Backend>(
        &mut self,
        prefix: &str,
        dim: usize,
        eps: f64,
        device: &B::Device,
    ) -> Result<LayerNorm<B>> {
        let gamma = self.take::<B, 1>(&format!("{prefix}.weight"), [dim], device)?;
        let beta = self.take::<B, 1>(&format!("{prefix}.bias"), [dim], device)?;
        // `epsilon` is private in burn-nn 0.21: build through the config, then set the parameters.
        let mut norm = burn::nn::LayerNormConfig::new(dim)
            .with_epsilon(eps)
            .init::<B>(device);
        norm.gamma = Param::from_tensor(gamma);
        norm.beta = Some(Param::from_tensor(beta));
        Ok(norm)
    }

    /// Marks every key starting with `prefix` as deliberately skipped.
    pub fn ignore_prefix(&mut self, prefix: &str, reason: &str) {
        let keys: Vec<String> = self
            .entries
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        for k in keys {
            self.ignore(&k, reason);
        }
    }

    /// Keys no parameter has taken yet (derived buffers excluded).
    pub fn untaken(&self) -> Vec<String> {
        self.unused()
    }
}

/// A fingerprint of a model directory: `config.json` and every safetensors file's size and JSON
/// header (which names every tensor with its dtype, shape and byte range), so a changed checkpoint
/// gives a different value without hashing gigabytes. Used to refuse stale log-prob caches.
pub fn dir_fingerprint(dir: &Path) -> Result<String> {
    use std::io::Read;
    let mut parts: Vec<Vec<u8>> = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            name.ends_with(".safetensors") || name.ends_with(".json")
        })
        .collect();
    files.sort();
    for path in files {
        let mut file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        parts.push(
            path.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .as_bytes()
                .to_vec(),
        );
        parts.push(len.to_le_bytes().to_vec());
        if path.extension().is_some_and(|e| e == "json") {
            parts.push(std::fs::read(&path).map_err(|e| Error::io(&path, e))?);
        } else {
            let mut n = [0u8; 8];
            file.read_exact(&mut n).map_err(|e| Error::io(&path, e))?;
            let header_len = u64::from_le_bytes(n).min(100 << 20) as usize;
            let mut header = vec![0u8; header_len];
            file.read_exact(&mut header)
                .map_err(|e| Error::io(&path, e))?;
            parts.push(header);
        }
    }
    Ok(crate::record::fingerprint(parts.iter().map(Vec::as_slice)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_as_transformers_does() {
        assert_eq!(plan_shards(&[4, 4, 4], 10), vec![0..2, 2..3]);
        assert_eq!(plan_shards(&[4, 4, 2], 10), vec![0..3]);
        // A tensor larger than the limit gets a shard of its own.
        assert_eq!(plan_shards(&[2, 30, 2], 10), vec![0..1, 1..2, 2..3]);
        assert_eq!(plan_shards(&[], 10), Vec::<std::ops::Range<usize>>::new());
        assert_eq!(shard_name(0, 1), "model.safetensors");
        assert_eq!(shard_name(1, 3), "model-00002-of-00003.safetensors");
    }

    #[test]
    fn a_non_finite_weight_is_refused_at_load_naming_the_tensor() {
        let dir = std::env::temp_dir().join(format!("mmedpo-core-nan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write_safetensors(
            &dir.join("model.safetensors"),
            &[
                ("ok".into(), vec![2], vec![1.0, 2.0]),
                ("w".into(), vec![3], vec![1.0, f32::NAN, 3.0]),
            ],
        )
        .unwrap();
        let mut ck = Checkpoint::open(&dir).unwrap();
        let device = Default::default();
        ck.take::<crate::backend::Cpu, 1>("ok", [2], &device)
            .unwrap();
        let e = ck
            .take::<crate::backend::Cpu, 1>("w", [3], &device)
            .unwrap_err()
            .to_string();
        assert!(e.contains("w") && e.contains("element 1 is NaN"), "{e}");
    }

    #[test]
    fn raw_bytes_round_trip_through_a_written_shard() {
        let dir = std::env::temp_dir().join(format!("mmedpo-core-raw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let values = vec![1.0f32, -2.5, 3.140625, 1e-3];
        let bf16 = f32_to_bytes(values.clone(), Dtype::BF16).unwrap();
        assert_eq!(bf16.len(), 8);
        let tensors: Vec<TensorBytes> = vec![
            ("a".into(), Dtype::BF16, vec![2, 2], bf16.as_slice().into()),
            (
                "b".into(),
                Dtype::F32,
                vec![4],
                f32_to_bytes(values.clone(), Dtype::F32).unwrap().into(),
            ),
        ];
        write_safetensors_bytes(&dir.join("model.safetensors"), &tensors).unwrap();
        let ck = Checkpoint::open(&dir).unwrap();
        let a = ck.raw("a").unwrap();
        assert_eq!(
            (a.dtype, a.shape.clone(), a.data),
            (Dtype::BF16, vec![2, 2], bf16.as_slice())
        );
        let back = a.to_f32(&dir, "a").unwrap();
        // bf16 keeps 8 bits of mantissa: 1e-3 rounds, the others are exact.
        assert_eq!(&back[..3], &values[..3]);
        assert!((back[3] - 1e-3).abs() < 1e-5 && back[3] != 1e-3);
        assert_eq!(ck.raw("b").unwrap().to_f32(&dir, "b").unwrap(), values);
        let map = std::fs::read(dir.join("model.safetensors")).unwrap();
        let (_, meta) = SafeTensors::read_metadata(&map).unwrap();
        assert_eq!(
            meta.metadata()
                .as_ref()
                .and_then(|m| m.get("format"))
                .map(String::as_str),
            Some("pt")
        );
    }
}
