//! What a step reports: [`StepLog`] (TRL's names), the phases of a step ([`Phases`]) and the
//! device clock that times them.

use super::*;

/// One optimizer step's metrics, with TRL's names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    /// 1-based optimizer step.
    pub step: usize,
    /// Fractional epoch at the end of the step.
    pub epoch: f64,
    /// Weighted DPO loss (mean over the step's micro-batches).
    pub loss: f64,
    /// Mean β(log π − log π_ref) of the chosen answers.
    #[serde(rename = "rewards/chosen")]
    pub rewards_chosen: f64,
    /// Same for the rejected answers.
    #[serde(rename = "rewards/rejected")]
    pub rewards_rejected: f64,
    /// Share of pairs with chosen reward > rejected reward.
    #[serde(rename = "rewards/accuracies")]
    pub rewards_accuracies: f64,
    /// Mean reward margin.
    #[serde(rename = "rewards/margins")]
    pub rewards_margins: f64,
    /// Mean policy log-prob of the chosen answers.
    #[serde(rename = "logps/chosen")]
    pub logps_chosen: f64,
    /// Mean policy log-prob of the rejected answers.
    #[serde(rename = "logps/rejected")]
    pub logps_rejected: f64,
    /// Learning rate used for this step.
    pub learning_rate: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// Seconds spent in each part of [`loss_and_grads`], measured after a device sync at each
/// boundary (so they are right on asynchronous backends too).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Phases {
    /// The frozen tower (and projector, unless trained) once per image.
    pub tower_s: f64,
    /// The policy forward with autodiff, chosen and rejected as one batch (on the CPU, together
    /// with the reference forward running beside it).
    pub policy_forward_s: f64,
    /// The adapter-off reference forward run after the policy's (0 with a reference file, and on
    /// the CPU, where it runs beside the policy forward).
    pub reference_forward_s: f64,
    /// The loss and its backward pass, and the gradients' collection.
    pub backward_s: f64,
}

pub(crate) fn to_vec<B: Backend>(t: Tensor<B, 1>) -> Vec<f64> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .unwrap_or_default()
        .into_iter()
        .map(f64::from)
        .collect()
}

/// Lap times on a device, each taken after the device has finished its queued work.
pub(crate) struct Clock<'a, B: Backend> {
    device: &'a B::Device,
    last: std::time::Instant,
}

impl<'a, B: Backend> Clock<'a, B> {
    pub(crate) fn start(device: &'a B::Device) -> Self {
        let _ = B::sync(device);
        Self {
            device,
            last: std::time::Instant::now(),
        }
    }

    /// Seconds since the last lap.
    pub(crate) fn lap(&mut self) -> f64 {
        let _ = B::sync(self.device);
        let now = std::time::Instant::now();
        let secs = (now - self.last).as_secs_f64();
        self.last = now;
        secs
    }
}
