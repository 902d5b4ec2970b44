//! CPU math. `Schedule` picks the loop structure — never the result: `Normal` is plain loops with
//! f64 accumulators, `Tiled` cache-blocked on one core, `Parallel` the same blocks spread over all
//! cores with rayon (fixed block boundaries, so results do not depend on the thread count).

pub mod attention;
pub mod blocks;
pub mod conv;
pub mod dense;
pub mod gemv;
pub mod rows;
pub mod simd;
pub mod softmax;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Schedule {
    Normal,
    Tiled,
    Parallel,
}

impl Schedule {
    pub const ALL: [Schedule; 3] = [Schedule::Normal, Schedule::Tiled, Schedule::Parallel];

    pub fn parse(name: &str) -> Result<Schedule> {
        match name.to_ascii_lowercase().as_str() {
            "normal" => Ok(Schedule::Normal),
            "tiled" => Ok(Schedule::Tiled),
            "parallel" => Ok(Schedule::Parallel),
            _ => Err(Error::Value(format!(
                "unknown mode {name:?}; expected 'normal', 'tiled' or 'parallel'"
            ))),
        }
    }

    /// (a(), b()): side by side on the rayon pool for `Parallel` (independent products that read
    /// the same input, e.g. Q/K/V projections, keep both cores busy between them instead of
    /// idling at each one's end), one after the other otherwise. The results do not depend on it.
    pub fn both<A: Send, B: Send>(self, a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B + Send) -> (A, B) {
        if self == Schedule::Parallel {
            rayon::join(a, b)
        } else {
            (a(), b())
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Schedule::Normal => "normal",
            Schedule::Tiled => "tiled",
            Schedule::Parallel => "parallel",
        }
    }
}
