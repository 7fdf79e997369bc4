//! Backend aliases.
//!
//! Burn is pinned to `=0.21.0` (see ARCHITECTURE.md): modules are generic over `B: Backend` and these
//! aliases name the concrete ones the binaries and tests use.
//!
//! * [`Cpu`]: Burn's Flex backend (pure Rust, SIMD + rayon), the CPU backend of tests and CI.
//! * [`Gpu`] (feature `cuda`): burn-cuda with f32 as its default float type. A bf16 model on it
//!   is bf16 *tensors* (see [`crate::precision`]): LoRA masters, losses and log-softmax stay f32.
//!   The CUDA driver is loaded at run time, so a `cuda` build also runs (on Flex) where no GPU exists.
//! * [`NdArray`] (feature `ndarray`): only for the Flex-versus-ndarray comparison in `mmedpo bench`.

/// The CPU backend used by tests, CI and the embedded defaults.
pub type Cpu = burn::backend::Flex;

/// [`Cpu`] with reverse-mode autodiff, for training on the CPU.
pub type CpuAutodiff = burn::backend::Autodiff<Cpu>;

/// The backend unit tests run on.
pub type TestBackend = Cpu;

/// CUDA backend, f32 elements.
#[cfg(feature = "cuda")]
pub type Gpu = burn::backend::Cuda<f32, i32>;

/// The ndarray CPU backend, kept only to compare Flex against it.
#[cfg(feature = "ndarray")]
pub type NdArray = burn::backend::NdArray<f32>;

/// Whether `B` is [`Cpu`] (kernels of this crate and the trainer pick CPU-only paths by it).
pub fn is_cpu<B: burn::tensor::backend::Backend>() -> bool {
    std::any::TypeId::of::<B>() == std::any::TypeId::of::<Cpu>()
}
