//! The kernels of a decoder-only transformer's token step and prefill, over resident buffers
//! (resident.rs): one-row products with fused RMSNorm and epilogues (shaders/decoder_matvec.wgsl),
//! register-blocked tiles for many rows split along K with their reduce (decoder_tiles.wgsl,
//! decoder_tiles_reduce.wgsl), embedding lookup, RoPE + KV append, tiled causal attention with an
//! online softmax, and the greedy argmax. Each builder returns `Recorded` dispatches; the model
//! (llm/gpu_model.rs) decides their order. No model knowledge here.

use super::cache;
use super::context::Context;
use super::resident::{bind, bind_ranges, Range, Recorded, ResidentMatrix, Scale};
use crate::error::{Error, Result};

const MATVEC_WGSL: &str = include_str!("../../shaders/decoder_matvec.wgsl");
const TILES_WGSL: &str = include_str!("../../shaders/decoder_tiles.wgsl");
const TILES_REDUCE_WGSL: &str = include_str!("../../shaders/decoder_tiles_reduce.wgsl");
const EPILOGUE_WGSL: &str = include_str!("../../shaders/decoder_epilogue.wgsl");
const EMBED_WGSL: &str = include_str!("../../shaders/decoder_embed.wgsl");
const ROPE_KV_WGSL: &str = include_str!("../../shaders/decoder_rope_kv.wgsl");
const ATTENTION_WGSL: &str = include_str!("../../shaders/decoder_attention.wgsl");
const ATTENTION_DECODE_WGSL: &str = include_str!("../../shaders/decoder_attention_decode.wgsl");
pub(crate) const ONLINE_SOFTMAX_WGSL: &str = include_str!("../../shaders/online_softmax.wgsl");
/// A decode step's (head, split) attention work item, also the fused step's (decoder_step.rs).
pub(crate) const SPLIT_ATTENTION_WGSL: &str = include_str!("../../shaders/split_attention.wgsl");
/// The merge of the split attention's partials, also the fused step's.
pub(crate) const MERGE_SPLITS_WGSL: &str = include_str!("../../shaders/merge_splits.wgsl");

/// Keys a decode-attention workgroup stages at once.
const KEY_TILE: usize = 32;
/// The most workgroups a head's keys are split over (the O-projection merges them all).
const MAX_SPLITS: usize = 16;

/// Keys per decode-attention workgroup for caches of `capacity` positions: whole tiles, at
/// most MAX_SPLITS splits.
pub(crate) fn keys_per_split(capacity: usize) -> usize {
    capacity.div_ceil(KEY_TILE * MAX_SPLITS).max(1) * KEY_TILE
}

pub(crate) fn splits(capacity: usize) -> usize {
    capacity.div_ceil(keys_per_split(capacity))
}
const ARGMAX_WGSL: &str = include_str!("../../shaders/decoder_argmax.wgsl");
pub(crate) const ARGMAX_REDUCE_WGSL: &str = include_str!("../../shaders/argmax_reduce.wgsl");

/// What a product does with its result (the MODE of the matvec and tile kernels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Epilogue {
    /// y = W·x (+ bias).
    Store = 0,
    /// y += W·x: the residual add.
    Add = 1,
    /// y = silu(a·x)·(b·x).
    SwiGlu = 2,
    /// y = [a·x | b·x | c·x] (+ bias): the Q, K, V projections.
    Concat = 3,
}

/// The buffers every decoder kernel may read besides its own: the step record [first position,
/// new positions] and a small zero buffer bound where a kernel's optional input is absent.
pub(crate) struct Shared<'a> {
    pub step: &'a wgpu::Buffer,
    pub none: &'a wgpu::Buffer,
}

/// A product of one or more matrices (Concat: 3, SwiGlu: 2, otherwise 1) with `x`.
pub(crate) struct Product<'a> {
    pub matrices: &'a [&'a ResidentMatrix],
    pub epilogue: Epilogue,
    pub x: &'a wgpu::Buffer,
    pub y: &'a wgpu::Buffer,
    pub bias: Option<&'a wgpu::Buffer>,
}

