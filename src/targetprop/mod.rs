//! Neural target propagation (the reference's "tween", targetprop.md): every layer learns from a
//! target for its own output instead of a gradient of the global loss.
//!
//! A step over a mini-batch: (1) forward capture — the grid's training forward, keeping every
//! layer's input, output and record; (2) targets, from the global target backwards, in one of
//! two modes:
//! - chain rule (`use_chain_rule`): the descent direction e = target − output goes back through
//!   each layer's backward; a layer's target is its output + gradient_scale·e, its update the
//!   gradient step;
//! - true target propagation: a layer's output gap (target − output) is pushed back to a gap at
//!   its input through its weights by the weighted combination (rules.rs; pathways with
//!   |w| < weight_threshold carry nothing, no derivative is taken), and the layer takes a local
//!   step on ½‖output − target‖² (for a linear Dense: the reference's delta rule x·gap).
//!   Containers split targets over their stages and branches; every member learns locally.
//!
//! Estimated targets are clamped to ±activation_clamp. (3) Link budgets: per layer call the
//! budget (cos(output, target) + 1)/2; a call whose budget is below min_budget is gated (a
//! dead or anti-aligned link learns nothing this step); others learn at the rate
//! lr·(0.5 + 0.5·budget)·depth_scale_factor^k, k the call's distance from the output in grid
//! steps. (4) The update: per tensor v = momentum·v + (1 − momentum)·Δ, W += v on the FP32
//! master; morphed (quantised) tensors then re-morph to their dtype. A non-finite loss or
//! weight stops the step with the last good weights.
//!
//! Mesh entry point (for a clock-stepped systolic mesh learning online):
//! `TargetProp::apply_cycle(net, batch, &[CycleInput], target, lr, schedule)` (mesh.rs). Give it,
//! in traversal order, what each coordinate consumed in one cycle — its input (sample shape,
//! optional Residual skip) and which earlier entry produced it (`Source::Step(j)`, or
//! `Source::Input` for the external input; a later entry is a feedback link from the previous
//! cycle and gets no target) — and the target for the last entry's output. It recomputes each
//! coordinate's output with its training forward (the records the local updates need), then
//! runs targets, budgets, gaps and the update exactly as `step` does; `links()` and `captures()`
//! report them afterwards. The gap pushed back from a coordinate's input becomes the target of
//! its source's output, which is exact once the mesh is in steady state (the input held for as
//! many cycles as the path is long), as in the reference's StepApplyTween.
//! `Systolic::step_targetprop` (systolic/bridge.rs) builds that list from a clock cycle.

mod config;
mod mesh;
mod rules;
mod state;
mod update;
mod walk;

pub use config::{FieldValue, TargetPropConfig};
pub use mesh::CycleInput;
pub use state::{mse, StepReport, TargetProp};
pub use walk::{Capture, Link};
