// shaders/online_softmax.wgsl — one step of an online (streaming) softmax-weighted sum, shared by
// the attention kernels: folds the `count` scores of the tile staged in `scores` (values read
// through the including kernel's tile_v(j, d)) into the running maximum m, sum l and output element acc of thread lid (< HD),
// rescaling what was folded before to the new maximum.

fn fold_tile(count: u32, lid: u32, m: ptr<function, f32>, l: ptr<function, f32>, acc: ptr<function, f32>) {
    var tile_max = *m;
    for (var j = 0u; j < count; j++) {
        tile_max = max(tile_max, scores[j]);
    }
    let correction = exp(*m - tile_max);
    *l *= correction;
    *acc *= correction;
    for (var j = 0u; j < count; j++) {
        let weight = exp(scores[j] - tile_max);
        *l += weight;
        if (lid < HD) {
            *acc += weight * tile_v(j, lid);
        }
    }
    *m = tile_max;
}