impl Product<'_> {
    fn k(&self) -> usize {
        self.matrices[0].cols
    }

    /// Output columns (rows of W; all three for Concat).
    fn n(&self) -> usize {
        match self.epilogue {
            Epilogue::Concat => self.matrices.iter().map(|m| m.rows).sum(),
            _ => self.matrices[0].rows,
        }
    }

    fn check(&self) -> Result<()> {
        let wanted = match self.epilogue {
            Epilogue::Concat => 3,
            Epilogue::SwiGlu => 2,
            _ => 1,
        };
        let k = self.k();
        if self.matrices.len() != wanted || self.matrices.iter().any(|m| m.cols != k) {
            return Err(Error::Shape(format!("a {:?} product needs {wanted} matrices of width {k}", self.epilogue)));
        }
        if self.epilogue == Epilogue::SwiGlu && self.matrices[1].rows != self.matrices[0].rows {
            return Err(Error::Shape("SwiGLU's gate and up matrices differ in rows".into()));
        }
        Ok(())
    }

    /// The bindings of a matvec or tiles kernel: params, x, γ, bias, step, y, a, b, c, then `extra`.
    fn bind<'b>(&'b self, ctx: &Context, pipeline: &wgpu::ComputePipeline, shared: &Shared<'b>, params: &'b wgpu::Buffer, gain: Option<&'b wgpu::Buffer>, extra: &[(u32, Range<'b>)]) -> wgpu::BindGroup {
        let abc = self.abc();
        let whole = Range::whole;
        let entries = [
            (0, whole(params)),
            (1, whole(self.x)),
            (2, whole(gain.unwrap_or(shared.none))),
            (3, whole(self.bias.unwrap_or(shared.none))),
            (4, whole(shared.step)),
            (5, whole(self.y)),
            (6, abc[0].range()),
            (7, abc[1].range()),
            (8, abc[2].range()),
        ];
        bind_ranges(ctx, pipeline, &[&entries[..], extra].concat())
    }

    /// The matrices as a, b, c (missing ones repeat the first: bound, never read).
    fn abc(&self) -> [&ResidentMatrix; 3] {
        let m = self.matrices;
        [m[0], *m.get(1).unwrap_or(&m[0]), *m.get(2).unwrap_or(&m[0])]
    }

    /// The matrices' WGSL as a, b, c, the key of their formats, and the matrices.
    fn sources(&self, dot: bool) -> (String, String, [&ResidentMatrix; 3]) {
        let abc = self.abc();
        let source = ["a", "b", "c"].iter().zip(abc).zip(6u32..).map(|((name, mat), binding)| mat.source(name, binding, dot)).collect();
        let key = abc.iter().map(|m| m.format_key()).collect::<Vec<_>>().join(",");
        (source, key, abc)
    }
}

/// What precedes a one-row product in its prologue.
#[derive(Clone, Copy)]
pub(crate) enum Prologue<'a> {
    /// x as it is.
    Plain,
    /// x RMS-normalised with (γ, ε).
    Norm(&'a wgpu::Buffer, f32),
    /// x is the split decode attention's partials for `heads` (see `attention_decode`).
    Combine(Heads),
}

