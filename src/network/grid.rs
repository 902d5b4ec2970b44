//! VolumetricNetwork: depth × rows × cols cells of `layers_per_cell` slots, addressed (z, y, x, l)
//! and stored flat (index = z·R·C·L + y·C·L + x·L + l, reference network.md §1). Empty slots pass
//! the tensor through (the reference crashes on them); every coordinate is range-checked.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::layers::{Layer, Links, Param};
use crate::observe::{Observer, Observers};
use std::sync::Arc;

pub use crate::coord::Coord;

#[derive(Debug, Clone)]
pub struct Slot {
    pub layer: Arc<Layer>,
    pub disabled: bool,
    /// A remote link (`is_remote_link` + `target_*`): this layer reads the output of the layer at
    /// that coordinate instead of the previous one's (a Residual takes it as its skip).
    pub link: Option<Coord>,
}

/// Largest number of slots a grid may have (guards against absurd specs eating memory).
const MAX_SLOTS: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct VolumetricNetwork {
    pub depth: usize,
    pub rows: usize,
    pub cols: usize,
    pub layers_per_cell: usize,
    slots: Vec<Option<Slot>>,
    /// Called after each grid layer's forward and backward (a plain clone shares them; a deep
    /// clone starts without any).
    observers: Observers,
}

impl VolumetricNetwork {
    pub fn new(depth: usize, rows: usize, cols: usize, layers_per_cell: usize) -> Result<VolumetricNetwork> {
        for (name, v) in [("depth", depth), ("rows", rows), ("cols", cols), ("layers_per_cell", layers_per_cell)] {
            if v == 0 {
                return Err(Error::Spec(format!("grid field {name:?} must be ≥ 1, got 0")));
            }
        }
        let total = depth
            .checked_mul(rows)
            .and_then(|v| v.checked_mul(cols))
            .and_then(|v| v.checked_mul(layers_per_cell))
            .filter(|&t| t <= MAX_SLOTS)
            .ok_or_else(|| Error::Spec(format!("grid {depth}×{rows}×{cols}×{layers_per_cell} has more than {MAX_SLOTS} slots")))?;
        Ok(VolumetricNetwork { depth, rows, cols, layers_per_cell, slots: vec![None; total], observers: Observers::default() })
    }

    /// Flat index of a coordinate; each component is checked against its own dimension.
    pub fn index(&self, c: Coord) -> Result<usize> {
        let dims = [(c.z, self.depth, "z"), (c.y, self.rows, "y"), (c.x, self.cols, "x"), (c.l, self.layers_per_cell, "l")];
        for (v, limit, name) in dims {
            if v >= limit {
                return Err(Error::Spec(format!(
                    "coordinate {c} is outside the {}×{}×{}×{} grid ({name} must be < {limit})",
                    self.depth, self.rows, self.cols, self.layers_per_cell
                )));
            }
        }
        Ok(((c.z * self.rows + c.y) * self.cols + c.x) * self.layers_per_cell + c.l)
    }

    pub fn coord_of(&self, index: usize) -> Coord {
        let l = index % self.layers_per_cell;
        let rest = index / self.layers_per_cell;
        let x = rest % self.cols;
        let rest = rest / self.cols;
        Coord { z: rest / self.rows, y: rest % self.rows, x, l }
    }

    pub fn set_layer(&mut self, c: Coord, layer: Arc<Layer>) -> Result<()> {
        let i = self.index(c)?;
        self.slots[i] = Some(Slot { layer, disabled: false, link: None });
        Ok(())
    }

    pub fn clear(&mut self, c: Coord) -> Result<()> {
        let i = self.index(c)?;
        self.slots[i] = None;
        Ok(())
    }

    pub fn slot(&self, c: Coord) -> Result<Option<&Slot>> {
        Ok(self.slots[self.index(c)?].as_ref())
    }

    pub fn set_disabled(&mut self, c: Coord, disabled: bool) -> Result<()> {
        let i = self.index(c)?;
        match &mut self.slots[i] {
            Some(slot) => {
                slot.disabled = disabled;
                Ok(())
            }
            None => Err(Error::Spec(format!("no layer at {c}"))),
        }
    }

