//! Dense matrix products over f32 or packed weights W[n][k] (row-major, PyTorch Linear layout):
//! forward y = x·Wᵀ, input gradient dx = g·W, weight gradient dW = gᵀ·x.
//!
//! Packed weights are decoded a block at a time into a small scratch tile (never a whole float
//! copy) and multiplied with the cache-blocked SIMD GEMM of the `gemm` crate. Blocks have fixed
//! boundaries, and each block's GEMM runs on one thread, so `Tiled` and `Parallel` give bitwise
//! identical results for any thread count. f32 weights go to one GEMM call, whose rayon split
//! covers output tiles only (the k-reduction order does not depend on threads).

use super::Schedule;
use crate::weights::WeightView;
use rayon::prelude::*;

/// Scratch budget for one decoded weight tile (fits in L2 beside the GEMM's packed panels).
const TILE_BYTES: usize = 256 * 1024;
/// Output rows per float32 forward block: enough work per block to amortise packing x, and
/// blocks for every core on the shapes we care about.
const F32_BLOCK_ROWS: usize = 128;

/// A read-only matrix operand: element (r, c) at data[r·rs + c·cs].
#[derive(Clone, Copy)]
struct Operand<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

/// A destination pointer shared by blocks that write disjoint columns.
#[derive(Clone, Copy)]
struct DstPtr(*mut f32);
unsafe impl Send for DstPtr {}
unsafe impl Sync for DstPtr {}

impl DstPtr {
    /// Safety: `offset` must stay inside the destination allocation.
    unsafe fn add(self, offset: usize) -> DstPtr {
        DstPtr(self.0.add(offset))
    }
}

