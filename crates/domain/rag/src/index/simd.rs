//! The arithmetic kernels of the index: f32 dot products (exact scores) and int8 × i16
//! integer dot products (the quantised pre-scan).
//!
//! They go through `pulp`, which picks AVX-512, AVX2+FMA or NEON at run time, so a binary
//! built for baseline x86-64 (SSE2 only, which is all `rustc` assumes without
//! `-C target-cpu`) still uses the wide units, and none of it needs `unsafe`. The plain
//! Rust versions in [`reference`] are what the benchmark compares them with; the
//! measurements are in `docs/benchmarks.md`.

use std::sync::OnceLock;

use pulp::{Arch, Simd, WithSimd};

/// Quantised codes and queries are zero-padded to a multiple of this many lanes, so the
/// int8 kernels never need a scalar tail (zeros add nothing to a dot product).
pub const CODE_LANES: usize = 32;

/// The length a `dim`-dimensional vector takes once padded for the int8 kernels.
#[must_use]
pub const fn padded_dim(dim: usize) -> usize {
    dim.div_ceil(CODE_LANES) * CODE_LANES
}

/// The instruction set detected once per process; detection itself costs a dozen
/// atomic loads, too much to repeat on every dot product of a graph search.
fn arch() -> Arch {
    static ARCH: OnceLock<Arch> = OnceLock::new();
    *ARCH.get_or_init(Arch::new)
}

/// Dot product of `a` and `b` over their common length.
#[inline]
#[must_use]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    arch().dispatch(Dot { a, b })
}

/// `out[i] = dot(query, row i)` for the rows of `rows`, each `query.len()` long; stops at
/// whichever of `rows` and `out` runs out first.
pub fn scan_f32(query: &[f32], rows: &[f32], out: &mut [f32]) {
    if query.is_empty() {
        out.fill(0.0);
        return;
    }
    arch().dispatch(ScanF32 { query, rows, out });
}

struct Dot<'a> {
    a: &'a [f32],
    b: &'a [f32],
}

impl WithSimd for Dot<'_> {
    type Output = f32;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f32 {
        dot_with(simd, self.a, self.b)
    }
}

struct ScanF32<'a> {
    query: &'a [f32],
    rows: &'a [f32],
    out: &'a mut [f32],
}

impl WithSimd for ScanF32<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let dim = self.query.len();
        for (row, out) in self.rows.chunks_exact(dim).zip(self.out.iter_mut()) {
            *out = dot_with(simd, self.query, row);
        }
    }
}

/// Four independent accumulators: one FMA chain would stall on its own latency (4 cycles)
/// instead of issuing two FMAs per cycle.
#[inline(always)]
fn dot_with<S: Simd>(simd: S, a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a_wide, a_tail) = S::as_simd_f32s(&a[..n]);
    let (b_wide, b_tail) = S::as_simd_f32s(&b[..n]);
    let zero = simd.splat_f32s(0.0);
    let (mut acc0, mut acc1, mut acc2, mut acc3) = (zero, zero, zero, zero);
    let (a4, a_rest) = a_wide.as_chunks::<4>();
    let (b4, b_rest) = b_wide.as_chunks::<4>();
    for ([x0, x1, x2, x3], [y0, y1, y2, y3]) in a4.iter().zip(b4) {
        acc0 = simd.mul_add_e_f32s(*x0, *y0, acc0);
        acc1 = simd.mul_add_e_f32s(*x1, *y1, acc1);
        acc2 = simd.mul_add_e_f32s(*x2, *y2, acc2);
        acc3 = simd.mul_add_e_f32s(*x3, *y3, acc3);
    }
    for (x, y) in a_rest.iter().zip(b_rest) {
        acc0 = simd.mul_add_e_f32s(*x, *y, acc0);
    }
    let wide = simd.add_f32s(simd.add_f32s(acc0, acc1), simd.add_f32s(acc2, acc3));
    let mut sum = simd.reduce_sum_f32s(wide);
    for (x, y) in a_tail.iter().zip(b_tail) {
        sum += x * y;
    }
    sum
}

