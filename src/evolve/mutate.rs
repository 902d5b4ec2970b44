//! NEATMutate (reference dna_evolution.md §4): per slot, in traversal order, independent draws
//! for weight perturbation, a new activation, a node mutation (a fresh layer of another allowed
//! type) and a disabled-flag toggle; then once per network, adding and dropping a remote link.
//! Structural changes are only made where the network still runs on its input shape and keeps
//! its output shape (the reference applies them blindly and builds networks that cannot run).

use super::config::{NeatConfig, NodeType};
use super::links::{self, Link};
use super::nodes::{self, SlotFrame};
use crate::activation::Activation;
use crate::codec::Codec;
use crate::coord::Coord;
use crate::dna::layer_params;
use crate::error::{Error, Result};
use crate::layers::recurrent::Cell;
use crate::layers::{Conv, Dense, Embedding, KMeans, Layer, Recurrent, Shape};
use crate::network::exec::{self, Source};
use crate::network::VolumetricNetwork;
use crate::rng::Rng;
use std::sync::Arc;

/// The activations a mutation draws from (the reference's list).
const ACTIVATIONS: [Activation; 6] = [Activation::Relu, Activation::Silu, Activation::Gelu, Activation::Tanh, Activation::Sigmoid, Activation::Linear];

/// The contract structural mutations keep: samples of `input` still produce `output`.
#[derive(Debug, Clone)]
struct Frame {
    input: Shape,
    output: Shape,
}

impl Frame {
    fn of(net: &VolumetricNetwork, cfg: &NeatConfig) -> Result<Frame> {
        let input = cfg.input_shape.clone().or_else(|| exec::expected_input_shape(net)).ok_or_else(|| {
            Error::Value("structural mutations need the network's input sample shape: its first layer takes any shape, so set input_shape in the NEAT config".into())
        })?;
        let output = exec::output_shape(net, &input).map_err(|e| Error::Value(format!("the network to mutate does not run on input shape {input:?}: {e}")))?;
        Ok(Frame { input, output })
    }

    fn holds(&self, net: &VolumetricNetwork) -> bool {
        exec::output_shape(net, &self.input).is_ok_and(|s| s == self.output)
    }
}

fn below(rng: &mut Rng, n: usize) -> usize {
    (rng.next_u64() % n as u64) as usize
}

/// A mutated deep copy of `net` (the RNG seeded with `cfg.seed`).
pub fn mutate(net: &VolumetricNetwork, cfg: &NeatConfig) -> Result<VolumetricNetwork> {
    let mut child = net.deep_clone();
    mutate_in_place(&mut child, cfg, cfg.seed)?;
    Ok(child)
}

/// Mutate a network that owns its buffers (a fresh copy), drawing from `seed`.
pub fn mutate_in_place(net: &mut VolumetricNetwork, cfg: &NeatConfig, seed: u64) -> Result<()> {
    cfg.check()?;
    let mut rng = Rng::new(seed);
    let frame = if cfg.structural() { Some(Frame::of(net, cfg)?) } else { None };
    let coords: Vec<Coord> = net.occupied().map(|(c, _)| c).collect();
    for c in coords {
        if rng.next_f64() < cfg.weight_perturb_rate {
            perturb(net, c, cfg.weight_perturb_scale, &mut rng)?;
        }
        if rng.next_f64() < cfg.activation_mut_rate {
            let activation = ACTIVATIONS[below(&mut rng, ACTIVATIONS.len())];
            if let Some(layer) = with_activation(&layer_at(net, c), activation) {
                replace(net, c, layer)?;
            }
        }
        if let Some(frame) = frame.as_ref().filter(|_| rng.next_f64() < cfg.node_mutate_rate) {
            replace_node(net, c, cfg, frame, &mut rng)?;
        }
        if let Some(frame) = frame.as_ref().filter(|_| rng.next_f64() < cfg.layer_toggle_rate) {
            let disabled = net.slot(c)?.is_some_and(|s| s.disabled);
            net.set_disabled(c, !disabled)?;
            if !frame.holds(net) {
                net.set_disabled(c, disabled)?;
            }
        }
    }
    if let Some(frame) = frame.as_ref().filter(|_| net.occupied().count() >= 2 && rng.next_f64() < cfg.connection_add_rate) {
        add_connection(net, frame, &mut rng)?;
    }
    if let Some(frame) = frame.as_ref().filter(|_| rng.next_f64() < cfg.connection_drop_rate) {
        drop_connection(net, frame, &mut rng)?;
    }
    Ok(())
}

fn layer_at(net: &VolumetricNetwork, c: Coord) -> Arc<Layer> {
    net.slot(c).ok().flatten().expect("mutations visit occupied slots").layer.clone()
}

/// Put `layer` at `c`, keeping the slot's disabled flag and link.
fn replace(net: &mut VolumetricNetwork, c: Coord, layer: Layer) -> Result<()> {
    let (disabled, link) = net.slot(c)?.map_or((false, None), |s| (s.disabled, s.link));
    net.set_layer(c, Arc::new(layer))?;
    net.set_disabled(c, disabled)?;
    net.set_link(c, link)
}

