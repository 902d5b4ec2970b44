// shaders/merge_splits.wgsl — the split decode attention's partials (shaders/split_attention.wgsl)
// merged into a product's staged input vector: element e of head h is Σ_s w_s·acc_s / Σ_s w_s·l_s
// over the used splits s, with w_s = exp(m_s − max_s m_s).
// - One pass loads every partial a thread reads: its pairs' maxima and sums into workgroup
//   memory, its elements' values of every split into registers (ELEMENT_ROUNDS × S_MAX of them:
//   24–48 for SmolLM2), so the values do not wait for the weights. Loading them after the weights
//   cost the fused step a second memory round trip per block (decode 1 800 → 2 070 tok/s on the
//   H100 without it).
// - Each pair's weight and weighted sum, by the pair's own thread, which reads its head's maxima
//   itself (a thread per head walking its splits in turn made a serial stage).
// - Each element's weighted Σ, from registers.
// Loops run a constant number of times and load unconditionally (splits past `splits` read the
// last used one, so every load reads a written partial, and are masked) so a thread's loads are
// issued together and its arrays stay in registers. Shared by decoder_matvec.wgsl (COMBINE) and
// the fused step; the including kernel provides HEADS, HD, S_MAX, WG, set_xs(i, v), and
// - partial_bits(i): the partial's f32 bits, 0 while it is not yet written;
// - wait_again(unwritten, spin): whether a pass that read an unwritten partial runs again (the
//   fused step's work items run concurrently with the attention's; the dispatched kernel's
//   partials are all written before it starts, and a 0 there is a real 0.0).

const PAIRS: u32 = HEADS * S_MAX;
const PAIR_ROUNDS: u32 = (PAIRS + WG - 1u) / WG;
const ELEMENT_ROUNDS: u32 = (HEADS * HD + WG - 1u) / WG;

var<workgroup> split_max: array<f32, PAIRS>;
var<workgroup> split_sum: array<f32, PAIRS>;
var<workgroup> split_weight: array<f32, PAIRS>;
var<workgroup> split_weighted_sum: array<f32, PAIRS>;

// Pair (head, split) with the split clamped to the used ones.
fn used_pair(pair: u32, splits: u32) -> u32 {
    let p = min(pair, PAIRS - 1u);
    return p - p % S_MAX + min(p % S_MAX, splits - 1u);
}

fn merge_splits(lid: u32, splits: u32) {
    var values: array<f32, ELEMENT_ROUNDS * S_MAX>;
    for (var spin = 0u; ; spin++) {
        var unwritten = false;
        for (var i = 0u; i < PAIR_ROUNDS; i++) {
            let pair = lid + i * WG;
            let at = used_pair(pair, splits) * (HD + 2u);
            let m = partial_bits(at + HD);
            let l = partial_bits(at + HD + 1u);
            unwritten = unwritten || m == 0u || l == 0u;
            if (pair < PAIRS) {
                split_max[pair] = bitcast<f32>(m);
                split_sum[pair] = bitcast<f32>(l);
            }
        }
        for (var i = 0u; i < ELEMENT_ROUNDS; i++) {
            let e = lid + i * WG;
            let first = min(e, HEADS * HD - 1u) / HD * S_MAX;
            for (var s = 0u; s < S_MAX; s++) {
                let bits = partial_bits((first + min(s, splits - 1u)) * (HD + 2u) + e % HD);
                unwritten = unwritten || bits == 0u;
                values[i * S_MAX + s] = bitcast<f32>(bits);
            }
        }
        if (!wait_again(unwritten, spin)) {
            break;
        }
    }
    workgroupBarrier();
    for (var i = 0u; i < PAIR_ROUNDS; i++) {
        let pair = lid + i * WG;
        if (pair < PAIRS) {
            let first = pair - pair % S_MAX;
            var m = -3.4028235e38;
            for (var s = 0u; s < S_MAX; s++) {
                m = max(m, split_max[first + min(s, splits - 1u)]);
            }
            let w = select(0.0, exp(split_max[pair] - m), pair % S_MAX < splits);
            split_weight[pair] = w;
            split_weighted_sum[pair] = w * split_sum[pair];
        }
    }
    workgroupBarrier();
    for (var i = 0u; i < ELEMENT_ROUNDS; i++) {
        let e = lid + i * WG;
        let first = min(e, HEADS * HD - 1u) / HD * S_MAX;
        var acc = 0.0;
        var total = 0.0;
        for (var s = 0u; s < S_MAX; s++) {
            let pair = first + min(s, splits - 1u);
            let used = s < splits;
            acc += select(0.0, values[i * S_MAX + s] * split_weight[pair], used);
            total += select(0.0, split_weighted_sum[pair], used);
        }
        if (e < HEADS * HD) {
            set_xs(e, acc / total);
        }
    }
}