/// One row of `x` (row 0, or the last new position's with `last_row`) through `product`, after
/// `prologue`.
pub(crate) fn matvec(ctx: &Context, shared: &Shared<'_>, product: &Product<'_>, prologue: Prologue<'_>, last_row: bool) -> Result<Recorded> {
    product.check()?;
    let (k, rows) = (product.k(), product.n());
    // A power of two for the tree reduction; idle lanes beat lanes with unequal shares.
    let lanes = (k / 32).next_power_of_two().min(32);
    let rows_per_pass = 256 / lanes;
    // Big matrices (an LM head) take several passes per workgroup, amortising the prologue.
    let repeat = (rows / (rows_per_pass * 512)).clamp(1, 16);
    let (norm, combine) = match prologue {
        Prologue::Plain => (None, None),
        Prologue::Norm(gain, epsilon) => (Some((gain, epsilon)), None),
        Prologue::Combine(heads) => (None, Some(heads)),
    };
    // Without COMBINE its workgroup arrays shrink to one (head, split) pair.
    let (hd, kc, s_max) = combine.map_or((k, KEY_TILE, 1), |h| (h.head_dim, keys_per_split(h.capacity), splits(h.capacity)));
    let header = format!(
        "const LANES: u32 = {lanes}u;\nconst ROWS: u32 = {rows_per_pass}u;\nconst REPEAT: u32 = {repeat}u;\nconst K: u32 = {k}u;\n\
         const NORM: u32 = {}u;\nconst MODE: u32 = {}u;\nconst HAS_BIAS: u32 = {}u;\nconst COMBINE: u32 = {}u;\n\
         const HD: u32 = {hd}u;\nconst KC: u32 = {kc}u;\nconst S_MAX: u32 = {s_max}u;\n",
        norm.is_some() as u32,
        product.epilogue as u32,
        product.bias.is_some() as u32,
        combine.is_some() as u32
    );
    let (source, key, abc) = product.sources(true);
    let pipeline = cache::bounded_pipeline(ctx, "decoder_matvec", format!("{header}// {key}\n"), &[&source, MERGE_SPLITS_WGSL, MATVEC_WGSL])?;
    #[repr(C)]
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    struct Params {
        rows: u32,
        a_rows: u32,
        b_rows: u32,
        last_row: u32,
        epsilon: f32,
        _pad: [u32; 3],
    }
    let params = Params {
        rows: rows as u32,
        a_rows: abc[0].rows as u32,
        b_rows: abc[1].rows as u32,
        last_row: last_row as u32,
        epsilon: norm.map_or(0.0, |n| n.1),
        _pad: [0; 3],
    };
    let params = ctx.uniform("matvec params", &params)?;
    let group = product.bind(ctx, &pipeline, shared, &params, norm.map(|n| n.0), &[]);
    Ok(Recorded { pipeline, group, grid: ctx.grid(rows.div_ceil(rows_per_pass * repeat))?, scale: Scale::Fixed })
}

/// The 32-value blocks of K a split-K tile workgroup walks when K is split as finely as it may
/// be: at most 4 blocks = 128 of K, four k-steps (the blocks are spread evenly over the splits,
/// so 5 blocks walk 3 + 2). A tile's k-steps are latency bound (global loads → workgroup memory → barrier →
/// multiply-adds → barrier, ≈ 2 µs each on the H100), so a product runs faster as short walks
/// over many workgroups than as long walks over few; much shorter walks and the partial tiles
/// (written, then read again by the reduce) cost more than the k-steps they save.
const BLOCKS_PER_SPLIT: usize = 4;
/// Workgroups per 64-row tile that splitting K aims for (a few per SM of a large GPU): K is split
/// only until column tiles × splits reach it, so a product that is already wide (an LM head over
/// every row) is not split and the partials of big models' products stay a few copies of Y.
const SPLIT_WORKGROUPS: usize = 256;

/// How a many-row product walks K: `splits` workgroups per output tile (grid z), each over
/// `blocks_per_split` blocks of 32 (the last over what is left). At most ⌈blocks /
/// BLOCKS_PER_SPLIT⌉ splits, fewer when the product has column tiles enough without.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SplitK {
    splits: usize,
    blocks_per_split: usize,
}

impl SplitK {
    fn of(k: usize, column_tiles: usize) -> SplitK {
        let blocks = k.div_ceil(32).max(1);
        let wanted = SPLIT_WORKGROUPS.div_ceil(column_tiles.max(1));
        let splits = wanted.clamp(1, blocks.div_ceil(BLOCKS_PER_SPLIT));
        let blocks_per_split = blocks.div_ceil(splits);
        SplitK { splits: blocks.div_ceil(blocks_per_split), blocks_per_split }
    }
}

