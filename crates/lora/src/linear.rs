//! A linear layer with an optional LoRA adapter.
//!
//! Reference: huggingface/peft `src/peft/tuners/lora/layer.py` (`Linear.forward`:
//! `base_layer(x) + lora_B(lora_A(dropout(x))) * scaling`; `reset_lora_parameters`: `lora_A`
//! Kaiming-uniform with `a = sqrt(5)`, `lora_B` zero).

// `lora_A` / `lora_B` mirror PEFT's key names (and the derive macros repeat them).
#![allow(non_snake_case)]

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Initializer, Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use mmedpo_core::checkpoint::contiguous;

use crate::config::LoraConfig;

/// A frozen base layer and an optional adapter. Field names mirror PEFT's module keys.
#[derive(Module, Debug)]
pub struct LoraLinear<B: Backend> {
    /// The (frozen) base layer; Burn layout `[d_in, d_out]`.
    pub base_layer: Linear<B>,
    /// The adapter, if attached.
    pub lora: Option<LoraAdapter<B>>,
}

/// The low-rank update `lora_B(lora_A(dropout(x))) * scaling`.
#[derive(Module, Debug)]
pub struct LoraAdapter<B: Backend> {
    /// Down-projection `[d_in, r]` (PEFT `lora_A.weight` is `[r, d_in]`).
    pub lora_A: Linear<B>,
    /// Up-projection `[r, d_out]` (PEFT `lora_B.weight` is `[d_out, r]`).
    pub lora_B: Linear<B>,
    /// Dropout on the adapter input (active only under autodiff).
    pub dropout: Dropout,
    /// `alpha / r` (or `alpha / sqrt(r)`).
    pub scaling: f64,
}

impl<B: Backend> From<Linear<B>> for LoraLinear<B> {
    fn from(base_layer: Linear<B>) -> Self {
        Self {
            base_layer,
            lora: None,
        }
    }
}

