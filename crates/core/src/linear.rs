//! `x · W + b` for a frozen weight, with a CPU backward that reads the weight in place.
//!
//! Burn 0.21's `linear` backward computes `dx = dy · Wᵀ` by transposing the weight and reshaping
//! it to the gradient's rank, which makes Flex copy the whole weight matrix on one core at every
//! backward pass (8% of the CPU training step's samples at bench-mid T 256; docs/benchmarks.md).
//! Under autodiff on the CPU with an f32 weight and bias that take no gradient (the frozen base
//! layers LoRA wraps), [`linear`] runs Burn's forward and computes `dx` with one `gemm` call that
//! reads the weight's storage through transposed strides; it copies nothing. Every other case is
//! Burn's `linear`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::module::linear as burn_linear;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};

use crate::attention::cpu::gemm_f32;
use crate::attention::{cast, host, same};
use crate::backend::Cpu;

/// `x · weight + bias`; `weight` `[d_in, d_out]` (Burn's layout), `x` `[…, d_in]`.
pub fn linear<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, D> {
    let frozen = !weight.is_require_grad() && bias.as_ref().is_none_or(|b| !b.is_require_grad());
    if !frozen || weight.dtype() != DType::F32 || x.dtype() != DType::F32 {
        return burn_linear(x, weight, bias);
    }
    let args = match cast::<_, (Tensor<Autodiff<Cpu, NoCheckpointing>, D>, _, _)>((x, weight, bias))
    {
        Ok((x, w, b)) => return same(tracked(x, w, b)),
        Err(args) => args,
    };
    match cast::<_, (Tensor<Autodiff<Cpu, BalancedCheckpointing>, D>, _, _)>(args) {
        Ok((x, w, b)) => same(tracked(x, w, b)),
        Err((x, w, b)) => burn_linear(x, w, b),
    }
}

#[derive(Debug)]
struct FrozenLinear<const D: usize>;

impl<const D: usize> Backward<Cpu, 1> for FrozenLinear<D> {
    /// The weight, `[d_in, d_out]`.
    type State = FloatTensor<Cpu>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<Cpu>(&ops.node);
        let Some(node) = node_x else { return };
        let dy = Tensor::<Cpu, D>::from_primitive(TensorPrimitive::Float(grad));
        let dims = dy.dims();
        let weight = ops.state;
        let w_layout = weight.layout();
        let (d_in, d_out) = (w_layout.shape()[0], w_layout.shape()[1]);
        let m = dims[..D - 1].iter().product::<usize>();
        let dy = host(dy);
        // A weight that is a view (not contiguous from its start) is copied once, as Burn would.
        let weight = if weight.is_contiguous() && w_layout.start_offset() == 0 {
            weight
        } else {
            weight.to_contiguous()
        };
        let w: &[f32] = weight.storage();
        let mut dx = vec![0f32; m * d_in];
        let parallelism = if m * d_in * d_out >= 192 * 192 * 192 {
            gemm::Parallelism::Rayon(0)
        } else {
            gemm::Parallelism::None
        };
        // dx[m × d_in] = dy[m × d_out] · Wᵀ, Wᵀ[d_out × d_in] read from W[d_in × d_out] row-major
        // (gemm_f32 checks every operand's bounds).
        gemm_f32(
            (m, d_in, d_out),
            &mut dx,
            d_in,
            false,
            &dy,
            (d_out, 1),
            w,
            (1, d_out),
            parallelism,
        );
        let mut shape = dims;
        shape[D - 1] = d_in;
        let dx = Tensor::<Cpu, D>::from_data(TensorData::new(dx, shape), &Default::default());
        grads.register::<Cpu>(node.id, dx.into_primitive().tensor());
    }
}

#[cfg(test)]
thread_local! {
    /// Tracked calls on this thread (the test checks that the dispatch took this op).
    static TRACKED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn tracked<C: CheckpointStrategy, const D: usize>(
    x: Tensor<Autodiff<Cpu, C>, D>,
    weight: Tensor<Autodiff<Cpu, C>, 2>,
    bias: Option<Tensor<Autodiff<Cpu, C>, 1>>,
) -> Tensor<Autodiff<Cpu, C>, D> {
    #[cfg(test)]
    TRACKED.with(|c| c.set(c.get() + 1));
    let w = weight.inner().into_primitive().tensor();
    let x = x.into_primitive().tensor();
    let output = burn_linear(
        Tensor::<Cpu, D>::from_primitive(TensorPrimitive::Float(x.primitive.clone())),
        Tensor::from_primitive(TensorPrimitive::Float(w.clone())),
        bias.map(|b| b.inner()),
    )
    .into_primitive()
    .tensor();
    let result = match FrozenLinear::<D>
        .prepare::<C>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(w, output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    };
    Tensor::from_primitive(TensorPrimitive::Float(result))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn frozen_linear_gradients_match_burns_linear() {
        type A = Autodiff<Cpu>;
        let device = Default::default();
        let r =
            |s: [usize; 3]| Tensor::<Cpu, 3>::random(s, Distribution::Normal(0.0, 1.0), &device);
        // Big enough for the parallel gemm path, and a small one.
        for (m, d_in, d_out) in [(3, 5, 4), (256, 300, 200)] {
            let x = r([2, m, d_in]);
            let w =
                Tensor::<Cpu, 2>::random([d_in, d_out], Distribution::Normal(0.0, 1.0), &device);
            let b = Tensor::<Cpu, 1>::random([d_out], Distribution::Normal(0.0, 1.0), &device);
            let dy = r([2, m, d_out]);
            let run = |ours: bool| {
                let xa = Tensor::<A, 3>::from_inner(x.clone()).require_grad();
                let (wa, ba) = (
                    Tensor::<A, 2>::from_inner(w.clone()),
                    Tensor::<A, 1>::from_inner(b.clone()),
                );
                let y = if ours {
                    linear(xa.clone(), wa, Some(ba))
                } else {
                    burn_linear(xa.clone(), wa, Some(ba))
                };
                let grads = (y.clone() * Tensor::from_inner(dy.clone()))
                    .sum()
                    .backward();
                (y.inner(), xa.grad(&grads).unwrap())
            };
            let before = TRACKED.with(|c| c.get());
            let (oy, ox) = run(true);
            assert_eq!(TRACKED.with(|c| c.get()), before + 1, "the frozen op ran");
            let (ry, rx) = run(false);
            for (name, a, b) in [("y", oy, ry), ("dx", ox, rx)] {
                let scale = b.clone().abs().max().into_scalar();
                let e = (a - b).abs().max().into_scalar() / scale;
                assert!(
                    e < 1e-5,
                    "{name} ({m}×{d_in}×{d_out}): relative difference {e}"
                );
            }
        }
        // A trainable weight keeps Burn's op (its gradient is needed).
        let before = TRACKED.with(|c| c.get());
        let w =
            Tensor::<A, 2>::random([4, 3], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let _ = linear(Tensor::<A, 2>::ones([2, 4], &device), w, None);
        assert_eq!(
            TRACKED.with(|c| c.get()),
            before,
            "a trainable weight is Burn's linear"
        );
    }
}
