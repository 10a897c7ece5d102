//! Scalar int8 quantisation with a per-vector error bound, which lets a quantised scan
//! *prove* which vectors can still be in the top k, so re-ranking only those in f32 gives
//! exactly the result of a full f32 scan at a quarter of the memory traffic.
//!
//! A stored vector `x` (unit length) keeps codes `c = round(x / s)` with `s = max|xᵢ| / 127`
//! and `e = ‖x − s·c‖`. A query `q` (unit length) is quantised to i16 the same way, with
//! its own `s_q` and `e_q`. Then, by Cauchy–Schwarz,
//!
//! `|q·x − s_q·s·(q̂·c)| ≤ ‖q‖·e + e_q·‖s·c‖ ≤ e + e_q·(1 + e)`
//!
//! and [`PreparedQuery::slack`] widens that by the worst rounding of the f32 arithmetic on
//! both sides, so the interval always contains the f32 score the re-rank computes.

use crate::index::simd::padded_dim;

/// The largest code magnitude of a stored vector.
const CODE_MAX: f32 = 127.0;

/// Quantisation data of one stored vector, next to its codes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct CodeMeta {
    /// `s`: a code times this is the component it stands for.
    pub scale: f32,
    /// `e`: the L2 norm of the rounding residual, rounded up.
    pub error: f32,
}

/// Appends the padded int8 codes of `v` to `codes` and returns their scale and error.
pub(crate) fn quantize_into(v: &[f32], codes: &mut Vec<i8>) -> CodeMeta {
    let max_abs = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let scale = if max_abs > 0.0 {
        max_abs / CODE_MAX
    } else {
        1.0
    };
    let mut residual = 0.0f64;
    let start = codes.len();
    codes.extend(v.iter().map(|&x| {
        let code = (x / scale).round().clamp(-CODE_MAX, CODE_MAX);
        let r = f64::from(x) - f64::from(code) * f64::from(scale);
        residual += r * r;
        // In range by the clamp above, so the cast cannot truncate.
        code as i8
    }));
    codes.resize(start + padded_dim(v.len()), 0);
    CodeMeta {
        scale,
        error: round_up(residual.sqrt()),
    }
}

/// A query ready for both kernels: the unit f32 vector for exact scores and its i16 codes
/// (padded) for the quantised pre-scan.
#[derive(Debug, Clone)]
pub(crate) struct PreparedQuery {
    pub vector: Vec<f32>,
    pub codes: Vec<i16>,
    pub scale: f32,
    pub error: f32,
    /// Covers f32 rounding: an n-term dot product of unit vectors is off by at most
    /// n·2⁻²⁴ (the kernel's and the quantised score's), and the scale products add a few
    /// ulps; 2·n·ε (ε = 2⁻²³) is four times the worst case.
    pub slack: f32,
}

impl PreparedQuery {
    /// `vector` must be L2-normalised (an [`crate::index::Embedding`] is).
    pub fn new(vector: &[f32]) -> Self {
        let padded = padded_dim(vector.len());
        // Keep Σ|qᵢ|·127 below 2³¹ so the i32 accumulators of the kernel cannot overflow.
        let limit = (i32::MAX as f32 / (CODE_MAX * padded.max(1) as f32))
            .min(32_767.0)
            .floor();
        let max_abs = vector.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let scale = if max_abs > 0.0 { max_abs / limit } else { 1.0 };
        let mut residual = 0.0f64;
        let mut codes: Vec<i16> = vector
            .iter()
            .map(|&x| {
                let code = (x / scale).round().clamp(-limit, limit);
                let r = f64::from(x) - f64::from(code) * f64::from(scale);
                residual += r * r;
                // In range by the clamp above.
                code as i16
            })
            .collect();
        codes.resize(padded, 0);
        Self {
            vector: vector.to_vec(),
            codes,
            scale,
            error: round_up(residual.sqrt()),
            slack: 2.0 * vector.len() as f32 * f32::EPSILON + 1e-6,
        }
    }

    /// The quantised estimate of `q·x` from the integer dot product of the codes.
    #[inline]
    pub fn estimate(&self, int_dot: i32, meta: CodeMeta) -> f32 {
        int_dot as f32 * (self.scale * meta.scale)
    }

    /// How far the true score can be from [`Self::estimate`] for a vector with `meta`.
    #[inline]
    pub fn bound(&self, meta: CodeMeta) -> f32 {
        meta.error + self.error * (1.0 + meta.error) + self.slack
    }
}

/// Rounds an f64 norm to the next f32 above it, so a bound never shrinks in the cast.
fn round_up(x: f64) -> f32 {
    let y = x as f32;
    if f64::from(y) < x { y.next_up() } else { y }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::simd::{dot, scan_i8};

    fn unit(seed: u64, dim: usize) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut v: Vec<f32> = (0..dim)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % 10_000) as f32 / 5_000.0 - 1.0
            })
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        v
    }

    #[test]
    fn the_quantised_estimate_is_always_within_its_bound() {
        for dim in [3, 384, 1536] {
            let q = PreparedQuery::new(&unit(7, dim));
            for seed in 0..200 {
                let x = unit(seed + 100, dim);
                let mut codes = Vec::new();
                let meta = quantize_into(&x, &mut codes);
                let mut int_dot = [0];
                scan_i8(&q.codes, &codes, &mut int_dot);
                let estimate = q.estimate(int_dot[0], meta);
                let exact = dot(&q.vector, &x);
                assert!(
                    (exact - estimate).abs() <= q.bound(meta),
                    "dim {dim}: exact {exact}, estimate {estimate}, bound {}",
                    q.bound(meta)
                );
            }
        }
    }

    #[test]
    fn the_bound_is_tight_enough_to_prune() {
        let q = PreparedQuery::new(&unit(1, 384));
        let mut codes = Vec::new();
        let meta = quantize_into(&unit(2, 384), &mut codes);
        assert!(q.bound(meta) < 0.02, "bound {}", q.bound(meta));
    }

    #[test]
    fn codes_are_padded_to_whole_lanes() {
        let mut codes = Vec::new();
        quantize_into(&unit(3, 100), &mut codes);
        assert_eq!(codes.len(), padded_dim(100));
        assert!(codes[100..].iter().all(|&c| c == 0));
    }
}
