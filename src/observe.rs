//! Layer observers (reference dna_evolution.md §9): callbacks a network calls after each grid
//! layer's forward (with its output) and backward (with the gradient of its output), and the
//! summary statistics of such a tensor. The network keeps them in an `Observers` list; passes
//! check `is_empty()` first, so an unobserved network pays one length test per layer.

use crate::coord::Coord;
use crate::error::Result;
use std::sync::Arc;

/// Which pass an event comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    Forward,
    Backward,
}

impl Pass {
    pub fn name(self) -> &'static str {
        match self {
            Pass::Forward => "forward",
            Pass::Backward => "backward",
        }
    }
}

/// One grid layer's tensor: its output (forward) or the gradient of its output (backward),
/// `batch` samples of `shape`.
pub struct LayerEvent<'a> {
    pub pass: Pass,
    pub coord: Coord,
    pub layer_type: &'static str,
    pub values: &'a [f32],
    pub batch: usize,
    pub shape: &'a [usize],
}

/// The reference's event statistics: mean, population standard deviation, extremes, the count
/// of values with |v| > 1e−6 ("active") and the count of all values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub avg: f64,
    pub std: f64,
    pub max: f64,
    pub min: f64,
    pub active: usize,
    pub total: usize,
}

/// Below this magnitude a value counts as inactive (the reference's threshold).
const ACTIVE_THRESHOLD: f32 = 1e-6;

impl Stats {
    /// Sums in f64; std = sqrt(max(0, E[x²] − mean²)). An empty tensor gives all zeros; NaNs
    /// propagate into avg/std (and are skipped by max/min).
    pub fn of(values: &[f32]) -> Stats {
        if values.is_empty() {
            return Stats { avg: 0.0, std: 0.0, max: 0.0, min: 0.0, active: 0, total: 0 };
        }
        let (mut sum, mut squares, mut active) = (0f64, 0f64, 0usize);
        let (mut max, mut min) = (f32::NEG_INFINITY, f32::INFINITY);
        for &v in values {
            let w = v as f64;
            sum += w;
            squares += w * w;
            max = max.max(v);
            min = min.min(v);
            active += (v.abs() > ACTIVE_THRESHOLD) as usize;
        }
        let n = values.len() as f64;
        let avg = sum / n;
        Stats { avg, std: (squares / n - avg * avg).max(0.0).sqrt(), max: max as f64, min: min as f64, active, total: values.len() }
    }
}

impl LayerEvent<'_> {
    pub fn stats(&self) -> Stats {
        Stats::of(self.values)
    }
}

/// What an observer implements. An error aborts the pass (weights are untouched: a training
/// step applies its update only after both passes finished).
pub trait Observer: Send + Sync {
    fn observe(&self, event: &LayerEvent) -> Result<()>;
}

/// The observers of one network, each under the handle `add` returned.
#[derive(Clone, Default)]
pub struct Observers {
    entries: Vec<(u64, Arc<dyn Observer>)>,
    next: u64,
}

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Observers({:?})", self.handles())
    }
}

impl Observers {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Register `observer`; returns its handle.
    pub fn add(&mut self, observer: Arc<dyn Observer>) -> u64 {
        let handle = self.next;
        self.next += 1;
        self.entries.push((handle, observer));
        handle
    }

    /// Unregister the observer under `handle`; false when there is none.
    pub fn remove(&mut self, handle: u64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(h, _)| *h != handle);
        self.entries.len() != before
    }

    pub fn handles(&self) -> Vec<u64> {
        self.entries.iter().map(|(h, _)| *h).collect()
    }

    /// Call every observer in registration order; the first error stops the rest.
    pub fn notify(&self, event: &LayerEvent) -> Result<()> {
        self.entries.iter().try_for_each(|(_, o)| o.observe(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_match_the_reference_definitions() {
        let s = Stats::of(&[1.0, -3.0, 0.0, 5e-7, 2.0]);
        let mean = (1.0 - 3.0 + 5e-7 + 2.0) / 5.0;
        let var = (1.0 + 9.0 + 25e-14 + 4.0) / 5.0 - mean * mean;
        assert!((s.avg - mean).abs() < 1e-12);
        assert!((s.std - f64::sqrt(var)).abs() < 1e-9);
        assert_eq!((s.max, s.min, s.active, s.total), (2.0, -3.0, 3, 5));
        assert_eq!(Stats::of(&[]).total, 0);
    }

    #[test]
    fn handles_are_unique_and_removable() {
        struct Nop;
        impl Observer for Nop {
            fn observe(&self, _: &LayerEvent) -> Result<()> {
                Ok(())
            }
        }
        let mut list = Observers::default();
        let (a, b) = (list.add(Arc::new(Nop)), list.add(Arc::new(Nop)));
        assert_ne!(a, b);
        assert!(list.remove(a));
        assert!(!list.remove(a));
        assert_eq!(list.handles(), vec![b]);
    }
}