/// `out[i] = Σ_j query[j] · codes[i·p + j]` where `p = query.len()`, a multiple of
/// [`CODE_LANES`] (rows are padded codes, see [`padded_dim`]). The sum is exact: with
/// |query| ≤ 32 767 and |code| ≤ 127 it stays below 384·32 767·127·(p/384) < 2³¹ for
/// every `p` up to 512, and callers keep |query| small enough for longer vectors.
pub fn scan_i8(query: &[i16], codes: &[i8], out: &mut [i32]) {
    let p = query.len();
    if p == 0 || !p.is_multiple_of(CODE_LANES) {
        scan_i8_portable(query, codes, out);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if let Some(simd) = x86::v4() {
            x86::scan_i8_v4(simd, query, codes, out);
            return;
        }
        if let Some(simd) = x86::v3() {
            x86::scan_i8_v3(simd, query, codes, out);
            return;
        }
    }
    scan_i8_portable(query, codes, out);
}

/// [`scan_i8`] of a single row: the graph search scores one node at a time.
#[inline]
#[must_use]
pub fn dot_i8(query: &[i16], codes: &[i8]) -> i32 {
    let mut out = [0];
    scan_i8(query, codes, &mut out);
    out[0]
}

/// The int8 kernel for CPUs without AVX2; LLVM vectorises it only as far as the build
/// target allows (SSE2 by default), which measures ~8× slower than the AVX-512 path.
fn scan_i8_portable(query: &[i16], codes: &[i8], out: &mut [i32]) {
    let p = query.len().max(1);
    for (row, out) in codes.chunks_exact(p).zip(out.iter_mut()) {
        *out = row
            .iter()
            .zip(query)
            .map(|(&c, &q)| i32::from(c) * i32::from(q))
            .sum();
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! AVX-512BW and AVX2 versions of the int8 kernel: sign-extend 32 (16) codes to i16,
    //! `vpmaddwd` them with the i16 query into i32 pairs, accumulate in two registers.

    use std::sync::OnceLock;

    use pulp::bytemuck::cast;
    use pulp::x86::{V3, V4};
    use pulp::{Simd, WithSimd, i8x16, i8x32, i16x16, i16x32};

    pub(super) fn v4() -> Option<V4> {
        static V4_TOKEN: OnceLock<Option<V4>> = OnceLock::new();
        *V4_TOKEN.get_or_init(V4::try_new)
    }

    pub(super) fn v3() -> Option<V3> {
        static V3_TOKEN: OnceLock<Option<V3>> = OnceLock::new();
        *V3_TOKEN.get_or_init(V3::try_new)
    }

    // The kernels are `WithSimd` structs run through `Simd::vectorize` rather than
    // closures given to `V4::vectorize`: pulp calls `with_simd` through a chain of
    // `#[inline(always)]` functions, so the body is always compiled inside the
    // `#[target_feature]` function. A closure goes through `FnOnce::call_once`, which
    // LLVM may leave out of line when the crate is split into several codegen units;
    // the intrinsics then become calls and the kernel runs 30× slower (measured).

    pub(super) fn scan_i8_v4(simd: V4, query: &[i16], codes: &[i8], out: &mut [i32]) {
        Simd::vectorize(
            simd,
            ScanV4 {
                simd,
                query,
                codes,
                out,
            },
        );
    }

    pub(super) fn scan_i8_v3(simd: V3, query: &[i16], codes: &[i8], out: &mut [i32]) {
        Simd::vectorize(
            simd,
            ScanV3 {
                simd,
                query,
                codes,
                out,
            },
        );
    }

    struct ScanV4<'a> {
        simd: V4,
        query: &'a [i16],
        codes: &'a [i8],
        out: &'a mut [i32],
    }

    impl WithSimd for ScanV4<'_> {
        type Output = ();

        #[inline(always)]
        fn with_simd<S: Simd>(self, _: S) {
            let Self {
                simd,
                query,
                codes,
                out,
            } = self;
            let p = query.len();
            let (q32, _) = query.as_chunks::<32>();
            let (q_pairs, q_rest) = q32.as_chunks::<2>();
            for (row, out) in codes.chunks_exact(p).zip(out.iter_mut()) {
                let (r32, _) = row.as_chunks::<32>();
                let (r_pairs, r_rest) = r32.as_chunks::<2>();
                let mut acc0 = simd.splat_i32x16(0);
                let mut acc1 = simd.splat_i32x16(0);
                for ([r0, r1], [q0, q1]) in r_pairs.iter().zip(q_pairs) {
                    let x0 = simd.convert_i8x32_to_i16x32(cast::<[i8; 32], i8x32>(*r0));
                    let x1 = simd.convert_i8x32_to_i16x32(cast::<[i8; 32], i8x32>(*r1));
                    let (q0, q1): (i16x32, i16x32) = (cast(*q0), cast(*q1));
                    acc0 = simd.wrapping_add_i32x16(
                        acc0,
                        simd.multiply_wrapping_add_adjacent_i16x32(x0, q0),
                    );
                    acc1 = simd.wrapping_add_i32x16(
                        acc1,
                        simd.multiply_wrapping_add_adjacent_i16x32(x1, q1),
                    );
                }
                for (r, q) in r_rest.iter().zip(q_rest) {
                    let x = simd.convert_i8x32_to_i16x32(cast::<[i8; 32], i8x32>(*r));
                    let q: i16x32 = cast(*q);
                    acc0 = simd.wrapping_add_i32x16(
                        acc0,
                        simd.multiply_wrapping_add_adjacent_i16x32(x, q),
                    );
                }
                let lanes: [i32; 16] = cast(simd.wrapping_add_i32x16(acc0, acc1));
                *out = lanes.iter().sum();
            }
        }
    }

    struct ScanV3<'a> {
        simd: V3,
        query: &'a [i16],
        codes: &'a [i8],
        out: &'a mut [i32],
    }

    impl WithSimd for ScanV3<'_> {
        type Output = ();

        #[inline(always)]
        fn with_simd<S: Simd>(self, _: S) {
            let Self {
                simd,
                query,
                codes,
                out,
            } = self;
            let p = query.len();
            let (q16, _) = query.as_chunks::<16>();
            let (q_pairs, _) = q16.as_chunks::<2>();
            for (row, out) in codes.chunks_exact(p).zip(out.iter_mut()) {
                // p is a multiple of 32, so rows split evenly into pairs of 16.
                let (r16, _) = row.as_chunks::<16>();
                let (r_pairs, _) = r16.as_chunks::<2>();
                let mut acc0 = simd.splat_i32x8(0);
                let mut acc1 = simd.splat_i32x8(0);
                for ([r0, r1], [q0, q1]) in r_pairs.iter().zip(q_pairs) {
                    let x0 = simd.convert_i8x16_to_i16x16(cast::<[i8; 16], i8x16>(*r0));
                    let x1 = simd.convert_i8x16_to_i16x16(cast::<[i8; 16], i8x16>(*r1));
                    let (q0, q1): (i16x16, i16x16) = (cast(*q0), cast(*q1));
                    acc0 = simd.wrapping_add_i32x8(
                        acc0,
                        simd.multiply_wrapping_add_adjacent_i16x16(x0, q0),
                    );
                    acc1 = simd.wrapping_add_i32x8(
                        acc1,
                        simd.multiply_wrapping_add_adjacent_i16x16(x1, q1),
                    );
                }
                let lanes: [i32; 8] = cast(simd.wrapping_add_i32x8(acc0, acc1));
                *out = lanes.iter().sum();
            }
        }
    }
}

