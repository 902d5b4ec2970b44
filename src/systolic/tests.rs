//! Unit tests of the mesh: cycle timing, bounded history, BPTT against finite differences of
//! the mesh's own forward (the NumPy-referenced tests are in tests/test_systolic.py).

use super::bptt::CycleGrads;
use super::Systolic;
use crate::activation::Activation;
use crate::codec::Codec;
use crate::kernels::Schedule;
use crate::layers::{sum_gradients, Dense, Layer, Residual};
use crate::network::{Coord, VolumetricNetwork};
use crate::train::Loss;
use std::sync::Arc;

fn at(l: usize) -> Coord {
    Coord { l, ..Coord::ORIGIN }
}

fn dense(i: usize, o: usize, act: Activation, seed: u64) -> Arc<Layer> {
    Arc::new(Layer::Dense(Dense::new(i, o, act, false, seed, Codec::Standard).unwrap()))
}

/// x → Dense(tanh) → Residual (+ cell 2's output, fed back) → Dense(tanh) → Dense.
fn feedback_net() -> VolumetricNetwork {
    let mut net = VolumetricNetwork::new(1, 1, 1, 4).unwrap();
    net.set_layer(at(0), dense(2, 3, Activation::Tanh, 1)).unwrap();
    net.set_layer(at(1), Arc::new(Layer::Residual(Residual))).unwrap();
    net.set_layer(at(2), dense(3, 3, Activation::Tanh, 2)).unwrap();
    net.set_layer(at(3), dense(3, 2, Activation::Linear, 3)).unwrap();
    net.set_link(at(1), Some(at(2))).unwrap();
    net
}

fn inputs(cycles: usize) -> Vec<Vec<f32>> {
    (0..cycles).map(|c| (0..4).map(|i| ((c * 4 + i) as f32 * 0.37).sin()).collect()).collect()
}

/// The mean squared output over the last two cycles, with the mesh capturing `cycles`.
fn run(net: &VolumetricNetwork, xs: &[Vec<f32>]) -> (Systolic, f64, CycleGrads) {
    let mut mesh = Systolic::new(net, xs.len());
    for x in xs {
        mesh.set_input(x.clone(), 2, &[2]).unwrap();
        mesh.step(net, Schedule::Tiled).unwrap();
    }
    let zeros = vec![0f32; 4];
    let last = mesh.cycle();
    let (loss, grads) = mesh.cycle_loss(net, &[(last - 1, &zeros), (last, &zeros)], Loss::Mse).unwrap();
    (mesh, loss, grads)
}

#[test]
fn data_reaches_the_output_after_one_cycle_per_cell_and_history_is_bounded() {
    let net = feedback_net();
    let mut mesh = Systolic::new(&net, 3);
    mesh.set_input(vec![0.5; 4], 2, &[2]).unwrap();
    for cycle in 1..=10u64 {
        mesh.step(&net, Schedule::Parallel).unwrap();
        assert_eq!(mesh.output(&net).unwrap().is_some(), cycle >= 4, "cycle {cycle}");
    }
    let kept: Vec<u64> = mesh.history().cycles().iter().map(|r| r.cycle).collect();
    assert_eq!(kept, vec![8, 9, 10]);
}

#[test]
fn bptt_matches_finite_differences_of_the_mesh() {
    let net = feedback_net();
    let xs = inputs(7);
    let (mesh, _, grads) = run(&net, &xs);
    let params = net.params();
    let analytic = sum_gradients(&params, mesh.backward(&net, grads, Schedule::Tiled).unwrap()).unwrap();
    let h = 1e-2f32;
    for (p, g) in params.iter().zip(&analytic) {
        let g = g.as_ref().expect("every weight is used");
        for i in 0..g.len() {
            let keep = p.read().unwrap().master().unwrap()[i];
            let at_value = |v: f32| {
                p.write().unwrap().update_master(|w| w[i] = v).unwrap();
                run(&net, &xs).1
            };
            let numeric = (at_value(keep + h) - at_value(keep - h)) / (2.0 * h as f64);
            at_value(keep);
            assert!((numeric - g[i] as f64).abs() < 2e-3 * (1.0 + numeric.abs()), "weight {i}: {numeric} vs {}", g[i]);
        }
    }
}
