//! f32 scaled dot-product attention with a backward pass of its own.
//!
//! Burn 0.21's autodiff backend differentiates attention by running `attention_fallback` (a
//! matmul, a mask fill, a six-op softmax and a second matmul, each a full `[batch, heads, q, k]`
//! tensor) and keeping every one of those tensors for the backward pass: about 3.4 score-sized
//! tensors per head and layer (docs/benchmarks.md), and on the CPU each op a single-threaded pass
//! over them; Flex's own attention forward loops over (batch, head) on one core. Here:
//!
//! - **CPU** (Flex, with or without autodiff): [`cpu`]'s kernels, forward and backward, on host
//!   f32 data, one (batch, head) per rayon task, blocks of query rows multiplied by `gemm`, each
//!   row reading keys only up to its last unmasked one (half the products under a causal mask).
//!   The forward keeps each row's log-sum-exp, so the backward recomputes the probabilities without
//!   a softmax pass.
//! - **Other backends under autodiff** (CUDA): the backend's own attention forward, and a backward
//!   that recomputes the probabilities once with tensor ops.
//! - Other backends without autodiff: Burn's `attention`.
//!
//! Either way the backward pass keeps only `q`, `k`, `v`, the output and the mask, and computes
//! FlashAttention's backward: `dV = Pᵀ dO`, `dP = dO Vᵀ`, `dS = P ∘ (dP − rowsum(dO ∘ O))`,
//! `dQ = s·dS K`, `dK = s·dSᵀ Q` with `P = softmax(s·q kᵀ + mask)`, `s = 1/√d`. A fully masked
//! query row gives zeros, as Burn's fallback does. Backends are told apart by type at run time.

use std::any::Any;

use crate::backend::is_cpu;

pub(crate) mod cpu;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::module::attention as burn_attention;
use burn::tensor::ops::{AttentionModuleOptions, BoolTensor, FloatTensor};
use burn::tensor::{Bool, Tensor, TensorData, TensorPrimitive};

/// `softmax(q kᵀ / √d + mask) v`, `mask` `true` where a query must not attend; f32.
///
/// # Shapes
/// - `q`: `[batch, heads, q_len, head_dim]`, `k`/`v`: `[batch, heads, k_len, head_dim]`,
///   `mask`: `[batch or 1, heads or 1, q_len, k_len]` → `[batch, heads, q_len, head_dim]`
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: Option<Tensor<B, 4, Bool>>,
) -> Tensor<B, 4> {
    let args = Args { q, k, v, mask };
    let args = match fused::<B, crate::backend::Cpu>(args) {
        Ok(out) => return out,
        Err(args) => args,
    };
    #[cfg(feature = "cuda")]
    let args = match fused::<B, crate::backend::Gpu>(args) {
        Ok(out) => return out,
        Err(args) => args,
    };
    inner_forward(args).0
}

struct Args<B: Backend> {
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: Option<Tensor<B, 4, Bool>>,
}

/// Which backward a tracked call uses.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kernel {
    /// [`cpu`]'s kernels (the CPU backend).
    Cpu,
    /// The backend's attention forward; tensor ops in the backward.
    Tensor,
}

/// The mask expanded to `[batch, heads, q_len, k_len]` (a view; backends copy it as they need).
fn full_mask<B: Backend>(
    mask: Tensor<B, 4, Bool>,
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
) -> Tensor<B, 4, Bool> {
    let [b, h, tq, _] = q.dims();
    mask.expand([b, h, tq, k.dims()[2]])
}

/// Runs the fused path when `B` is `I` or `I` under autodiff; otherwise gives the arguments back.
fn fused<B: Backend, I: Backend>(args: Args<B>) -> Result<Tensor<B, 4>, Args<B>> {
    let kernel = if is_cpu::<I>() {
        Kernel::Cpu
    } else {
        Kernel::Tensor
    };
    let args = match cast::<Args<B>, Args<I>>(args) {
        Ok(a) => return Ok(same(inner_forward(a).0)),
        Err(a) => a,
    };
    let args = match cast::<Args<B>, Args<Autodiff<I, NoCheckpointing>>>(args) {
        Ok(a) => return Ok(same(tracked(a, kernel))),
        Err(a) => a,
    };
    match cast::<Args<B>, Args<Autodiff<I, BalancedCheckpointing>>>(args) {
        Ok(a) => Ok(same(tracked(a, kernel))),
        Err(a) => Err(a),
    }
}

