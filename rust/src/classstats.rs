//! Fused per-class accumulation for `ClassStats.update` on CPU (`lcfast._core.class_stats_accumulate`).
//!
//! For every row i with label c = y[i], in one read of the row:
//!
//! ```text
//! x = h_i − r_c (float64);   s1[c] += x;   s2[c] += ‖x‖²;   n[c] += 1   (optionally X[i] = x)
//! ```
//!
//! This is the shifted one-pass accumulator of `lcfast.stats.classstats`; its torch twin there
//! (`class_stats_torch`) computes the same sums through B×d float64 temporaries and a scatter.
//!
//! Why it is shaped like this (measured on a 2-core AMD EPYC, issue 13 §2):
//! - Rows are visited grouped by class, classes ascending, batch order within a class (a stable
//!   counting sort of the labels, as the Triton kernel sorts them): the reference rows and the Σ rows
//!   are then streamed in address order, which the hardware prefetcher follows, and a class's Σ row
//!   stays in L1 across its rows. Each class still receives its rows in batch order, so the sums
//!   are those of a plain row-by-row loop.
//! - The feature rows are then visited in a data-dependent order; one row's work is longer than
//!   the out-of-order window, so the next rows' features are prefetched explicitly (prefetching
//!   the streamed reference / Σ rows as well was measured slower).
//! - Threads own disjoint, contiguous class ranges of about B / threads rows each, so no two
//!   threads write the same accumulator row: no atomics, no reduction, and a result that does not
//!   depend on the thread count.
//! - ‖x‖² is summed in 8 fixed lanes (element j goes to lane j mod 8), then the lanes in a fixed
//!   order, without fused multiply-add: the scalar, AVX2 and AVX-512 kernels give the same bits.
//!
//! Non-finite input is the caller's business: [`rows_finite`] tells whether the batch is safe for
//! this kernel, so that the caller can refuse or filter it *before* any accumulator is touched (a
//! partial update cannot be undone exactly in floating point).

use crate::error::{Error, Result};

/// A feature element type (f32 or f64); converts exactly to f64.
pub trait Feature: Copy + Send + Sync + 'static {
    const IS_F32: bool;
    fn to_f64(self) -> f64;
    /// Finite with |v| ≤ [`LIMIT`] (for f32: finite), compared in the type itself (no conversion).
    fn within_limit(self) -> bool;
}
impl Feature for f32 {
    const IS_F32: bool = true;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn within_limit(self) -> bool {
        self.abs() <= f32::MAX // NaN fails every comparison
    }
}
impl Feature for f64 {
    const IS_F32: bool = false;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn within_limit(self) -> bool {
        self.abs() <= LIMIT
    }
}

/// Magnitude bound of the fast path: with |h_j|, |r_j| ≤ LIMIT, ‖h − r‖² ≤ d·(2·LIMIT)² stays
/// finite in float64 for any d < 2^60 (float32 input always satisfies it once finite).
pub const LIMIT: f64 = 1e140;

const LANES: usize = 8;

/// How many rows ahead (in visiting order) the feature rows are prefetched.
const PREFETCH_AHEAD: usize = 4;

#[inline(always)]
fn reduce_lanes(a: &[f64; LANES]) -> f64 {
    ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))
}

/// Elements full..d (fewer than 8) into lanes 0.., the same as every kernel.
#[inline(always)]
unsafe fn row_tail<T: Feature, const WX: bool>(
    h: *const T,
    r: *const f64,
    s: *mut f64,
    xo: *mut f64,
    full: usize,
    d: usize,
    acc: &mut [f64; LANES],
) {
    for (l, j) in (full..d).enumerate() {
        let x = (*h.add(j)).to_f64() - *r.add(j);
        *s.add(j) += x;
        acc[l] += x * x;
        if WX {
            *xo.add(j) = x;
        }
    }
}

