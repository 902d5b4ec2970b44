//! SpliceDNA (reference dna_evolution.md §3): a child that is a deep copy of parent A whose
//! weights are crossed with parent B's, slot by slot, by blending, a split point or a uniform
//! per-weight choice. The child owns every buffer it holds (quirk 32 fixed: containers' members
//! are copied too, never shared with a parent).

use crate::coord::Coord;
use crate::dna::{self, layer_params, param_values, LayerSignature};
use crate::error::{Error, Result};
use crate::layers::{Layer, Param};
use crate::network::VolumetricNetwork;
use crate::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crossover {
    /// child = A·(1 − α) + B·α
    Blend,
    /// The first ⌊n·split_ratio⌋ weights of a slot from A, the rest from B.
    Point,
    /// Each weight from A with probability fitness_a / (fitness_a + fitness_b) (½ without
    /// fitnesses), else from B.
    Uniform,
}

impl Crossover {
    pub fn parse(name: &str) -> Result<Crossover> {
        match name.to_ascii_lowercase().as_str() {
            "blend" => Ok(Crossover::Blend),
            "point" => Ok(Crossover::Point),
            "uniform" => Ok(Crossover::Uniform),
            other => Err(Error::Value(format!("unknown crossover mode {other:?}; expected \"blend\", \"point\" or \"uniform\""))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpliceConfig {
    pub mode: Crossover,
    /// Blend weight of B when no fitnesses are given.
    pub blend_alpha: f64,
    pub split_ratio: f64,
    /// Parents' fitnesses (≥ 0; both 0 means "not given"): blend leans towards the fitter
    /// parent, scaled by how similar the two slots are; uniform picks the fitter more often.
    pub fitness_a: f64,
    pub fitness_b: f64,
    /// Seeds the uniform mode's choices.
    pub seed: u64,
}

impl Default for SpliceConfig {
    fn default() -> SpliceConfig {
        SpliceConfig { mode: Crossover::Blend, blend_alpha: 0.5, split_ratio: 0.5, fitness_a: 0.0, fitness_b: 0.0, seed: 0 }
    }
}

impl SpliceConfig {
    fn check(&self) -> Result<()> {
        for (name, v) in [("blend_alpha", self.blend_alpha), ("split_ratio", self.split_ratio)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::Value(format!("{name} must be in [0, 1], got {v}")));
            }
        }
        for (name, v) in [("fitness_a", self.fitness_a), ("fitness_b", self.fitness_b)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::Value(format!("{name} must be a finite number ≥ 0 (shift scores so the worst is 0), got {v}")));
            }
        }
        Ok(())
    }

    fn fitness_sum(&self) -> f64 {
        self.fitness_a + self.fitness_b
    }
}

/// What a splice did: the overlap of every coordinate both parents occupy, how many of those
/// overlap positively (the reference's BlendedCount) and which slots were actually crossed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpliceReport {
    pub similarities: Vec<(Coord, f64)>,
    pub blended_count: usize,
    pub spliced: Vec<Coord>,
}

/// Cross `a` with `b` into a new network shaped like `a`. A slot is crossed when `b` holds a
/// layer of the same type with tensors of the same shapes at the same coordinate.
pub fn splice(a: &VolumetricNetwork, b: &VolumetricNetwork, cfg: &SpliceConfig) -> Result<(VolumetricNetwork, SpliceReport)> {
    cfg.check()?;
    let child = a.deep_clone();
    let (dna_a, dna_b) = (dna::extract(a)?, dna::extract(b)?);
    let mut rng = Rng::new(cfg.seed);
    let mut report = SpliceReport::default();
    for sig_a in &dna_a {
        let coord = sig_a.coord;
        let Some(slot_b) = b.slot(coord).ok().flatten() else { continue };
        let similarity = dna_b.iter().find(|s| s.coord == coord).map_or(0.0, |sig_b: &LayerSignature| dna::cosine(sig_a, sig_b));
        report.similarities.push((coord, similarity));
        report.blended_count += (similarity > 0.0) as usize;
        let layer = child.slot(coord)?.expect("the child copies every slot of parent A").layer.clone();
        if let Some((ours, theirs)) = crossable(&layer, &slot_b.layer) {
            cross(&ours, &theirs, cfg, similarity, &mut rng).map_err(|e| Error::Value(format!("splicing the layer at {coord}: {e}")))?;
            report.spliced.push(coord);
        }
    }
    Ok((child, report))
}

