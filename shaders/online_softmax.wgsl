// shaders/online_softmax.wgsl — one step of an online (streaming) softmax-weighted sum, shared by
// the attention kernels: folds the `count` scores of the tile staged in `scores` (values read
// through the including kernel's tile_v(j, d)) into the running maximum m and sum l (the same in
// every thread) and output element acc of thread lid (< HD), rescaling what was folded before to
// the new maximum. Each key's weight is computed once (by thread j, into `scores`), and the
// weighted sum of the values is split over V_PARTS threads per element (keys V_PARTS apart),
// then added up: every thread walking every key with an exp each made a 32-long serial chain.
// The including kernel provides WG, HD (≤ WG), TILE (≤ WG) and `red` (WG floats).

const V_PARTS: u32 = WG / HD;

fn fold_tile(count: u32, lid: u32, m: ptr<function, f32>, l: ptr<function, f32>, acc: ptr<function, f32>) {
    var tile_max = *m;
    for (var j = 0u; j < TILE; j++) {
        tile_max = select(tile_max, max(tile_max, scores[j]), j < count);
    }
    workgroupBarrier();
    if (lid < TILE) {
        scores[lid] = select(0.0, exp(scores[lid] - tile_max), lid < count);
    }
    workgroupBarrier();
    let correction = exp(*m - tile_max);
    var weights = 0.0;
    for (var j = 0u; j < TILE; j++) {
        weights += scores[j];
    }
    *l = *l * correction + weights;
    let d = lid % HD;
    let part = lid / HD;
    var part_sum = 0.0;
    for (var k = 0u; k < (TILE + V_PARTS - 1u) / V_PARTS; k++) {
        let j = min(part + k * V_PARTS, TILE - 1u);
        part_sum += select(0.0, scores[j] * tile_v(j, d), part < V_PARTS && part + k * V_PARTS < TILE);
    }
    red[lid] = part_sum;
    workgroupBarrier();
    if (lid < HD) {
        var total = 0.0;
        for (var p = 0u; p < V_PARTS; p++) {
            total += red[p * HD + lid];
        }
        *acc = *acc * correction + total;
    }
    *m = tile_max;
}
