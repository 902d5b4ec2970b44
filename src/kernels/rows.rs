//! Row-wise loops (norms, softmaxes, gathers, element-wise gates) over fixed blocks of rows:
//! serial for `Normal`/`Tiled`, spread over the rayon pool for `Parallel`.
//!
//! Block boundaries depend only on the shape, never on the thread count, so a reduction that
//! sums per-block partials in block order gives the same bits for any pool size. `Normal` runs
//! all rows as one block (plain loops, one accumulator).

use super::Schedule;
use rayon::prelude::*;
use std::ops::Range;

/// Values a block touches: big enough to amortise a rayon task, small enough to give every
/// core blocks on modest batches.
const BLOCK_VALUES: usize = 16 * 1024;
/// Below this many values a `Parallel` loop stays on the calling thread (same blocks, same bits).
const PARALLEL_MIN_VALUES: usize = 64 * 1024;

/// Rows per block for rows that each touch `row_cost` values (`Normal`: every row at once).
fn block_rows(schedule: Schedule, rows: usize, row_cost: usize) -> usize {
    match schedule {
        Schedule::Normal => rows.max(1),
        _ => (BLOCK_VALUES / row_cost.max(1)).max(1),
    }
}

/// Split `out` (rows of `width` values) into row blocks and call `f(rows, block_out)` for each;
/// returns what each block returned, in block order. `row_cost` (values one row touches)
/// sizes the blocks and decides whether `Parallel` is worth waking the pool.
pub fn row_blocks<E: Send, T: Send>(
    schedule: Schedule,
    out: &mut [E],
    width: usize,
    row_cost: usize,
    f: impl Fn(Range<usize>, &mut [E]) -> T + Sync + Send,
) -> Vec<T> {
    let width = width.max(1);
    let rows = out.len() / width;
    let per_block = block_rows(schedule, rows, row_cost);
    let run = |(i, chunk): (usize, &mut [E])| {
        let first = i * per_block;
        f(first..first + chunk.len() / width, chunk)
    };
    if schedule == Schedule::Parallel && rows > per_block && rows * row_cost >= PARALLEL_MIN_VALUES {
        out.par_chunks_mut(per_block * width).enumerate().map(run).collect()
    } else {
        out.chunks_mut(per_block * width).enumerate().map(run).collect()
    }
}

/// Element-wise sum of per-block partials, in block order (f64, one rounding at the end).
pub fn sum_partials(partials: &[Vec<f64>], len: usize) -> Vec<f32> {
    let mut total = vec![0f64; len];
    for p in partials {
        total.iter_mut().zip(p).for_each(|(t, v)| *t += v);
    }
    total.into_iter().map(|t| t as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_every_row_once_in_order() {
        for schedule in Schedule::ALL {
            let mut out = vec![0f32; 3 * 40_000];
            let ranges = row_blocks(schedule, &mut out, 3, 3, |rows, chunk| {
                chunk.iter_mut().enumerate().for_each(|(i, v)| *v = (rows.start * 3 + i) as f32);
                rows
            });
            assert!(out.iter().enumerate().all(|(i, &v)| v == i as f32));
            assert_eq!(ranges.first().unwrap().start, 0);
            assert_eq!(ranges.last().unwrap().end, 40_000);
            assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
        }
    }
}