/// `T` as `U` when they are the same type.
pub(crate) fn cast<T: 'static, U: 'static>(value: T) -> Result<U, T> {
    let boxed: Box<dyn Any> = Box::new(value);
    match boxed.downcast::<U>() {
        Ok(u) => Ok(*u),
        Err(b) => Err(*b.downcast::<T>().unwrap_or_else(|_| unreachable!())),
    }
}

/// `T` as `U` where the caller has checked that they are the same type.
pub(crate) fn same<T: 'static, U: 'static>(value: T) -> U {
    cast(value).unwrap_or_else(|_| unreachable!("checked by the caller"))
}

fn float<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

fn tensor<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// A tensor's values on the host as f32.
pub(crate) fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .unwrap_or_else(|e| unreachable!("converted to f32: {e:?}"))
}

fn device_tensor<B: Backend, const D: usize>(
    data: Vec<f32>,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(data, shape), device)
}

/// The kernels' view of the shapes and the mask (host copy).
fn kernel_inputs<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
    mask: Option<&Tensor<B, 4, Bool>>,
) -> (cpu::Dims, Option<(Vec<bool>, usize, usize)>) {
    let [batch, heads, tq, d] = q.dims();
    let [_, _, tk, _] = k.dims();
    let dims = cpu::Dims {
        batch,
        heads,
        tq,
        tk,
        d,
        dv: v.dims()[3],
    };
    let mask = mask.map(|m| {
        let [mb, mh, _, _] = m.dims();
        let data = m
            .clone()
            .into_data()
            .into_vec::<bool>()
            .unwrap_or_else(|e| unreachable!("a bool tensor: {e:?}"));
        let tile = tq * tk;
        let head_step = if mh == 1 { 0 } else { tile };
        let batch_step = if mb == 1 { 0 } else { mh * tile };
        (data, batch_step, head_step)
    });
    (dims, mask)
}

fn mask_view(m: &Option<(Vec<bool>, usize, usize)>) -> Option<cpu::Mask<'_>> {
    m.as_ref().map(|(data, batch_step, head_step)| cpu::Mask {
        data,
        batch_step: *batch_step,
        head_step: *head_step,
    })
}

/// The forward without autodiff: the output and, from the CPU kernel, each row's log-sum-exp.
fn inner_forward<I: Backend>(a: Args<I>) -> (Tensor<I, 4>, Option<Tensor<I, 3>>) {
    if is_cpu::<I>() {
        let device = a.q.device();
        let (dims, mask) = kernel_inputs(&a.q, &a.k, &a.v, a.mask.as_ref());
        let (out, lse) = cpu::forward(&host(a.q), &host(a.k), &host(a.v), mask_view(&mask), dims);
        let (b, h) = (dims.batch, dims.heads);
        return (
            device_tensor(out, [b, h, dims.tq, dims.dv], &device),
            Some(device_tensor(lse, [b, h, dims.tq], &device)),
        );
    }
    let mask = a.mask.map(|m| full_mask(m, &a.q, &a.k));
    let out = burn_attention(a.q, a.k, a.v, mask, None, AttentionModuleOptions::default());
    (out, None)
}

/// What the backward pass keeps (inner backend): `q`, `k`, `v`, the output, the mask and, from the
/// CPU kernel, the log-sum-exp.
type State<I> = (
    FloatTensor<I>,
    FloatTensor<I>,
    FloatTensor<I>,
    FloatTensor<I>,
    Option<BoolTensor<I>>,
    Option<FloatTensor<I>>,
);

#[derive(Debug)]
struct FusedAttention;