/// (partial sums per row, tiles of output columns) of a tiles product with `n` outputs per row:
/// a SwiGLU tile holds 32 outputs (their gate and up columns), any other 64.
fn tile_columns(n: usize, epilogue: Epilogue) -> (usize, usize) {
    match epilogue {
        Epilogue::SwiGlu => (2 * n, n.div_ceil(32)),
        _ => (n, n.div_ceil(64)),
    }
}

/// Floats of the partials buffer `tiles` needs for a product with K = `k`, `n` outputs per row
/// and `max_rows` rows (0 when K is not split): per split and row its partial sums, then with
/// `norm` per split and row the partial sum of squares.
pub(crate) fn tiles_partials_len(k: usize, n: usize, epilogue: Epilogue, norm: bool, max_rows: usize) -> usize {
    let (columns, column_tiles) = tile_columns(n, epilogue);
    match SplitK::of(k, column_tiles).splits {
        1 => 0,
        splits => splits * max_rows * (columns + norm as usize),
    }
}

/// Rows of `x` up to `max_rows` (the rows computed are `step.count`) through `product`, each row
/// RMS-normalised by `norm` = (γ, ε) first: register-blocked 64 × 64 tiles split along K (grid
/// column tiles × row tiles × splits), then, when K is split, the reduce that sums the splits'
/// partial tiles (in `partials`, `tiles_partials_len` floats) and applies the epilogue.
pub(crate) fn tiles(ctx: &Context, shared: &Shared<'_>, product: &Product<'_>, norm: Option<(&wgpu::Buffer, f32)>, max_rows: usize, partials: &wgpu::Buffer) -> Result<Vec<Recorded>> {
    product.check()?;
    let (k, n) = (product.k(), product.n());
    let (columns, column_tiles) = tile_columns(n, product.epilogue);
    let split = SplitK::of(k, column_tiles);
    let needed = tiles_partials_len(k, n, product.epilogue, norm.is_some(), max_rows);
    if (needed * 4) as u64 > partials.size() {
        return Err(Error::Shape(format!(
            "a {:?} product of {max_rows} rows × {n} columns split {} ways along K = {k} needs {needed} floats of partials; the buffer holds {}",
            product.epilogue,
            split.splits,
            partials.size() / 4
        )));
    }
    let header = format!(
        "const K: u32 = {k}u;\nconst MODE: u32 = {}u;\nconst HAS_BIAS: u32 = {}u;\nconst NORM: u32 = {}u;\nconst SPLITS: u32 = {}u;\n",
        product.epilogue as u32,
        product.bias.is_some() as u32,
        norm.is_some() as u32,
        split.splits
    );
    let (source, key, abc) = product.sources(false);
    let walk = format!("{header}const BLOCKS_PER_SPLIT: u32 = {}u;\n// {key}\n", split.blocks_per_split);
    let pipeline = cache::bounded_pipeline(ctx, "decoder_tiles", walk, &[&source, EPILOGUE_WGSL, TILES_WGSL])?;
    let epsilon = norm.map_or(0.0, |n| n.1);
    let params: [u32; 8] = [n as u32, abc[0].rows as u32, abc[1].rows as u32, epsilon.to_bits(), columns as u32, max_rows as u32, 0, 0];
    let params = ctx.uniform("tiles params", &params)?;
    let whole = Range::whole;
    let group = product.bind(ctx, &pipeline, shared, &params, norm.map(|n| n.0), &[(13, whole(partials))]);
    let grid = (column_tiles as u32, max_rows.div_ceil(64) as u32, split.splits as u32);
    let mut dispatches = vec![Recorded { pipeline, group, grid, scale: Scale::Rows { axis: 1, per: 64 } }];
    if split.splits > 1 {
        let pipeline = cache::bounded_pipeline(ctx, "decoder_tiles_reduce", header, &[EPILOGUE_WGSL, TILES_REDUCE_WGSL])?;
        let bias = whole(product.bias.unwrap_or(shared.none));
        let group = bind_ranges(ctx, &pipeline, &[(0, whole(&params)), (3, bias), (4, whole(shared.step)), (5, whole(product.y)), (13, whole(partials))]);
        let grid = (n.div_ceil(64) as u32, max_rows.div_ceil(4) as u32, 1);
        dispatches.push(Recorded { pipeline, group, grid, scale: Scale::Rows { axis: 1, per: 4 } });
    }
    Ok(dispatches)
}

