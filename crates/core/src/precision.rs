//! Mixed precision as PyTorch computes it under `torch_dtype=bfloat16`.
//!
//! A model runs in the dtype of its weights (its *compute dtype*), on a backend whose default float
//! type stays f32: Burn 0.21 tensors carry their dtype at run time. The few places where
//! transformers leaves the compute dtype are here, so every architecture does them alike:
//!
//! * [`rms_norm`]: `LlamaRMSNorm` normalises in f32 and rounds once before the weight
//!   (`weight * hidden.to(input_dtype)`).
//! * [`layer_norm`]: `nn.LayerNorm` on bf16 accumulates in f32 and rounds its output once.
//! * [`attention`]: the eager attention's softmax runs in f32 (`softmax(..., dtype=torch.float32)
//!   .to(query.dtype)`); in f32 it is Burn's own `attention` (one kernel where the backend has it).
//!
//! Binary ops and matmuls of two dtypes are not defined in Burn 0.21 (Flex panics on a matmul of
//! mixed dtypes and adds mismatched buffers unchecked in release; CUDA reads the right operand with
//! the left one's dtype), so every crossing is an explicit [`Tensor::cast`].

use burn::module::{Module, ModuleMapper, Param};
use burn::nn::{LayerNorm, RmsNorm};
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, DType, Tensor};

/// `LlamaRMSNorm`: `weight * (x_f32 * rsqrt(mean(x_f32²) + eps)).to(dtype(x))`.
pub fn rms_norm<B: Backend, const D: usize>(norm: &RmsNorm<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    let dtype = x.dtype();
    let x = x.cast(DType::F32);
    let inv = (x.clone().square().mean_dim(D - 1) + norm.epsilon)
        .sqrt()
        .recip();
    let normed = (x * inv).cast(dtype);
    let gamma = norm.gamma.val();
    let gamma_dtype = gamma.dtype();
    (normed.cast(gamma_dtype) * gamma.unsqueeze()).cast(dtype)
}

/// `nn.LayerNorm` with f32 statistics: the output is rounded once to the input's dtype.
pub fn layer_norm<B: Backend, const D: usize>(ln: &LayerNorm<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    let dtype = x.dtype();
    if dtype == DType::F32 && ln.gamma.val().dtype() == DType::F32 {
        return ln.forward(x);
    }
    // Burn's layer norm on an f32 copy of the (small) gamma/beta: the statistics in f32.
    let ln32 = cast_module(ln.clone(), DType::F32);
    ln32.forward(x.cast(DType::F32)).cast(dtype)
}

/// Scaled dot-product attention, `softmax(q kᵀ / √d + mask) v`, with `mask` `true` where a query
/// must not attend. f32 inputs use [`crate::attention::attention`] (the backend's fused forward,
/// a backward of its own); others compute the scores in their dtype and the softmax in f32, as
/// transformers' eager attention does. Shapes as [`crate::attention::attention`]'s.
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: Option<Tensor<B, 4, Bool>>,
) -> Tensor<B, 4> {
    let dtype = q.dtype();
    if dtype == DType::F32 {
        return crate::attention::attention(q, k, v, mask);
    }
    let scale = 1.0 / (q.dims()[3] as f64).sqrt();
    let scores = q
        .matmul(k.swap_dims(2, 3))
        .mul_scalar(scale)
        .cast(DType::F32);
    let scores = match mask {
        Some(m) => {
            let [b, h, tq, tk] = scores.dims();
            scores.mask_fill(m.expand([b, h, tq, tk]), f32::NEG_INFINITY)
        }
        None => scores,
    };
    softmax(scores, 3).cast(dtype).matmul(v)
}

