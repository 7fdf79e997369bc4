//! The DPO loss as one pure function over the four log-prob tensors (TRL `dpo_trainer.py::dpo_loss`).
//!
//! With `Δ = (log π(y_w|x) − log π(y_l|x*)) − (log π_ref(y_w|x) − log π_ref(y_l|x*))`:
//! * sigmoid (Rafailov et al. 2023, Eq. 7): `ℓ = −log σ(β Δ)`;
//! * hinge (SLiC, Zhao et al. 2023): `ℓ = max(0, 1 − β Δ)`;
//! * IPO (Azar et al. 2023, Eq. 17): `ℓ = (Δ − 1/(2β))²`.
//!
//! MMedPO (Eq. 3, and the released code): `loss = mean_b(w_b · ℓ_b)`, not divided by Σw.
//! Implicit rewards (detached): `β (log π − log π_ref)` for each branch.

use burn::tensor::activation::{relu, softplus};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// Which DPO loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LossType {
    /// `−log σ(β Δ)` (MMedPO's).
    #[default]
    Sigmoid,
    /// `max(0, 1 − β Δ)`.
    Hinge,
    /// `(Δ − 1/(2β))²`.
    Ipo,
}

/// Loss and implicit rewards of a batch.
#[derive(Debug, Clone)]
pub struct DpoOutput<B: Backend> {
    /// Scalar loss `[1]`.
    pub loss: Tensor<B, 1>,
    /// Per-pair unweighted losses `[b]`.
    pub losses: Tensor<B, 1>,
    /// `β (log π(y_w) − log π_ref(y_w))`, detached `[b]`.
    pub chosen_rewards: Tensor<B, 1>,
    /// `β (log π(y_l) − log π_ref(y_l))`, detached `[b]`.
    pub rejected_rewards: Tensor<B, 1>,
}

/// The weighted DPO loss. All inputs `[b]`.
pub fn dpo_loss<B: Backend>(
    policy_chosen: Tensor<B, 1>,
    policy_rejected: Tensor<B, 1>,
    reference_chosen: Tensor<B, 1>,
    reference_rejected: Tensor<B, 1>,
    weights: Tensor<B, 1>,
    beta: f64,
    loss_type: LossType,
) -> DpoOutput<B> {
    let chosen_rewards = (policy_chosen.clone() - reference_chosen.clone())
        .mul_scalar(beta)
        .detach();
    let rejected_rewards = (policy_rejected.clone() - reference_rejected.clone())
        .mul_scalar(beta)
        .detach();
    let delta = (policy_chosen - policy_rejected) - (reference_chosen - reference_rejected);
    let losses = match loss_type {
        LossType::Sigmoid => softplus(delta.mul_scalar(-beta), 1.0),
        LossType::Hinge => relu(delta.mul_scalar(-beta).add_scalar(1.0)),
        LossType::Ipo => delta.sub_scalar(1.0 / (2.0 * beta)).powi_scalar(2),
    };
    let loss = (losses.clone() * weights).mean();
    DpoOutput {
        loss,
        losses,
        chosen_rewards,
        rejected_rewards,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    use mmedpo_core::backend::TestBackend as B;

    fn t(v: &[f32]) -> Tensor<B, 1> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Default::default())
    }

    #[test]
    fn policy_equal_to_reference_gives_ln2_times_mean_weight() {
        let pc = t(&[-3.0, -10.0, -7.5]);
        let pr = t(&[-4.0, -2.0, -9.0]);
        let w = t(&[0.9, 0.2, 1.0]);
        let out = dpo_loss(pc.clone(), pr.clone(), pc, pr, w, 0.1, LossType::Sigmoid);
        let loss = out.loss.into_scalar();
        assert!((loss - std::f32::consts::LN_2 * 0.7).abs() < 1e-6, "{loss}");
    }

    #[test]
    fn each_variant_matches_its_formula() {
        let (pc, pr, rc, rr) = (t(&[-1.0]), t(&[-5.0]), t(&[-2.0]), t(&[-3.0]));
        let delta: f32 = (-1.0 - -5.0) - (-2.0 - -3.0); // 3
        let beta = 0.5;
        let w = t(&[2.0]);
        let run = |lt| {
            dpo_loss(
                pc.clone(),
                pr.clone(),
                rc.clone(),
                rr.clone(),
                w.clone(),
                beta as f64,
                lt,
            )
            .loss
            .into_scalar()
        };
        let sig = -(1.0 / (1.0 + (-beta * delta).exp())).ln();
        assert!((run(LossType::Sigmoid) - 2.0 * sig).abs() < 1e-6);
        assert!((run(LossType::Hinge) - 2.0 * (1.0f32 - beta * delta).max(0.0)).abs() < 1e-6);
        assert!((run(LossType::Ipo) - 2.0 * (delta - 1.0 / (2.0 * beta)).powi(2)).abs() < 1e-5);
        let out = dpo_loss(pc, pr, rc, rr, w, beta as f64, LossType::Sigmoid);
        assert!((out.chosen_rewards.into_scalar() - 0.5).abs() < 1e-6);
        assert!((out.rejected_rewards.into_scalar() + 1.0).abs() < 1e-6);
    }
}