impl<I: Backend> Backward<I, 3> for FusedAttention {
    type State = State<I>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_q, node_k, node_v] = ops.parents;
        let grad = grads.consume::<I>(&ops.node);
        let (q, k, v, out, mask, lse) = ops.state;
        let (q, k, v, out, dout) = (
            tensor::<I, 4>(q),
            tensor::<I, 4>(k),
            tensor::<I, 4>(v),
            tensor::<I, 4>(out),
            tensor::<I, 4>(grad),
        );
        let mask = mask.map(Tensor::<I, 4, Bool>::from_primitive);
        let saved = Saved {
            q,
            k,
            v,
            out,
            dout,
            mask,
        };
        let (dq, dk, dv) = match lse {
            Some(lse) => cpu_backward(saved, tensor(lse)),
            None => tensor_backward(saved),
        };
        for (node, g) in [(node_q, dq), (node_k, dk), (node_v, dv)] {
            if let Some(node) = node {
                grads.register::<I>(node.id, float(g));
            }
        }
    }
}

/// The backward pass's inputs: the forward's, its output and the output's gradient.
struct Saved<I: Backend> {
    q: Tensor<I, 4>,
    k: Tensor<I, 4>,
    v: Tensor<I, 4>,
    out: Tensor<I, 4>,
    dout: Tensor<I, 4>,
    mask: Option<Tensor<I, 4, Bool>>,
}

/// `(dq, dk, dv)`.
type Grads<I> = (Tensor<I, 4>, Tensor<I, 4>, Tensor<I, 4>);

fn cpu_backward<I: Backend>(s: Saved<I>, lse: Tensor<I, 3>) -> Grads<I> {
    let Saved {
        q,
        k,
        v,
        out,
        dout,
        mask,
    } = s;
    let device = q.device();
    let (dims, m) = kernel_inputs(&q, &k, &v, mask.as_ref());
    let (qs, ks, vs) = (q.dims(), k.dims(), v.dims());
    let (dq, dk, dv) = cpu::backward(
        &host(q),
        &host(k),
        &host(v),
        &host(out),
        &host(dout),
        &host(lse),
        mask_view(&m),
        dims,
    );
    (
        device_tensor(dq, qs, &device),
        device_tensor(dk, ks, &device),
        device_tensor(dv, vs, &device),
    )
}

fn tensor_backward<I: Backend>(s: Saved<I>) -> Grads<I> {
    let Saved {
        q,
        k,
        v,
        out,
        dout,
        mask,
    } = s;
    let scale = 1.0 / (q.dims()[3] as f64).sqrt();
    let p = probabilities(q.clone(), k.clone(), mask, scale);
    let dv = p.clone().swap_dims(2, 3).matmul(dout.clone());
    let dp = dout.clone().matmul(v.swap_dims(2, 3));
    let delta = (dout * out).sum_dim(3); // [b, h, q, 1]
    let ds = p * (dp - delta);
    let dq = ds.clone().matmul(k).mul_scalar(scale);
    let dk = ds.swap_dims(2, 3).matmul(q).mul_scalar(scale);
    (dq, dk, dv)
}

/// `softmax(s·q kᵀ + mask)` as `attention_fallback` computes it: the row maximum clamped to the
/// lowest finite value and the row sum to the smallest normal, so a fully masked row is zeros.
fn probabilities<I: Backend>(
    q: Tensor<I, 4>,
    k: Tensor<I, 4>,
    mask: Option<Tensor<I, 4, Bool>>,
    scale: f64,
) -> Tensor<I, 4> {
    let s = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale);
    let s = match mask {
        Some(m) => {
            let [b, h, tq, tk] = s.dims();
            s.mask_fill(m.expand([b, h, tq, tk]), f32::NEG_INFINITY)
        }
        None => s,
    };
    let max = s.clone().max_dim(3).clamp_min(f32::MIN);
    let e = (s - max).exp();
    let sum = e.clone().sum_dim(3).clamp_min(f32::MIN_POSITIVE);
    e / sum
}

