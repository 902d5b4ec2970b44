// shaders/decoder_embed.wgsl — embedding lookup: row t of y is the table row of token t, decoded
// from the table's resident format (shaders/matrix.wgsl as `a`), for t < step.count.
// Prepended: K (the embedding width).

@group(0) @binding(4) var<storage, read> step: array<u32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
@group(0) @binding(9) var<storage, read> tokens: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let t = id.y;
    if (id.x >= K || t >= step[1]) {
        return;
    }
    y[t * K + id.x] = a_at(tokens[t], id.x, K / 32u);
}
