//! Batches of token windows, written as int64 (what torch embeddings take).
//!
//! - Random windows (training): window b of (seed, step) starts at a position drawn uniformly
//!   from [0, n_tokens − T − 1] by XXH3(step, b; seed): deterministic, independent of threads.
//! - Sequential windows (collection): window k holds tokens [kT, kT + T] (T + 1 tokens; the last
//!   one is shorter and padded with 0). Its labels are positions kT+1 ..= kT+T, so over
//!   k = 0..ceil((n−1)/T) every label position 1..n−1 is covered exactly once. Rank r of `world`
//!   owns the contiguous block of windows [⌊rW/world⌋ + …] given by [`rank_block`].

use rayon::prelude::*;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::error::{Error, Result};
use crate::shard::Tokens;

fn copy_row(tokens: Tokens<'_>, start: usize, out: &mut [i64]) {
    let len = out.len();
    match tokens {
        Tokens::U16(s) => out
            .iter_mut()
            .zip(&s[start..start + len])
            .for_each(|(o, &t)| *o = t as i64),
        Tokens::U32(s) => out
            .iter_mut()
            .zip(&s[start..start + len])
            .for_each(|(o, &t)| *o = t as i64),
    }
}

/// Start position of random window `b` of `step` (uniform over n_tokens − T starts).
pub fn random_start(n_tokens: u64, t: usize, seed: u64, step: u64, b: u64) -> u64 {
    let range = n_tokens - t as u64;
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&step.to_le_bytes());
    key[8..].copy_from_slice(&b.to_le_bytes());
    let h = xxh3_64_with_seed(&key, seed);
    ((h as u128 * range as u128) >> 64) as u64
}

/// Fill `out` (batch × (T+1), row-major) with random windows.
pub fn random_windows(
    tokens: Tokens<'_>,
    batch: usize,
    t: usize,
    seed: u64,
    step: u64,
    out: &mut [i64],
) -> Result<()> {
    let n = tokens.len() as u64;
    if t == 0 {
        return Err(Error::usage("window length T must be at least 1"));
    }
    if n < t as u64 + 1 {
        return Err(Error::data(format!(
            "shard has {n} tokens, fewer than one window of T+1 = {}",
            t + 1
        )));
    }
    assert_eq!(out.len(), batch * (t + 1));
    out.par_chunks_mut(t + 1)
        .enumerate()
        .with_min_len(4)
        .for_each(|(b, row)| {
            let start = random_start(n, t, seed, step, b as u64) as usize;
            copy_row(tokens, start, row);
        });
    Ok(())
}

/// Total number of sequential windows of length T over n tokens: ceil((n − 1) / T).
pub fn n_windows_total(n_tokens: u64, t: usize) -> u64 {
    if n_tokens < 2 || t == 0 {
        0
    } else {
        (n_tokens - 1).div_ceil(t as u64)
    }
}

/// (first window, number of windows) owned by `rank` of `world`: contiguous, disjoint, covering.
pub fn rank_block(total: u64, rank: u64, world: u64) -> (u64, u64) {
    let base = total / world;
    let rem = total % world;
    let start = rank * base + rank.min(rem);
    (start, base + u64::from(rank < rem))
}

fn check_rank(rank: u64, world: u64) -> Result<()> {
    if world == 0 || rank >= world {
        return Err(Error::usage(format!(
            "rank must be in [0, world) with world >= 1, got rank {rank} of world {world}"
        )));
    }
    Ok(())
}

pub fn n_seq_windows(n_tokens: u64, t: usize, rank: u64, world: u64) -> Result<u64> {
    check_rank(rank, world)?;
    if t == 0 {
        return Err(Error::usage("window length T must be at least 1"));
    }
    Ok(rank_block(n_windows_total(n_tokens, t), rank, world).1)
}