/// y[t] = the table row of tokens[t], for t < step.count (at most `max_rows`).
pub(crate) fn embed(ctx: &Context, shared: &Shared<'_>, table: &ResidentMatrix, tokens: &wgpu::Buffer, y: &wgpu::Buffer, max_rows: usize) -> Result<Recorded> {
    let k = table.cols;
    let pipeline = cache::bounded_pipeline(ctx, "decoder_embed", format!("const K: u32 = {k}u;\n// {}\n", table.format_key()), &[&table.source("a", 6, false), EMBED_WGSL])?;
    let group = bind_ranges(ctx, &pipeline, &[(4, Range::whole(shared.step)), (5, Range::whole(y)), (6, table.range()), (9, Range::whole(tokens))]);
    Ok(Recorded { pipeline, group, grid: (k.div_ceil(256) as u32, max_rows as u32, 1), scale: Scale::Rows { axis: 1, per: 1 } })
}

/// The attention geometry shared by the RoPE/KV and attention kernels.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Heads {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Positions the caches hold.
    pub capacity: usize,
}

/// The buffers of one attention layer: [Q | K | V] rows, the caches (this layer's range of the
/// stacked caches), the RoPE table (cos, sin per position and pair) and the output rows.
#[derive(Clone, Copy)]
pub(crate) struct AttentionBuffers<'a> {
    pub qkv: &'a wgpu::Buffer,
    pub k_cache: Range<'a>,
    pub v_cache: Range<'a>,
    pub rope: &'a wgpu::Buffer,
    pub out: &'a wgpu::Buffer,
}

/// RoPE on the new rows' queries and keys, then K and V appended to the caches (prefill).
pub(crate) fn rope_kv(ctx: &Context, shared: &Shared<'_>, heads: Heads, b: &AttentionBuffers<'_>, max_rows: usize) -> Result<Recorded> {
    let pipeline = cache::bounded_pipeline(ctx, "decoder_rope_kv", format!("const HD: u32 = {}u;\n", heads.head_dim), &[ROPE_KV_WGSL])?;
    let params: [u32; 4] = [heads.heads as u32, heads.kv_heads as u32, heads.capacity as u32, 0];
    let params = ctx.uniform("rope params", &params)?;
    let w = Range::whole;
    let group = bind_ranges(ctx, &pipeline, &[(0, w(&params)), (1, w(b.rope)), (4, w(shared.step)), (5, w(b.qkv)), (10, b.k_cache), (11, b.v_cache)]);
    Ok(Recorded { pipeline, group, grid: (max_rows as u32, 1, 1), scale: Scale::Rows { axis: 0, per: 1 } })
}

fn check_heads(heads: Heads) -> Result<()> {
    let hd = heads.head_dim;
    if !hd.is_multiple_of(2) || hd > 256 || heads.kv_heads == 0 || !heads.heads.is_multiple_of(heads.kv_heads) {
        return Err(Error::Shape(format!(
            "GPU attention needs an even head_dim ≤ 256 and heads a multiple of kv_heads, got head_dim {hd}, {} heads, {} kv heads",
            heads.heads, heads.kv_heads
        )));
    }
    Ok(())
}

