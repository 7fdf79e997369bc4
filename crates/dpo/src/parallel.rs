//! Data parallelism over devices in one process, on burn-collective (Burn's collective operations,
//! backend-agnostic: threads on Flex, CUDA devices; multi-node through its global orchestrator).
//!
//! Each device's replica computes its share of a step's micro-batches; then every rank calls, in
//! the same order: one all-reduce of the step's scalars (a failure flag, the loss and metric sums,
//! which gradients exist), and, unless some rank failed, one all-reduce of all gradients flattened
//! into one tensor. The sums are identical on every rank, so is the AdamW step that follows. After
//! rank 0 has written the step's outputs, one more tiny all-reduce tells every rank whether that
//! worked: no rank ever waits for a peer that has stopped.

use std::collections::BTreeMap;

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_collective::{CollectiveConfig, PeerId, ReduceOperation};

use crate::error::{Error, Result};
use crate::optim::Moments;
use crate::train::Local;

type Inner<B> = <B as AutodiffBackend>::InnerBackend;

/// This thread's place in the collective.
pub struct Peer {
    id: PeerId,
    rank: usize,
}

/// Forgets any earlier collective of this backend in this process (a run that failed midway).
pub fn reset<B: Backend>() {
    burn_collective::reset_collective::<B>();
}

/// The optimizer moments on `device`.
pub(crate) fn moments_to<B: Backend>(
    moments: &BTreeMap<String, Moments<B>>,
    device: &B::Device,
) -> BTreeMap<String, Moments<B>> {
    moments
        .iter()
        .map(|(k, m)| {
            (
                k.clone(),
                Moments {
                    m: m.m.clone().to_device(device),
                    v: m.v.clone().to_device(device),
                },
            )
        })
        .collect()
}

fn collective(e: burn_collective::CollectiveError) -> Error {
    Error::Collective(format!("{e:?}"))
}

/// The step scalars summed before the gradients: the failure flag, the loss, the six metric sums
/// and the pair count; then one has-a-gradient flag per trainable key.
const HEAD: usize = 9;

impl Peer {
    /// Registers rank `rank` of `world` on `device`.
    pub fn register<B: Backend>(rank: usize, world: usize, device: &B::Device) -> Result<Self> {
        let id = PeerId::from(rank);
        burn_collective::register::<B>(
            id,
            device.clone(),
            CollectiveConfig::default().with_num_devices(world),
        )
        .map_err(collective)?;
        Ok(Self { id, rank })
    }

    fn sum<B: Backend>(&self, t: Tensor<B, 1>) -> Result<Tensor<B, 1>> {
        let out = burn_collective::all_reduce::<B>(
            self.id,
            t.into_primitive().tensor(),
            ReduceOperation::Sum,
        )
        .map_err(collective)?;
        Ok(Tensor::from_primitive(TensorPrimitive::Float(out)))
    }

    /// Sums a step over the ranks: `local` is this rank's (or its failure), `keys` every trainable
    /// parameter with its element count, in one order on every rank.
    pub(crate) fn sum_step<B: AutodiffBackend>(
        &self,
        local: Result<Local<B>>,
        keys: &[(String, usize)],
        step: usize,
        device: &B::Device,
    ) -> Result<Local<B>> {
        let (failed, l, err) = match local {
            Ok(l) => (0.0, l, None),
            Err(e) => (1.0, Local::default(), Some(e)),
        };
        let Local {
            acc,
            loss,
            metrics,
            count,
            ids,
        } = l;
        let mut scalars = vec![failed, loss];
        scalars.extend(metrics);
        scalars.push(count as f64);
        debug_assert_eq!(scalars.len(), HEAD);
        scalars.extend(
            keys.iter()
                .map(|(k, _)| f64::from(u8::from(acc.contains_key(k)))),
        );
        let len = scalars.len();
        let summed = self.sum(Tensor::<Inner<B>, 1>::from_data(
            TensorData::new(scalars.iter().map(|&x| x as f32).collect(), [len]),
            device,
        ))?;
        let s: Vec<f64> = summed
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .unwrap_or_default()
            .into_iter()
            .map(f64::from)
            .collect();
        if let Some(e) = err {
            return Err(e);
        }
        if s[0] > 0.0 {
            return Err(Error::PeerStopped {
                step: step + 1,
                rank: self.rank,
            });
        }
        let mut out = self.sum_gradients(&acc, keys, device)?;
        for ((k, _), &flag) in keys.iter().zip(&s[HEAD..]) {
            if flag == 0.0 {
                out.remove(k); // no rank had a gradient for it
            }
        }
        Ok(Local {
            acc: out,
            loss: s[1],
            metrics: [s[2], s[3], s[4], s[5], s[6], s[7]],
            count: s[8].round() as usize,
            ids,
        })
    }

