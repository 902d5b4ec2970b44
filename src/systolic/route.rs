//! Where each cell of the mesh reads from (targetprop.md §8, intended semantics): the previous
//! occupied coordinate's output, a remote link target's output (any coordinate: a target at or
//! after the cell closes a feedback loop), or for the first cell the external input.

use crate::coord::Coord;
use crate::error::{Error, Result};
use crate::layers::Layer;
use crate::network::VolumetricNetwork;
use std::sync::Arc;

/// A tensor a cell reads, as it stood after the previous cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The external input (`Systolic::set_input`).
    Input,
    /// The output of the cell at this flat index.
    Output(usize),
    /// The main input the cell at this flat index consumed in the previous cycle: a Residual's
    /// default skip, so that `Dense → Residual` adds `x` to the `Dense(x)` computed from it.
    Consumed(usize),
}

/// One cell of the mesh: an occupied grid slot and where its tensors come from.
#[derive(Debug, Clone)]
pub struct Route {
    pub index: usize,
    pub coord: Coord,
    pub layer: Arc<Layer>,
    /// A disabled cell passes its predecessor's output on, one cycle later (a delay stage).
    pub disabled: bool,
    pub input: Origin,
    /// A Residual's skip: its link target's output, else what its predecessor consumed.
    pub skip: Option<Origin>,
}

/// Words for error messages: where a tensor a cell reads comes from.
pub fn describe(origin: Origin, net: &VolumetricNetwork) -> String {
    match origin {
        Origin::Input => "the external input".into(),
        Origin::Output(j) => format!("the output of the layer at {}", net.coord_of(j)),
        Origin::Consumed(j) => format!("the input the layer at {} consumed", net.coord_of(j)),
    }
}

/// The cells of `net` in traversal order (flat index order). Errors name the cell whose link
/// points at an empty slot.
pub fn routes(net: &VolumetricNetwork) -> Result<Vec<Route>> {
    let mut routes: Vec<Route> = Vec::new();
    let mut previous: Option<usize> = None;
    for (coord, slot) in net.occupied() {
        let index = net.index(coord)?;
        let chained = previous.map_or(Origin::Input, Origin::Output);
        let linked = match slot.link {
            None => None,
            Some(t) if net.slot(t)?.is_some() => Some(Origin::Output(net.index(t)?)),
            Some(t) => return Err(Error::Spec(format!("layer at {coord}: remote link target {t} is an empty slot"))),
        };
        let is_residual = slot.layer.type_name() == "Residual";
        let (input, skip) = if slot.disabled {
            (chained, None)
        } else if is_residual {
            (chained, linked.or(previous.map(Origin::Consumed)))
        } else {
            (linked.unwrap_or(chained), None)
        };
        routes.push(Route { index, coord, layer: slot.layer.clone(), disabled: slot.disabled, input, skip });
        previous = Some(index);
    }
    Ok(routes)
}