impl<B: Backend> LoraLinear<B> {
    /// # Shapes
    /// - `x`: `[..., d_in]` → `[..., d_out]`
    ///
    /// The adapter runs in its own dtype (f32 master weights under a bf16 base, as PEFT keeps
    /// them): `x` is cast to it and the update back to the base output's dtype, as PEFT's
    /// `_cast_input_dtype` and `result.to(torch_result_dtype)` do.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        // Burn's `Linear::forward`, with a backward that does not copy a frozen weight.
        let base = mmedpo_core::linear::linear(
            x.clone(),
            self.base_layer.weight.val(),
            self.base_layer.bias.as_ref().map(|b| b.val()),
        );
        match &self.lora {
            None => base,
            Some(a) => {
                let dtype = base.dtype();
                let x = x.cast(a.lora_A.weight.val().dtype());
                let update = a
                    .lora_B
                    .forward(a.lora_A.forward(a.dropout.forward(x)))
                    .mul_scalar(a.scaling);
                base + update.cast(dtype)
            }
        }
    }

    /// `(d_in, d_out)` of the base layer.
    pub fn dims(&self) -> (usize, usize) {
        let [i, o] = self.base_layer.weight.dims();
        (i, o)
    }

    /// Attaches a freshly initialised adapter (A Kaiming-uniform, B zero), replacing any.
    pub fn attach(&mut self, config: &LoraConfig, device: &B::Device) {
        let (d_in, d_out) = self.dims();
        let a = LinearConfig::new(d_in, config.r)
            .with_bias(false)
            .with_initializer(Initializer::KaimingUniform {
                gain: 1.0 / 3f64.sqrt(),
                fan_out_only: false,
            })
            .init(device);
        let b = LinearConfig::new(config.r, d_out)
            .with_bias(false)
            .with_initializer(Initializer::Zeros)
            .init(device);
        self.lora = Some(LoraAdapter {
            lora_A: a,
            lora_B: b,
            dropout: DropoutConfig::new(config.lora_dropout).init(),
            scaling: config.scaling(),
        });
    }

    /// Attaches an adapter from PEFT-layout weights: `a` `[r, d_in]`, `b` `[d_out, r]`, kept in
    /// f32 whatever their dtype (the adapter's master weights).
    pub fn attach_weights(&mut self, a: Tensor<B, 2>, b: Tensor<B, 2>, config: &LoraConfig) {
        let f32 = burn::tensor::DType::F32;
        self.lora = Some(LoraAdapter {
            lora_A: Linear {
                weight: Param::from_tensor(contiguous(a.transpose()).cast(f32)),
                bias: None,
            },
            lora_B: Linear {
                weight: Param::from_tensor(contiguous(b.transpose()).cast(f32)),
                bias: None,
            },
            dropout: DropoutConfig::new(config.lora_dropout).init(),
            scaling: config.scaling(),
        });
    }

    /// The same layer without its adapter: the reference model's layer. The base tensors are
    /// shared, not copied.
    pub fn without_adapter(&self) -> Self {
        Self {
            base_layer: self.base_layer.clone(),
            lora: None,
        }
    }

    /// Folds the adapter into the base weight: `W + scaling · A B` (Burn layout).
    pub fn merge(self) -> Linear<B> {
        match self.lora {
            None => self.base_layer,
            Some(a) => {
                let delta = a
                    .lora_A
                    .weight
                    .val()
                    .matmul(a.lora_B.weight.val())
                    .mul_scalar(a.scaling);
                // In f32, rounded once to the base weight's dtype.
                let weight = self.base_layer.weight.map(|w| {
                    let dtype = w.dtype();
                    (w.cast(burn::tensor::DType::F32) + delta.cast(burn::tensor::DType::F32))
                        .cast(dtype)
                });
                Linear {
                    weight,
                    bias: self.base_layer.bias,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tolerance};
    use mmedpo_core::backend::TestBackend as B;

    #[test]
    fn a_fresh_adapter_is_a_no_op_and_merge_equals_the_adapter_forward() {
        let device = Default::default();
        let base: Linear<B> = LinearConfig::new(6, 5).init(&device);
        let mut layer = LoraLinear::from(base);
        let x = Tensor::<B, 3>::random([2, 3, 6], Distribution::Normal(0.0, 1.0), &device);
        let plain = layer.forward(x.clone());
        layer.attach(&LoraConfig::new(4, 8.0), &device);
        layer
            .forward(x.clone())
            .into_data()
            .assert_approx_eq::<f32>(&plain.clone().into_data(), Tolerance::absolute(1e-7));
        // Give B some values, then merged == adapter forward != base.
        let a = layer.lora.as_ref().unwrap().lora_A.weight.val().transpose();
        let b = Tensor::<B, 2>::random([5, 4], Distribution::Normal(0.0, 1.0), &device);
        layer.attach_weights(a, b, &LoraConfig::new(4, 8.0));
        let adapted = layer.forward(x.clone());
        assert!((adapted.clone() - plain.clone()).abs().max().into_scalar() > 1e-3);
        layer
            .without_adapter()
            .forward(x.clone())
            .into_data()
            .assert_approx_eq::<f32>(&plain.into_data(), Tolerance::absolute(1e-7));
        let merged = layer.merge();
        merged
            .forward(x)
            .into_data()
            .assert_approx_eq::<f32>(&adapted.into_data(), Tolerance::absolute(1e-5));
    }

    #[test]
    fn lora_a_init_bound_is_peft_kaiming_uniform() {
        let device = Default::default();
        let mut layer = LoraLinear::from(LinearConfig::new(400, 3).init::<B>(&device));
        layer.attach(&LoraConfig::new(64, 16.0), &device);
        let w: Vec<f32> = layer
            .lora
            .unwrap()
            .lora_A
            .weight
            .val()
            .into_data()
            .to_vec()
            .unwrap();
        let bound = 1.0 / 400f32.sqrt(); // kaiming_uniform_(a=sqrt(5)) = 1/sqrt(fan_in)
        let max = w.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(max <= bound && max > 0.9 * bound, "{max} vs {bound}");
    }
}