/// Both layers' tensors when they can be crossed weight for weight.
fn crossable(a: &Layer, b: &Layer) -> Option<(Vec<Param>, Vec<Param>)> {
    let (pa, pb) = (layer_params(a), layer_params(b));
    let shapes = |ps: &[Param]| ps.iter().map(|p| p.read().unwrap().shape().to_vec()).collect::<Vec<_>>();
    (a.type_name() == b.type_name() && !pa.is_empty() && shapes(&pa) == shapes(&pb)).then_some((pa, pb))
}

/// Write the crossing of `theirs` into `ours` (the child's own tensors), tensor by tensor over
/// the slot's weights taken as one vector.
fn cross(ours: &[Param], theirs: &[Param], cfg: &SpliceConfig, similarity: f64, rng: &mut Rng) -> Result<()> {
    let wa = ours.iter().map(param_values).collect::<Result<Vec<_>>>()?.concat();
    let wb = theirs.iter().map(param_values).collect::<Result<Vec<_>>>()?.concat();
    let n = wa.len();
    let mixed: Vec<f32> = match cfg.mode {
        Crossover::Point => {
            let split = ((n as f64 * cfg.split_ratio).floor() as usize).min(n);
            [&wa[..split], &wb[split..]].concat()
        }
        Crossover::Uniform => {
            let threshold = if cfg.fitness_sum() > 0.0 { cfg.fitness_a / cfg.fitness_sum() } else { 0.5 };
            wa.iter().zip(&wb).map(|(&x, &y)| if rng.next_f64() < threshold { x } else { y }).collect()
        }
        Crossover::Blend => {
            let alpha = if cfg.fitness_sum() > 0.0 { cfg.fitness_b / cfg.fitness_sum() * (0.5 + 0.5 * similarity) } else { cfg.blend_alpha } as f32;
            wa.iter().zip(&wb).map(|(&x, &y)| x * (1.0 - alpha) + y * alpha).collect()
        }
    };
    let mut offset = 0;
    for p in ours {
        let mut store = p.write().unwrap();
        let len = store.len();
        store.set_master(mixed[offset..offset + len].to_vec())?;
        offset += len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;
    use crate::layers::member::Member;
    use crate::layers::parallel::Combine;
    use crate::layers::{Dense, Parallel};
    use std::sync::Arc;

    fn net(seed: u64) -> VolumetricNetwork {
        let dense = |s| Arc::new(Layer::Dense(Dense::new(3, 3, crate::activation::Activation::Tanh, true, s, Codec::Standard).unwrap()));
        let mut net = VolumetricNetwork::new(1, 1, 1, 2).unwrap();
        net.set_layer(Coord::ORIGIN, dense(seed)).unwrap();
        let branches = vec![Member::Own(dense(seed + 1)), Member::Own(dense(seed + 2)), Member::Link(Coord::ORIGIN)];
        net.set_layer(Coord { l: 1, ..Coord::ORIGIN }, Arc::new(Layer::Parallel(Parallel::new(branches, Combine::Add, None).unwrap()))).unwrap();
        net
    }

    /// Quirk 32: no tensor of the child, container members included, is a parent's tensor or
    /// reads a parent's master buffer.
    #[test]
    fn children_share_no_buffers_with_their_parents() {
        let (a, b) = (net(1), net(10));
        for mode in [Crossover::Blend, Crossover::Point, Crossover::Uniform] {
            let (child, report) = splice(&a, &b, &SpliceConfig { mode, ..SpliceConfig::default() }).unwrap();
            assert_eq!(report.spliced.len(), 2);
            let parents: Vec<Param> = a.params().into_iter().chain(b.params()).collect();
            assert_eq!(child.params().len(), 6);
            for c in child.params() {
                let master = c.read().unwrap().master().unwrap().as_ptr();
                for p in &parents {
                    assert!(!Arc::ptr_eq(&c, p));
                    assert_ne!(master, p.read().unwrap().master().unwrap().as_ptr());
                }
            }
        }
    }
}
