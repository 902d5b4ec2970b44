// shaders/merge_splits.wgsl — the split decode attention's partials (shaders/split_attention.wgsl)
// merged into a product's staged input vector: every (head, split)'s maximum and sum, each head's
// overall maximum and rescaled sum, each split's weight exp(m_s − m) / sum, then each element's
// weighted Σ over the splits. Loops run S_MAX times and load unconditionally (splits past
// `splits` clamped, then masked) so a thread's loads are issued together. Shared by decoder_matvec.wgsl (COMBINE) and the fused step; the including
// kernel provides HEADS, HD, S_MAX, WG, partial_at(i) and set_xs(i, v).

const PAIRS: u32 = HEADS * S_MAX;

var<workgroup> split_max: array<f32, PAIRS>;
var<workgroup> split_sum: array<f32, PAIRS>;
var<workgroup> head_max: array<f32, HEADS>;
var<workgroup> head_sum: array<f32, HEADS>;

fn merge_splits(lid: u32, splits: u32) {
    for (var i = 0u; i < (PAIRS + WG - 1u) / WG; i++) {
        let pair = lid + i * WG;
        let at = min(pair, PAIRS - 1u) * (HD + 2u);
        let m = partial_at(at + HD);
        let l = partial_at(at + HD + 1u);
        if (pair < PAIRS && pair % S_MAX < splits) {
            split_max[pair] = m;
            split_sum[pair] = l;
        }
    }
    workgroupBarrier();
    if (lid < HEADS) {
        var m = -3.4028235e38;
        for (var s = 0u; s < S_MAX; s++) {
            if (s < splits) {
                m = max(m, split_max[lid * S_MAX + s]);
            }
        }
        var total = 0.0;
        for (var s = 0u; s < S_MAX; s++) {
            if (s < splits) {
                total += split_sum[lid * S_MAX + s] * exp(split_max[lid * S_MAX + s] - m);
            }
        }
        head_max[lid] = m;
        head_sum[lid] = total;
    }
    workgroupBarrier();
    // split_max becomes each split's weight.
    for (var i = 0u; i < (PAIRS + WG - 1u) / WG; i++) {
        let pair = lid + i * WG;
        if (pair < PAIRS && pair % S_MAX < splits) {
            let h = pair / S_MAX;
            split_max[pair] = exp(split_max[pair] - head_max[h]) / head_sum[h];
        }
    }
    workgroupBarrier();
    for (var i = 0u; i < (HEADS * HD + WG - 1u) / WG; i++) {
        let e = lid + i * WG;
        if (e < HEADS * HD) {
            let h = e / HD;
            var acc = 0.0;
            for (var s = 0u; s < S_MAX; s++) {
                let used = min(s, splits - 1u);
                let v = partial_at((h * S_MAX + used) * (HD + 2u) + e % HD);
                acc += select(0.0, v * split_max[h * S_MAX + used], s < splits);
            }
            set_xs(e, acc);
        }
    }
}
