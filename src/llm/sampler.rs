//! Sampler: picks the next token from a row of logits with HuggingFace semantics — repetition
//! penalty, then greedy (temperature 0) or temperature → top-k → top-p → min-p and a seeded draw,
//! so the same seed gives the same tokens.

use crate::error::{Error, Result};
use crate::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingConfig {
    /// 0: greedy (argmax); otherwise logits are divided by it.
    pub temperature: f32,
    /// Keep the k most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches top_p (1: all).
    pub top_p: f32,
    /// Drop tokens less likely than min_p × the most likely one's probability (0: none).
    pub min_p: f32,
    /// > 1 discourages the tokens among the last `repetition_window` ones (1: off).
    pub repetition_penalty: f32,
    pub repetition_window: usize,
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> SamplingConfig {
        SamplingConfig { temperature: 0.0, top_k: 0, top_p: 1.0, min_p: 0.0, repetition_penalty: 1.0, repetition_window: 64, seed: 0 }
    }
}

impl SamplingConfig {
    /// Every field in its domain; errors name the field.
    pub fn check(&self) -> Result<()> {
        let bad = |field: &str, v: f32, domain: &str| Err(Error::Value(format!("{field} must be {domain}, got {v}")));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad("temperature", self.temperature, "≥ 0");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", self.top_p, "in (0, 1]");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p", self.min_p, "in [0, 1]");
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad("repetition_penalty", self.repetition_penalty, "> 0");
        }
        Ok(())
    }
}

pub struct Sampler {
    config: SamplingConfig,
    rng: Rng,
}

impl Sampler {
    pub fn new(config: SamplingConfig) -> Result<Sampler> {
        config.check()?;
        Ok(Sampler { config, rng: Rng::new(config.seed) })
    }

    /// Whether the choice is the plain argmax of the logits (a GPU can make it on its own).
    pub fn is_greedy(&self) -> bool {
        self.config.temperature == 0.0 && self.config.repetition_penalty == 1.0
    }

    /// The next token for `logits` (changed in place by the penalty); `history` is every token so
    /// far (prompt and generated).
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let c = self.config;
        if c.repetition_penalty != 1.0 {
            penalize(logits, &history[history.len().saturating_sub(c.repetition_window)..], c.repetition_penalty);
        }
        if c.temperature == 0.0 {
            return argmax(logits);
        }
        // Candidates (token, probability), most likely first; ties keep the lower id first.
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b)));
        if c.top_k > 0 {
            order.truncate(c.top_k);
        }
        let mut probs = softmax(order.iter().map(|&t| logits[t as usize] / c.temperature));
        if c.top_p < 1.0 {
            let mut total = 0.0;
            let keep = probs.iter().position(|&p| {
                total += p;
                total >= c.top_p as f64
            });
            probs.truncate(keep.map_or(probs.len(), |i| i + 1));
        }
        if c.min_p > 0.0 {
            let floor = c.min_p as f64 * probs[0];
            probs.truncate(probs.iter().position(|&p| p < floor).unwrap_or(probs.len()).max(1));
        }
        let r = self.rng.next_f64() * probs.iter().sum::<f64>();
        let mut total = 0.0;
        for (i, &p) in probs.iter().enumerate() {
            total += p;
            if total > r {
                return order[i];
            }
        }
        order[probs.len() - 1]
    }
}

/// HF's repetition penalty: each distinct recent token's logit is divided by `penalty` when
/// positive, multiplied when negative.
fn penalize(logits: &mut [f32], recent: &[u32], penalty: f32) {
    let mut seen = std::collections::HashSet::new();
    for &t in recent {
        if let (true, Some(v)) = (seen.insert(t), logits.get_mut(t as usize)) {
            *v = if *v > 0.0 { *v / penalty } else { *v * penalty };
        }
    }
}

/// The first index of the largest logit.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Probabilities (f64, max-subtracted) of logits given in descending order.
fn softmax(logits: impl Iterator<Item = f32>) -> Vec<f64> {
    let logits: Vec<f64> = logits.map(f64::from).collect();
    let max = logits.first().copied().unwrap_or(0.0);
    let exps: Vec<f64> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        vec![1.0, 3.0, -2.0, 2.5, 0.0, 3.0]
    }

    #[test]
    fn greedy_takes_the_first_maximum_after_the_penalty() {
        let mut s = Sampler::new(SamplingConfig::default()).unwrap();
        assert_eq!(s.sample(&mut logits(), &[]), 1);
        let config = SamplingConfig { repetition_penalty: 2.0, repetition_window: 2, ..Default::default() };
        let mut s = Sampler::new(config).unwrap();
        let mut l = logits();
        // Token 1 falls out of the window; 5 and 2 are penalised (3 → 1.5, −2 → −4).
        assert_eq!(s.sample(&mut l, &[1, 5, 2]), 1);
        assert_eq!((l[5], l[2]), (1.5, -4.0));
    }

    #[test]
    fn same_seed_same_tokens_and_filters_restrict_the_candidates() {
        let draw = |config: SamplingConfig| {
            let mut s = Sampler::new(config).unwrap();
            (0..200).map(|_| s.sample(&mut logits(), &[])).collect::<Vec<u32>>()
        };
        let base = SamplingConfig { temperature: 1.0, seed: 9, ..Default::default() };
        assert_eq!(draw(base), draw(base));
        assert_ne!(draw(base), draw(SamplingConfig { seed: 10, ..base }));
        assert!(draw(SamplingConfig { top_k: 2, ..base }).iter().all(|&t| t == 1 || t == 5));
        // p(1) = p(5) ≈ 0.35 each, p(3) ≈ 0.21: top_p 0.6 keeps 1 and 5 only.
        assert!(draw(SamplingConfig { top_p: 0.6, ..base }).iter().all(|&t| t == 1 || t == 5));
        // min_p 0.5 drops everything below half of p(1): keeps 1, 5 and 3 (ratio e^−0.5 ≈ 0.61).
        let kept = draw(SamplingConfig { min_p: 0.5, ..base });
        assert!(kept.iter().all(|&t| [1, 3, 5].contains(&t)) && kept.contains(&3));
        assert!(Sampler::new(SamplingConfig { top_p: 0.0, ..base }).is_err());
    }
}
