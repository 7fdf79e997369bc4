//! `silu(gate) · up`, the SwiGLU product of a Llama/Mistral MLP, with a CPU kernel of its own.
//!
//! On the CPU, Burn 0.21's `silu` is a chain of single-threaded element-wise ops (49 ms for the
//! `[2, 640, 2048]` activation of one layer of a 100M Mistral, against 1.6 ms for a product of
//! the same shape; docs/benchmarks.md), and under autodiff each link keeps its own tensor for the
//! backward pass. Here the CPU backend (Flex, with or without autodiff) computes the product in one
//! pass over host data split across the cores, and the backward in one more:
//! `d_gate = d · up · σ(g) · (1 + g · (1 − σ(g)))`, `d_up = d · g · σ(g)`, keeping only `gate` and
//! `up`. Other backends, and dtypes other than f32, compute `silu(gate) * up` with Burn's ops.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};
use rayon::prelude::*;

use crate::attention::{cast, host, same};
use crate::backend::Cpu;

/// `silu(gate) * up`; both of one shape.
pub fn swiglu<B: Backend, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
    if gate.dtype() != DType::F32 || up.dtype() != DType::F32 {
        return silu(gate) * up;
    }
    let pair = match cast::<_, (Tensor<Cpu, D>, Tensor<Cpu, D>)>((gate, up)) {
        Ok((g, u)) => return same(host_forward(g, u)),
        Err(pair) => pair,
    };
    let pair = match cast::<_, (Tensor<Autodiff<Cpu, NoCheckpointing>, D>, _)>(pair) {
        Ok((g, u)) => return same(tracked(g, u)),
        Err(pair) => pair,
    };
    match cast::<_, (Tensor<Autodiff<Cpu, BalancedCheckpointing>, D>, _)>(pair) {
        Ok((g, u)) => same(tracked(g, u)),
        Err((g, u)) => silu(g) * u,
    }
}

/// Elements per rayon task.
const CHUNK: usize = 1 << 14;

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn host_forward<const D: usize>(gate: Tensor<Cpu, D>, up: Tensor<Cpu, D>) -> Tensor<Cpu, D> {
    let (device, shape) = (gate.device(), gate.dims());
    let (g, u) = (host(gate), host(up));
    let mut out = vec![0f32; g.len()];
    out.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)))
        .for_each(|(o, (g, u))| {
            for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                *o = g * sigmoid(g) * u;
            }
        });
    Tensor::from_data(TensorData::new(out, shape), &device)
}

#[derive(Debug)]
struct SwiGlu<const D: usize>;

impl<const D: usize> Backward<Cpu, 2> for SwiGlu<D> {
    type State = (FloatTensor<Cpu>, FloatTensor<Cpu>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_gate, node_up] = ops.parents;
        let grad = grads.consume::<Cpu>(&ops.node);
        let tensor = |t| Tensor::<Cpu, D>::from_primitive(TensorPrimitive::Float(t));
        let (gate, up, dout) = (tensor(ops.state.0), tensor(ops.state.1), tensor(grad));
        let (device, shape) = (gate.device(), gate.dims());
        let (g, u, d) = (host(gate), host(up), host(dout));
        let (mut dg, mut du) = (vec![0f32; g.len()], vec![0f32; g.len()]);
        dg.par_chunks_mut(CHUNK)
            .zip(du.par_chunks_mut(CHUNK))
            .zip(
                g.par_chunks(CHUNK)
                    .zip(u.par_chunks(CHUNK))
                    .zip(d.par_chunks(CHUNK)),
            )
            .for_each(|((dg, du), ((g, u), d))| {
                for i in 0..g.len() {
                    let s = sigmoid(g[i]);
                    dg[i] = d[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
                    du[i] = d[i] * g[i] * s;
                }
            });
        let back = |v: Vec<f32>| {
            Tensor::<Cpu, D>::from_data(TensorData::new(v, shape), &device)
                .into_primitive()
                .tensor()
        };
        if let Some(node) = node_gate {
            grads.register::<Cpu>(node.id, back(dg));
        }
        if let Some(node) = node_up {
            grads.register::<Cpu>(node.id, back(du));
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Tracked kernel calls on this thread (the test checks that the dispatch took the kernel).
    static TRACKED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn tracked<C: CheckpointStrategy, const D: usize>(
    gate: Tensor<Autodiff<Cpu, C>, D>,
    up: Tensor<Autodiff<Cpu, C>, D>,
) -> Tensor<Autodiff<Cpu, C>, D> {
    #[cfg(test)]
    TRACKED.with(|c| c.set(c.get() + 1));
    let (g, u) = (gate.into_primitive().tensor(), up.into_primitive().tensor());
    let inner =
        |t: &FloatTensor<Cpu>| Tensor::<Cpu, D>::from_primitive(TensorPrimitive::Float(t.clone()));
    let output = host_forward(inner(&g.primitive), inner(&u.primitive))
        .into_primitive()
        .tensor();
    let result = match SwiGlu::<D>
        .prepare::<C>([g.node.clone(), u.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((g.primitive, u.primitive), output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    };
    Tensor::from_primitive(TensorPrimitive::Float(result))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn forward_and_gradients_match_burns_ops() {
        type A = Autodiff<Cpu>;
        let device = Default::default();
        // More elements than one rayon task, and values far into both tails of the sigmoid.
        let r = |s| Tensor::<Cpu, 3>::random(s, Distribution::Normal(0.0, 6.0), &device);
        let (g, u, d) = (r([2, 3, 7001]), r([2, 3, 7001]), r([2, 3, 7001]));
        let run = |fused: bool| {
            let (ga, ua) = (
                Tensor::<A, 3>::from_inner(g.clone()).require_grad(),
                Tensor::<A, 3>::from_inner(u.clone()).require_grad(),
            );
            let out = if fused {
                swiglu(ga.clone(), ua.clone())
            } else {
                silu(ga.clone()) * ua.clone()
            };
            let grads = (out.clone() * Tensor::from_inner(d.clone()))
                .sum()
                .backward();
            (
                out.inner(),
                ga.grad(&grads).unwrap(),
                ua.grad(&grads).unwrap(),
            )
        };
        let before = TRACKED.with(|c| c.get());
        let (fo, fg, fu) = run(true);
        assert_eq!(TRACKED.with(|c| c.get()), before + 1, "the kernel ran");
        let (ro, rg, ru) = run(false);
        for (name, a, b) in [("out", fo, ro), ("d_gate", fg, rg), ("d_up", fu, ru)] {
            let scale = b.clone().abs().max().into_scalar();
            let e = (a - b).abs().max().into_scalar() / scale;
            assert!(e < 1e-6, "{name}: relative difference {e}");
        }
        // Without autodiff, and bf16 (Burn's ops), agree too.
        let plain = swiglu(g.clone(), u.clone());
        let e = (plain - silu(g.clone()) * u.clone())
            .abs()
            .max()
            .into_scalar();
        assert!(e < 1e-4, "inner backend: {e}");
        let half = swiglu(g.clone().cast(DType::BF16), u.clone().cast(DType::BF16));
        assert_eq!(half.dtype(), DType::BF16);
    }
}