/// Fill `out` (count × (T+1)) with sequential windows `start..start+count` of `rank`'s block and
/// `valid` with each window's number of real tokens (the rest is padding 0).
#[allow(clippy::too_many_arguments)]
pub fn seq_windows(
    tokens: Tokens<'_>,
    t: usize,
    start: u64,
    count: u64,
    rank: u64,
    world: u64,
    out: &mut [i64],
    valid: &mut [i64],
) -> Result<()> {
    let n = tokens.len() as u64;
    let have = n_seq_windows(n, t, rank, world)?;
    if start.checked_add(count).is_none_or(|e| e > have) {
        return Err(Error::usage(format!(
            "windows {start}..{} requested, but rank {rank} of {world} has {have} windows of T = {t}",
            start.saturating_add(count)
        )));
    }
    let (first, _) = rank_block(n_windows_total(n, t), rank, world);
    assert_eq!(out.len() as u64, count * (t as u64 + 1));
    assert_eq!(valid.len() as u64, count);
    out.par_chunks_mut(t + 1)
        .zip(valid.par_iter_mut())
        .enumerate()
        .with_min_len(4)
        .for_each(|(i, (row, v))| {
            let k = first + start + i as u64;
            let a = k * t as u64;
            let len = (t as u64 + 1).min(n - a) as usize;
            copy_row(tokens, a as usize, &mut row[..len]);
            row[len..].iter_mut().for_each(|x| *x = 0);
            *v = len as i64;
        });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_windows_cover_every_label_once() {
        for n in [0usize, 1, 2, 3, 10, 17, 64, 65, 100] {
            let toks: Vec<u32> = (0..n as u32).map(|i| i + 1).collect();
            for t in [1usize, 3, 8, 16, 200] {
                for world in [1u64, 2, 3, 7] {
                    let mut seen = vec![0u32; n];
                    let mut total = 0;
                    for rank in 0..world {
                        let w = n_seq_windows(n as u64, t, rank, world).unwrap();
                        total += w;
                        // fetch in two calls to exercise `start`
                        let half = w / 2;
                        for (s, c) in [(0, half), (half, w - half)] {
                            let mut out = vec![-1i64; (c as usize) * (t + 1)];
                            let mut valid = vec![-1i64; c as usize];
                            seq_windows(
                                Tokens::U32(&toks),
                                t,
                                s,
                                c,
                                rank,
                                world,
                                &mut out,
                                &mut valid,
                            )
                            .unwrap();
                            for (row, &v) in out.chunks(t + 1).zip(&valid) {
                                assert!(v >= 2 && v as usize <= t + 1);
                                // tokens are consecutive ids = position + 1; padding 0
                                let p0 = row[0] as usize - 1;
                                for (j, &x) in row.iter().enumerate() {
                                    if j < v as usize {
                                        assert_eq!(x as usize, p0 + j + 1);
                                    } else {
                                        assert_eq!(x, 0);
                                    }
                                }
                                for j in 1..v as usize {
                                    seen[p0 + j] += 1;
                                }
                            }
                        }
                    }
                    assert_eq!(total, n_windows_total(n as u64, t));
                    if n > 0 {
                        assert_eq!(seen[0], 0);
                        assert!(
                            seen[1..].iter().all(|&c| c == 1),
                            "n={n} t={t} world={world}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn rank_blocks_partition() {
        for total in [0u64, 1, 5, 100] {
            for world in 1..6 {
                let mut next = 0;
                for r in 0..world {
                    let (s, c) = rank_block(total, r, world);
                    assert_eq!(s, next);
                    next = s + c;
                }
                assert_eq!(next, total);
            }
        }
    }

    #[test]
    fn bad_requests_are_errors() {
        let toks: Vec<u16> = (0..50).collect();
        let mut out = vec![0; 9];
        let mut v = vec![0; 1];
        assert!(seq_windows(Tokens::U16(&toks), 8, 7, 1, 0, 1, &mut out, &mut v).is_err());
        assert!(seq_windows(Tokens::U16(&toks), 8, 0, 1, 2, 2, &mut out, &mut v).is_err());
        assert!(n_seq_windows(50, 8, 0, 0).is_err());
        assert!(random_windows(Tokens::U16(&toks[..8]), 1, 8, 0, 0, &mut out).is_err());
    }

    #[test]
    fn random_windows_are_deterministic_and_in_range() {
        let toks: Vec<u16> = (0..1000).map(|i| (i % 500) as u16).collect();
        let (b, t) = (64, 16);
        let mut a = vec![0i64; b * (t + 1)];
        let mut c = vec![0i64; b * (t + 1)];
        random_windows(Tokens::U16(&toks), b, t, 5, 3, &mut a).unwrap();
        random_windows(Tokens::U16(&toks), b, t, 5, 3, &mut c).unwrap();
        assert_eq!(a, c);
        random_windows(Tokens::U16(&toks), b, t, 5, 4, &mut c).unwrap();
        assert_ne!(a, c);
        for row in a.chunks(t + 1) {
            for j in 1..t + 1 {
                assert_eq!(row[j], (row[0] + j as i64) % 500);
            }
        }
        // every start is reachable, including the last one (n - T - 1)
        let n = 20u64;
        let mut hit = vec![false; (n - 4) as usize];
        for b in 0..2000 {
            hit[random_start(n, 4, 1, 0, b) as usize] = true;
        }
        assert!(hit.iter().all(|&h| h));
    }
}
