//! Token histograms (parallel, per-thread tables) and imbalance statistics.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::shard::Tokens;

/// Tokens counted into a thread's u32 tables before they are flushed into its u64 totals
/// (so no u32 counter can overflow).
const FLUSH_EVERY: usize = 1 << 30;
/// Tokens per parallel work item (keeps threads balanced).
const CHUNK: usize = 1 << 20;

fn hist_u16_chunk(chunk: &[u16], t: &mut [[u32; 1 << 16]; 4]) {
    // Four interleaved tables so that runs of one id do not serialise on one counter.
    let mut it = chunk.chunks_exact(4);
    for c in &mut it {
        t[0][c[0] as usize] += 1;
        t[1][c[1] as usize] += 1;
        t[2][c[2] as usize] += 1;
        t[3][c[3] as usize] += 1;
    }
    for &x in it.remainder() {
        t[0][x as usize] += 1;
    }
}

/// A thread's state: u32 tables, tokens since the last flush, u64 totals, first bad id.
struct Local<T> {
    t: T,
    pending: usize,
    acc: Vec<u64>,
    bad: Option<u32>,
}

fn sum_u64(mut a: Vec<u64>, b: Vec<u64>) -> Vec<u64> {
    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
    a
}

fn out_of_range(id: u32, vocab: u32) -> Error {
    Error::data(format!(
        "token id {id} is out of range (vocab_size {vocab})"
    ))
}

/// Count every id of `tokens`; ids must be < `vocab` (else a data error naming the id).
pub fn histogram(tokens: Tokens<'_>, vocab: u32) -> Result<Vec<u64>> {
    histogram_with(tokens, vocab, FLUSH_EVERY)
}

fn histogram_with(tokens: Tokens<'_>, vocab: u32, flush_every: usize) -> Result<Vec<u64>> {
    let v = vocab as usize;
    match tokens {
        Tokens::U16(s) => {
            type T16 = Box<[[u32; 1 << 16]; 4]>;
            fn flush(l: &mut Local<T16>) {
                for (i, a) in l.acc.iter_mut().enumerate() {
                    *a += l.t.iter().map(|t| t[i] as u64).sum::<u64>();
                }
                l.t.iter_mut().for_each(|t| t.fill(0));
                l.pending = 0;
            }
            let acc = s
                .par_chunks(CHUNK)
                .fold(
                    || Local::<T16> {
                        t: vec![[0u32; 1 << 16]; 4]
                            .into_boxed_slice()
                            .try_into()
                            .unwrap(),
                        pending: 0,
                        acc: vec![0u64; 1 << 16],
                        bad: None,
                    },
                    |mut l, chunk| {
                        if l.pending + chunk.len() > flush_every {
                            flush(&mut l);
                        }
                        hist_u16_chunk(chunk, &mut l.t);
                        l.pending += chunk.len();
                        l
                    },
                )
                .map(|mut l| {
                    flush(&mut l);
                    l.acc
                })
                .reduce(|| vec![0u64; 1 << 16], sum_u64);
            if let Some(id) = (v..1 << 16).find(|&i| acc[i] > 0) {
                return Err(out_of_range(id as u32, vocab));
            }
            let mut acc = acc;
            acc.resize(v, 0);
            Ok(acc)
        }
        Tokens::U32(s) => {
            fn flush(l: &mut Local<Vec<u32>>) {
                l.acc
                    .iter_mut()
                    .zip(&l.t)
                    .for_each(|(a, &c)| *a += c as u64);
                l.t.fill(0);
                l.pending = 0;
            }
            let (acc, bad) = s
                .par_chunks(CHUNK)
                .fold(
                    || Local {
                        t: vec![0u32; v],
                        pending: 0,
                        acc: vec![0u64; v],
                        bad: None,
                    },
                    |mut l, chunk| {
                        if l.pending + chunk.len() > flush_every {
                            flush(&mut l);
                        }
                        for &x in chunk {
                            match l.t.get_mut(x as usize) {
                                Some(c) => *c += 1,
                                None => l.bad = l.bad.or(Some(x)),
                            }
                        }
                        l.pending += chunk.len();
                        l
                    },
                )
                .map(|mut l| {
                    flush(&mut l);
                    (l.acc, l.bad)
                })
                .reduce(
                    || (vec![0u64; v], None),
                    |(a, ba), (b, bb)| (sum_u64(a, b), ba.or(bb)),
                );
            match bad {
                Some(id) => Err(out_of_range(id, vocab)),
                None => Ok(acc),
            }
        }
    }
}

/// Imbalance statistics of a count vector (one entry per vocabulary id).
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub n_tokens: u64,
    pub vocab_size: u64,
    /// ids with count >= 1
    pub classes_seen: u64,
    /// (k, number of ids with count >= k)
    pub classes_ge: Vec<(u64, u64)>,
    /// Shannon entropy of the unigram distribution, bits
    pub entropy_bits: f64,
    /// Gini coefficient of the counts over the whole vocabulary (0 = uniform, → 1 = one id)
    pub gini: f64,
    /// Gini coefficient over the ids that occur
    pub gini_seen: f64,
    pub max_count: u64,
}

