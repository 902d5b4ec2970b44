//! Losses: loss value (f64) and gradient with respect to the network output.
//! `cross_entropy` is PyTorch's: softmax over each row of logits, mean over rows (the reference
//! instead expects probabilities and averages over all elements; see docs/compat.md).

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    Mse,
    CrossEntropy,
}

impl Loss {
    pub fn parse(name: &str) -> Result<Loss> {
        match name.to_ascii_lowercase().as_str() {
            "mse" => Ok(Loss::Mse),
            "cross_entropy" | "crossentropy" | "ce" => Ok(Loss::CrossEntropy),
            _ => Err(Error::Value(format!("unknown loss {name:?}; expected 'mse' or 'cross_entropy'"))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Loss::Mse => "mse",
            Loss::CrossEntropy => "cross_entropy",
        }
    }

    /// Loss over a batch of `batch` rows of `width` outputs, and dL/dy.
    pub fn evaluate(self, y: &[f32], target: &[f32], batch: usize, width: usize) -> (f64, Vec<f32>) {
        debug_assert_eq!(y.len(), batch * width);
        debug_assert_eq!(target.len(), batch * width);
        match self {
            Loss::Mse => {
                let n = y.len().max(1) as f64;
                let loss = y.iter().zip(target).map(|(&a, &t)| ((a - t) as f64).powi(2)).sum::<f64>() / n;
                let grad = y.iter().zip(target).map(|(&a, &t)| (2.0 * (a - t) as f64 / n) as f32).collect();
                (loss, grad)
            }
            Loss::CrossEntropy => {
                let mut grad = vec![0f32; y.len()];
                let mut total = 0f64;
                let rows = batch.max(1) as f64;
                for ((row, t), g) in y.chunks_exact(width).zip(target.chunks_exact(width)).zip(grad.chunks_exact_mut(width)) {
                    let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
                    let sum_exp: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
                    let log_z = max + sum_exp.ln();
                    let t_sum: f64 = t.iter().map(|&v| v as f64).sum();
                    total += t.iter().zip(row).map(|(&tv, &v)| -(tv as f64) * (v as f64 - log_z)).sum::<f64>();
                    for ((gv, &v), &tv) in g.iter_mut().zip(row).zip(t) {
                        let p = (v as f64 - log_z).exp();
                        *gv = ((t_sum * p - tv as f64) / rows) as f32;
                    }
                }
                (total / rows, grad)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradients_match_finite_differences() {
        let y = vec![0.3f32, -1.2, 0.8, 2.0, 0.1, -0.4];
        let t = vec![0.0f32, 1.0, 0.0, 0.2, 0.3, 0.5];
        for loss in [Loss::Mse, Loss::CrossEntropy] {
            let (_, g) = loss.evaluate(&y, &t, 2, 3);
            for i in 0..y.len() {
                let h = 1e-3f32;
                let mut yp = y.clone();
                yp[i] += h;
                let mut ym = y.clone();
                ym[i] -= h;
                let step = (yp[i] - ym[i]) as f64; // the f32 perturbation actually applied
                let num = (loss.evaluate(&yp, &t, 2, 3).0 - loss.evaluate(&ym, &t, 2, 3).0) / step;
                assert!((num - g[i] as f64).abs() < 1e-4, "{loss:?} {i}: {num} vs {}", g[i]);
            }
        }
    }
}
