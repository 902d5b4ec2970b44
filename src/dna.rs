//! Network DNA (reference dna_evolution.md §1–2): one signature per occupied grid slot (its
//! type, weight dtype and unit-length weight vector) and the comparison of two DNAs: per-slot
//! overlap (cosine), overall overlap, and "logic shifts" (a slot's weights reappearing at
//! another coordinate of the other network).

use crate::coord::Coord;
use crate::dtype::DType;
use crate::error::Result;
use crate::layers::member::Member;
use crate::layers::{Layer, Param};
use crate::network::grid::unique;
use crate::network::VolumetricNetwork;

#[derive(Debug, Clone, PartialEq)]
pub struct LayerSignature {
    pub coord: Coord,
    pub layer_type: String,
    pub dtype: DType,
    /// Unit L2 norm ([1.0] for layers without weights).
    pub weights: Vec<f32>,
}

/// `v / ‖v‖` with the squares summed in f64; a zero vector stays zero.
pub fn normalize(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|&x| (x * x) as f64).sum::<f64>().sqrt();
    if norm == 0.0 {
        return vec![0.0; v.len()];
    }
    v.iter().map(|&x| (x as f64 / norm) as f32).collect()
}

/// The values of one tensor: its FP32 master, or its active version decoded when the master
/// was released (GGUF weights).
pub fn param_values(p: &Param) -> Result<Vec<f32>> {
    if let Ok(master) = p.read().unwrap().master() {
        return Ok(master.to_vec());
    }
    let mut store = p.write().unwrap();
    let dtype = store.dtype();
    store.dequantize(dtype)
}

/// Every tensor a layer owns, once each, in `params()` order (container members included,
/// remote links excluded: their weights belong to the slot they point at).
pub fn layer_params(layer: &Layer) -> Vec<Param> {
    unique(layer.params().into_iter())
}

/// The dtype a layer computes with: its first weight tensor's (float32 for weightless layers;
/// a container reports its first member's).
pub fn layer_dtype(layer: &Layer) -> DType {
    layer.morphable().first().map_or(DType::Float32, |p| p.read().unwrap().dtype())
}

/// A layer's signature vector: containers concatenate their members' signatures (links
/// skipped; a Parallel's gate last) and normalise; other layers normalise all their tensors
/// concatenated in `params()` order; weightless layers are [1.0].
pub fn layer_signature(layer: &Layer) -> Result<Vec<f32>> {
    let members: Option<Vec<&Layer>> = match layer {
        Layer::Parallel(p) => Some(own(&p.branches).chain(p.gate.as_deref()).collect()),
        Layer::Sequential(s) => Some(own(s.stages.iter().map(|st| &st.member)).collect()),
        _ => None,
    };
    let concatenated = match members {
        Some(list) => list.into_iter().map(layer_signature).collect::<Result<Vec<_>>>()?.concat(),
        None => layer_params(layer).iter().map(param_values).collect::<Result<Vec<_>>>()?.concat(),
    };
    Ok(if concatenated.is_empty() { vec![1.0] } else { normalize(&concatenated) })
}

fn own<'a>(members: impl IntoIterator<Item = &'a Member>) -> impl Iterator<Item = &'a Layer> {
    members.into_iter().filter_map(|m| match m {
        Member::Own(layer) => Some(&**layer),
        Member::Link(_) => None,
    })
}

/// The DNA of a network: one signature per occupied slot (disabled ones included), in
/// traversal order.
pub fn extract(net: &VolumetricNetwork) -> Result<Vec<LayerSignature>> {
    net.occupied()
        .map(|(coord, slot)| {
            Ok(LayerSignature {
                coord,
                layer_type: slot.layer.type_name().to_string(),
                dtype: layer_dtype(&slot.layer),
                weights: layer_signature(&slot.layer)?,
            })
        })
        .collect()
}

/// Cosine of two signatures: 0 when type, dtype or length differ; 1 when both vectors are all
/// zero, 0 when only one is; else the dot product (both are unit length).
pub fn cosine(a: &LayerSignature, b: &LayerSignature) -> f64 {
    if a.layer_type != b.layer_type || a.dtype != b.dtype || a.weights.len() != b.weights.len() {
        return 0.0;
    }
    let zero = |v: &[f32]| v.iter().all(|&x| x == 0.0);
    match (zero(&a.weights), zero(&b.weights)) {
        (true, true) => 1.0,
        (true, false) | (false, true) => 0.0,
        // Unit vectors rounded to f32 can give a dot product a hair outside [−1, 1].
        _ => a.weights.iter().zip(&b.weights).map(|(&x, &y)| x as f64 * y as f64).sum::<f64>().clamp(-1.0, 1.0),
    }
}

