//! The CPU kernels: attention forward (keeping each row's log-sum-exp) and backward on host f32
//! slices, one (batch, head) per rayon task, blocks of query rows multiplied with `gemm` (the
//! crate Flex's own matmul uses). A query row only reads the keys up to its last unmasked one, so
//! a causal mask costs half the products of a full one.

use rayon::prelude::*;

/// Query rows per block.
const BLOCK: usize = 64;

/// Shapes of one call: `q` `[batch, heads, tq, d]`, `k` `[batch, heads, tk, d]`, `v`
/// `[batch, heads, tk, dv]`; a mask `[batch or 1, heads or 1, tq, tk]` read with the given steps.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    pub batch: usize,
    pub heads: usize,
    pub tq: usize,
    pub tk: usize,
    pub d: usize,
    pub dv: usize,
}

/// A mask, `true` = masked, with its element steps per batch and per head (0 where broadcast).
#[derive(Debug, Clone, Copy)]
pub struct Mask<'a> {
    pub data: &'a [bool],
    pub batch_step: usize,
    pub head_step: usize,
}

impl<'a> Mask<'a> {
    fn tile(&self, b: usize, h: usize, dims: &Dims) -> &'a [bool] {
        let start = b * self.batch_step + h * self.head_step;
        &self.data[start..start + dims.tq * dims.tk]
    }
}

/// `dst[m×n] = (acc ? dst : 0) + lhs[m×k] · rhs[k×n]`, each operand given by its slice and its
/// (row, column) strides; one thread (the attention kernels run one per rayon task).
#[allow(clippy::too_many_arguments)]
fn mm(
    mnk: (usize, usize, usize),
    dst: &mut [f32],
    dst_rs: usize,
    acc: bool,
    lhs: &[f32],
    lhs_strides: (usize, usize),
    rhs: &[f32],
    rhs_strides: (usize, usize),
) {
    gemm_f32(
        mnk,
        dst,
        dst_rs,
        acc,
        lhs,
        lhs_strides,
        rhs,
        rhs_strides,
        gemm::Parallelism::None,
    );
}

/// [`mm`] with the given parallelism: the one safe door to `gemm` in this crate.
#[allow(clippy::too_many_arguments, unsafe_code)] // gemm's only entry point is an unsafe fn of raw pointers
pub(crate) fn gemm_f32(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    dst_rs: usize,
    acc: bool,
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
    parallelism: gemm::Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rs: usize, cs: usize, r: usize, c: usize| (r - 1) * rs + (c - 1) * cs;
    assert!(
        last(dst_rs, 1, m, n) < dst.len(),
        "attention kernel: dst out of bounds"
    );
    if k == 0 {
        if !acc {
            (0..m).for_each(|r| dst[r * dst_rs..r * dst_rs + n].fill(0.0));
        }
        return;
    }
    assert!(
        last(lhs_rs, lhs_cs, m, k) < lhs.len(),
        "attention kernel: lhs out of bounds"
    );
    assert!(
        last(rhs_rs, rhs_cs, k, n) < rhs.len(),
        "attention kernel: rhs out of bounds"
    );
    // SAFETY: the asserts above keep every element gemm touches inside the three slices, and
    // `dst` is borrowed mutably, so it overlaps neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            acc,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// One past each query row's last unmasked key (0 for a fully masked row).
fn limits(mask: Option<&[bool]>, dims: &Dims) -> Vec<usize> {
    match mask {
        None => vec![dims.tk; dims.tq],
        Some(m) => (0..dims.tq)
            .map(|i| {
                let row = &m[i * dims.tk..(i + 1) * dims.tk];
                row.iter().rposition(|&x| !x).map_or(0, |j| j + 1)
            })
            .collect(),
    }
}

/// `S·scale` masked to −∞ for rows `i0..i0 + nr` and keys `0..kmax`, into `s` (row stride kmax).
#[allow(clippy::too_many_arguments)]
fn scores(
    q: &[f32],
    k: &[f32],
    mask: Option<&[bool]>,
    dims: &Dims,
    scale: f32,
    (i0, nr, kmax): (usize, usize, usize),
    s: &mut [f32],
) {
    let d = dims.d;
    mm(
        (nr, kmax, d),
        s,
        kmax,
        false,
        &q[i0 * d..],
        (d, 1),
        k,
        (1, d),
    );
    for r in 0..nr {
        let row = &mut s[r * kmax..(r + 1) * kmax];
        row.iter_mut().for_each(|x| *x *= scale);
        if let Some(m) = mask {
            let mrow = &m[(i0 + r) * dims.tk..(i0 + r) * dims.tk + kmax];
            for (x, &masked) in row.iter_mut().zip(mrow) {
                if masked {
                    *x = f32::NEG_INFINITY;
                }
            }
        }
    }
}

/// Attention forward: the output `[batch, heads, tq, dv]` and each row's log-sum-exp
/// `[batch, heads, tq]` (−∞ for a fully masked row, whose output is zeros as Burn's fallback gives).
pub fn forward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: Option<Mask>,
    dims: Dims,
) -> (Vec<f32>, Vec<f32>) {
    let Dims {
        heads,
        tq,
        tk,
        d,
        dv,
        ..
    } = dims;
    let scale = 1.0 / (d as f32).sqrt();
    let mut out = vec![0f32; dims.batch * heads * tq * dv];
    let mut lse = vec![0f32; dims.batch * heads * tq];
    out.par_chunks_mut(tq * dv)
        .zip(lse.par_chunks_mut(tq))
        .enumerate()
        .for_each(|(bh, (o, l))| {
            let (b, h) = (bh / heads, bh % heads);
            let (q, k, v) = (
                &q[bh * tq * d..(bh + 1) * tq * d],
                &k[bh * tk * d..(bh + 1) * tk * d],
                &v[bh * tk * dv..(bh + 1) * tk * dv],
            );
            let tile = mask.map(|m| m.tile(b, h, &dims));
            let limit = limits(tile, &dims);
            let mut s = vec![0f32; BLOCK * tk];
            for i0 in (0..tq).step_by(BLOCK) {
                let nr = BLOCK.min(tq - i0);
                let kmax = limit[i0..i0 + nr].iter().copied().max().unwrap_or(0);
                scores(q, k, tile, &dims, scale, (i0, nr, kmax), &mut s);
                for r in 0..nr {
                    let row = &mut s[r * kmax..(r + 1) * kmax];
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    if max == f32::NEG_INFINITY {
                        row.fill(0.0);
                        l[i0 + r] = f32::NEG_INFINITY;
                        continue;
                    }
                    let mut sum = 0f32;
                    for x in row.iter_mut() {
                        *x = (*x - max).exp();
                        sum += *x;
                    }
                    let inv = 1.0 / sum;
                    row.iter_mut().for_each(|x| *x *= inv);
                    l[i0 + r] = max + sum.ln();
                }
                mm(
                    (nr, dv, kmax),
                    &mut o[i0 * dv..],
                    dv,
                    false,
                    &s,
                    (kmax, 1),
                    v,
                    (dv, 1),
                );
            }
        });
    (out, lse)
}

