//! TargetPropConfig: the reference's TweenConfig fields with its defaults, plus the two
//! thresholds the reference hard-codes; every field is used (quirk 24 fixed) and checked.

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TargetPropConfig {
    /// Samples per local update: a step over B samples makes ⌈B / batch_size⌉ updates.
    pub batch_size: usize,
    /// true: chain-rule targets (act + gradient_scale·descent direction) and gradient updates;
    /// false: true target propagation (targets pushed back through the weights, local updates).
    pub use_chain_rule: bool,
    /// Chain-rule mode: how far a layer's target lies along its descent direction.
    pub gradient_scale: f32,
    /// A layer k steps before the output learns at depth_scale_factor^k times the rate.
    pub depth_scale_factor: f32,
    /// Velocity rule: v = momentum·v + (1 − momentum)·Δ; w += v.
    pub momentum: f32,
    /// The rate `step` uses when the caller passes none.
    pub learning_rate: f32,
    /// Every estimated (hidden) target is clamped to [−activation_clamp, activation_clamp].
    pub activation_clamp: f32,
    /// Target mode: pathways whose |weight| is below this carry no target back.
    pub weight_threshold: f32,
    /// A link whose budget is below this is gated (no update this step).
    pub min_budget: f32,
}

impl Default for TargetPropConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A field's value as it comes from a caller (a dict, keyword arguments).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldValue {
    Bool(bool),
    Int(i64),
    Float(f64),
}

impl TargetPropConfig {
    /// The reference's defaults (DefaultTweenConfig), and its hard-coded thresholds.
    pub const DEFAULT: TargetPropConfig = TargetPropConfig {
        batch_size: 1,
        use_chain_rule: true,
        gradient_scale: 0.1,
        depth_scale_factor: 1.1,
        momentum: 0.9,
        learning_rate: 0.01,
        activation_clamp: 10.0,
        weight_threshold: 0.01,
        min_budget: 0.2,
    };

    pub const FIELDS: [&'static str; 9] = [
        "batch_size",
        "use_chain_rule",
        "gradient_scale",
        "depth_scale_factor",
        "momentum",
        "learning_rate",
        "activation_clamp",
        "weight_threshold",
        "min_budget",
    ];

    /// Set one field by name; an unknown name or a value of the wrong kind is an error naming it.
    pub fn set(&mut self, name: &str, value: FieldValue) -> Result<()> {
        let wrong = |want: &str| Error::Value(format!("TargetPropConfig field {name:?} must be {want}, got {value:?}"));
        let float = || match value {
            FieldValue::Float(v) => Ok(v as f32),
            FieldValue::Int(v) => Ok(v as f32),
            FieldValue::Bool(_) => Err(wrong("a number")),
        };
        match name {
            "batch_size" => match value {
                FieldValue::Int(v) if v >= 1 => self.batch_size = v as usize,
                _ => return Err(wrong("an integer ≥ 1")),
            },
            "use_chain_rule" => match value {
                FieldValue::Bool(v) => self.use_chain_rule = v,
                _ => return Err(wrong("a bool")),
            },
            "gradient_scale" => self.gradient_scale = float()?,
            "depth_scale_factor" => self.depth_scale_factor = float()?,
            "momentum" => self.momentum = float()?,
            "learning_rate" => self.learning_rate = float()?,
            "activation_clamp" => self.activation_clamp = float()?,
            "weight_threshold" => self.weight_threshold = float()?,
            "min_budget" => self.min_budget = float()?,
            _ => {
                return Err(Error::Value(format!(
                    "unknown TargetPropConfig field {name:?}; expected one of {}",
                    Self::FIELDS.join(", ")
                )))
            }
        }
        Ok(())
    }

    /// Every field in its domain; the error names the first one that is not.
    pub fn validate(&self) -> Result<()> {
        let checks: [(&str, f32, bool, &str); 7] = [
            ("gradient_scale", self.gradient_scale, self.gradient_scale.is_finite() && self.gradient_scale > 0.0, "a finite number > 0"),
            ("depth_scale_factor", self.depth_scale_factor, self.depth_scale_factor.is_finite() && self.depth_scale_factor > 0.0, "a finite number > 0"),
            ("momentum", self.momentum, (0.0..1.0).contains(&self.momentum), "in [0, 1)"),
            ("learning_rate", self.learning_rate, self.learning_rate.is_finite() && self.learning_rate >= 0.0, "a finite number ≥ 0"),
            ("activation_clamp", self.activation_clamp, self.activation_clamp > 0.0 && !self.activation_clamp.is_nan(), "a number > 0 (inf: no clamp)"),
            ("weight_threshold", self.weight_threshold, self.weight_threshold.is_finite() && self.weight_threshold >= 0.0, "a finite number ≥ 0"),
            ("min_budget", self.min_budget, (0.0..=1.0).contains(&self.min_budget), "in [0, 1]"),
        ];
        if self.batch_size == 0 {
            return Err(Error::Value("TargetPropConfig field \"batch_size\" must be an integer ≥ 1, got 0".into()));
        }
        for (name, value, ok, want) in checks {
            if !ok {
                return Err(Error::Value(format!("TargetPropConfig field {name:?} must be {want}, got {value}")));
            }
        }
        Ok(())
    }

    /// `learning_rate`, or the caller's rate when it gives one (checked like the field).
    pub fn rate(&self, lr: Option<f32>) -> Result<f32> {
        match lr {
            None => Ok(self.learning_rate),
            Some(v) if v.is_finite() && v >= 0.0 => Ok(v),
            Some(v) => Err(Error::Value(format!("lr must be a finite number ≥ 0, got {v}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_references_and_valid() {
        let c = TargetPropConfig::default();
        assert_eq!((c.batch_size, c.use_chain_rule, c.gradient_scale, c.depth_scale_factor), (1, true, 0.1, 1.1));
        assert_eq!((c.momentum, c.learning_rate, c.activation_clamp), (0.9, 0.01, 10.0));
        c.validate().unwrap();
    }

    #[test]
    fn errors_name_the_field() {
        let mut c = TargetPropConfig::default();
        let e = c.set("momentun", FieldValue::Float(0.5)).unwrap_err();
        assert!(e.to_string().contains("momentun"));
        let e = c.set("use_chain_rule", FieldValue::Int(1)).unwrap_err();
        assert!(e.to_string().contains("use_chain_rule"));
        c.set("momentum", FieldValue::Float(1.0)).unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("momentum"));
    }
}
