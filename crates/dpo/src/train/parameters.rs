//! The trainable parameters (LoRA weights, and the projector with `projector_lr`) by PEFT key, their
//! replicas for data-parallel training, and the optimizer step (global-norm clip, AdamW) that
//! `mmedpo train` and `mmedpo bench train` share.

use super::*;

pub(crate) type Inner<B> = <B as AutodiffBackend>::InnerBackend;

pub(crate) enum Slot<'a, B: Backend> {
    W2(&'a mut Param<Tensor<B, 2>>),
    W1(&'a mut Param<Tensor<B, 1>>),
}

/// The trainable parameters with their PEFT / checkpoint keys and learning-rate group.
pub(crate) fn trainable<'a, B: Backend>(
    model: &'a mut LlavaForConditionalGeneration<B>,
    layout: Layout,
    projector: bool,
) -> Vec<(String, bool, Slot<'a, B>)> {
    let mut out = Vec::new();
    if projector {
        let p = &mut model.multi_modal_projector;
        for (name, lin) in [("linear_1", &mut p.linear_1), ("linear_2", &mut p.linear_2)] {
            out.push((
                format!("multi_modal_projector.{name}.weight"),
                true,
                Slot::W2(&mut lin.weight),
            ));
            if let Some(b) = lin.bias.as_mut() {
                out.push((
                    format!("multi_modal_projector.{name}.bias"),
                    true,
                    Slot::W1(b),
                ));
            }
        }
    }
    let prefix = mmedpo_lvlm::adapter::decoder_path(layout);
    for (rel, layer) in model.language_model.lora_layers_mut() {
        let path = format!("{prefix}{rel}");
        if let Some(a) = layer.lora.as_mut() {
            out.push((
                format!("base_model.model.{path}.lora_A.weight"),
                false,
                Slot::W2(&mut a.lora_A.weight),
            ));
            out.push((
                format!("base_model.model.{path}.lora_B.weight"),
                false,
                Slot::W2(&mut a.lora_B.weight),
            ));
        }
    }
    out
}

/// Draws the trainable parameters now: Burn initializes parameters lazily, on first use, and a
/// clone of an uninitialized parameter draws its own values; drawn here (from the seed just set,
/// in parameter order), every replica of a data-parallel run starts from the same ones.
pub fn materialize<B: AutodiffBackend>(
    model: &mut LlavaForConditionalGeneration<B>,
    settings: &TrainSettings,
) {
    for (_, _, slot) in trainable(model, settings.layout, settings.projector_lr.is_some()) {
        match slot {
            Slot::W2(p) => drop(p.val()),
            Slot::W1(p) => drop(p.val()),
        }
    }
}

/// The trainable parameters' keys and element counts, in the order every rank sums them.
pub fn trainable_sizes<B: AutodiffBackend>(
    model: &mut LlavaForConditionalGeneration<B>,
    settings: &TrainSettings,
) -> Vec<(String, usize)> {
    trainable(model, settings.layout, settings.projector_lr.is_some())
        .into_iter()
        .map(|(k, _, slot)| {
            let numel = match slot {
                Slot::W2(p) => p.dims().iter().product(),
                Slot::W1(p) => p.dims()[0],
            };
            (k, numel)
        })
        .collect()
}

/// A copy of `model` (its parameters drawn first) on `device`, for another rank: the frozen
/// weights are shared where the device is the same, and the trainable parameters are new autodiff
/// leaves (a clone shares its graph nodes, and two threads' backward passes would meet in one graph).
pub fn replica<B: AutodiffBackend>(
    model: &mut LlavaForConditionalGeneration<B>,
    settings: &TrainSettings,
    device: &B::Device,
) -> LlavaForConditionalGeneration<B> {
    materialize(model, settings);
    let mut m = model.clone().fork(device);
    fresh_leaves(&mut m, settings);
    m
}

pub(crate) fn fresh_leaves<B: AutodiffBackend>(
    model: &mut LlavaForConditionalGeneration<B>,
    settings: &TrainSettings,
) {
    fn leaf<B: AutodiffBackend, const D: usize>(p: &mut Param<Tensor<B, D>>) {
        *p = Param::initialized(p.id, Tensor::from_inner(p.val().inner()).require_grad());
    }
    for (_, _, slot) in trainable(model, settings.layout, settings.projector_lr.is_some()) {
        match slot {
            Slot::W2(p) => leaf(p),
            Slot::W1(p) => leaf(p),
        }
    }
}

/// The optimizer step of `train` (and of `mmedpo bench train`): global gradient norm in one
/// reduction, clipping, the scheduled learning rate, AdamW on every trainable parameter (f32
/// masters; their moments in `moments`). Returns the norm before clipping and the learning rate.
pub fn optimizer_step<B: AutodiffBackend>(
    model: &mut LlavaForConditionalGeneration<B>,
    acc: &BTreeMap<String, Tensor<Inner<B>, 1>>,
    moments: &mut BTreeMap<String, Moments<Inner<B>>>,
    settings: &TrainSettings,
    step: usize,
    total: usize,
    warmup: usize,
) -> Result<(f64, f64)> {
    // One reduction and one device-to-host read for the global norm.
    let squares: Vec<Tensor<Inner<B>, 1>> =
        acc.values().map(|g| g.clone().square().sum()).collect();
    let norm = if squares.is_empty() {
        0.0
    } else {
        Tensor::cat(squares, 0)
            .sum()
            .into_scalar()
            .elem::<f64>()
            .sqrt()
    };
    if !norm.is_finite() {
        return Err(Error::NonFinite {
            step: step + 1,
            what: format!("the gradient norm ({norm})"),
            ids: String::new(),
        });
    }
    let clip = clip_factor(norm, settings.max_grad_norm);
    let lr = lr_at(settings.learning_rate, step, total, warmup);
    let proj_lr = settings.projector_lr.map(|p| lr_at(p, step, total, warmup));
    for (key, is_projector, slot) in
        trainable(model, settings.layout, settings.projector_lr.is_some())
    {
        let Some(g) = acc.get(&key) else { continue };
        let g = if clip < 1.0 {
            g.clone().mul_scalar(clip)
        } else {
            g.clone()
        };
        let lr = if is_projector {
            proj_lr.unwrap_or(lr)
        } else {
            lr
        };
        let mut st = moments.remove(&key);
        match slot {
            Slot::W2(p) => {
                let dims = p.dims();
                let cur = p.val().inner().flatten::<1>(0, 1);
                let new = settings
                    .adamw
                    .update(cur, g, &mut st, lr, step + 1)
                    .reshape(dims);
                *p = Param::initialized(p.id, Tensor::from_inner(new).require_grad());
            }
            Slot::W1(p) => {
                let new = settings
                    .adamw
                    .update(p.val().inner(), g, &mut st, lr, step + 1);
                *p = Param::initialized(p.id, Tensor::from_inner(new).require_grad());
            }
        }
        if let Some(st) = st {
            moments.insert(key, st);
        }
    }
    Ok((norm, lr))
}
