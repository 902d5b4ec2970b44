//! Activation functions: names (reference network.md §1), forward and derivative. The derivative
//! is the true derivative of the forward (the reference mixes GELU forms: quirk 21, not copied).

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Activation {
    Relu,
    Silu,
    /// GELU, tanh approximation (the reference's `GELU`).
    Gelu,
    /// GELU with the exact normal CDF (erf).
    GeluExact,
    Tanh,
    Sigmoid,
    LeakyRelu,
    Relu2,
    Linear,
}

use Activation::*;

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const GELU_C: f64 = 0.044_715;

impl Activation {
    pub const ALL: [Activation; 9] =
        [Relu, Silu, Gelu, GeluExact, Tanh, Sigmoid, LeakyRelu, Relu2, Linear];

    /// The reference's String() name (written to JSON).
    pub fn name(self) -> &'static str {
        match self {
            Relu => "ReLU",
            Silu => "Silu",
            Gelu => "GELU",
            GeluExact => "GELUExact",
            Tanh => "Tanh",
            Sigmoid => "Sigmoid",
            LeakyRelu => "LeakyReLU",
            Relu2 => "ReLU2",
            Linear => "Linear",
        }
    }

    /// Case-insensitive parse. Empty means Linear (as the reference's build JSON); an unknown
    /// name is an error (the reference silently uses Linear).
    pub fn parse(name: &str) -> Result<Activation> {
        let upper = name.trim().to_ascii_uppercase().replace(['-', ' '], "_");
        Ok(match upper.as_str() {
            "" | "LINEAR" | "IDENTITY" | "NONE" => Linear,
            "RELU" => Relu,
            "SILU" | "SWISH" => Silu,
            "GELU" | "GELU_TANH" => Gelu,
            "GELUEXACT" | "GELU_EXACT" | "GELU_ERF" => GeluExact,
            "TANH" => Tanh,
            "SIGMOID" => Sigmoid,
            "LEAKYRELU" | "LEAKY_RELU" => LeakyRelu,
            "RELU2" | "6" => Relu2,
            _ => {
                return Err(Error::Spec(format!(
                    "unknown activation {name:?}; expected relu, silu, gelu, gelu_exact, tanh, \
                     sigmoid, leaky_relu, relu2 or linear"
                )))
            }
        })
    }

    /// f(x), evaluated in f64 and rounded once.
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Relu => x.max(0.0),
            Linear => x,
            LeakyRelu => {
                if x >= 0.0 {
                    x
                } else {
                    0.01 * x
                }
            }
            Relu2 => {
                let r = x.max(0.0);
                r * r
            }
            _ => {
                let v = x as f64;
                (match self {
                    Silu => v * sigmoid(v),
                    Gelu => 0.5 * v * (1.0 + (SQRT_2_OVER_PI * (v + GELU_C * v * v * v)).tanh()),
                    GeluExact => 0.5 * v * (1.0 + erf(v / std::f64::consts::SQRT_2)),
                    Tanh => v.tanh(),
                    Sigmoid => sigmoid(v),
                    _ => unreachable!(),
                }) as f32
            }
        }
    }

    /// f'(x) at the pre-activation x.
    #[inline]
    pub fn derivative(self, x: f32) -> f32 {
        let v = x as f64;
        (match self {
            Relu => (v > 0.0) as i32 as f64,
            Linear => 1.0,
            LeakyRelu => {
                if v >= 0.0 {
                    1.0
                } else {
                    0.01
                }
            }
            Relu2 => {
                if v > 0.0 {
                    2.0 * v
                } else {
                    0.0
                }
            }
            Silu => {
                let s = sigmoid(v);
                s * (1.0 + v * (1.0 - s))
            }
            Gelu => {
                let u = SQRT_2_OVER_PI * (v + GELU_C * v * v * v);
                let t = u.tanh();
                let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * v * v);
                0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * du
            }
            GeluExact => {
                let cdf = 0.5 * (1.0 + erf(v / std::f64::consts::SQRT_2));
                let pdf = (-0.5 * v * v).exp() / (2.0 * std::f64::consts::PI).sqrt();
                cdf + v * pdf
            }
            Tanh => 1.0 - v.tanh().powi(2),
            Sigmoid => {
                let s = sigmoid(v);
                s * (1.0 - s)
            }
        }) as f32
    }

    pub fn apply_slice(self, values: &mut [f32]) {
        if self != Linear {
            values.iter_mut().for_each(|v| *v = self.apply(*v));
        }
    }
}

#[inline]
fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

/// The error function (libm's, already in the dependency tree through wgpu; std's is unstable).
pub fn erf(x: f64) -> f64 {
    libm::erf(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivatives_match_finite_differences() {
        for act in Activation::ALL {
            for &x in &[-2.3f64, -0.7, 0.31, 1.9] {
                let h = 1e-3;
                let f = |v: f64| act.apply(v as f32) as f64;
                let numeric = (f(x + h) - f(x - h)) / (2.0 * h);
                let analytic = act.derivative(x as f32) as f64;
                assert!((numeric - analytic).abs() < 2e-3, "{act:?} at {x}: {numeric} vs {analytic}");
            }
        }
    }

    #[test]
    fn erf_known_values() {
        assert!((erf(0.5) - 0.520_499_877_813_046_5).abs() < 2e-7);
        assert!((erf(-1.5) + 0.966_105_146_475_310_7).abs() < 2e-7);
    }
}
