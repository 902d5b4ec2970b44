//! Softmax-family maps of one vector, in f64: softmax, sparsemax and α-entmax, each with its
//! exact vector–Jacobian product. The Softmax layer (layers/softmax.rs) decides which vectors.

/// p = softmax(z), the maximum subtracted first.
pub fn softmax(z: &[f64], p: &mut [f64]) {
    let max = z.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0;
    for (pi, &zi) in p.iter_mut().zip(z) {
        *pi = (zi - max).exp();
        sum += *pi;
    }
    p.iter_mut().for_each(|v| *v /= sum);
}

/// dz = p ⊙ (dy − ⟨dy, p⟩): the softmax VJP, from its output p.
pub fn softmax_vjp(p: &[f64], dy: &[f64], dz: &mut [f64]) {
    let dot: f64 = p.iter().zip(dy).map(|(a, b)| a * b).sum();
    for ((d, &pi), &g) in dz.iter_mut().zip(p).zip(dy) {
        *d = pi * (g - dot);
    }
}

/// z sorted in descending order into `sorted`.
fn sort_descending(z: &[f64], sorted: &mut Vec<f64>) {
    sorted.clear();
    sorted.extend_from_slice(z);
    sorted.sort_unstable_by(|a, b| b.total_cmp(a));
}

/// Sparsemax (Martins & Astudillo, 2016): p = max(z − τ, 0) with τ from the exact support
/// k = max{j : 1 + j·z_(j) > Σ_{i≤j} z_(i)} over the descending order (every j is tested; the
/// reference stops at the first failure).
pub fn sparsemax(z: &[f64], p: &mut [f64], sorted: &mut Vec<f64>) {
    sort_descending(z, sorted);
    let (mut cumsum, mut support_sum, mut support) = (0.0, 0.0, 0usize);
    for (j, &v) in sorted.iter().enumerate() {
        cumsum += v;
        if 1.0 + (j + 1) as f64 * v > cumsum {
            support = j + 1;
            support_sum = cumsum;
        }
    }
    // j = 1 always qualifies (1 + z_(1) > z_(1)), so the support is never empty.
    let tau = (support_sum - 1.0) / support as f64;
    for (pi, &zi) in p.iter_mut().zip(z) {
        *pi = (zi - tau).max(0.0);
    }
}

/// 1.5-entmax by the exact sort-based threshold (Peters, Niculae & Martins, 2019):
/// p = max(z/2 − τ, 0)² with τ = mean_k − √((1 − k·var_k)/k) at the largest support size k
/// whose τ_k ≤ the k-th largest z/2.
fn entmax15(z: &[f64], p: &mut [f64], sorted: &mut Vec<f64>) {
    let max = z.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
    // Shifting by the maximum shifts τ equally and keeps the moments well conditioned.
    let half: Vec<f64> = z.iter().map(|&v| (v - max) / 2.0).collect();
    sort_descending(&half, sorted);
    let (mut sum, mut sum_sq, mut tau) = (0.0, 0.0, 0.0);
    for (j, &v) in sorted.iter().enumerate() {
        let k = (j + 1) as f64;
        sum += v;
        sum_sq += v * v;
        let mean = sum / k;
        let variance = sum_sq / k - mean * mean;
        let tau_k = mean - ((1.0 - k * variance) / k).max(0.0).sqrt();
        if tau_k <= v {
            tau = tau_k;
        }
    }
    for (pi, &hi) in p.iter_mut().zip(&half) {
        let d = (hi - tau).max(0.0);
        *pi = d * d;
    }
}

/// α-entmax for α in (1, 2) other than 1.5: p_i = max((α−1)·z_i − τ, 0)^{1/(α−1)}, with τ found
/// by bisection until the interval stops shrinking in f64.
fn entmax_bisect(z: &[f64], alpha: f64, p: &mut [f64]) {
    let max = z.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
    let scaled: Vec<f64> = z.iter().map(|&v| (alpha - 1.0) * (v - max)).collect();
    let power = 1.0 / (alpha - 1.0);
    let mass = |tau: f64| scaled.iter().map(|&v| (v - tau).max(0.0).powf(power)).sum::<f64>();
    // The largest scaled value is 0: at τ = −1 it alone has mass 1, at τ = −(1/n)^{α−1} every
    // term is at most 1/n.
    let (mut lo, mut hi) = (-1.0, -(1.0 / z.len() as f64).powf(alpha - 1.0));
    loop {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if mass(mid) >= 1.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    for (pi, &v) in p.iter_mut().zip(&scaled) {
        *pi = (v - lo).max(0.0).powf(power);
    }
}

/// α-entmax for α in [1, 2]: softmax at 1, sparsemax at 2, the exact sort-based form at 1.5,
/// bisection elsewhere. The result is renormalised to sum to 1 (a last-bit correction).
pub fn entmax(z: &[f64], alpha: f64, p: &mut [f64], sorted: &mut Vec<f64>) {
    if alpha == 1.0 {
        return softmax(z, p);
    }
    if alpha == 2.0 {
        sparsemax(z, p, sorted);
    } else if alpha == 1.5 {
        entmax15(z, p, sorted);
    } else {
        entmax_bisect(z, alpha, p);
    }
    let sum: f64 = p.iter().sum();
    p.iter_mut().for_each(|v| *v /= sum);
}

/// The entmax VJP from its output: with s_i = p_i^{2−α} on the support (0 elsewhere),
/// dz = s ⊙ (dy − ⟨s, dy⟩ / Σs). α = 1 gives the softmax VJP, α = 2 the sparsemax one.
pub fn entmax_vjp(p: &[f64], alpha: f64, dy: &[f64], dz: &mut [f64]) {
    let weight = |pi: f64| if pi > 0.0 { pi.powf(2.0 - alpha) } else { 0.0 };
    let (mut total, mut dot) = (0.0, 0.0);
    for (&pi, &g) in p.iter().zip(dy) {
        let s = weight(pi);
        total += s;
        dot += s * g;
    }
    let mean = dot / total;
    for ((d, &pi), &g) in dz.iter_mut().zip(p).zip(dy) {
        *d = weight(pi) * (g - mean);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entmax_of(z: &[f64], alpha: f64) -> Vec<f64> {
        let mut p = vec![0.0; z.len()];
        entmax(z, alpha, &mut p, &mut Vec::new());
        p
    }

    #[test]
    fn sparsemax_finds_the_whole_support_past_a_failing_prefix() {
        // Sorted: 1.0, 0.9, 0.1. The support is {1.0, 0.9}: τ = 0.45.
        let p = entmax_of(&[0.1, 1.0, 0.9], 2.0);
        assert!((p[1] - 0.55).abs() < 1e-12 && (p[2] - 0.45).abs() < 1e-12 && p[0] == 0.0);
    }

    #[test]
    fn bisection_agrees_with_the_exact_form_near_one_and_a_half() {
        let z = [0.3, -1.2, 2.0, 0.0, 1.1, -0.4];
        let exact = entmax_of(&z, 1.5);
        let mut bisected = vec![0.0; z.len()];
        entmax_bisect(&z, 1.5, &mut bisected);
        let sum: f64 = bisected.iter().sum();
        for (a, b) in exact.iter().zip(&bisected) {
            assert!((a - b / sum).abs() < 1e-12, "{exact:?} vs {bisected:?}");
        }
    }
}