pub mod reference {
    //! Plain-Rust kernels the benchmark measures the SIMD ones against. Not used by the
    //! index.

    /// The textbook loop: one sequential f32 sum, which the compiler may not reorder,
    /// so it is neither vectorised nor pipelined.
    #[must_use]
    pub fn dot_naive(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    /// Sixteen independent accumulators over `chunks_exact`, which LLVM turns into
    /// SIMD for whatever the build target allows (SSE2 unless `-C target-cpu` says more).
    #[must_use]
    pub fn dot_chunked(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0.0f32; 16];
        let (a16, a_tail) = a.as_chunks::<16>();
        let (b16, b_tail) = b.as_chunks::<16>();
        for (x, y) in a16.iter().zip(b16) {
            for ((acc, x), y) in acc.iter_mut().zip(x).zip(y) {
                *acc += x * y;
            }
        }
        let mut sum: f32 = acc.iter().sum();
        for (x, y) in a_tail.iter().zip(b_tail) {
            sum += x * y;
        }
        sum
    }

    /// `out[i] = kernel(query, row i)`, to time a per-pair kernel over a matrix.
    pub fn scan_with(
        kernel: fn(&[f32], &[f32]) -> f32,
        query: &[f32],
        rows: &[f32],
        out: &mut [f32],
    ) {
        if query.is_empty() {
            return;
        }
        for (row, out) in rows.chunks_exact(query.len()).zip(out.iter_mut()) {
            *out = kernel(query, row);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn simd_dot_matches_the_naive_loop_for_every_length() {
        for len in [0, 1, 7, 15, 16, 17, 63, 64, 100, 384, 385, 1536] {
            let a = pseudo_random(len, 1);
            let b = pseudo_random(len, 2);
            let expected: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum();
            let got = dot(&a, &b);
            assert!(
                (f64::from(got) - expected).abs() < 1e-3,
                "len {len}: {got} vs {expected}"
            );
            let chunked = reference::dot_chunked(&a, &b);
            assert!((f64::from(chunked) - expected).abs() < 1e-3, "len {len}");
        }
    }

    #[test]
    fn scan_f32_scores_every_row() {
        let dim = 50;
        let query = pseudo_random(dim, 3);
        let rows = pseudo_random(dim * 9, 4);
        let mut out = vec![0.0; 9];
        scan_f32(&query, &rows, &mut out);
        for (i, score) in out.iter().enumerate() {
            let row = &rows[i * dim..(i + 1) * dim];
            assert!((score - reference::dot_naive(&query, row)).abs() < 1e-4);
        }
    }

    #[test]
    fn int8_kernels_agree_with_exact_integer_arithmetic() {
        for dim in [32, 64, 96, 384, 416] {
            let query: Vec<i16> = (0..dim)
                .map(|i| ((i * 7919) % 65_535) as i32 - 32_767)
                .map(|v| v as i16)
                .collect();
            let rows = 5;
            let codes: Vec<i8> = (0..dim * rows)
                .map(|i| ((i * 31) % 255) as i32 - 127)
                .map(|v| v as i8)
                .collect();
            let mut out = vec![0; rows];
            scan_i8(&query, &codes, &mut out);
            let mut portable = vec![0; rows];
            scan_i8_portable(&query, &codes, &mut portable);
            for (r, (got, want)) in out.iter().zip(&portable).enumerate() {
                let exact: i64 = codes[r * dim..(r + 1) * dim]
                    .iter()
                    .zip(&query)
                    .map(|(&c, &q)| i64::from(c) * i64::from(q))
                    .sum();
                assert_eq!(i64::from(*want), exact);
                assert_eq!(got, want, "dim {dim} row {r}");
            }
        }
    }

    #[test]
    fn padded_dim_rounds_up_to_whole_lanes() {
        assert_eq!(padded_dim(384), 384);
        assert_eq!(padded_dim(385), 416);
        assert_eq!(padded_dim(1), 32);
    }
}
