//! A member of a container (a Sequential stage or a Parallel branch): its own layer, or a remote
//! link to the grid layer at a coordinate. A link is resolved each time the container runs, so it
//! always reaches the layer that sits there now; its weights are shared and trained through the
//! link (the reference trains a placeholder instead, quirk 23).

use super::spec::{insert_link, layer_from_fields, layer_to_value, link_target, Build, Fields};
use super::{Ctx, Layer, Links, Param, Shape};
use crate::coord::Coord;
use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::sync::Arc;

/// How deep containers may nest through remote links before we call it a cycle.
const MAX_NESTING: u32 = 32;

fn too_deep() -> Error {
    Error::Spec(format!("containers nest more than {MAX_NESTING} levels deep: do remote links form a cycle?"))
}

/// The links of one nesting level further down (shape checks count depth through this).
struct Deeper<'a> {
    outer: &'a dyn Links,
    depth: u32,
}

impl<'a> Deeper<'a> {
    fn new(outer: &'a dyn Links) -> Result<Deeper<'a>> {
        let depth = outer.depth() + 1;
        if depth > MAX_NESTING {
            return Err(too_deep());
        }
        Ok(Deeper { outer, depth })
    }
}

impl Links for Deeper<'_> {
    fn layer_at(&self, target: Coord) -> Result<Arc<Layer>> {
        self.outer.layer_at(target)
    }
    fn depth(&self) -> u32 {
        self.depth
    }
}

#[derive(Debug, Clone)]
pub enum Member {
    Own(Arc<Layer>),
    Link(Coord),
}

impl Member {
    /// Read a member entry; `context` names it ("stage 2 of layer at (0,0,0,1)").
    pub fn from_value(value: &Value, context: String, build: Build) -> Result<Member> {
        let obj = value.as_object().ok_or_else(|| Error::Spec(format!("{context} must be a JSON object, got {value}")))?;
        let f = Fields::new(obj, context);
        match link_target(&f)? {
            Some(target) => Ok(Member::Link(target)),
            None => Ok(Member::Own(Arc::new(layer_from_fields(&f, build)?))),
        }
    }

    pub fn to_value(&self) -> Map<String, Value> {
        match self {
            Member::Own(layer) => layer_to_value(layer),
            Member::Link(target) => {
                let mut m = Map::new();
                insert_link(&mut m, *target);
                m
            }
        }
    }

    /// The layer to run, resolving a link through `links`.
    pub fn resolve(&self, links: &dyn Links) -> Result<Arc<Layer>> {
        match self {
            Member::Own(layer) => Ok(layer.clone()),
            Member::Link(target) => links.layer_at(*target),
        }
    }

    pub fn output_shape(&self, input: &[usize], links: &dyn Links) -> Result<Shape> {
        let deeper = Deeper::new(links)?;
        self.resolve(links)?.output_shape_in(input, &deeper)
    }

    /// Its own tensors (a link owns none: they belong to the grid slot it points at).
    pub fn params(&self) -> Vec<Param> {
        match self {
            Member::Own(layer) => layer.params(),
            Member::Link(_) => Vec::new(),
        }
    }

    pub fn morphable(&self) -> Vec<Param> {
        match self {
            Member::Own(layer) => layer.morphable(),
            Member::Link(_) => Vec::new(),
        }
    }

    pub fn deep_clone(&self) -> Member {
        match self {
            Member::Own(layer) => Member::Own(Arc::new(layer.deep_clone())),
            Member::Link(target) => Member::Link(*target),
        }
    }

    pub fn type_name(&self) -> String {
        match self {
            Member::Own(layer) => layer.type_name().to_string(),
            Member::Link(target) => format!("link to {target}"),
        }
    }
}

/// The context for a container's children: one level deeper, so a link cycle is an error
/// instead of endless recursion.
pub fn nested<'a>(ctx: &Ctx<'a>) -> Result<Ctx<'a>> {
    if ctx.nesting >= MAX_NESTING {
        return Err(too_deep());
    }
    Ok(Ctx { nesting: ctx.nesting + 1, ..*ctx })
}

/// Prefix a child's error with where it sits in the container.
pub fn in_member(what: &str, index: usize, member: &Member, e: Error) -> Error {
    let prefix = format!("{what} {index} ({})", member.type_name());
    match e {
        Error::Shape(m) => Error::Shape(format!("{prefix}: {m}")),
        Error::Spec(m) => Error::Spec(format!("{prefix}: {m}")),
        Error::Value(m) => Error::Value(format!("{prefix}: {m}")),
        Error::DType(m) => Error::DType(format!("{prefix}: {m}")),
        other => other,
    }
}