/// Portable kernel for one row: s += h − r (and xo = h − r with WX); returns ‖h − r‖².
///
/// # Safety
/// h, r, s (and xo with WX) point to d valid elements; s and xo are not aliased.
#[inline(always)]
unsafe fn row_scalar<T: Feature, const WX: bool>(
    h: *const T,
    r: *const f64,
    s: *mut f64,
    xo: *mut f64,
    d: usize,
) -> f64 {
    let mut acc = [0.0f64; LANES];
    let full = d - d % LANES;
    let mut j = 0;
    while j < full {
        for (l, a) in acc.iter_mut().enumerate() {
            let x = (*h.add(j + l)).to_f64() - *r.add(j + l);
            *s.add(j + l) += x;
            *a += x * x;
            if WX {
                *xo.add(j + l) = x;
            }
        }
        j += LANES;
    }
    row_tail::<T, WX>(h, r, s, xo, full, d, &mut acc);
    reduce_lanes(&acc)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{reduce_lanes, row_tail, Feature, LANES};
    use std::arch::x86_64::*;

    /// AVX2 kernel (two 4-wide halves = lanes 0..3 and 4..7). Safety: as `row_scalar`, + AVX2.
    #[inline(always)]
    pub unsafe fn row_avx2<T: Feature, const WX: bool>(
        h: *const T,
        r: *const f64,
        s: *mut f64,
        xo: *mut f64,
        d: usize,
    ) -> f64 {
        let (mut a0, mut a1) = (_mm256_setzero_pd(), _mm256_setzero_pd());
        let full = d - d % LANES;
        let mut j = 0;
        while j < full {
            let (h0, h1) = if T::IS_F32 {
                let p = h.add(j) as *const f32;
                (
                    _mm256_cvtps_pd(_mm_loadu_ps(p)),
                    _mm256_cvtps_pd(_mm_loadu_ps(p.add(4))),
                )
            } else {
                let p = h.add(j) as *const f64;
                (_mm256_loadu_pd(p), _mm256_loadu_pd(p.add(4)))
            };
            let x0 = _mm256_sub_pd(h0, _mm256_loadu_pd(r.add(j)));
            let x1 = _mm256_sub_pd(h1, _mm256_loadu_pd(r.add(j + 4)));
            _mm256_storeu_pd(s.add(j), _mm256_add_pd(_mm256_loadu_pd(s.add(j)), x0));
            _mm256_storeu_pd(
                s.add(j + 4),
                _mm256_add_pd(_mm256_loadu_pd(s.add(j + 4)), x1),
            );
            if WX {
                _mm256_storeu_pd(xo.add(j), x0);
                _mm256_storeu_pd(xo.add(j + 4), x1);
            }
            a0 = _mm256_add_pd(a0, _mm256_mul_pd(x0, x0));
            a1 = _mm256_add_pd(a1, _mm256_mul_pd(x1, x1));
            j += LANES;
        }
        let mut acc = [0.0f64; LANES];
        _mm256_storeu_pd(acc.as_mut_ptr(), a0);
        _mm256_storeu_pd(acc.as_mut_ptr().add(4), a1);
        row_tail::<T, WX>(h, r, s, xo, full, d, &mut acc);
        reduce_lanes(&acc)
    }

    /// AVX-512 kernel (one 8-wide register = lanes 0..7). Safety: as `row_scalar`, + AVX-512F.
    #[inline(always)]
    pub unsafe fn row_avx512<T: Feature, const WX: bool>(
        h: *const T,
        r: *const f64,
        s: *mut f64,
        xo: *mut f64,
        d: usize,
    ) -> f64 {
        let mut a = _mm512_setzero_pd();
        let full = d - d % LANES;
        let mut j = 0;
        while j < full {
            let hv = if T::IS_F32 {
                _mm512_cvtps_pd(_mm256_loadu_ps(h.add(j) as *const f32))
            } else {
                _mm512_loadu_pd(h.add(j) as *const f64)
            };
            let x = _mm512_sub_pd(hv, _mm512_loadu_pd(r.add(j)));
            _mm512_storeu_pd(s.add(j), _mm512_add_pd(_mm512_loadu_pd(s.add(j)), x));
            if WX {
                _mm512_storeu_pd(xo.add(j), x);
            }
            a = _mm512_add_pd(a, _mm512_mul_pd(x, x));
            j += LANES;
        }
        let mut acc = [0.0f64; LANES];
        _mm512_storeu_pd(acc.as_mut_ptr(), a);
        row_tail::<T, WX>(h, r, s, xo, full, d, &mut acc);
        reduce_lanes(&acc)
    }
}