fn attention_params(ctx: &Context, heads: Heads) -> Result<wgpu::Buffer> {
    #[repr(C)]
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    struct Params {
        heads: u32,
        kv_heads: u32,
        capacity: u32,
        scale: f32,
    }
    let scale = (1.0 / (heads.head_dim as f64).sqrt()) as f32;
    ctx.uniform("attention params", &Params { heads: heads.heads as u32, kv_heads: heads.kv_heads as u32, capacity: heads.capacity as u32, scale })
}

/// New rows a prefill attention workgroup takes (and keys it stages at once: 16 × 16 scores, one
/// per thread).
const QUERY_TILE: usize = 16;
/// Head dims a prefill attention workgroup stages at once: 16 rows of Q, K and V of 64 dims (Q and
/// K padded by 4) with the scores and weights take 14.5 KiB, within WebGPU's default 16 KiB of
/// workgroup memory; longer heads go in several chunks.
const DIMS_PER_CHUNK: usize = 64;

/// Causal attention of the new rows (RoPE applied and the caches filled by `rope_kv`) against
/// the caches: one workgroup of 256 threads per (head, QUERY_TILE rows), keys staged 16 at a
/// time, an online softmax per row.
pub(crate) fn attention(ctx: &Context, shared: &Shared<'_>, heads: Heads, b: &AttentionBuffers<'_>, max_rows: usize) -> Result<Recorded> {
    check_heads(heads)?;
    let hd = heads.head_dim;
    // Whole vectors of 4 (a head of 2 or 6 dims is padded with zeros).
    let dc = hd.next_multiple_of(4).min(DIMS_PER_CHUNK);
    let header = format!("const HD: u32 = {hd}u;\nconst DC: u32 = {dc}u;\nconst NCH: u32 = {}u;\n", hd.div_ceil(dc));
    let pipeline = cache::bounded_pipeline(ctx, "decoder_attention", header, &[ATTENTION_WGSL])?;
    let params = attention_params(ctx, heads)?;
    let w = Range::whole;
    let group = bind_ranges(ctx, &pipeline, &[(0, w(&params)), (4, w(shared.step)), (5, w(b.out)), (10, b.k_cache), (11, b.v_cache), (12, w(b.qkv))]);
    let grid = (heads.heads as u32, max_rows.div_ceil(QUERY_TILE) as u32, 1);
    Ok(Recorded { pipeline, group, grid, scale: Scale::Rows { axis: 1, per: QUERY_TILE } })
}

/// One decode step's attention split over the keys (`keys_per_split` per workgroup), with RoPE and
/// the cache append of the new position; `b.out` receives per (head, split) the unnormalised
/// output, the maximum and the sum (HD + 2 values), merged by a `Prologue::Combine` product.
pub(crate) fn attention_decode(ctx: &Context, shared: &Shared<'_>, heads: Heads, b: &AttentionBuffers<'_>) -> Result<Recorded> {
    check_heads(heads)?;
    let hd = heads.head_dim;
    // 256 threads: staging a tile takes 8 loads each, a key's dot 8 threads.
    let wg = hd.next_power_of_two().max(256);
    let (kc, s_max) = (keys_per_split(heads.capacity), splits(heads.capacity));
    let header = format!("const HD: u32 = {hd}u;\nconst WG: u32 = {wg}u;\nconst TILE: u32 = {KEY_TILE}u;\nconst KC: u32 = {kc}u;\nconst S_MAX: u32 = {s_max}u;\n");
    let pipeline = cache::bounded_pipeline(ctx, "decoder_attention_decode", header, &[ONLINE_SOFTMAX_WGSL, SPLIT_ATTENTION_WGSL, ATTENTION_DECODE_WGSL])?;
    let params = attention_params(ctx, heads)?;
    let w = Range::whole;
    let group = bind_ranges(ctx, &pipeline, &[(0, w(&params)), (1, w(b.rope)), (4, w(shared.step)), (5, w(b.out)), (10, b.k_cache), (11, b.v_cache), (12, w(b.qkv))]);
    Ok(Recorded { pipeline, group, grid: (heads.heads as u32, s_max as u32, 1), scale: Scale::Positions { axis: 1, per: kc } })
}