fn gini_sorted(sorted: &[u64]) -> f64 {
    let n = sorted.len() as f64;
    let total: f64 = sorted.iter().map(|&x| x as f64).sum();
    if sorted.is_empty() || total == 0.0 {
        return 0.0;
    }
    // G = Σ_i (2i − n − 1) x_(i) / (n Σ x), i = 1..n, x ascending.
    let s: f64 = sorted
        .iter()
        .enumerate()
        .map(|(i, &x)| (2.0 * (i as f64 + 1.0) - n - 1.0) * x as f64)
        .sum();
    s / (n * total)
}

pub fn summarize(counts: &[u64], ks: &[u64]) -> Summary {
    let n_tokens: u64 = counts.iter().sum();
    let mut sorted = counts.to_vec();
    sorted.sort_unstable();
    let first_seen = sorted.partition_point(|&x| x == 0);
    let entropy_bits = if n_tokens == 0 {
        0.0
    } else {
        let n = n_tokens as f64;
        -counts
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = c as f64 / n;
                p * p.log2()
            })
            .sum::<f64>()
    };
    Summary {
        n_tokens,
        vocab_size: counts.len() as u64,
        classes_seen: (counts.len() - first_seen) as u64,
        classes_ge: ks
            .iter()
            .map(|&k| (k, counts.iter().filter(|&&c| c >= k).count() as u64))
            .collect(),
        entropy_bits: entropy_bits.max(0.0),
        gini: gini_sorted(&sorted),
        gini_seen: gini_sorted(&sorted[first_seen..]),
        max_count: sorted.last().copied().unwrap_or(0),
    }
}

/// The `k` most frequent ids, (id, count), by count descending then id ascending; zero counts left out.
pub fn top_k(counts: &[u64], k: usize) -> Vec<(u32, u64)> {
    let mut v: Vec<(u32, u64)> = counts
        .iter()
        .enumerate()
        .filter(|(_, &c)| c > 0)
        .map(|(i, &c)| (i as u32, c))
        .collect();
    let key = |&(i, c): &(u32, u64)| (std::cmp::Reverse(c), i);
    if v.len() > k {
        v.select_nth_unstable_by_key(k, key);
        v.truncate(k);
    }
    v.sort_unstable_by_key(key);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute(tokens: &[u32], vocab: usize) -> Vec<u64> {
        let mut c = vec![0u64; vocab];
        for &t in tokens {
            c[t as usize] += 1;
        }
        c
    }

    #[test]
    fn histogram_matches_brute_force() {
        let mut x: u64 = 99;
        let toks: Vec<u32> = (0..3 * CHUNK + 12345)
            .map(|i| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                if i % 3 == 0 {
                    7
                } else {
                    ((x >> 40) % 1000) as u32
                }
            })
            .collect();
        let t16: Vec<u16> = toks.iter().map(|&t| t as u16).collect();
        let want = brute(&toks, 1000);
        assert_eq!(histogram(Tokens::U16(&t16), 1000).unwrap(), want);
        assert_eq!(histogram(Tokens::U32(&toks), 1000).unwrap(), want);
        // flushing the u32 tables often gives the same totals
        assert_eq!(histogram_with(Tokens::U16(&t16), 1000, 1000).unwrap(), want);
        assert_eq!(
            histogram_with(Tokens::U32(&toks), 1000, 1000).unwrap(),
            want
        );
        assert_eq!(
            histogram(Tokens::U16(&t16[..5]), 70000).unwrap().len(),
            70000
        );
        assert!(histogram(Tokens::U16(&t16), 999)
            .unwrap_err()
            .msg
            .contains("out of range"));
        assert!(histogram(Tokens::U32(&toks), 999)
            .unwrap_err()
            .msg
            .contains("token id 999"));
        assert_eq!(histogram(Tokens::U16(&[]), 3).unwrap(), vec![0, 0, 0]);
    }

    #[test]
    fn summary_values() {
        let s = summarize(&[4, 4, 0, 0], &[1, 4, 5]);
        assert_eq!(s.n_tokens, 8);
        assert_eq!(s.classes_seen, 2);
        assert_eq!(s.classes_ge, vec![(1, 2), (4, 2), (5, 0)]);
        assert!((s.entropy_bits - 1.0).abs() < 1e-12);
        assert!((s.gini - 0.5).abs() < 1e-12, "{}", s.gini);
        assert!(s.gini_seen.abs() < 1e-12);
        // one class holds everything: G = (n-1)/n
        let s = summarize(&[0, 0, 0, 10], &[]);
        assert!((s.gini - 0.75).abs() < 1e-12);
        assert_eq!(s.entropy_bits, 0.0);
        let s = summarize(&[0, 0], &[1]);
        assert_eq!((s.gini, s.entropy_bits, s.classes_seen), (0.0, 0.0, 0));
    }

    #[test]
    fn top_k_orders_by_count_then_id() {
        assert_eq!(top_k(&[1, 5, 5, 0, 2], 3), vec![(1, 5), (2, 5), (4, 2)]);
        assert_eq!(top_k(&[0, 3], 10), vec![(1, 3)]);
    }
}
