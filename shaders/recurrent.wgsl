// shaders/recurrent.wgsl — one time step of an RNN or LSTM cell (src/layers/recurrent.rs defines
// them), one thread per (batch item, hidden unit). The gate pre-activations are the step's row
// of `pre` (x_t·W_ihᵀ + b, all steps computed up front) plus, after the first step, `recurrent`
// (h_{t−1}·W_hhᵀ, computed by the dispatch before this one); both come from shaders/dense.wgsl.
// LSTM gate blocks are stacked i, f, g, o. The hidden state h_t goes to `state` (read by the next
// step's product) and to the output: every step's row, or one row per item for the last state.
// Prepended: WG and shaders/activation.wgsl. Threads fold into y past the grid limit.

struct Params {
    batch: u32,
    hidden: u32,
    steps: u32,
    step: u32,
    lstm: u32,
    activation: u32,
    sequences: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> pre: array<f32>;
@group(0) @binding(2) var<storage, read> recurrent: array<f32>;
@group(0) @binding(3) var<storage, read_write> state: array<f32>;
@group(0) @binding(4) var<storage, read_write> cell: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
) {
    let e = (group.x + group.y * groups.x) * WG + local.x;
    let h = p.hidden;
    if (e >= p.batch * h) {
        return;
    }
    let b = e / h;
    let j = e % h;
    let width = select(1u, 4u, p.lstm == 1u) * h;
    let row = b * p.steps + p.step;
    var gates = vec4<f32>(0.0);
    for (var q = 0u; q < width / h; q++) {
        var v = pre[row * width + q * h + j];
        // h_0 = 0: the first step has no recurrent term.
        if (p.step > 0u) {
            v += recurrent[b * width + q * h + j];
        }
        gates[q] = v;
    }
    var value: f32;
    if (p.lstm == 1u) {
        let i = sigmoid_f(gates.x);
        let f = sigmoid_f(gates.y);
        let g = tanh_f(gates.z);
        let o = sigmoid_f(gates.w);
        var c_prev = 0.0;
        if (p.step > 0u) {
            c_prev = cell[e];
        }
        let c = f * c_prev + i * g;
        cell[e] = c;
        value = o * tanh_f(c);
    } else {
        value = activate(gates.x, p.activation);
    }
    state[e] = value;
    out[select(e, row * h + j, p.sequences == 1u)] = value;
}
