//! The volumetric network: the grid of layer slots (grid.rs), the reference's build JSON
//! (spec.rs) and passes over the grid (exec.rs).

pub mod exec;
pub mod grid;
pub mod spec;

pub use grid::{Coord, Slot, VolumetricNetwork};
