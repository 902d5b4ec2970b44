//! Optimisers (PyTorch's update rules): SGD, SGD with momentum, Adam, AdamW (decoupled weight
//! decay), RMSprop. State is kept per parameter tensor, indexed in network parameter order.

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptimizerKind {
    Sgd,
    Momentum,
    Adam,
    AdamW,
    RmsProp,
}

impl OptimizerKind {
    pub fn parse(name: &str) -> Result<OptimizerKind> {
        match name.to_ascii_lowercase().as_str() {
            "sgd" => Ok(OptimizerKind::Sgd),
            "momentum" => Ok(OptimizerKind::Momentum),
            "adam" => Ok(OptimizerKind::Adam),
            "adamw" => Ok(OptimizerKind::AdamW),
            "rmsprop" => Ok(OptimizerKind::RmsProp),
            _ => Err(Error::Value(format!(
                "unknown optimizer {name:?}; expected 'sgd', 'momentum', 'adam', 'adamw' or 'rmsprop'"
            ))),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct OptimConfig {
    pub kind: OptimizerKind,
    pub momentum: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// L2 penalty added to the gradient (SGD, momentum, Adam, RMSprop) or decoupled decay (AdamW).
    pub weight_decay: f32,
    /// RMSprop's smoothing constant.
    pub alpha: f32,
}

impl OptimConfig {
    pub fn new(kind: OptimizerKind) -> OptimConfig {
        OptimConfig {
            kind,
            momentum: 0.9,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: if kind == OptimizerKind::AdamW { 0.01 } else { 0.0 },
            alpha: 0.99,
        }
    }
}

#[derive(Default)]
struct State {
    first: Vec<f32>,
    second: Vec<f32>,
}

pub struct Optimizer {
    config: OptimConfig,
    step: u64,
    states: Vec<State>,
}

impl Optimizer {
    pub fn new(config: OptimConfig, param_count: usize) -> Optimizer {
        Optimizer { config, step: 0, states: (0..param_count).map(|_| State::default()).collect() }
    }

    /// Call once per optimisation step, before the per-tensor updates.
    pub fn begin_step(&mut self) {
        self.step += 1;
    }

    pub fn update(&mut self, index: usize, w: &mut [f32], g: &[f32], lr: f32) {
        let c = self.config;
        let state = &mut self.states[index];
        let need = |v: &mut Vec<f32>| {
            if v.len() != w.len() {
                *v = vec![0.0; w.len()];
            }
        };
        let l2 = |wi: f32, gi: f32| if c.weight_decay != 0.0 && c.kind != OptimizerKind::AdamW { gi + c.weight_decay * wi } else { gi };
        match c.kind {
            OptimizerKind::Sgd => w.iter_mut().zip(g).for_each(|(wi, &gi)| *wi -= lr * l2(*wi, gi)),
            OptimizerKind::Momentum => {
                need(&mut state.first);
                for ((wi, &gi), v) in w.iter_mut().zip(g).zip(state.first.iter_mut()) {
                    *v = c.momentum * *v + l2(*wi, gi);
                    *wi -= lr * *v;
                }
            }
            OptimizerKind::Adam | OptimizerKind::AdamW => {
                need(&mut state.first);
                need(&mut state.second);
                let t = self.step as i32;
                let bc1 = 1.0 - (c.beta1 as f64).powi(t);
                let bc2 = 1.0 - (c.beta2 as f64).powi(t);
                let decay = if c.kind == OptimizerKind::AdamW { 1.0 - lr * c.weight_decay } else { 1.0 };
                for (((wi, &gi), m), v) in w.iter_mut().zip(g).zip(state.first.iter_mut()).zip(state.second.iter_mut()) {
                    let gi = l2(*wi, gi);
                    *m = c.beta1 * *m + (1.0 - c.beta1) * gi;
                    *v = c.beta2 * *v + (1.0 - c.beta2) * gi * gi;
                    let m_hat = *m as f64 / bc1;
                    let v_hat = *v as f64 / bc2;
                    *wi = *wi * decay - (lr as f64 * m_hat / (v_hat.sqrt() + c.eps as f64)) as f32;
                }
            }
            OptimizerKind::RmsProp => {
                need(&mut state.second);
                for ((wi, &gi), s) in w.iter_mut().zip(g).zip(state.second.iter_mut()) {
                    let gi = l2(*wi, gi);
                    *s = c.alpha * *s + (1.0 - c.alpha) * gi * gi;
                    *wi -= lr * gi / (s.sqrt() + c.eps);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_optimizer_descends_a_quadratic() {
        for kind in [OptimizerKind::Sgd, OptimizerKind::Momentum, OptimizerKind::Adam, OptimizerKind::AdamW, OptimizerKind::RmsProp] {
            let mut opt = Optimizer::new(OptimConfig::new(kind), 1);
            let mut w = vec![3.0f32, -2.0];
            for _ in 0..300 {
                opt.begin_step();
                let g: Vec<f32> = w.iter().map(|v| 2.0 * v).collect();
                opt.update(0, &mut w, &g, 0.05);
            }
            assert!(w.iter().all(|v| v.abs() < 0.1), "{kind:?}: {w:?}");
        }
    }
}
