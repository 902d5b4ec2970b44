//! Learning-rate schedules, evaluated per optimisation step: constant, cosine, linear, step and
//! exponential decay, each with an optional linear warm-up.

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScheduleKind {
    Constant,
    /// Cosine from lr to min_lr over the run.
    Cosine,
    /// Linear from lr to min_lr over the run.
    Linear,
    /// Multiply by gamma every `step_size` epochs.
    Step { step_size: usize, gamma: f32 },
    /// Multiply by gamma every epoch.
    Exponential { gamma: f32 },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    pub kind: ScheduleKind,
    pub warmup_steps: usize,
    pub min_lr: f32,
}

impl LrSchedule {
    pub fn constant() -> LrSchedule {
        LrSchedule { kind: ScheduleKind::Constant, warmup_steps: 0, min_lr: 0.0 }
    }

    pub fn parse(name: &str, step_size: usize, gamma: f32, warmup_steps: usize, min_lr: f32) -> Result<LrSchedule> {
        let kind = match name.to_ascii_lowercase().as_str() {
            "" | "constant" | "none" => ScheduleKind::Constant,
            "cosine" => ScheduleKind::Cosine,
            "linear" => ScheduleKind::Linear,
            "step" => {
                if step_size == 0 {
                    return Err(Error::Value("schedule 'step' needs step_size ≥ 1".into()));
                }
                ScheduleKind::Step { step_size, gamma }
            }
            "exponential" | "exp" => ScheduleKind::Exponential { gamma },
            _ => {
                return Err(Error::Value(format!(
                    "unknown schedule {name:?}; expected None, 'constant', 'cosine', 'linear', 'step' or 'exponential'"
                )))
            }
        };
        Ok(LrSchedule { kind, warmup_steps, min_lr })
    }

    /// Learning rate at optimisation step `step` (0-based) of `total_steps`, in epoch `epoch`.
    pub fn lr(&self, base: f32, step: usize, total_steps: usize, epoch: usize) -> f32 {
        if step < self.warmup_steps {
            return base * (step + 1) as f32 / self.warmup_steps as f32;
        }
        let span = total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        let (base, min) = (base as f64, self.min_lr as f64);
        (match self.kind {
            ScheduleKind::Constant => base,
            ScheduleKind::Cosine => min + (base - min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
            ScheduleKind::Linear => base + (min - base) * progress,
            ScheduleKind::Step { step_size, gamma } => base * (gamma as f64).powi((epoch / step_size) as i32),
            ScheduleKind::Exponential { gamma } => base * (gamma as f64).powi(epoch as i32),
        }) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_of_the_schedules() {
        let cos = LrSchedule::parse("cosine", 0, 0.0, 0, 0.0).unwrap();
        assert_eq!(cos.lr(1.0, 0, 100, 0), 1.0);
        assert!((cos.lr(1.0, 50, 100, 0) - 0.5).abs() < 1e-6);
        let warm = LrSchedule::parse("constant", 0, 0.0, 4, 0.0).unwrap();
        assert_eq!(warm.lr(1.0, 1, 100, 0), 0.5);
        let step = LrSchedule::parse("step", 2, 0.1, 0, 0.0).unwrap();
        assert!((step.lr(1.0, 0, 10, 5) - 0.01).abs() < 1e-7);
    }
}