/// w += U(−scale, scale) for every tensor of the layer (container members included).
fn perturb(net: &VolumetricNetwork, c: Coord, scale: f64, rng: &mut Rng) -> Result<()> {
    for p in layer_params(&layer_at(net, c)) {
        p.write()
            .unwrap()
            .update_master(|w| w.iter_mut().for_each(|v| *v += rng.uniform(scale as f32)))
            .map_err(|e| Error::Value(format!("layer at {c}: cannot perturb its weights: {e}")))?;
    }
    Ok(())
}

/// The layer with another activation (its tensors kept), or None for types without one. An
/// RNN cell has only ReLU or tanh: ReLU selects ReLU, anything else tanh (as its JSON reader).
fn with_activation(layer: &Layer, activation: Activation) -> Option<Layer> {
    Some(match layer {
        Layer::Dense(d) => Layer::Dense(Dense { activation, ..d.clone() }),
        Layer::Conv(conv) => Layer::Conv(Conv { activation, ..conv.clone() }),
        Layer::Embedding(e) => Layer::Embedding(Embedding { activation, ..e.clone() }),
        Layer::KMeans(k) => Layer::KMeans(KMeans { activation, ..k.clone() }),
        Layer::Recurrent(r @ Recurrent { cell: Cell::Rnn(_), .. }) => {
            let cell = Cell::Rnn(if activation == Activation::Relu { Activation::Relu } else { Activation::Tanh });
            Layer::Recurrent(Recurrent { cell, ..r.clone() })
        }
        _ => return None,
    })
}

/// What slot `c` reads and hands on when it runs (enabled), or None when enabling it breaks
/// the network.
fn slot_frame(net: &VolumetricNetwork, c: Coord, frame: &Frame, token_vocab: Option<usize>) -> Option<SlotFrame> {
    let mut trial = net.clone();
    trial.set_disabled(c, false).ok()?;
    if !frame.holds(&trial) {
        return None;
    }
    let steps = exec::plan(&trial, &frame.input).ok()?;
    let step = steps.iter().find(|s| s.coord == c)?;
    let input = match step.input {
        Source::Input => frame.input.clone(),
        Source::Step(i) => steps[i].shape.clone(),
    };
    let token_vocab = if step.input == Source::Input { token_vocab } else { None };
    Some(SlotFrame { input, output: step.shape.clone(), token_vocab })
}

/// Replace the layer at `c` by a fresh one of a random allowed type (not its own) that fits
/// the slot: the types are tried in a random order and the first that fits is taken.
fn replace_node(net: &mut VolumetricNetwork, c: Coord, cfg: &NeatConfig, frame: &Frame, rng: &mut Rng) -> Result<()> {
    let old = layer_at(net, c);
    let current = NodeType::of(&old);
    let mut kinds: Vec<NodeType> = cfg.allowed_layer_types.iter().copied().filter(|&k| Some(k) != current).collect();
    rng.shuffle(&mut kinds);
    let seed = rng.next_u64();
    let Some(slot) = slot_frame(net, c, frame, cfg.token_vocab) else { return Ok(()) };
    let codec = old.params().first().map_or(Codec::Standard, |p| p.read().unwrap().codec());
    for kind in kinds {
        let Some(layer) = nodes::build(kind, &slot, &old, cfg, seed, codec) else { continue };
        let mut trial = net.clone();
        replace(&mut trial, c, layer)?;
        let disabled = trial.slot(c)?.is_some_and(|s| s.disabled);
        trial.set_disabled(c, false)?;
        if frame.holds(&trial) {
            trial.set_disabled(c, disabled)?;
            *net = trial;
            return Ok(());
        }
    }
    Ok(())
}

/// Add one remote link between a random pair of slots the network still runs with.
fn add_connection(net: &mut VolumetricNetwork, frame: &Frame, rng: &mut Rng) -> Result<()> {
    let mut pairs = links::add_candidates(net);
    rng.shuffle(&mut pairs);
    for (src, dst) in pairs {
        let mut trial = net.clone();
        replace(&mut trial, src, links::with_link(&layer_at(net, src), dst))?;
        if frame.holds(&trial) {
            *net = trial;
            return Ok(());
        }
    }
    Ok(())
}

/// Remove one random remote link whose removal the network still runs with.
fn drop_connection(net: &mut VolumetricNetwork, frame: &Frame, rng: &mut Rng) -> Result<()> {
    let mut candidates = links::drop_candidates(net);
    rng.shuffle(&mut candidates);
    for link in candidates {
        let mut trial = net.clone();
        match link {
            Link::Slot(c) => trial.set_link(c, None)?,
            Link::Branch(c, i) | Link::Stage(c, i) => replace(&mut trial, c, links::without_member(&layer_at(net, c), i))?,
        }
        if frame.holds(&trial) {
            *net = trial;
            return Ok(());
        }
    }
    Ok(())
}