    /// Sums gradients over the ranks in one all-reduce: all of them flattened into one tensor in
    /// `keys` order (keys with element counts, the same on every rank; zeros where this rank has
    /// none), then cut back.
    pub fn sum_gradients<B: Backend>(
        &self,
        grads: &BTreeMap<String, Tensor<B, 1>>,
        keys: &[(String, usize)],
        device: &B::Device,
    ) -> Result<BTreeMap<String, Tensor<B, 1>>> {
        let parts: Vec<Tensor<B, 1>> = keys
            .iter()
            .map(|(k, numel)| {
                grads
                    .get(k)
                    .cloned()
                    .unwrap_or_else(|| Tensor::zeros([*numel], device))
            })
            .collect();
        let flat = self.sum(Tensor::cat(parts, 0))?;
        let mut out = BTreeMap::new();
        let mut offset = 0;
        for (k, numel) in keys {
            out.insert(k.clone(), flat.clone().narrow(0, offset, *numel));
            offset += numel;
        }
        Ok(out)
    }

    /// Whether every rank finished step `done` (`ok`: this one did); a rank that did is told
    /// with an error when another did not.
    pub(crate) fn agree<B: Backend>(
        &self,
        ok: bool,
        done: usize,
        device: &B::Device,
    ) -> Result<()> {
        let flag = Tensor::<B, 1>::from_data(
            TensorData::new(vec![if ok { 0.0f32 } else { 1.0 }], [1]),
            device,
        );
        let failed = self.sum(flag)?.into_scalar();
        let failed: f32 = burn::tensor::ElementConversion::elem(failed);
        if ok && failed > 0.0 {
            return Err(Error::PeerStopped {
                step: done,
                rank: self.rank,
            });
        }
        Ok(())
    }

    /// Leaves the collective.
    pub fn finish<B: Backend>(self) {
        let _ = burn_collective::finish_collective::<B>(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    type B = mmedpo_core::backend::Cpu;

    #[test]
    fn two_peers_sum_their_tensors() {
        reset::<B>();
        let out: Vec<Vec<f32>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|r| {
                    s.spawn(move || {
                        let device = Default::default();
                        let p = Peer::register::<B>(r, 2, &device).unwrap();
                        let t = Tensor::<B, 1>::from_data(
                            TensorData::new(vec![1.0f32 + r as f32, 10.0 * (r as f32 + 1.0)], [2]),
                            &device,
                        );
                        let v = p.sum(t).unwrap().into_data().to_vec::<f32>().unwrap();
                        let t2 = Tensor::<B, 1>::from_data(
                            TensorData::new(vec![r as f32; 5], [5]),
                            &device,
                        );
                        let v2 = p.sum(t2).unwrap().into_data().to_vec::<f32>().unwrap();
                        p.finish::<B>();
                        [v, v2].concat()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for o in &out {
            assert_eq!(o, &vec![3.0, 30.0, 1.0, 1.0, 1.0, 1.0, 1.0], "{out:?}");
        }
    }
}
