//! Evolution over networks (reference dna_evolution.md §3–4): splicing two parents' weights,
//! NEAT mutations (weights, activations, layer types, disabled flags, remote links) and a
//! population that ranks, keeps elites and breeds.

pub mod config;
pub mod links;
pub mod mutate;
pub mod nodes;
pub mod population;
pub mod splice;

pub use config::{NeatConfig, NodeType};
pub use mutate::{mutate, mutate_in_place};
pub use population::{GenerationStats, Population};
pub use splice::{splice, Crossover, SpliceConfig, SpliceReport};
