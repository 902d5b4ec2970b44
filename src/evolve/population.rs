//! NEATPopulation (reference dna_evolution.md §4): a population of mutated copies of a seed
//! network. Scoring is the caller's (any fitness function); `advance` ranks the scored members,
//! keeps the best quarter unchanged (elites) and refills the rest with mutated children of two
//! random elites, blended towards the fitter one. Every draw comes from the config's seed, so a
//! run is reproducible.

use super::config::NeatConfig;
use super::mutate::mutate_in_place;
use super::splice::{splice, Crossover, SpliceConfig};
use crate::error::{Error, Result};
use crate::network::VolumetricNetwork;
use crate::rng::Rng;
use rayon::prelude::*;

/// One generation's scores. NaN scores rank last and are left out of best/mean/worst (all NaN
/// when every score is NaN).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerationStats {
    pub generation: usize,
    pub best: f64,
    pub mean: f64,
    pub worst: f64,
    pub nan_count: usize,
    pub size: usize,
}

impl GenerationStats {
    fn of(generation: usize, sorted: &[f64]) -> GenerationStats {
        let valid: Vec<f64> = sorted.iter().copied().filter(|v| !v.is_nan()).collect();
        let (best, worst, mean) = match (valid.first(), valid.last()) {
            (Some(&b), Some(&w)) => (b, w, valid.iter().sum::<f64>() / valid.len() as f64),
            _ => (f64::NAN, f64::NAN, f64::NAN),
        };
        GenerationStats { generation, best, mean, worst, nan_count: sorted.len() - valid.len(), size: sorted.len() }
    }

    /// The reference's Summary line.
    pub fn summary(&self) -> String {
        format!("Gen {} | best={:.4} avg={:.4} worst={:.4} pop={}", self.generation, self.best, self.mean, self.worst, self.size)
    }
}

pub struct Population {
    /// Best first after each `advance`.
    pub members: Vec<VolumetricNetwork>,
    /// The score each member got when last evaluated (None: bred since).
    pub fitness: Vec<Option<f64>>,
    /// Generations completed.
    pub generation: usize,
    pub history: Vec<GenerationStats>,
    config: NeatConfig,
    rng: Rng,
}

/// One child to breed: parents (indices of elites) and its seeds.
struct Job {
    a: usize,
    b: usize,
    splice_seed: u64,
    mutate_seed: u64,
}

impl Population {
    /// `size` mutated copies of `seed` (each from its own seed drawn from the config's).
    pub fn new(seed: &VolumetricNetwork, size: usize, config: NeatConfig) -> Result<Population> {
        if size == 0 {
            return Err(Error::Value("a population needs size ≥ 1".into()));
        }
        config.check()?;
        let mut rng = Rng::new(config.seed);
        let seeds: Vec<u64> = (0..size).map(|_| rng.next_u64()).collect();
        let members = seeds
            .into_par_iter()
            .map(|s| {
                let mut child = seed.deep_clone();
                mutate_in_place(&mut child, &config, s)?;
                Ok(child)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Population { members, fitness: vec![None; size], generation: 0, history: Vec::new(), config, rng })
    }

    pub fn config(&self) -> &NeatConfig {
        &self.config
    }

    pub fn best(&self) -> &VolumetricNetwork {
        &self.members[0]
    }

    pub fn best_fitness(&self) -> Option<f64> {
        self.fitness[0]
    }

    /// Rank the members by `scores` (one per member, in member order), keep the elites and
    /// breed the rest. Returns the generation's statistics.
    pub fn advance(&mut self, scores: &[f64]) -> Result<GenerationStats> {
        let size = self.members.len();
        if scores.len() != size {
            return Err(Error::Shape(format!("got {} fitness scores for a population of {size}", scores.len())));
        }
        let rank = |v: f64| if v.is_nan() { f64::NEG_INFINITY } else { v };
        let mut order: Vec<usize> = (0..size).collect();
        order.sort_by(|&i, &j| rank(scores[j]).total_cmp(&rank(scores[i])).then(scores[i].is_nan().cmp(&scores[j].is_nan())));
        let sorted: Vec<f64> = order.iter().map(|&i| scores[i]).collect();
        let stats = GenerationStats::of(self.generation, &sorted);

        // Nothing changes until every child is bred: an error leaves the population as it was.
        let elites = (size / 4).max(1);
        let parents: Vec<VolumetricNetwork> = order[..elites].iter().map(|&i| self.members[i].clone()).collect();
        // Splice weights must be ≥ 0: scores are shifted so the worst finite one counts 0.
        let floor = sorted.iter().copied().filter(|v| v.is_finite()).fold(f64::INFINITY, f64::min);
        let weight = |v: f64| if v.is_finite() { v - floor } else { 0.0 };
        let mut rng = self.rng.clone();
        let jobs: Vec<Job> = (elites..size)
            .map(|_| {
                let a = (rng.next_u64() % elites as u64) as usize;
                let b = if elites > 1 {
                    let other = (rng.next_u64() % (elites - 1) as u64) as usize;
                    if other >= a { other + 1 } else { other }
                } else {
                    a
                };
                Job { a, b, splice_seed: rng.next_u64(), mutate_seed: rng.next_u64() }
            })
            .collect();
        let config = &self.config;
        let children = jobs
            .into_par_iter()
            .map(|job| {
                let cfg = SpliceConfig {
                    mode: Crossover::Blend,
                    fitness_a: weight(sorted[job.a]),
                    fitness_b: weight(sorted[job.b]),
                    seed: job.splice_seed,
                    ..SpliceConfig::default()
                };
                let (mut child, _) = splice(&parents[job.a], &parents[job.b], &cfg)?;
                mutate_in_place(&mut child, config, job.mutate_seed)?;
                Ok(child)
            })
            .collect::<Result<Vec<_>>>()?;
        self.members = parents.into_iter().chain(children).collect();
        self.fitness = sorted[..elites].iter().map(|&v| Some(v)).chain(std::iter::repeat_n(None, size - elites)).collect();
        self.rng = rng;
        self.generation += 1;
        self.history.push(stats);
        Ok(stats)
    }
}
