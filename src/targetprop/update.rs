//! Applying a pass's weight changes with momentum: per tensor v = μ·v + (1 − μ)·Δ, W += v on
//! the FP32 master, then the tensor re-morphs to its dtype (update_master). All new values are
//! computed and checked first: a non-finite one leaves every weight and velocity as it was.

use crate::error::Result;
use crate::layers::Param;
use std::collections::HashMap;
use std::sync::Arc;

/// Momentum buffers, one per tensor (the Arc is kept so an address is never reused).
#[derive(Default)]
pub struct Velocity {
    buffers: HashMap<usize, (Param, Vec<f32>)>,
}

fn key(p: &Param) -> usize {
    Arc::as_ptr(p) as usize
}

impl Velocity {
    pub fn clear(&mut self) {
        self.buffers.clear();
    }

    /// Sum the changes per tensor and apply them. Returns the reason when nothing was applied
    /// because a value would become NaN or infinite.
    pub fn apply(&mut self, changes: Vec<(Param, Vec<f32>)>, momentum: f32) -> Result<Option<String>> {
        let mut order: Vec<Param> = Vec::new();
        let mut sums: HashMap<usize, Vec<f32>> = HashMap::new();
        for (p, change) in changes {
            match sums.get_mut(&key(&p)) {
                Some(acc) => acc.iter_mut().zip(&change).for_each(|(a, b)| *a += b),
                None => {
                    sums.insert(key(&p), change);
                    order.push(p);
                }
            }
        }
        let mut staged = Vec::with_capacity(order.len());
        for p in order {
            let change = &sums[&key(&p)];
            let store = p.read().unwrap();
            let master = store.master()?;
            let mut velocity = match self.buffers.get(&key(&p)) {
                Some((_, v)) if v.len() == master.len() => v.clone(),
                _ => vec![0.0; master.len()],
            };
            velocity.iter_mut().zip(change).for_each(|(v, &d)| *v = momentum * *v + (1.0 - momentum) * d);
            let weights: Vec<f32> = master.iter().zip(&velocity).map(|(w, v)| w + v).collect();
            if let Some(i) = weights.iter().position(|w| !w.is_finite()) {
                return Ok(Some(format!(
                    "a weight of a tensor of shape {:?} would become {} (index {i}); weights kept from before this update",
                    store.shape(),
                    weights[i]
                )));
            }
            drop(store);
            staged.push((p, velocity, weights));
        }
        for (p, velocity, weights) in staged {
            p.write().unwrap().update_master(|m| m.copy_from_slice(&weights))?;
            self.buffers.insert(key(&p), (p, velocity));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;
    use crate::dtype::DType;
    use crate::layers::new_param;

    #[test]
    fn momentum_rule_and_remorph() {
        let p = new_param(vec![0.5, -0.5], vec![2], Codec::Standard).unwrap();
        p.write().unwrap().morph(DType::Binary).unwrap();
        let mut v = Velocity::default();
        v.apply(vec![(p.clone(), vec![1.0, 0.0]), (p.clone(), vec![1.0, 0.0])], 0.5).unwrap();
        // v = 0.5·2 = 1 → w = 1.5; the binary version follows the new master.
        assert_eq!(p.read().unwrap().master().unwrap(), &[1.5, -0.5]);
        v.apply(vec![(p.clone(), vec![0.0, 0.0])], 0.5).unwrap();
        assert_eq!(p.read().unwrap().master().unwrap(), &[2.0, -0.5]);
        let signs: Vec<f32> = p.write().unwrap().dequantize(DType::Binary).unwrap();
        assert!(signs[0] > 0.0 && signs[1] < 0.0);
    }

    #[test]
    fn non_finite_changes_leave_everything() {
        let p = new_param(vec![1.0], vec![1], Codec::Standard).unwrap();
        let mut v = Velocity::default();
        let reason = v.apply(vec![(p.clone(), vec![f32::INFINITY])], 0.0).unwrap();
        assert!(reason.unwrap().contains("inf"));
        assert_eq!(p.read().unwrap().master().unwrap(), &[1.0]);
    }
}
