//! AdamW, the warmup + cosine schedule and global-norm clipping, as PyTorch / transformers do them.
//!
//! * AdamW = `torch.optim.AdamW` (decoupled decay `p ← p (1 − lr·wd)`, then
//!   `p ← p − (lr / bc1) · m / (sqrt(v) / sqrt(bc2) + ε)`), defaults β1 0.9, β2 0.999, ε 1e-8
//!   (Burn's own AdamW defaults differ, so it is not used).
//! * Schedule = `transformers.get_cosine_schedule_with_warmup`, evaluated at the 0-based optimizer
//!   step (so the first step of a warmup uses lr 0, as HF's LambdaLR does).
//! * Clipping = `torch.nn.utils.clip_grad_norm_`: one norm over all trainable gradients,
//!   scaled by `max / (norm + 1e-6)` when that is below 1 (Burn clips per tensor).

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamW {
    /// β1.
    pub beta1: f64,
    /// β2.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl Default for AdamW {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// First and second moments of one parameter, flattened.
#[derive(Debug, Clone)]
pub struct Moments<B: Backend> {
    /// `exp_avg`.
    pub m: Tensor<B, 1>,
    /// `exp_avg_sq`.
    pub v: Tensor<B, 1>,
}

impl AdamW {
    /// One update of a flattened parameter. `step` is 1-based (bias corrections).
    pub fn update<B: Backend>(
        &self,
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        state: &mut Option<Moments<B>>,
        lr: f64,
        step: usize,
    ) -> Tensor<B, 1> {
        let st = state.take().unwrap_or_else(|| Moments {
            m: grad.zeros_like(),
            v: grad.zeros_like(),
        });
        let m = st.m.mul_scalar(self.beta1) + grad.clone().mul_scalar(1.0 - self.beta1);
        let v = st.v.mul_scalar(self.beta2) + grad.clone().mul(grad).mul_scalar(1.0 - self.beta2);
        let bc1 = 1.0 - self.beta1.powi(step as i32);
        let bc2 = 1.0 - self.beta2.powi(step as i32);
        let param = param.mul_scalar(1.0 - lr * self.weight_decay);
        let denom = v.clone().sqrt().div_scalar(bc2.sqrt()).add_scalar(self.eps);
        let out = param - m.clone().div(denom).mul_scalar(lr / bc1);
        *state = Some(Moments { m, v });
        out
    }
}

/// Learning rate at 0-based optimizer step `step` of `total`, with `warmup` linear warmup steps,
/// then a half cosine to 0.
pub fn lr_at(base: f64, step: usize, total: usize, warmup: usize) -> f64 {
    if step < warmup {
        return base * step as f64 / warmup.max(1) as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    base * (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
}

/// Warmup steps for a ratio, as HF's `get_warmup_steps`: `ceil(ratio · total)`.
pub fn warmup_steps(ratio: f64, total: usize) -> usize {
    (ratio * total as f64).ceil() as usize
}

/// `clip_grad_norm_`'s factor for a global norm.
pub fn clip_factor(total_norm: f64, max_norm: f64) -> f64 {
    let coef = max_norm / (total_norm + 1e-6);
    coef.min(1.0)
}

/// Saves moments as `optimizer.safetensors` (`<key>.exp_avg`, `<key>.exp_avg_sq`).
pub fn save_moments<B: Backend>(path: &Path, moments: &BTreeMap<String, Moments<B>>) -> Result<()> {
    let mut tensors = Vec::new();
    for (k, st) in moments {
        for (suffix, t) in [("exp_avg", &st.m), ("exp_avg_sq", &st.v)] {
            let data = t
                .clone()
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .unwrap_or_default();
            tensors.push((format!("{k}.{suffix}"), vec![data.len()], data));
        }
    }
    Ok(mmedpo_core::checkpoint::write_safetensors(path, &tensors)?)
}

/// Loads moments written by [`save_moments`].
pub fn load_moments<B: Backend>(
    path: &Path,
    device: &B::Device,
) -> Result<BTreeMap<String, Moments<B>>> {
    let bytes = std::fs::read(path).map_err(|e| mmedpo_core::Error::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
        mmedpo_core::Error::Safetensors {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    })?;
    let mut out = BTreeMap::new();
    let read = |name: &str| -> Result<Tensor<B, 1>> {
        let t = st
            .tensor(name)
            .map_err(|e| Error::Setting(format!("{}: {e}", path.display())))?;
        let v: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let n = v.len();
        Ok(Tensor::from_data(TensorData::new(v, [n]), device))
    };
    for name in st.names() {
        if let Some(key) = name.strip_suffix(".exp_avg") {
            out.insert(
                key.to_string(),
                Moments {
                    m: read(name)?,
                    v: read(&format!("{key}.exp_avg_sq"))?,
                },
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmedpo_core::backend::TestBackend as B;

    #[test]
    fn adamw_matches_torch_for_two_steps() {
        // torch.optim.AdamW([p], lr=0.1, weight_decay=0.01) on p = [1, -2], grads [0.5, 0.25] then
        // [-1, 2]: p after step 1 = [0.899, -1.8998], after step 2 = [0.8811, -1.9620] (4 decimals,
        // values by hand from the formula torch documents).
        let dev = Default::default();
        let t = |v: [f32; 2]| Tensor::<B, 1>::from_data(TensorData::new(v.to_vec(), [2]), &dev);
        let opt = AdamW {
            weight_decay: 0.01,
            ..AdamW::default()
        };
        let mut st = None;
        let p = opt.update(t([1.0, -2.0]), t([0.5, 0.25]), &mut st, 0.1, 1);
        let v: Vec<f32> = p.clone().into_data().to_vec().unwrap();
        // step 1: m̂ = g, v̂ = g², update = lr * g / (|g| + eps) = 0.1 * sign(g)
        assert!((v[0] - (1.0 * (1.0 - 0.001) - 0.1)).abs() < 1e-6, "{v:?}");
        assert!((v[1] - (-2.0 * (1.0 - 0.001) - 0.1)).abs() < 1e-6, "{v:?}");
        let p2 = opt.update(p, t([-1.0, 2.0]), &mut st, 0.1, 2);
        let v2: Vec<f32> = p2.into_data().to_vec().unwrap();
        let (b1, b2) = (0.9f64, 0.999f64);
        let manual = |p: f64, g1: f64, g2: f64| {
            let m = b1 * (1.0 - b1) * g1 + (1.0 - b1) * g2;
            let v = b2 * (1.0 - b2) * g1 * g1 + (1.0 - b2) * g2 * g2;
            let p = p * (1.0 - 0.1 * 0.01);
            p - 0.1 / (1.0 - b1 * b1) * m / (v.sqrt() / (1.0 - b2 * b2).sqrt() + 1e-8)
        };
        assert!(
            (v2[0] as f64 - manual(v[0] as f64, 0.5, -1.0)).abs() < 1e-5,
            "{v2:?}"
        );
        assert!(
            (v2[1] as f64 - manual(v[1] as f64, 0.25, 2.0)).abs() < 1e-5,
            "{v2:?}"
        );
    }

    #[test]
    fn schedule_warms_up_then_decays_like_transformers() {
        let total = 100;
        let w = warmup_steps(0.03, total);
        assert_eq!(w, 3);
        assert_eq!(lr_at(1.0, 0, total, w), 0.0);
        assert!((lr_at(1.0, 2, total, w) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(lr_at(1.0, 3, total, w), 1.0);
        assert!(
            (lr_at(1.0, 3 + 97 / 2, total, w)
                - 0.5 * (1.0 + (std::f64::consts::PI * 48.0 / 97.0).cos()))
            .abs()
                < 1e-12
        );
        assert!(lr_at(1.0, 99, total, w) < 0.001);
    }

    #[test]
    fn clipping_is_global() {
        assert_eq!(clip_factor(0.5, 1.0), 1.0);
        assert!((clip_factor(4.0, 1.0) - 1.0 / (4.0 + 1e-6)).abs() < 1e-12);
    }
}