/// A slot of the first network whose best match in the second sits elsewhere.
#[derive(Debug, Clone, PartialEq)]
pub struct LogicShift {
    pub source: Coord,
    pub target: Coord,
    pub overlap: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Mean overlap over the coordinates both networks occupy (0 when none).
    pub overall: f64,
    /// Overlap per coordinate both networks occupy, in the first network's order.
    pub layer_overlaps: Vec<(Coord, f64)>,
    pub logic_shifts: Vec<LogicShift>,
}

/// A best match must exceed this overlap to count as a logic shift.
const SHIFT_THRESHOLD: f64 = 0.8;

/// Compare two DNAs. A logic shift is recorded for a signature of `a` whose best match in `b`
/// (highest cosine among equal-length vectors, > 0.8) sits at another coordinate; on a tie the
/// same coordinate wins (the reference takes the first in order, reporting shifts between
/// identical layers).
pub fn compare(a: &[LayerSignature], b: &[LayerSignature]) -> Comparison {
    let mut layer_overlaps = Vec::new();
    let mut logic_shifts = Vec::new();
    for sa in a {
        if let Some(sb) = b.iter().find(|sb| sb.coord == sa.coord) {
            layer_overlaps.push((sa.coord, cosine(sa, sb)));
        }
        let mut best: Option<(f64, Coord)> = None;
        for sb in b.iter().filter(|sb| sb.weights.len() == sa.weights.len()) {
            let score = cosine(sa, sb);
            let better = match best {
                None => true,
                Some((top, _)) => score > top || (score == top && sb.coord == sa.coord),
            };
            if better {
                best = Some((score, sb.coord));
            }
        }
        if let Some((overlap, target)) = best {
            if overlap > SHIFT_THRESHOLD && target != sa.coord {
                logic_shifts.push(LogicShift { source: sa.coord, target, overlap });
            }
        }
    }
    let overall = match layer_overlaps.len() {
        0 => 0.0,
        n => layer_overlaps.iter().map(|(_, s)| s).sum::<f64>() / n as f64,
    };
    Comparison { overall, layer_overlaps, logic_shifts }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(coord: Coord, layer_type: &str, weights: Vec<f32>) -> LayerSignature {
        LayerSignature { coord, layer_type: layer_type.into(), dtype: DType::Float32, weights }
    }

    #[test]
    fn normalise_and_cosine_rules() {
        assert_eq!(normalize(&[3.0, 4.0]), vec![0.6, 0.8]);
        assert_eq!(normalize(&[0.0, 0.0]), vec![0.0, 0.0]);
        let o = Coord::ORIGIN;
        assert_eq!(cosine(&sig(o, "Dense", vec![0.0, 0.0]), &sig(o, "Dense", vec![0.0, 0.0])), 1.0);
        assert_eq!(cosine(&sig(o, "Dense", vec![0.0, 0.0]), &sig(o, "Dense", vec![0.6, 0.8])), 0.0);
        assert_eq!(cosine(&sig(o, "Dense", vec![0.6, 0.8]), &sig(o, "RNN", vec![0.6, 0.8])), 0.0);
        let mut int8 = sig(o, "Dense", vec![0.6, 0.8]);
        int8.dtype = DType::Int8;
        assert_eq!(cosine(&sig(o, "Dense", vec![0.6, 0.8]), &int8), 0.0);
    }

    #[test]
    fn shifted_layers_are_found_and_ties_prefer_the_same_place() {
        let (p, q) = (Coord { l: 0, ..Coord::ORIGIN }, Coord { l: 1, ..Coord::ORIGIN });
        let a = [sig(p, "Dense", vec![1.0, 0.0]), sig(q, "Dense", vec![0.0, 1.0])];
        let swapped = [sig(p, "Dense", vec![0.0, 1.0]), sig(q, "Dense", vec![1.0, 0.0])];
        let c = compare(&a, &swapped);
        assert_eq!(c.overall, 0.0);
        assert_eq!(c.logic_shifts, vec![LogicShift { source: p, target: q, overlap: 1.0 }, LogicShift { source: q, target: p, overlap: 1.0 }]);
        let softmaxes = [sig(p, "Softmax", vec![1.0]), sig(q, "Softmax", vec![1.0])];
        assert!(compare(&softmaxes, &softmaxes).logic_shifts.is_empty());
    }
}
