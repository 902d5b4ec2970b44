//! The volumetric network: the grid of layer slots (grid.rs), the reference's build JSON
//! (spec.rs), passes over the grid (exec.rs) and checkpoints (persist/: the persistence JSON; safetensors.rs: the weights alone).

pub mod exec;
pub mod grid;
pub mod persist;
pub mod safetensors;
pub mod spec;

pub use grid::{Coord, Slot, VolumetricNetwork};
