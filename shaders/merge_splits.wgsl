// shaders/merge_splits.wgsl — the split decode attention's partials (shaders/split_attention.wgsl)
// merged into a product's staged input vector: every (head, split)'s maximum and sum, each head's
// overall maximum and rescaled sum, then each element's rescaled Σ over the splits, divided by
// the head's sum. Shared by decoder_matvec.wgsl (COMBINE) and the fused step; the including
// kernel provides HEADS, HD, S_MAX, WG, partial_at(i) and set_xs(i, v).

const PAIRS: u32 = HEADS * S_MAX;

var<workgroup> split_max: array<f32, PAIRS>;
var<workgroup> split_sum: array<f32, PAIRS>;
var<workgroup> head_max: array<f32, HEADS>;
var<workgroup> head_sum: array<f32, HEADS>;

fn merge_splits(lid: u32, splits: u32) {
    for (var pair = lid; pair < PAIRS; pair += WG) {
        let at = pair * (HD + 2u);
        split_max[pair] = partial_at(at + HD);
        split_sum[pair] = partial_at(at + HD + 1u);
    }
    workgroupBarrier();
    if (lid < HEADS) {
        var m = -3.4028235e38;
        for (var s = 0u; s < splits; s++) {
            m = max(m, split_max[lid * S_MAX + s]);
        }
        var total = 0.0;
        for (var s = 0u; s < splits; s++) {
            total += split_sum[lid * S_MAX + s] * exp(split_max[lid * S_MAX + s] - m);
        }
        head_max[lid] = m;
        head_sum[lid] = total;
    }
    workgroupBarrier();
    for (var e = lid; e < HEADS * HD; e += WG) {
        let h = e / HD;
        var acc = 0.0;
        for (var s = 0u; s < splits; s++) {
            acc += partial_at((h * S_MAX + s) * (HD + 2u) + e % HD) * exp(split_max[h * S_MAX + s] - head_max[h]);
        }
        set_xs(e, acc / head_sum[h]);
    }
}
