//! The mesh's captured cycles, for backprop through time and for local learning rules (the
//! target-propagation bridge): per cycle, per cell that produced, what it read, where that came
//! from, and what its training forward saved. Only the last `capacity` cycles are kept.
//!
//! Layout: `History::cycles()` runs oldest → newest; `CycleRecord::cells` lists the cells that
//! produced in that cycle in traversal (flat index) order. A cell's output in a cycle is
//! `CellRecord::output()`; its input is `input` (None: it is a Residual whose main input had no
//! data yet and counted as zeros) and came from `input_from` as it stood after the previous
//! cycle; a Residual's skip likewise. Tensors are shared (`Arc`) with the mesh's buffers.

use super::route::Origin;
use super::Buffer;
use crate::coord::Coord;
use crate::layers::{Layer, Saved};
use std::collections::VecDeque;
use std::sync::Arc;

/// How a cell produced its output in one cycle.
pub enum Run {
    /// A disabled cell: its output is its input.
    Passed,
    /// The layer ran (the layer as it was then, so later grid edits do not disturb a backward).
    Computed { layer: Arc<Layer>, saved: Saved },
}

pub struct CellRecord {
    pub index: usize,
    pub coord: Coord,
    pub input_from: Origin,
    pub skip_from: Option<Origin>,
    pub input: Option<Buffer>,
    pub skip: Option<Buffer>,
    pub run: Run,
}

impl CellRecord {
    /// The cell's output in this cycle and its sample shape.
    pub fn output(&self) -> (&[f32], &[usize]) {
        match &self.run {
            Run::Computed { saved, .. } => (&saved.post, &saved.shape),
            Run::Passed => {
                let input = self.input.as_ref().expect("a disabled cell is recorded only when it passed data on");
                (&input.data, &input.shape)
            }
        }
    }
}

pub struct CycleRecord {
    /// The cycle number (`Systolic::cycle()` right after it ran).
    pub cycle: u64,
    pub cells: Vec<CellRecord>,
}

impl CycleRecord {
    pub fn cell(&self, index: usize) -> Option<&CellRecord> {
        self.cells.iter().find(|c| c.index == index)
    }
}

#[derive(Default)]
pub struct History {
    capacity: usize,
    cycles: VecDeque<CycleRecord>,
}

impl History {
    pub fn new(capacity: usize) -> History {
        History { capacity, cycles: VecDeque::new() }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Keep at most `capacity` cycles from now on (0 stops capturing); drops the oldest.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
        self.trim();
    }

    pub fn push(&mut self, record: CycleRecord) {
        if self.capacity > 0 {
            self.cycles.push_back(record);
            self.trim();
        }
    }

    fn trim(&mut self) {
        while self.cycles.len() > self.capacity {
            self.cycles.pop_front();
        }
    }

    pub fn clear(&mut self) {
        self.cycles.clear();
    }

    pub fn cycles(&self) -> &VecDeque<CycleRecord> {
        &self.cycles
    }

    pub fn get(&self, cycle: u64) -> Option<&CycleRecord> {
        let first = self.cycles.front()?.cycle;
        self.cycles.get(usize::try_from(cycle.checked_sub(first)?).ok()?)
    }
}