/// Pointers that the worker threads share; each thread writes only rows of the classes it owns.
#[derive(Clone, Copy)]
struct Shared {
    s1: *mut f64,
    s2: *mut f64,
    n: *mut f64,
    x: *mut f64,
}
// SAFETY: threads write disjoint class rows of s1 / s2 / n (and disjoint batch rows of x).
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512,
}

/// The widest kernel this CPU runs.
pub fn best_isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        if std::is_x86_feature_detected!("avx2") {
            return Isa::Avx2;
        }
    }
    Isa::Scalar
}

#[inline(always)]
fn prefetch(p: *const u8, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let mut off = 0;
        while off < bytes {
            // SAFETY: a prefetch is a hint and never faults.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    p.wrapping_add(off) as *const i8,
                )
            };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, bytes);
}

/// Rows `rows` (indices into the batch, labels of classes owned by this thread) into the state.
#[inline(always)]
unsafe fn run_rows<T: Feature, const ISA: u8>(
    rows: &[u32],
    h: &[T],
    y: &[i64],
    refs: &[f64],
    d: usize,
    sh: Shared,
) {
    for (k, &i) in rows.iter().enumerate() {
        if let Some(&ia) = rows.get(k + PREFETCH_AHEAD) {
            prefetch(
                h.as_ptr().wrapping_add(ia as usize * d) as *const u8,
                d * std::mem::size_of::<T>(),
            );
        }
        let i = i as usize;
        let c = y[i] as usize;
        let hp = h[i * d..(i + 1) * d].as_ptr();
        let rp = refs[c * d..(c + 1) * d].as_ptr();
        let sp = sh.s1.add(c * d);
        let xp = if sh.x.is_null() {
            sh.x
        } else {
            sh.x.add(i * d)
        };
        let q = match (ISA, sh.x.is_null()) {
            #[cfg(target_arch = "x86_64")]
            (2, true) => x86::row_avx512::<T, false>(hp, rp, sp, xp, d),
            #[cfg(target_arch = "x86_64")]
            (2, false) => x86::row_avx512::<T, true>(hp, rp, sp, xp, d),
            #[cfg(target_arch = "x86_64")]
            (1, true) => x86::row_avx2::<T, false>(hp, rp, sp, xp, d),
            #[cfg(target_arch = "x86_64")]
            (1, false) => x86::row_avx2::<T, true>(hp, rp, sp, xp, d),
            (_, true) => row_scalar::<T, false>(hp, rp, sp, xp, d),
            (_, false) => row_scalar::<T, true>(hp, rp, sp, xp, d),
        };
        *sh.s2.add(c) += q;
        *sh.n.add(c) += 1.0;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn run_rows_avx2<T: Feature>(
    rows: &[u32],
    h: &[T],
    y: &[i64],
    refs: &[f64],
    d: usize,
    sh: Shared,
) {
    run_rows::<T, 1>(rows, h, y, refs, d, sh)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn run_rows_avx512<T: Feature>(
    rows: &[u32],
    h: &[T],
    y: &[i64],
    refs: &[f64],
    d: usize,
    sh: Shared,
) {
    run_rows::<T, 2>(rows, h, y, refs, d, sh)
}

/// Safety: `isa` is supported by this CPU; rows / labels / shapes were checked by `accumulate_with`
/// and this thread owns the classes of `rows`.
unsafe fn run_rows_isa<T: Feature>(
    isa: Isa,
    rows: &[u32],
    h: &[T],
    y: &[i64],
    refs: &[f64],
    d: usize,
    sh: Shared,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => run_rows_avx512(rows, h, y, refs, d, sh),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => run_rows_avx2(rows, h, y, refs, d, sh),
        _ => run_rows::<T, 0>(rows, h, y, refs, d, sh),
    }
}

/// Accumulate a batch into the state (see the module docs) with the widest kernel of this CPU.
/// Shapes: h [B·d] row-major, y [B] labels in [0, C), refs / s1 [C·d], s2 / n [C], x_out
/// (optional) [B·d]. `threads` ≥ 1 workers (fewer for small batches). Bad shapes or labels are a
/// Usage error raised before anything is written.
#[allow(clippy::too_many_arguments)]
pub fn accumulate<T: Feature>(
    h: &[T],
    y: &[i64],
    d: usize,
    refs: &[f64],
    s1: &mut [f64],
    s2: &mut [f64],
    n: &mut [f64],
    x_out: Option<&mut [f64]>,
    threads: usize,
) -> Result<()> {
    accumulate_with(best_isa(), h, y, d, refs, s1, s2, n, x_out, threads)
}

/// [`accumulate`] with a chosen kernel (tests compare them); an ISA this CPU lacks is a Usage error.
#[allow(clippy::too_many_arguments)]
pub fn accumulate_with<T: Feature>(
    isa: Isa,
    h: &[T],
    y: &[i64],
    d: usize,
    refs: &[f64],
    s1: &mut [f64],
    s2: &mut [f64],
    n: &mut [f64],
    x_out: Option<&mut [f64]>,
    threads: usize,
) -> Result<()> {
    let b = y.len();
    let c = n.len();
    let supported = match (isa, best_isa()) {
        (Isa::Scalar, _) => true,
        (Isa::Avx2, best) => best != Isa::Scalar,
        (Isa::Avx512, best) => best == Isa::Avx512,
    };
    if !supported {
        return Err(Error::usage(format!(
            "class_stats_accumulate: this CPU has no {isa:?}"
        )));
    }
    if d == 0 || h.len() != b * d || refs.len() != c * d || s1.len() != c * d || s2.len() != c {
        return Err(Error::usage(format!(
            "class_stats_accumulate: inconsistent shapes (B={b}, d={d}, C={c}, len(h)={}, len(refs)={}, len(s1)={}, len(s2)={})",
            h.len(),
            refs.len(),
            s1.len(),
            s2.len()
        )));
    }
    if let Some(x) = &x_out {
        if x.len() != b * d {
            return Err(Error::usage(format!(
                "class_stats_accumulate: x_out must hold {} values, got {}",
                b * d,
                x.len()
            )));
        }
    }
    if b >= u32::MAX as usize {
        return Err(Error::usage(
            "class_stats_accumulate: 2^32 or more rows in one batch",
        ));
    }
    if let Some(&bad) = y.iter().find(|&&v| v < 0 || v as usize >= c) {
        return Err(Error::usage(format!(
            "class_stats_accumulate: label {bad} outside [0, {c})"
        )));
    }
    if b == 0 {
        return Ok(());
    }
    let sh = Shared {
        s1: s1.as_mut_ptr(),
        s2: s2.as_mut_ptr(),
        n: n.as_mut_ptr(),
        x: x_out.map_or(std::ptr::null_mut(), |x| x.as_mut_ptr()),
    };
    // stable counting sort of the row indices by label
    let mut start = vec![0u32; c + 1];
    for &v in y {
        start[v as usize + 1] += 1;
    }
    for k in 0..c {
        start[k + 1] += start[k];
    }
    let mut order = vec![0u32; b];
    for (i, &v) in y.iter().enumerate() {
        let p = &mut start[v as usize];
        order[*p as usize] = i as u32;
        *p += 1;
    }
    // below ~1 MB of features a second thread costs more than it saves
    let t = threads.max(1).min(1 + b * d / (1 << 18));
    // t contiguous pieces of about b / t rows, cut at class boundaries (a class is never split)
    let mut cuts = vec![0usize];
    for k in 1..t {
        let mut p = (k * b / t).max(*cuts.last().unwrap());
        while p > 0 && p < b && y[order[p] as usize] == y[order[p - 1] as usize] {
            p += 1;
        }
        cuts.push(p);
    }
    cuts.push(b);
    // SAFETY: `isa` is supported (checked above), shapes and labels were checked, and the pieces
    // hold disjoint classes, so no two threads touch the same accumulator row.
    unsafe {
        if t == 1 {
            run_rows_isa(isa, &order, h, y, refs, d, sh);
        } else {
            std::thread::scope(|scope| {
                for k in 1..t {
                    let piece = &order[cuts[k]..cuts[k + 1]];
                    scope.spawn(move || run_rows_isa(isa, piece, h, y, refs, d, sh));
                }
                run_rows_isa(isa, &order[..cuts[1]], h, y, refs, d, sh);
            });
        }
    }
    Ok(())
}

/// Whether every element of h is finite with |h| ≤ [`LIMIT`]: the precondition of the fast path
/// (no row can then make ‖h − r‖² overflow or a sum non-finite, given finite references).
pub fn rows_finite<T: Feature>(h: &[T], threads: usize) -> bool {
    #[inline(always)]
    fn ok<T: Feature>(h: &[T]) -> bool {
        // 64-element blocks, branch-free inside (vectorised); stop at the first bad block
        const BLK: usize = 64;
        let full = h.len() - h.len() % BLK;
        for hb in h[..full].chunks_exact(BLK) {
            let hb: &[T; BLK] = hb.try_into().unwrap();
            let mut good = true;
            for &v in hb {
                good &= v.within_limit();
            }
            if !good {
                return false;
            }
        }
        h[full..].iter().all(|&v| v.within_limit())
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn ok_avx2<T: Feature>(h: &[T]) -> bool {
        ok(h)
    }
    let check = |s: &[T]| -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above).
                return unsafe { ok_avx2(s) };
            }
        }
        ok(s)
    };
    let t = threads.max(1).min(1 + h.len() / (1 << 18));
    if t == 1 {
        return check(h);
    }
    let per = h.len().div_ceil(t);
    std::thread::scope(|scope| {
        let rest: Vec<_> = h
            .chunks(per)
            .skip(1)
            .map(|s| scope.spawn(move || check(s)))
            .collect();
        let first = check(&h[..per.min(h.len())]);
        rest.into_iter()
            .fold(first, |a, j| j.join().unwrap_or(false) && a)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(
        h: &[f64],
        y: &[i64],
        d: usize,
        refs: &[f64],
        c: usize,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (mut s1, mut s2, mut n) = (vec![0.0; c * d], vec![0.0; c], vec![0.0; c]);
        for (i, &l) in y.iter().enumerate() {
            let l = l as usize;
            n[l] += 1.0;
            for j in 0..d {
                let x = h[i * d + j] - refs[l * d + j];
                s1[l * d + j] += x;
                s2[l] += x * x;
            }
        }
        (s1, s2, n)
    }

    fn data(b: usize, d: usize, c: usize, seed: u64) -> (Vec<f64>, Vec<i64>, Vec<f64>) {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut next = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64) / ((1u64 << 53) as f64)
        };
        let h: Vec<f64> = (0..b * d).map(|_| next() * 4.0 - 2.0 + 1e3).collect();
        // skewed labels: class 0 takes about half the rows
        let y: Vec<i64> = (0..b)
            .map(|_| {
                let u = next();
                if u < 0.5 {
                    0
                } else {
                    (u * c as f64) as i64 % c as i64
                }
            })
            .collect();
        let refs: Vec<f64> = (0..c * d).map(|_| 1e3 + next()).collect();
        (h, y, refs)
    }

    fn isas() -> Vec<Isa> {
        let mut v = vec![Isa::Scalar];
        match best_isa() {
            Isa::Avx512 => v.extend([Isa::Avx2, Isa::Avx512]),
            Isa::Avx2 => v.push(Isa::Avx2),
            Isa::Scalar => {}
        }
        v
    }

    #[test]
    fn matches_naive_and_is_bitwise_stable_across_threads_and_kernels() {
        for &(b, d, c) in &[
            (1, 1, 1),
            (37, 13, 5),
            (3000, 64, 40),
            (5000, 9, 3),
            (2000, 131, 2000),
        ] {
            let (h, y, refs) = data(b, d, c, (b * d) as u64);
            let (e1, e2, en) = naive(&h, &y, d, &refs, c);
            let mut first: Option<(Vec<f64>, Vec<f64>)> = None;
            for isa in isas() {
                for threads in [1, 2, 3, 8] {
                    let (mut s1, mut s2, mut n) = (vec![0.0; c * d], vec![0.0; c], vec![0.0; c]);
                    let mut x = vec![0.0; b * d];
                    accumulate_with(
                        isa,
                        &h,
                        &y,
                        d,
                        &refs,
                        &mut s1,
                        &mut s2,
                        &mut n,
                        Some(&mut x),
                        threads,
                    )
                    .unwrap();
                    assert_eq!(n, en);
                    for (a, e) in s1.iter().zip(&e1) {
                        assert!((a - e).abs() <= 1e-12 * (1.0 + e.abs()), "{a} vs {e}");
                    }
                    for (a, e) in s2.iter().zip(&e2) {
                        assert!((a - e).abs() <= 1e-12 * (1.0 + e.abs()), "{a} vs {e}");
                    }
                    for i in 0..b {
                        let l = y[i] as usize;
                        for j in 0..d {
                            assert_eq!(x[i * d + j], h[i * d + j] - refs[l * d + j]);
                        }
                    }
                    // neither the thread count nor the instruction set changes a bit
                    match &first {
                        None => first = Some((s1, s2)),
                        Some((f1, f2)) => {
                            assert_eq!(f1, &s1, "{isa:?} threads={threads}");
                            assert_eq!(f2, &s2, "{isa:?} threads={threads}");
                        }
                    }
                    // without x_out: the same sums
                    let (mut t1, mut t2, mut tn) = (vec![0.0; c * d], vec![0.0; c], vec![0.0; c]);
                    accumulate_with(
                        isa, &h, &y, d, &refs, &mut t1, &mut t2, &mut tn, None, threads,
                    )
                    .unwrap();
                    assert_eq!(first.as_ref().unwrap(), &(t1, t2));
                }
            }
        }
    }

    #[test]
    fn f32_input_converts_exactly() {
        let (h, y, refs) = data(500, 24, 7, 3);
        let h32: Vec<f32> = h.iter().map(|&v| v as f32).collect();
        let h64: Vec<f64> = h32.iter().map(|&v| v as f64).collect();
        for isa in isas() {
            let (mut a1, mut a2, mut an) = (vec![0.0; 7 * 24], vec![0.0; 7], vec![0.0; 7]);
            let (mut b1, mut b2, mut bn) = (vec![0.0; 7 * 24], vec![0.0; 7], vec![0.0; 7]);
            accumulate_with(isa, &h32, &y, 24, &refs, &mut a1, &mut a2, &mut an, None, 2).unwrap();
            accumulate_with(isa, &h64, &y, 24, &refs, &mut b1, &mut b2, &mut bn, None, 2).unwrap();
            assert_eq!((a1, a2, an), (b1, b2, bn));
        }
    }

    #[test]
    fn bad_labels_and_shapes_write_nothing() {
        let (h, mut y, refs) = data(100, 4, 3, 1);
        y[57] = 3;
        let (mut s1, mut s2, mut n) = (vec![0.0; 12], vec![0.0; 3], vec![0.0; 3]);
        assert!(accumulate(&h, &y, 4, &refs, &mut s1, &mut s2, &mut n, None, 2).is_err());
        y[57] = -1;
        assert!(accumulate(&h, &y, 4, &refs, &mut s1, &mut s2, &mut n, None, 2).is_err());
        y[57] = 0;
        assert!(accumulate(&h[1..], &y, 4, &refs, &mut s1, &mut s2, &mut n, None, 2).is_err());
        assert!(accumulate(&h, &y, 4, &refs[1..], &mut s1, &mut s2, &mut n, None, 2).is_err());
        let mut x = vec![0.0; 3];
        assert!(accumulate(&h, &y, 4, &refs, &mut s1, &mut s2, &mut n, Some(&mut x), 2).is_err());
        assert!(s1.iter().chain(&s2).chain(&n).all(|&v| v == 0.0));
        // an empty batch is fine and writes nothing
        accumulate::<f64>(&[], &[], 4, &refs, &mut s1, &mut s2, &mut n, None, 2).unwrap();
        assert!(s1.iter().chain(&s2).chain(&n).all(|&v| v == 0.0));
    }

    #[test]
    fn finiteness_check() {
        let mut h = vec![1.0f32; (1 << 19) + 3];
        assert!(rows_finite(&h, 2));
        let last = h.len() - 1;
        for (pos, v) in [
            (0, f32::NAN),
            (last, f32::INFINITY),
            (12345, f32::NEG_INFINITY),
            (last - 5, f32::NAN),
        ] {
            h[pos] = v;
            assert!(
                !rows_finite(&h, 1) && !rows_finite(&h, 2) && !rows_finite(&h, 3),
                "{pos} {v}"
            );
            h[pos] = 1.0;
        }
        h[7] = f32::MAX;
        assert!(rows_finite(&h, 2));
        let mut g = vec![0.5f64; 1001];
        assert!(rows_finite(&g, 4));
        g[1000] = 1e200;
        assert!(!rows_finite(&g, 1));
        g[1000] = -1e141;
        assert!(!rows_finite(&g, 1));
        g[1000] = -1e139;
        assert!(rows_finite(&g, 1));
        assert!(rows_finite::<f64>(&[], 2));
    }
}