/// Gradients `(dq, dk, dv)` of the attention forward given the output gradient `dout`, the
/// output and the log-sum-exp `forward` returned.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    dout: &[f32],
    lse: &[f32],
    mask: Option<Mask>,
    dims: Dims,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let Dims {
        heads,
        tq,
        tk,
        d,
        dv: dvd,
        ..
    } = dims;
    let scale = 1.0 / (d as f32).sqrt();
    let n = dims.batch * heads;
    let (mut dq, mut dk, mut dv) = (
        vec![0f32; n * tq * d],
        vec![0f32; n * tk * d],
        vec![0f32; n * tk * dvd],
    );
    dq.par_chunks_mut(tq * d)
        .zip(dk.par_chunks_mut(tk * d))
        .zip(dv.par_chunks_mut(tk * dvd))
        .enumerate()
        .for_each(|(bh, ((gq, gk), gv))| {
            let (b, h) = (bh / heads, bh % heads);
            let (q, k, v) = (
                &q[bh * tq * d..(bh + 1) * tq * d],
                &k[bh * tk * d..(bh + 1) * tk * d],
                &v[bh * tk * dvd..(bh + 1) * tk * dvd],
            );
            let (o, go, l) = (
                &out[bh * tq * dvd..(bh + 1) * tq * dvd],
                &dout[bh * tq * dvd..(bh + 1) * tq * dvd],
                &lse[bh * tq..(bh + 1) * tq],
            );
            let tile = mask.map(|m| m.tile(b, h, &dims));
            let limit = limits(tile, &dims);
            let (mut p, mut dp) = (vec![0f32; BLOCK * tk], vec![0f32; BLOCK * tk]);
            for i0 in (0..tq).step_by(BLOCK) {
                let nr = BLOCK.min(tq - i0);
                let kmax = limit[i0..i0 + nr].iter().copied().max().unwrap_or(0);
                if kmax == 0 {
                    continue; // every row masked: no gradient (dq rows stay 0)
                }
                scores(q, k, tile, &dims, scale, (i0, nr, kmax), &mut p);
                for r in 0..nr {
                    let row = &mut p[r * kmax..(r + 1) * kmax];
                    let lr = l[i0 + r];
                    if lr == f32::NEG_INFINITY {
                        row.fill(0.0);
                    } else {
                        row.iter_mut().for_each(|x| *x = (*x - lr).exp());
                    }
                }
                // dV[0..kmax] += Pᵀ · dO
                mm(
                    (kmax, dvd, nr),
                    gv,
                    dvd,
                    true,
                    &p,
                    (1, kmax),
                    &go[i0 * dvd..],
                    (dvd, 1),
                );
                // dP = dO · Vᵀ
                mm(
                    (nr, kmax, dvd),
                    &mut dp,
                    kmax,
                    false,
                    &go[i0 * dvd..],
                    (dvd, 1),
                    v,
                    (1, dvd),
                );
                for r in 0..nr {
                    let i = i0 + r;
                    let delta: f32 = go[i * dvd..(i + 1) * dvd]
                        .iter()
                        .zip(&o[i * dvd..(i + 1) * dvd])
                        .map(|(a, b)| a * b)
                        .sum();
                    let (prow, dprow) = (
                        &p[r * kmax..(r + 1) * kmax],
                        &mut dp[r * kmax..(r + 1) * kmax],
                    );
                    for (g, &pv) in dprow.iter_mut().zip(prow) {
                        *g = pv * (*g - delta) * scale;
                    }
                }
                // dQ = dS · K;  dK[0..kmax] += dSᵀ · Q
                mm(
                    (nr, d, kmax),
                    &mut gq[i0 * d..],
                    d,
                    false,
                    &dp,
                    (kmax, 1),
                    k,
                    (d, 1),
                );
                mm(
                    (kmax, d, nr),
                    gk,
                    d,
                    true,
                    &dp,
                    (1, kmax),
                    &q[i0 * d..],
                    (d, 1),
                );
            }
        });
    (dq, dk, dv)
}
