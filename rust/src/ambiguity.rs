//! Context ambiguity: for context lengths k = 1..K, how often the exact k preceding tokens are
//! followed by more than one distinct next token, and H(next | context) in bits.
//!
//! Positions: in each token stream (shard) every t >= k is a position with context
//! `s[t-k..t]` and next token `s[t]`; contexts may span document boundaries (EOS included),
//! exactly as training windows do, but never span two shards.
//!
//! Method: each context is reduced to a 64-bit hash. A (context hash, k, next) → count table
//! (open addressing, 16 bytes a slot) is built per partition of the hash space, so memory is
//! bounded: the number of partitions is chosen from an upper bound of distinct (context, next)
//! pairs (Σ_k positions_k) and the memory budget; each partition is one scan of the tokens
//! (memory-bound) plus the inserts of its share. Partitions run in parallel on rayon threads.
//! Afterwards each table is sorted by context and reduced: n(c) = Σ_y n(c,y); ambiguous if at
//! least two distinct y; H = (1/N) Σ_c [n(c) log2 n(c) − Σ_y n(c,y) log2 n(c,y)].
//!
//! Collisions: two different contexts of the same length merge if their 64-bit hashes are equal;
//! with M distinct contexts the chance that any pair collides is about M²/2^65 (≈ 3% at M = 10^9,
//! < 10^-6 at M = 10^7), and a collision can only turn a few positions "ambiguous" and raise H
//! slightly. Next tokens and k are stored exactly.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::shard::Tokens;

pub const MAX_K: usize = 64;
const MAX_NEXT: u32 = 1 << 24;
/// Approximate bytes per distinct pair (16-byte slot at ≤ 0.7 load).
pub const BYTES_PER_PAIR: u64 = 24;
/// Upper limit on partitions (each is a scan of the tokens); past it the budget is exceeded.
const MAX_PARTITIONS: u64 = 1 << 14;

#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub k: usize,
    /// positions with a full context of length k
    pub positions: u64,
    /// distinct contexts
    pub contexts: u64,
    /// distinct contexts followed by ≥ 2 distinct next tokens
    pub ambiguous_contexts: u64,
    /// positions whose context is ambiguous
    pub ambiguous_positions: u64,
    /// H(next | context of length k), bits
    pub cond_entropy_bits: f64,
}

impl Row {
    pub fn ambiguous_share(&self) -> f64 {
        if self.positions == 0 {
            0.0
        } else {
            self.ambiguous_positions as f64 / self.positions as f64
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Info {
    pub partitions: usize,
    pub pair_bound: u64,
}

#[inline]
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51afd7ed558ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ceb9fe1a85ec53);
    h ^ (h >> 33)
}

#[inline]
fn step(h: u64, tok: u32) -> u64 {
    fmix64(
        h.wrapping_add(tok as u64 + 1)
            .wrapping_mul(0x9E3779B97F4A7C15),
    )
}

#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Slot {
    ctx: u64,
    /// next token | (k << 24)
    key: u32,
    /// 0 = empty
    count: u32,
}

struct Table {
    slots: Vec<Slot>,
    len: usize,
}

const BATCH: usize = 16;

