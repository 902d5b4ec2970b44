//! Connection mutations: adding a remote link makes the source slot also run the target slot's
//! layer on its input (a Parallel "add" branch linking there, the reference's remote-link
//! branch); dropping one removes such a branch, a Sequential stage link or a slot's own link.
//! Candidates never form link cycles; mutate.rs keeps only those the network still plans with.

use crate::coord::Coord;
use crate::layers::member::Member;
use crate::layers::parallel::Combine;
use crate::layers::sequential::Stage;
use crate::layers::{Layer, Parallel, Sequential};
use crate::network::VolumetricNetwork;
use std::collections::HashSet;
use std::sync::Arc;

/// One removable remote link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Branch `index` of the Parallel at the coordinate.
    Branch(Coord, usize),
    /// Stage `index` of the Sequential at the coordinate.
    Stage(Coord, usize),
    /// The slot's own link (it reads that coordinate's output).
    Slot(Coord),
}

/// Coordinates whose layers `layer` runs through member links (nested containers included).
fn member_links(layer: &Layer, out: &mut Vec<Coord>) {
    let members: Vec<&Member> = match layer {
        Layer::Parallel(p) => p.branches.iter().collect(),
        Layer::Sequential(s) => s.stages.iter().map(|st| &st.member).collect(),
        _ => return,
    };
    for m in members {
        match m {
            Member::Link(target) => out.push(*target),
            Member::Own(inner) => member_links(inner, out),
        }
    }
    if let Layer::Parallel(Parallel { gate: Some(g), .. }) = layer {
        member_links(g, out);
    }
}

/// Whether running the layer at `from` ends up running the layer at `to`.
fn reaches(net: &VolumetricNetwork, from: Coord, to: Coord) -> bool {
    let mut stack = vec![from];
    let mut seen = HashSet::new();
    while let Some(c) = stack.pop() {
        if c == to {
            return true;
        }
        if !seen.insert(c) {
            continue;
        }
        if let Ok(Some(slot)) = net.slot(c) {
            member_links(&slot.layer, &mut stack);
        }
    }
    false
}

/// (source, target) pairs of distinct enabled slots where a new link would not close a cycle.
pub fn add_candidates(net: &VolumetricNetwork) -> Vec<(Coord, Coord)> {
    let enabled: Vec<Coord> = net.active().map(|(c, _)| c).collect();
    let mut pairs = Vec::new();
    for &src in &enabled {
        for &dst in &enabled {
            if src != dst && !reaches(net, dst, src) {
                pairs.push((src, dst));
            }
        }
    }
    pairs
}

/// `layer` also running the layer at `target`: one more branch for a Parallel, otherwise a
/// Parallel "add" of the layer itself and the link.
pub fn with_link(layer: &Arc<Layer>, target: Coord) -> Layer {
    match &**layer {
        Layer::Parallel(p) => {
            let mut p = p.clone();
            p.branches.push(Member::Link(target));
            Layer::Parallel(p)
        }
        _ => Layer::Parallel(Parallel { branches: vec![Member::Own(layer.clone()), Member::Link(target)], combine: Combine::Add, gate: None }),
    }
}

/// Every remote link of the network, in traversal order.
pub fn drop_candidates(net: &VolumetricNetwork) -> Vec<Link> {
    let mut links = Vec::new();
    for (c, slot) in net.occupied() {
        if slot.link.is_some() {
            links.push(Link::Slot(c));
        }
        match &*slot.layer {
            Layer::Parallel(p) if p.branches.len() > 1 => {
                links.extend(p.branches.iter().enumerate().filter(|(_, m)| matches!(m, Member::Link(_))).map(|(i, _)| Link::Branch(c, i)));
            }
            Layer::Sequential(s) if s.stages.len() > 1 => {
                links.extend(s.stages.iter().enumerate().filter(|(_, st)| matches!(st.member, Member::Link(_))).map(|(i, _)| Link::Stage(c, i)));
            }
            _ => {}
        }
    }
    links
}

/// `layer` without member `index`. A Parallel left with one own branch under "add" or "avg"
/// becomes that branch again (undoing `with_link`).
pub fn without_member(layer: &Layer, index: usize) -> Layer {
    match layer {
        Layer::Parallel(p) => {
            let mut p = p.clone();
            p.branches.remove(index);
            match (&p.branches[..], p.combine) {
                ([Member::Own(only)], Combine::Add | Combine::Avg) => (**only).clone(),
                _ => Layer::Parallel(p),
            }
        }
        Layer::Sequential(s) => {
            let stages: Vec<Stage> = s.stages.iter().enumerate().filter(|(i, _)| *i != index).map(|(_, st)| st.clone()).collect();
            Layer::Sequential(Sequential { stages })
        }
        other => other.clone(),
    }
}