/// The floats `attention_decode` writes for `heads`.
pub(crate) fn decode_partials_len(heads: Heads) -> usize {
    heads.heads * splits(heads.capacity) * (heads.head_dim + 2)
}

/// tokens[0] = argmax of the first `n` logits.
pub(crate) fn argmax(ctx: &Context, logits: &wgpu::Buffer, n: usize, tokens: &wgpu::Buffer) -> Result<Recorded> {
    let limit = ctx.limits.max_compute_invocations_per_workgroup.min(ctx.limits.max_compute_workgroup_size_x).clamp(1, 1024);
    let wg = 1u32 << (31 - limit.leading_zeros());
    let pipeline = cache::bounded_pipeline(ctx, "decoder_argmax", format!("const WG: u32 = {wg}u;\n"), &[ARGMAX_REDUCE_WGSL, ARGMAX_WGSL])?;
    let params: [u32; 4] = [n as u32, 0, 0, 0];
    let params = ctx.uniform("argmax params", &params)?;
    let group = bind(ctx, &pipeline, &[(0, &params), (1, logits), (9, tokens)]);
    Ok(Recorded { pipeline, group, grid: (1, 1, 1), scale: Scale::Fixed })
}

#[cfg(test)]
mod tests {
    use super::{tiles_partials_len, tile_columns, Epilogue, SplitK, BLOCKS_PER_SPLIT};

    fn split(k: usize, n: usize, epilogue: Epilogue) -> SplitK {
        SplitK::of(k, tile_columns(n, epilogue).1)
    }

    #[test]
    fn smollm2_products_split_k_into_walks_of_four_blocks() {
        let four = |splits| SplitK { splits, blocks_per_split: 4 };
        assert_eq!(split(576, 960, Epilogue::Concat), four(5)); // norm + QKV: 18 blocks, 4+4+4+4+2
        assert_eq!(split(576, 576, Epilogue::Add), four(5)); // O + residual
        assert_eq!(split(576, 1536, Epilogue::SwiGlu), four(5)); // norm + gate·up·SiLU
        assert_eq!(split(1536, 576, Epilogue::Add), four(12)); // down + residual
        // The LM head over every row already has 768 column tiles: one walk over all of K.
        assert_eq!(split(576, 49_152, Epilogue::Store), SplitK { splits: 1, blocks_per_split: 18 });
        assert_eq!(tiles_partials_len(576, 49_152, Epilogue::Store, true, 256), 0);
        // Per split and row: 576 sums; with the norm one sum of squares more.
        assert_eq!(tiles_partials_len(1536, 576, Epilogue::Add, false, 256), 12 * 256 * 576);
        assert_eq!(tiles_partials_len(576, 1536, Epilogue::SwiGlu, true, 256), 5 * 256 * (2 * 1536 + 1));
    }

    #[test]
    fn splits_cover_every_block_once_and_none_is_empty() {
        for blocks in 1..200 {
            for column_tiles in [1, 3, 9, 48, 100, 300, 1000] {
                let s = SplitK::of(32 * blocks, column_tiles);
                assert!(s.splits * s.blocks_per_split >= blocks, "{blocks} blocks, {s:?}");
                assert!((s.splits - 1) * s.blocks_per_split < blocks, "{blocks} blocks, {s:?}: an empty split");
                let finest = blocks.div_ceil(BLOCKS_PER_SPLIT);
                assert!(s.splits <= finest, "{blocks} blocks, {s:?}");
                assert!(s.splits < finest || s.blocks_per_split <= BLOCKS_PER_SPLIT, "{blocks} blocks, {s:?}");
            }
        }
        assert_eq!(SplitK::of(96, 1), SplitK { splits: 1, blocks_per_split: 3 });
        assert_eq!(SplitK::of(160, 1), SplitK { splits: 2, blocks_per_split: 3 });
    }
}