    /// Make the layer at `c` read from `target` (None removes the link). A target that comes
    /// earlier in traversal order is a skip the one-pass forward follows; a target at or after
    /// `c` is a feedback loop, which only the systolic mesh runs (the forward refuses it).
    pub fn set_link(&mut self, c: Coord, target: Option<Coord>) -> Result<()> {
        let i = self.index(c)?;
        if let Some(t) = target {
            self.index(t).map_err(|e| Error::Spec(format!("remote link of the layer at {c}: {e}")))?;
        }
        match &mut self.slots[i] {
            Some(slot) => {
                slot.link = target;
                Ok(())
            }
            None => Err(Error::Spec(format!("no layer at {c}"))),
        }
    }

    /// Whether some layer links to itself or to a later coordinate (a loop across clock cycles).
    pub fn has_feedback(&self) -> bool {
        self.slots.iter().enumerate().any(|(i, s)| {
            s.as_ref().and_then(|s| s.link).is_some_and(|t| self.index(t).is_ok_and(|ti| ti >= i))
        })
    }

    /// Occupied slots in traversal (flat index) order, disabled ones included.
    pub fn occupied(&self) -> impl Iterator<Item = (Coord, &Slot)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| s.as_ref().map(|s| (self.coord_of(i), s)))
    }

    /// The layers a pass runs through: occupied, enabled, in traversal order.
    pub fn active(&self) -> impl Iterator<Item = (Coord, &Arc<Layer>)> {
        self.occupied().filter(|(_, s)| !s.disabled).map(|(c, s)| (c, &s.layer))
    }

    /// Every trainable tensor of the occupied slots, once each (a layer placed at two
    /// coordinates shares its tensors), in traversal order.
    pub fn params(&self) -> Vec<Param> {
        unique(self.occupied().flat_map(|(_, s)| s.layer.params()))
    }

    pub fn num_params(&self) -> usize {
        self.params().iter().map(|p| p.read().unwrap().len()).sum()
    }

    /// Bytes the weights hold right now (masters kept + packed versions).
    pub fn memory_bytes(&self) -> usize {
        self.params().iter().map(|p| p.read().unwrap().memory_bytes()).sum()
    }

    /// Morph every layer's weights (not biases or norm gains) to `dtype`.
    /// Every weight tensor a morph converts, once each (shared tensors appear once).
    pub fn morphable_params(&self) -> Vec<Param> {
        unique(self.occupied().flat_map(|(_, s)| s.layer.morphable()))
    }

    pub fn morph_all(&self, dtype: DType) -> Result<()> {
        for p in self.morphable_params() {
            p.write().unwrap().morph(dtype)?;
        }
        Ok(())
    }

    /// A copy with fresh weight buffers (no sharing with `self`) and no observers.
    pub fn deep_clone(&self) -> VolumetricNetwork {
        let slots = self
            .slots
            .iter()
            .map(|s| s.as_ref().map(|s| Slot { layer: Arc::new(s.layer.deep_clone()), ..s.clone() }))
            .collect();
        VolumetricNetwork { slots, observers: Observers::default(), ..*self }
    }

    pub fn observers(&self) -> &Observers {
        &self.observers
    }

    /// Register an observer of every grid layer's forward and backward; returns its handle.
    pub fn add_observer(&mut self, observer: Arc<dyn Observer>) -> u64 {
        self.observers.add(observer)
    }

    /// Unregister an observer; false when no observer has this handle.
    pub fn remove_observer(&mut self, handle: u64) -> bool {
        self.observers.remove(handle)
    }
}

/// Tensors in first-seen order, each once (compared by identity).
pub fn unique(params: impl Iterator<Item = Param>) -> Vec<Param> {
    let mut seen = std::collections::HashSet::new();
    params.filter(|p| seen.insert(Arc::as_ptr(p))).collect()
}

impl Links for VolumetricNetwork {
    fn layer_at(&self, target: Coord) -> Result<Arc<Layer>> {
        match self.slot(target)? {
            Some(slot) => Ok(slot.layer.clone()),
            None => Err(Error::Spec(format!("remote link target {target} is an empty slot"))),
        }
    }
}
