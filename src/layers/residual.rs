//! Residual: out = input + skip (network.md §4). The skip is the input of the layer before it
//! (in the grid or inside a Sequential), or the output of its remote link target in the grid.
//! Without a skip (first layer of a pass) it is the identity.

use super::{check_grad, Ctx, Grads, Input, Layer, LayerOps, Param, Saved, Shape};
use crate::error::{Error, Result};
use serde_json::{json, Map, Value};

#[derive(Debug, Clone, Default)]
pub struct Residual;

impl LayerOps for Residual {
    fn type_name(&self) -> &'static str {
        "Residual"
    }
    fn output_shape(&self, input: &[usize]) -> Result<Shape> {
        Ok(input.to_vec())
    }
    fn input_shape(&self) -> Option<Shape> {
        None
    }
    fn params(&self) -> Vec<Param> {
        Vec::new()
    }
    fn morphable(&self) -> Vec<Param> {
        Vec::new()
    }
    fn forward_train(&self, x: Input, _ctx: &Ctx) -> Result<Saved> {
        x.check_len()?;
        let post = match x.skip {
            None => x.data.to_vec(),
            Some(skip) if skip.len() == x.data.len() => x.data.iter().zip(skip).map(|(a, b)| a + b).collect(),
            Some(skip) => {
                return Err(Error::Shape(format!(
                    "Residual skip has {} values but its input has {} (the skip must match the input's size)",
                    skip.len(),
                    x.data.len()
                )))
            }
        };
        Ok(Saved { post, shape: x.shape.to_vec(), state: Box::new(()) })
    }
    fn backward(&self, x: Input, saved: &Saved, grad_out: &[f32], _ctx: &Ctx, _need_input: bool) -> Result<Grads> {
        check_grad("Residual", grad_out, saved)?;
        let skip = if x.skip.is_some() { grad_out.to_vec() } else { Vec::new() };
        Ok(Grads { input: grad_out.to_vec(), skip, params: Vec::new() })
    }
    fn deep_clone(&self) -> Layer {
        Layer::Residual(Residual)
    }
    fn spec(&self) -> Map<String, Value> {
        let mut o = Map::new();
        o.insert("type".into(), json!("Residual"));
        o
    }
}