#[inline(always)]
fn prefetch<T>(p: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; the pointer comes from a live reference.
    unsafe {
        core::arch::x86_64::_mm_prefetch(
            p as *const T as *const i8,
            core::arch::x86_64::_MM_HINT_T0,
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

impl Table {
    fn with_capacity(n: usize) -> Table {
        let cap = (n.max(16) * 10 / 7).next_power_of_two();
        Table {
            slots: vec![Slot::default(); cap],
            len: 0,
        }
    }
    #[inline]
    fn home(ctx: u64, key: u32, mask: usize) -> usize {
        (fmix64(ctx ^ (key as u64).wrapping_mul(0x9E3779B97F4A7C15)) as usize) & mask
    }

    /// Insert a batch: compute every home slot and prefetch it first, so that the cache misses
    /// of a table larger than the caches overlap instead of serialising.
    fn insert_batch(&mut self, items: &[(u64, u32)]) -> Result<()> {
        while (self.len + items.len()) * 10 > self.slots.len() * 7 {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut homes = [0usize; BATCH];
        for (h, &(ctx, key)) in homes.iter_mut().zip(items) {
            *h = Self::home(ctx, key, mask);
            prefetch(&self.slots[*h]);
        }
        for (&h, &(ctx, key)) in homes.iter().zip(items) {
            let mut i = h;
            loop {
                let s = &mut self.slots[i];
                if s.count == 0 {
                    *s = Slot { ctx, key, count: 1 };
                    self.len += 1;
                    break;
                }
                if s.ctx == ctx && s.key == key {
                    s.count = s.count.checked_add(1).ok_or_else(|| {
                        Error::usage(
                            "ambiguity: a (context, next) pair occurs more than 2^32 times",
                        )
                    })?;
                    break;
                }
                i = (i + 1) & mask;
            }
        }
        Ok(())
    }
    fn grow(&mut self) {
        let old = std::mem::take(&mut self.slots);
        self.slots = vec![Slot::default(); old.len() * 2];
        let mask = self.slots.len() - 1;
        for s in old.into_iter().filter(|s| s.count > 0) {
            let mut i = Self::home(s.ctx, s.key, mask);
            while self.slots[i].count != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = s;
        }
    }
}

#[derive(Clone, Default)]
struct Acc {
    positions: u64,
    contexts: u64,
    ambiguous_contexts: u64,
    ambiguous_positions: u64,
    h_sum: f64,
}

#[inline]
fn nlog2n(n: u64) -> f64 {
    if n <= 1 {
        0.0
    } else {
        let x = n as f64;
        x * x.log2()
    }
}

/// Visit every (ctx hash, k, next) of the streams whose hash falls in partition `part` of `parts`.
fn scan<T: Copy + Into<u32>>(
    s: &[T],
    max_k: usize,
    parts: u64,
    part: u64,
    f: &mut impl FnMut(u64, u32) -> Result<()>,
) -> Result<()> {
    for t in 1..s.len() {
        let next: u32 = s[t].into();
        let mut h: u64 = 0x243F6A8885A308D3;
        for k in 1..=max_k.min(t) {
            h = step(h, s[t - k].into());
            let ctx = fmix64(h ^ (k as u64));
            if ((ctx >> 32) * parts) >> 32 == part {
                f(ctx, next | ((k as u32) << 24))?;
            }
        }
    }
    Ok(())
}

fn scan_tokens(
    tokens: Tokens<'_>,
    max_k: usize,
    parts: u64,
    part: u64,
    f: &mut impl FnMut(u64, u32) -> Result<()>,
) -> Result<()> {
    match tokens {
        Tokens::U16(s) => scan(s, max_k, parts, part, f),
        Tokens::U32(s) => scan(s, max_k, parts, part, f),
    }
}

/// Ambiguity statistics for k = 1..=max_k over `streams`, using about `memory_bytes` of tables.
pub fn ambiguity(
    streams: &[Tokens<'_>],
    max_k: usize,
    memory_bytes: u64,
) -> Result<(Vec<Row>, Info)> {
    if max_k == 0 || max_k > MAX_K {
        return Err(Error::usage(format!(
            "--ambiguity K must be between 1 and {MAX_K}, got {max_k}"
        )));
    }
    let positions: Vec<u64> = (1..=max_k)
        .map(|k| {
            streams
                .iter()
                .map(|s| (s.len() as u64).saturating_sub(k as u64))
                .sum()
        })
        .collect();
    if positions[0] >= u32::MAX as u64 {
        return Err(Error::usage(
            "ambiguity statistics support up to 2^32 positions per call",
        ));
    }
    for s in streams {
        let too_big = match s {
            Tokens::U16(_) => false,
            Tokens::U32(x) => x.iter().any(|&t| t >= MAX_NEXT),
        };
        if too_big {
            return Err(Error::usage(format!(
                "ambiguity statistics support token ids below {MAX_NEXT}"
            )));
        }
    }
    let pair_bound: u64 = positions.iter().sum();
    let threads = rayon::current_num_threads().max(1) as u64;
    let per_thread = (memory_bytes / threads).max(4096);
    let by_memory = (pair_bound * BYTES_PER_PAIR)
        .div_ceil(per_thread)
        .clamp(1, MAX_PARTITIONS);
    let parts = by_memory.div_ceil(threads) * threads;
    let expect_per_part = (pair_bound / parts) as usize + 16;

    let accs: Vec<Vec<Acc>> = (0..parts as usize)
        .into_par_iter()
        .with_max_len(1)
        .map(|part| -> Result<Vec<Acc>> {
            let part = part as u64;
            let mut table =
                Table::with_capacity(expect_per_part.min((per_thread / BYTES_PER_PAIR) as usize));
            let mut pending = [(0u64, 0u32); BATCH];
            let mut n = 0usize;
            for s in streams {
                scan_tokens(*s, max_k, parts, part, &mut |ctx, key| {
                    pending[n] = (ctx, key);
                    n += 1;
                    if n == BATCH {
                        n = 0;
                        table.insert_batch(&pending)?;
                    }
                    Ok(())
                })?;
            }
            table.insert_batch(&pending[..n])?;
            let mut slots = std::mem::take(&mut table.slots);
            slots.retain(|s| s.count > 0);
            slots.sort_unstable_by_key(|s| (s.key >> 24, s.ctx));
            let mut acc = vec![Acc::default(); max_k + 1];
            let mut i = 0;
            while i < slots.len() {
                let (k, ctx) = (slots[i].key >> 24, slots[i].ctx);
                let mut j = i;
                let mut n_c = 0u64;
                let mut inner = 0.0;
                while j < slots.len() && slots[j].key >> 24 == k && slots[j].ctx == ctx {
                    n_c += slots[j].count as u64;
                    inner += nlog2n(slots[j].count as u64);
                    j += 1;
                }
                let a = &mut acc[k as usize];
                a.positions += n_c;
                a.contexts += 1;
                if j - i >= 2 {
                    a.ambiguous_contexts += 1;
                    a.ambiguous_positions += n_c;
                }
                a.h_sum += nlog2n(n_c) - inner;
                i = j;
            }
            Ok(acc)
        })
        .collect::<Result<Vec<_>>>()?;

    let mut rows = Vec::with_capacity(max_k);
    for k in 1..=max_k {
        let mut a = Acc::default();
        for p in &accs {
            let b = &p[k];
            a.positions += b.positions;
            a.contexts += b.contexts;
            a.ambiguous_contexts += b.ambiguous_contexts;
            a.ambiguous_positions += b.ambiguous_positions;
            a.h_sum += b.h_sum;
        }
        debug_assert_eq!(a.positions, positions[k - 1]);
        rows.push(Row {
            k,
            positions: a.positions,
            contexts: a.contexts,
            ambiguous_contexts: a.ambiguous_contexts,
            ambiguous_positions: a.ambiguous_positions,
            cond_entropy_bits: if a.positions == 0 {
                0.0
            } else {
                (a.h_sum / a.positions as f64).max(0.0)
            },
        });
    }
    Ok((
        rows,
        Info {
            partitions: parts as usize,
            pair_bound,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn brute(streams: &[Vec<u32>], max_k: usize) -> Vec<Row> {
        (1..=max_k)
            .map(|k| {
                let mut m: HashMap<&[u32], HashMap<u32, u64>> = HashMap::new();
                for s in streams {
                    for t in k..s.len() {
                        *m.entry(&s[t - k..t]).or_default().entry(s[t]).or_default() += 1;
                    }
                }
                let mut r = Row {
                    k,
                    positions: 0,
                    contexts: 0,
                    ambiguous_contexts: 0,
                    ambiguous_positions: 0,
                    cond_entropy_bits: 0.0,
                };
                let mut h = 0.0;
                for nexts in m.values() {
                    let n: u64 = nexts.values().sum();
                    r.positions += n;
                    r.contexts += 1;
                    if nexts.len() > 1 {
                        r.ambiguous_contexts += 1;
                        r.ambiguous_positions += n;
                    }
                    for &c in nexts.values() {
                        let p = c as f64 / n as f64;
                        h -= c as f64 * p.log2();
                    }
                }
                r.cond_entropy_bits = if r.positions > 0 {
                    h / r.positions as f64
                } else {
                    0.0
                };
                r
            })
            .collect()
    }

    fn gen(n: usize, vocab: u64, seed: u64) -> Vec<u32> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                // skewed: small ids are much more frequent, so short contexts repeat
                let u = (x >> 33) % (vocab * vocab);
                (u as f64).sqrt() as u32
            })
            .collect()
    }

    fn check(streams: &[Vec<u32>], max_k: usize, mem: u64) -> Info {
        let toks: Vec<Tokens> = streams.iter().map(|s| Tokens::U32(s)).collect();
        let (rows, info) = ambiguity(&toks, max_k, mem).unwrap();
        let want = brute(streams, max_k);
        for (a, b) in rows.iter().zip(&want) {
            assert_eq!(
                (
                    a.k,
                    a.positions,
                    a.contexts,
                    a.ambiguous_contexts,
                    a.ambiguous_positions
                ),
                (
                    b.k,
                    b.positions,
                    b.contexts,
                    b.ambiguous_contexts,
                    b.ambiguous_positions
                ),
                "k={}",
                a.k
            );
            assert!(
                (a.cond_entropy_bits - b.cond_entropy_bits).abs() < 1e-9,
                "k={} {} vs {}",
                a.k,
                a.cond_entropy_bits,
                b.cond_entropy_bits
            );
        }
        info
    }

    #[test]
    fn matches_brute_force() {
        let s1 = gen(5000, 12, 1);
        let s2 = gen(777, 12, 2);
        check(&[s1.clone(), s2.clone()], 6, 1 << 30);
        // tiny budget → many partitions, same answer
        let info = check(&[s1, s2], 6, 1);
        assert!(info.partitions >= 2);
        // u16 path too
        let s = gen(3000, 30, 5);
        let s16: Vec<u16> = s.iter().map(|&x| x as u16).collect();
        let (a, _) = ambiguity(&[Tokens::U16(&s16)], 3, 1 << 30).unwrap();
        let (b, _) = ambiguity(&[Tokens::U32(&s)], 3, 1 << 30).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn hand_example() {
        // a b a c a b : k=1 contexts: a→{b,c,b} (ambiguous, 3 positions), b→{a}, c→{a}
        let s = vec![0u32, 1, 0, 2, 0, 1];
        let (rows, _) = ambiguity(&[Tokens::U32(&s)], 2, 1 << 20).unwrap();
        assert_eq!(rows[0].positions, 5);
        assert_eq!(rows[0].ambiguous_positions, 3);
        assert_eq!(rows[0].contexts, 3);
        let h =
            -(2.0 / 3.0f64 * (2.0 / 3.0f64).log2() + 1.0 / 3.0 * (1.0 / 3.0f64).log2()) * 3.0 / 5.0;
        assert!((rows[0].cond_entropy_bits - h).abs() < 1e-12);
        // k=2: (a b)→a, (b a)→c, (a c)→a, (c a)→b : nothing ambiguous
        assert_eq!(rows[1].ambiguous_positions, 0);
        assert_eq!(rows[1].cond_entropy_bits, 0.0);
        assert!((rows[0].ambiguous_share() - 0.6).abs() < 1e-12);
    }

    #[test]
    fn edge_cases() {
        let (rows, _) = ambiguity(&[Tokens::U32(&[5])], 3, 1 << 20).unwrap();
        assert!(rows
            .iter()
            .all(|r| r.positions == 0 && r.cond_entropy_bits == 0.0));
        assert!(ambiguity(&[], 0, 1).is_err());
        assert!(ambiguity(&[], MAX_K + 1, 1).is_err());
    }
}
