// shaders/dense_weights_f32.wgsl — the dense kernel's weight loader for f32 weights.

@group(0) @binding(2) var<storage, read> w: array<f32>;

fn load_w(e: u32) -> f32 {
    return w[e];
}