#[cfg(test)]
thread_local! {
    /// Tracked fused calls on this thread (tests check that the dispatch took the fused path).
    static TRACKED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn tracked<I: Backend, C: CheckpointStrategy>(
    a: Args<Autodiff<I, C>>,
    kernel: Kernel,
) -> Tensor<Autodiff<I, C>, 4> {
    #[cfg(test)]
    TRACKED.with(|c| c.set(c.get() + 1));
    let mask = a.mask.map(|m| {
        let m: Tensor<I, 4, Bool> = Tensor::from_primitive(m.into_primitive());
        match kernel {
            Kernel::Cpu => m,
            Kernel::Tensor => {
                m.expand([a.q.dims()[0], a.q.dims()[1], a.q.dims()[2], a.k.dims()[2]])
            }
        }
    });
    let (q, k, v) = (float(a.q), float(a.k), float(a.v));
    let inner = Args {
        q: tensor::<I, 4>(q.primitive.clone()),
        k: tensor::<I, 4>(k.primitive.clone()),
        v: tensor::<I, 4>(v.primitive.clone()),
        mask: mask.clone(),
    };
    let (output, lse) = match kernel {
        Kernel::Cpu => inner_forward(inner),
        Kernel::Tensor => {
            let mask = inner.mask;
            let out = burn_attention(
                inner.q,
                inner.k,
                inner.v,
                mask,
                None,
                AttentionModuleOptions::default(),
            );
            (out, None)
        }
    };
    let output = float(output);
    let result = match FusedAttention
        .prepare::<C>([q.node.clone(), k.node.clone(), v.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(
            (
                q.primitive,
                k.primitive,
                v.primitive,
                output.clone(),
                mask.map(|m| m.into_primitive()),
                lse.map(float),
            ),
            output,
        ),
        OpsKind::UnTracked(prep) => prep.finish(output),
    };
    tensor(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use burn::tensor::{Distribution, TensorData};

    type A = Autodiff<Cpu>;

    fn max_rel(a: Tensor<Cpu, 4>, b: Tensor<Cpu, 4>) -> f32 {
        let scale = b.clone().abs().max().into_scalar().max(1e-6);
        (a - b).abs().max().into_scalar() / scale
    }

    /// Masks of the shapes the models pass: causal `[1, 1, q, k]`, causal + key padding
    /// `[batch, 1, q, k]` with left padding (fully masked query rows), and per-head `[b, h, q, k]`.
    fn masks(
        b: usize,
        h: usize,
        t: usize,
        device: &burn::tensor::Device<Cpu>,
    ) -> Vec<Tensor<Cpu, 4, Bool>> {
        let causal: Vec<bool> = (0..t * t).map(|i| i % t > i / t).collect();
        let padded: Vec<bool> = (0..b)
            .flat_map(|n| (0..t * t).map(move |i| i % t > i / t || i % t < 2 * n))
            .collect();
        let heads: Vec<bool> = (0..b * h * t * t)
            .map(|i| (i * 7919) % 5 == 0 && i % t != 0)
            .collect();
        vec![
            Tensor::from_data(TensorData::new(causal, [1, 1, t, t]), device),
            Tensor::from_data(TensorData::new(padded, [b, 1, t, t]), device),
            Tensor::from_data(TensorData::new(heads, [b, h, t, t]), device),
        ]
    }

    #[test]
    fn fused_forward_and_gradients_match_burns_fallback() {
        let device = Default::default();
        // 70 query rows: two blocks of the CPU kernel, the second partial.
        for (b, h, t, d) in [(2, 3, 7, 8), (2, 2, 70, 8)] {
            let r = |s| Tensor::<Cpu, 4>::random(s, Distribution::Normal(0.0, 1.0), &device);
            let (q, k, v) = (r([b, h, t, d]), r([b, h, t, d]), r([b, h, t, d]));
            let dout = r([b, h, t, d]);
            let mut cases: Vec<Option<Tensor<Cpu, 4, Bool>>> =
                masks(b, h, t, &device).into_iter().map(Some).collect();
            cases.push(None);
            for mask in cases {
                // 0: the dispatch (CPU kernels), 1: the tensor-op backward, 2: Burn's fallback.
                let run = |path: usize| {
                    let leaf =
                        |x: &Tensor<Cpu, 4>| Tensor::<A, 4>::from_inner(x.clone()).require_grad();
                    let (qa, ka, va) = (leaf(&q), leaf(&k), leaf(&v));
                    let m = mask.clone().map(Tensor::<A, 4, Bool>::from_inner);
                    let out = match path {
                        0 => attention(qa.clone(), ka.clone(), va.clone(), m),
                        1 => tracked(
                            Args {
                                q: qa.clone(),
                                k: ka.clone(),
                                v: va.clone(),
                                mask: m,
                            },
                            Kernel::Tensor,
                        ),
                        _ => {
                            let m = m.map(|m| full_mask(m, &qa, &ka));
                            burn_attention(
                                qa.clone(),
                                ka.clone(),
                                va.clone(),
                                m,
                                None,
                                AttentionModuleOptions::default(),
                            )
                        }
                    };
                    let grads = (out.clone() * Tensor::from_inner(dout.clone()))
                        .sum()
                        .backward();
                    let g = |x: &Tensor<A, 4>| x.grad(&grads).expect("a gradient");
                    (out.inner(), g(&qa), g(&ka), g(&va))
                };
                let before = TRACKED.with(|c| c.get());
                let (ro, rq, rk, rv) = run(2);
                assert_eq!(
                    TRACKED.with(|c| c.get()),
                    before,
                    "the fallback is not the fused op"
                );
                for path in [0, 1] {
                    let (fo, fq, fk, fv) = run(path);
                    let shape = mask.as_ref().map(|m| m.dims());
                    for (name, a, b) in [
                        ("out", fo, &ro),
                        ("dq", fq, &rq),
                        ("dk", fk, &rk),
                        ("dv", fv, &rv),
                    ] {
                        assert!(
                            !a.clone().is_nan().any().into_scalar(),
                            "{name} has NaN (path {path}, t {t}, mask {shape:?})"
                        );
                        let e = max_rel(a, b.clone());
                        assert!(
                            e < 2e-5,
                            "{name}: relative difference {e} (path {path}, t {t}, mask {shape:?})"
                        );
                    }
                }
                assert_eq!(
                    TRACKED.with(|c| c.get()),
                    before + 2,
                    "both fused paths ran"
                );
            }
        }
    }

    #[test]
    fn inner_and_checkpointed_backends_take_the_fused_path() {
        let device = Default::default();
        let r = |s| Tensor::<Cpu, 4>::random(s, Distribution::Normal(0.0, 1.0), &device);
        let (q, k, v) = (r([1, 2, 5, 4]), r([1, 2, 5, 4]), r([1, 2, 5, 4]));
        let mask = masks(1, 2, 5, &device).remove(0);
        let plain = attention(q.clone(), k.clone(), v.clone(), Some(mask.clone()));
        let reference = burn_attention(
            q.clone(),
            k.clone(),
            v.clone(),
            Some(mask.clone().expand([1, 2, 5, 5])),
            None,
            AttentionModuleOptions::default(),
        );
        assert!(max_rel(plain, reference.clone()) < 1e-5);
        type C = Autodiff<Cpu, BalancedCheckpointing>;
        let qa = Tensor::<C, 4>::from_inner(q).require_grad();
        let before = TRACKED.with(|c| c.get());
        let out = attention(
            qa.clone(),
            Tensor::from_inner(k),
            Tensor::from_inner(v),
            Some(Tensor::from_inner(mask)),
        );
        assert_eq!(
            TRACKED.with(|c| c.get()),
            before + 1,
            "checkpointed autodiff is fused too"
        );
        assert!(max_rel(out.clone().inner(), reference) < 1e-5);
        let grads = out.sum().backward();
        assert!(qa.grad(&grads).is_some());
    }
}