/// Casts every float parameter of a module to `dtype` (parameter ids and `require_grad` kept).
pub fn cast_module<B: Backend, M: Module<B>>(module: M, dtype: DType) -> M {
    struct Cast(DType);
    impl<B: Backend> ModuleMapper<B> for Cast {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, tensor, mapper) = param.consume();
            // A cast of a tracked tensor is not a leaf: cast the detached value, then track it.
            let grad = tensor.is_require_grad();
            let cast = tensor.set_require_grad(false).cast(self.0);
            let cast = if grad { cast.require_grad() } else { cast };
            Param::from_mapped_value(id, cast, mapper)
        }
    }
    module.map(&mut Cast(dtype))
}

/// The backend's default float dtype (what tensors get unless a dtype is asked for).
pub fn default_float<B: Backend>() -> DType {
    <B::FloatElem as burn::tensor::Element>::dtype()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::TestBackend as B;
    use burn::nn::{LayerNormConfig, RmsNormConfig};
    use burn::tensor::{Distribution, TensorData};

    fn max_diff(a: Tensor<B, 3>, b: Tensor<B, 3>) -> f32 {
        let a: Vec<f32> = a.cast(DType::F32).into_data().to_vec().unwrap();
        let b: Vec<f32> = b.cast(DType::F32).into_data().to_vec().unwrap();
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn bf16_norms_round_once_and_keep_the_dtype() {
        let device = Default::default();
        let x = Tensor::<B, 3>::random([2, 3, 64], Distribution::Normal(0.0, 3.0), &device);
        let rms = RmsNormConfig::new(64).init::<B>(&device);
        let f32_out = rms_norm(&rms, x.clone());
        let b = rms_norm(
            &cast_module(rms.clone(), DType::BF16),
            x.clone().cast(DType::BF16),
        );
        assert_eq!(b.dtype(), DType::BF16);
        // Input rounding (2^-9 relative) then one output rounding: |y| ≈ 1, so well under 2e-2.
        let d = max_diff(f32_out, b);
        assert!(d > 0.0 && d < 2e-2, "rms bf16 vs f32: {d}");

        let ln = LayerNormConfig::new(64).init::<B>(&device);
        let b = layer_norm(
            &cast_module(ln.clone(), DType::BF16),
            x.clone().cast(DType::BF16),
        );
        assert_eq!(b.dtype(), DType::BF16);
        let d = max_diff(ln.forward(x), b);
        assert!(d > 0.0 && d < 2e-2, "layer norm bf16 vs f32: {d}");
    }

    #[test]
    fn bf16_attention_matches_f32_with_and_without_a_mask() {
        let device = Default::default();
        let r = |s: [usize; 4]| Tensor::<B, 4>::random(s, Distribution::Normal(0.0, 1.0), &device);
        let (q, k, v) = (r([1, 2, 5, 8]), r([1, 2, 5, 8]), r([1, 2, 5, 8]));
        let causal: Vec<bool> = (0..2 * 25).map(|i| (i % 5) > (i / 5) % 5).collect();
        let mask = Tensor::<B, 4, Bool>::from_data(TensorData::new(causal, [1, 2, 5, 5]), &device);
        for m in [None, Some(mask)] {
            let full = attention(q.clone(), k.clone(), v.clone(), m.clone());
            let half = attention(
                q.clone().cast(DType::BF16),
                k.clone().cast(DType::BF16),
                v.clone().cast(DType::BF16),
                m,
            );
            assert_eq!(half.dtype(), DType::BF16);
            let d = max_diff(full.flatten(0, 1), half.flatten(0, 1));
            assert!(d > 0.0 && d < 5e-2, "attention bf16 vs f32: {d}");
        }
    }

    #[test]
    fn cast_module_keeps_ids_and_trainability() {
        let device = Default::default();
        let lin = burn::nn::LinearConfig::new(4, 3).init::<burn::backend::Autodiff<B>>(&device);
        let id = lin.weight.id;
        let cast = cast_module(lin, DType::BF16);
        assert_eq!(cast.weight.id, id);
        assert_eq!(cast.weight.val().dtype(), DType::BF16);
        assert!(cast.weight.val().is_require_grad());
    }
}