/// dst[m×n] (row stride dst_rs, unit column stride) = lhs[m×k]·rhs[k×n], on the calling thread
/// (parallelism comes from running blocks side by side, see `for_each_block`).
///
/// Safety: `dst` must be valid for writes at every (r, c) with r < m, c < n, and no other thread
/// may touch those elements during the call.
unsafe fn gemm_raw(
    m: usize,
    n: usize,
    k: usize,
    dst: DstPtr,
    dst_rs: usize,
    lhs: Operand,
    rhs: Operand,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k > 0 {
        assert!((m - 1) * lhs.rs + (k - 1) * lhs.cs < lhs.data.len(), "lhs out of bounds");
        assert!((k - 1) * rhs.rs + (n - 1) * rhs.cs < rhs.data.len(), "rhs out of bounds");
    }
    gemm::gemm(
        m,
        n,
        k,
        dst.0,
        1,
        dst_rs as isize,
        false,
        lhs.data.as_ptr(),
        lhs.cs as isize,
        lhs.rs as isize,
        rhs.data.as_ptr(),
        rhs.cs as isize,
        rhs.rs as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// Rows of W per decoded tile (a multiple of 8, at least 8).
fn rows_per_tile(k: usize) -> usize {
    ((TILE_BYTES / 4 / k.max(1)) / 8 * 8).clamp(8, 512)
}

/// Below this many multiply-adds a product runs on one thread even in `Parallel` (waking the
/// pool costs more than it saves). Blocks are the same either way, so results are too.
const PARALLEL_MIN_MACS: usize = 1 << 21;

/// Run `block(i)` for i in 0..count, serially or on the rayon pool (when `macs` is worth it).
fn for_each_block(schedule: Schedule, count: usize, macs: usize, block: impl Fn(usize) + Send + Sync) {
    if schedule == Schedule::Parallel && count > 1 && macs >= PARALLEL_MIN_MACS {
        (0..count).into_par_iter().for_each(block);
    } else {
        (0..count).for_each(block);
    }
}

/// y[b×n] = x[b×k] · Wᵀ.
pub fn forward(x: &[f32], b: usize, k: usize, w: WeightView, n: usize, schedule: Schedule) -> Vec<f32> {
    assert_eq!(x.len(), b * k);
    assert_eq!(w.len(), n * k);
    let mut y = vec![0f32; b * n];
    if schedule == Schedule::Normal {
        let mut row = vec![0f32; k];
        for o in 0..n {
            w.decode_into(o * k, &mut row);
            for bi in 0..b {
                let xr = &x[bi * k..(bi + 1) * k];
                let acc: f64 = xr.iter().zip(&row).map(|(&a, &c)| a as f64 * c as f64).sum();
                y[bi * n + o] = acc as f32;
            }
        }
        return y;
    }
    if super::gemv::applies(b) {
        return super::gemv::forward(x, b, k, w, n, schedule);
    }
    let lhs = Operand { data: x, rs: k, cs: 1 };
    // Blocks of output rows, each one single-threaded GEMM: packed weights are decoded into a
    // tile first, float32 weights are read in place.
    let tile_rows = match w {
        WeightView::F32(_) => F32_BLOCK_ROWS,
        WeightView::Packed(_) => rows_per_tile(k),
    };
    let dst = DstPtr(y.as_mut_ptr());
    for_each_block(schedule, n.div_ceil(tile_rows), b * n * k, |t| {
        let o0 = t * tile_rows;
        let rows = tile_rows.min(n - o0);
        let decoded;
        let tile: &[f32] = match w {
            WeightView::F32(weights) => &weights[o0 * k..(o0 + rows) * k],
            WeightView::Packed(_) => {
                let mut buf = vec![0f32; rows * k];
                w.decode_into(o0 * k, &mut buf);
                decoded = buf;
                &decoded
            }
        };
        let rhs = Operand { data: tile, rs: 1, cs: k };
        // Safety: block t writes only columns o0..o0+rows of y.
        unsafe {
            gemm_raw(b, rows, k, dst.add(o0), n, lhs, rhs)
        }
    });
    y
}

/// dx[b×k] = g[b×n] · W.
pub fn backward_input(g: &[f32], b: usize, n: usize, w: WeightView, k: usize, schedule: Schedule) -> Vec<f32> {
    assert_eq!(g.len(), b * n);
    assert_eq!(w.len(), n * k);
    let mut dx = vec![0f32; b * k];
    if schedule == Schedule::Normal {
        let mut acc = vec![0f64; b * k];
        let mut row = vec![0f32; k];
        for o in 0..n {
            w.decode_into(o * k, &mut row);
            for bi in 0..b {
                let gv = g[bi * n + o] as f64;
                let a = &mut acc[bi * k..(bi + 1) * k];
                a.iter_mut().zip(&row).for_each(|(s, &c)| *s += gv * c as f64);
            }
        }
        dx.iter_mut().zip(&acc).for_each(|(d, &a)| *d = a as f32);
        return dx;
    }
    let lhs = Operand { data: g, rs: n, cs: 1 };
    // Column chunks of W: packed weights are decoded into tile[o][c] = W[o][k0 + c], float32
    // weights are read in place (row stride k).
    let cols = ((TILE_BYTES / 4 / n.max(1)) / 8 * 8).clamp(8, k.max(8));
    let dst = DstPtr(dx.as_mut_ptr());
    for_each_block(schedule, k.div_ceil(cols), b * n * k, |t| {
        let k0 = t * cols;
        let width = cols.min(k - k0);
        let decoded;
        let rhs = match w {
            WeightView::F32(weights) => Operand { data: &weights[k0..], rs: k, cs: 1 },
            WeightView::Packed(_) => {
                let mut tile = vec![0f32; n * width];
                for o in 0..n {
                    w.decode_into(o * k + k0, &mut tile[o * width..(o + 1) * width]);
                }
                decoded = tile;
                Operand { data: &decoded, rs: width, cs: 1 }
            }
        };
        // Safety: chunk t writes only columns k0..k0+width of dx.
        unsafe {
            gemm_raw(b, width, n, dst.add(k0), k, lhs, rhs)
        }
    });
    dx
}

/// dW[n×k] = gᵀ · x  (g is [b×n], x is [b×k]).
pub fn weight_grad(g: &[f32], b: usize, n: usize, x: &[f32], k: usize, schedule: Schedule) -> Vec<f32> {
    assert_eq!(g.len(), b * n);
    assert_eq!(x.len(), b * k);
    let mut dw = vec![0f32; n * k];
    if schedule == Schedule::Normal {
        let mut acc = vec![0f64; k];
        for o in 0..n {
            acc.iter_mut().for_each(|a| *a = 0.0);
            for bi in 0..b {
                let gv = g[bi * n + o] as f64;
                let xr = &x[bi * k..(bi + 1) * k];
                acc.iter_mut().zip(xr).for_each(|(s, &v)| *s += gv * v as f64);
            }
            dw[o * k..(o + 1) * k].iter_mut().zip(&acc).for_each(|(d, &a)| *d = a as f32);
        }
        return dw;
    }
    // Blocks of dW rows (output features), one single-threaded GEMM each.
    let rhs = Operand { data: x, rs: k, cs: 1 };
    let dst = DstPtr(dw.as_mut_ptr());
    for_each_block(schedule, n.div_ceil(F32_BLOCK_ROWS), b * n * k, |t| {
        let o0 = t * F32_BLOCK_ROWS;
        let rows = F32_BLOCK_ROWS.min(n - o0);
        let lhs = Operand { data: &g[o0..], rs: 1, cs: n };
        // Safety: block t writes only rows o0..o0+rows of dW.
        unsafe { gemm_raw(rows, k, b, dst.add(o0 * k), k, lhs, rhs) }
    });
    dw
}

/// Column sums of g[b×n] (the bias gradient), accumulated in f64 in row order.
pub fn column_sums(g: &[f32], b: usize, n: usize) -> Vec<f32> {
    let mut acc = vec![0f64; n];
    for row in g.chunks_exact(n).take(b) {
        acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v as f64);
    }
    acc.into_iter().map(|a| a as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode_standard;
    use crate::dtype::DType;

    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / 16777216.0) - 0.5).collect()
    }

    fn rel(a: &[f32], b: &[f32]) -> f64 {
        let num = a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max);
        let den = b.iter().map(|y| y.abs() as f64).fold(1e-30, f64::max);
        num / den
    }

    #[test]
    fn schedules_agree_for_f32_and_packed() {
        let (b, k, n) = (5, 67, 43);
        let x = data(b * k, 1);
        let g = data(b * n, 2);
        let master = data(n * k, 3);
        for dtype in [DType::Float32, DType::Int4, DType::Fp8E4M3, DType::Binary] {
            let packed = encode_standard(&master, dtype);
            let view = if dtype == DType::Float32 { WeightView::F32(&master) } else { WeightView::Packed(&packed) };
            let f: Vec<_> = Schedule::ALL.iter().map(|&s| forward(&x, b, k, view, n, s)).collect();
            let d: Vec<_> = Schedule::ALL.iter().map(|&s| backward_input(&g, b, n, view, k, s)).collect();
            for s in 1..3 {
                assert!(rel(&f[s], &f[0]) < 1e-6, "{dtype} forward {s}");
                assert!(rel(&d[s], &d[0]) < 1e-6, "{dtype} backward {s}");
            }
        }
        let w: Vec<_> = Schedule::ALL.iter().map(|&s| weight_grad(&g, b, n, &x, k, s)).collect();
        assert!(rel(&w[1], &w[0]) < 1e-6 && rel(&w[2], &w[0]) < 1e-6);
    }

    #[test]
    fn parallel_is_bitwise_identical_across_thread_counts() {
        let (b, k, n) = (64, 300, 520);
        let x = data(b * k, 4);
        let g = data(b * n, 5);
        let master = data(n * k, 6);
        let packed = encode_standard(&master, DType::Int8);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                (
                    forward(&x, b, k, WeightView::F32(&master), n, Schedule::Parallel),
                    forward(&x, b, k, WeightView::Packed(&packed), n, Schedule::Parallel),
                    backward_input(&g, b, n, WeightView::F32(&master), k, Schedule::Parallel),
                    backward_input(&g, b, n, WeightView::Packed(&packed), k, Schedule::Parallel),
                    weight_grad(&g, b, n, &x, k, Schedule::Parallel),
                )
            })
        };
        let one = run(1);
        for threads in [2, 3, 8] {
            let other = run(threads);
            assert_eq!(one.0, other.0);
            assert_eq!(one.1, other.1);
            assert_eq!(one.2, other.2);
            assert_eq!(one.3, other.3);
            assert_eq!(one.4, other.4);
        }
    }
}
