//! Where a stage runs and in which float type, and [`with_backend!`](crate::with_backend).

use serde::{Deserialize, Serialize};

/// Where tensors live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// Burn's Flex CPU backend.
    #[default]
    Cpu,
    /// CUDA GPU 0 (needs a build with the `cuda` feature).
    Cuda,
}

impl DeviceKind {
    /// The name used on the command line and in files (`cpu`, `cuda`).
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
        }
    }

    /// From its name; an unknown one is an error naming the setting.
    pub fn parse(setting: &str, name: &str) -> crate::Result<Self> {
        match name {
            "cpu" => Ok(DeviceKind::Cpu),
            "cuda" => Ok(DeviceKind::Cuda),
            other => Err(crate::Error::Invalid(format!(
                "{setting} = {other:?}: expected \"cpu\" or \"cuda\""
            ))),
        }
    }
}

/// Compute dtype of a model: the dtype its frozen weights are held and multiplied in. Adapters
/// (and a trained projector) stay f32, as do log-softmax, log-prob sums, losses and sampling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// 32-bit floats.
    #[default]
    F32,
    /// bfloat16 (LLaVA-Med's stored dtype; half the memory; on the CPU as on CUDA).
    Bf16,
}

impl Dtype {
    /// The Burn dtype.
    pub fn burn(self) -> burn::tensor::DType {
        match self {
            Dtype::F32 => burn::tensor::DType::F32,
            Dtype::Bf16 => burn::tensor::DType::BF16,
        }
    }

    /// The name used on the command line and in files (`f32`, `bf16`).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::Bf16 => "bf16",
        }
    }

    /// From its name; an unknown one is an error naming the setting.
    pub fn parse(setting: &str, name: &str) -> crate::Result<Self> {
        match name {
            "f32" => Ok(Dtype::F32),
            "bf16" => Ok(Dtype::Bf16),
            other => Err(crate::Error::Invalid(format!(
                "{setting} = {other:?}: expected \"f32\" or \"bf16\""
            ))),
        }
    }
}

/// Runs `$body` with the type alias `B` and value `device` bound to the chosen backend. The
/// backend's default float type is f32 on both; a bf16 model is bf16 *tensors* on it. Without
/// the `cuda` feature (of the crate that expands it) `Cuda` returns [`Error::NoCuda`](crate::Error).
#[macro_export]
macro_rules! with_backend {
    ($kind:expr, |$B:ident, $device:ident| $body:expr) => {{
        match $kind {
            $crate::DeviceKind::Cpu => {
                type $B = $crate::core::backend::Cpu;
                let $device = Default::default();
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::DeviceKind::Cuda => {
                type $B = $crate::core::backend::Gpu;
                let $device = burn::backend::cuda::CudaDevice::new(0);
                $body
            }
            #[cfg(not(feature = "cuda"))]
            $crate::DeviceKind::Cuda => return Err($crate::Error::NoCuda.into()),
        }
    }};
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DeviceKind {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        Self::parse("device", s)
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Dtype {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        Self::parse("dtype", s)
    }
}
