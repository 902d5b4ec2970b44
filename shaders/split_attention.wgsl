// shaders/split_attention.wgsl — one (query head, split) work item of a decode step's attention
// (flash-decoding), shared by the dispatched kernel (decoder_attention_decode.wgsl) and the fused
// step (decoder_step.wgsl): keys [split·KC, split·KC + KC) ∩ [0, pos], TILE at a time staged by
// constant-count (unrolled, batched) coalesced loads and folded into an online softmax; the
// partial (unnormalised Σ p·v, max m, Σ p) goes to (h·S_MAX + split)·(HD + 2). The work item that
// holds position `pos` rotates the new key itself and, for the first query head of its KV group,
// appends K and V to the cache; every work item rotates its query. Query head h reads KV head
// h / (heads / kv_heads); that head's cache starts at cache_base + kv_head · capacity · HD.
// The including kernel provides: HD, WG (≥ HD, a multiple of TILE), TILE, KC, S_MAX; the storage
// arrays `rope`, `k_cache`, `v_cache`; `red` (WG floats of workgroup memory); qkv_at(i) and
// set_partial(i, v) for the step's Q|K|V row and the partials; the staged tile through
// set_tile(j, d, k, v), tile_k(j, d) and tile_v(j, d) (the last also read by online_softmax.wgsl).

const HALF: u32 = HD / 2u;
const LOAD_ITERS: u32 = (TILE * HD + WG - 1u) / WG;
// A key's dot product is split over PARTS threads, each taking HD / PARTS dimensions.
const PARTS: u32 = WG / TILE;
const PART_DIMS: u32 = (HD + PARTS - 1u) / PARTS;

var<workgroup> qs: array<f32, HD>;
var<workgroup> k_new: array<f32, HD>;
var<workgroup> v_new: array<f32, HD>;
var<workgroup> scores: array<f32, TILE>;

// The half-split RoPE rotation of pair i of the head at qkv[at..at + HD], for position pos.
fn rotated(at: u32, pos: u32, i: u32) -> vec2<f32> {
    let cs = rope[pos * HALF + i];
    let a = qkv_at(at + i);
    let b = qkv_at(at + i + HALF);
    return vec2<f32>(a * cs.x - b * cs.y, a * cs.y + b * cs.x);
}

fn attend_split(h: u32, split: u32, pos: u32, heads: u32, kv_heads: u32, capacity: u32, cache_base: u32, scale: f32, lid: u32) {
    let first = split * KC;
    let end = min(first + KC, pos + 1u);
    let per_group = heads / kv_heads;
    let kv_head = h / per_group;
    let cache_head = cache_base + kv_head * capacity * HD;
    let holds_new = end == pos + 1u;
    if (lid < HALF) {
        let q = rotated(h * HD, pos, lid);
        qs[lid] = q.x;
        qs[lid + HALF] = q.y;
        if (holds_new) {
            let k = rotated((heads + kv_head) * HD, pos, lid);
            k_new[lid] = k.x;
            k_new[lid + HALF] = k.y;
        }
    }
    if (holds_new && lid < HD) {
        v_new[lid] = qkv_at((heads + kv_heads + kv_head) * HD + lid);
    }
    workgroupBarrier();
    if (holds_new && h % per_group == 0u && lid < HD) {
        k_cache[cache_head + pos * HD + lid] = k_new[lid];
        v_cache[cache_head + pos * HD + lid] = v_new[lid];
    }
    var m = -3.4028235e38;
    var l = 0.0;
    var acc = 0.0;
    for (var t0 = first; t0 < end; t0 += TILE) {
        for (var i = 0u; i < LOAD_ITERS; i++) {
            let e = lid + i * WG;
            let j = e / HD;
            let d = e % HD;
            let key = t0 + j;
            // Loaded unconditionally (clamped into the split, masked after) so the loads are
            // issued together; the row at `pos` is the new key, not yet in every cache read.
            let cached = cache_head + min(key, end - 1u) * HD + d;
            let k_cached = k_cache[cached];
            let v_cached = v_cache[cached];
            if (e < TILE * HD) {
                let fresh = key == pos;
                let inside = key < end;
                set_tile(j, d, select(select(0.0, k_cached, inside), k_new[d], fresh), select(select(0.0, v_cached, inside), v_new[d], fresh));
            }
        }
        workgroupBarrier();
        let key = lid / PARTS;
        var dot = 0.0;
        for (var i = 0u; i < PART_DIMS; i++) {
            let d = (lid % PARTS) * PART_DIMS + i;
            if (d < HD) {
                dot += qs[d] * tile_k(key, d);
            }
        }
        red[lid] = dot;
        workgroupBarrier();
        if (lid < TILE) {
            var s = -3.4028235e38;
            if (t0 + lid < end) {
                var total = 0.0;
                for (var i = 0u; i < PARTS; i++) {
                    total += red[lid * PARTS + i];
                }
                s = total * scale;
            }
            scores[lid] = s;
        }
        workgroupBarrier();
        fold_tile(min(TILE, end - t0), lid, &m, &l, &acc);
        workgroupBarrier();
    }
    let out = (h * S_MAX + split) * (HD + 2u);
    if (lid < HD) {
        set_partial(out + lid, acc);
        if (lid == 0u) {
            set_partial(out + HD, m);
            set_partial(out + HD + 1u, l);
        }
    }
}
