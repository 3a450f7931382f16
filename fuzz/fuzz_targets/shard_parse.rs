//! Fuzz target: the `.lcshard` parser and everything a validated shard is then used for.
//!
//! Input byte 0 picks a mode, the rest is a candidate shard file:
//!   0 → bytes as given (magic / header checksum / sizes reject most of them early);
//!   1 → header checksum recomputed (so mutated header fields reach the structural checks);
//!   2 → payload and header checksums recomputed (so mutated payloads reach the id-range,
//!       padding, offset and count checks, and valid shards reach the window code).
//! Oracles: no panic / overflow / out-of-bounds anywhere (debug assertions on), every message is one
//! line naming the file, and for an accepted shard the sequential windows of every rank of
//! several world sizes cover each label position exactly once and random windows stay in range.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lcfast_core::shard::{validate_bytes, Header, Tokens, HEADER_SIZE};
use lcfast_core::windows::{n_seq_windows, random_windows, seq_windows};
use xxhash_rust::xxh3::xxh3_64;

fn fix_checksums(b: &mut [u8], payload: bool) {
    if b.len() < HEADER_SIZE {
        return;
    }
    if payload {
        let s = xxh3_64(&b[HEADER_SIZE..]);
        b[96..104].copy_from_slice(&s.to_le_bytes());
    }
    let h = xxh3_64(&b[0..120]);
    b[120..128].copy_from_slice(&h.to_le_bytes());
}

fn tokens_of(b: &[u8], h: &Header) -> Vec<u32> {
    let a = h.tokens_offset as usize;
    let e = a + (h.n_tokens * h.token_bytes as u64) as usize;
    if h.token_bytes == 2 {
        b[a..e].chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as u32).collect()
    } else {
        b[a..e].chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect()
    }
}

fn check_windows(toks: &[u32], vocab: u32) {
    let n = toks.len();
    for t in [1usize, 3, 8] {
        for world in [1u64, 2, 3] {
            let mut covered = vec![0u8; n];
            for rank in 0..world {
                let w = n_seq_windows(n as u64, t, rank, world).expect("valid rank");
                let mut out = vec![-1i64; w as usize * (t + 1)];
                let mut valid = vec![-1i64; w as usize];
                seq_windows(Tokens::U32(toks), t, 0, w, rank, world, &mut out, &mut valid).expect("in range");
                for (row, &v) in out.chunks(t + 1).zip(&valid) {
                    assert!(v >= 2 && v as usize <= t + 1, "window with {v} valid tokens");
                    assert!(row[v as usize..].iter().all(|&x| x == 0), "padding not zero");
                    for &x in &row[..v as usize] {
                        assert!(x >= 0 && (x as u64) < vocab as u64);
                    }
                }
                // label coverage: global window k covers labels kT+1 ..= kT+T (clipped to n-1)
                let total: u64 = (0..world).map(|r| n_seq_windows(n as u64, t, r, world).unwrap()).sum();
                let first: u64 = (0..rank).map(|r| n_seq_windows(n as u64, t, r, world).unwrap()).sum();
                assert!(first + w <= total);
                for (i, &v) in valid.iter().enumerate() {
                    let k = first + i as u64;
                    let a = (k * t as u64) as usize;
                    assert_eq!(&out[i * (t + 1)..i * (t + 1) + v as usize],
                               toks[a..a + v as usize].iter().map(|&x| x as i64).collect::<Vec<_>>().as_slice());
                    for p in a + 1..a + v as usize {
                        covered[p] += 1;
                    }
                }
            }
            if n >= 2 {
                assert!(covered[0] == 0 && covered[1..].iter().all(|&c| c == 1), "labels not covered exactly once");
            }
            // out-of-range requests must be refused, not panic
            let w0 = n_seq_windows(n as u64, t, 0, world).unwrap();
            let mut out = vec![0i64; t + 1];
            let mut valid = vec![0i64; 1];
            assert!(seq_windows(Tokens::U32(toks), t, w0, 1, 0, world, &mut out, &mut valid).is_err());
        }
        if n > t {
            let batch = 3;
            let mut out = vec![-1i64; batch * (t + 1)];
            random_windows(Tokens::U32(toks), batch, t, 7, 11, &mut out).expect("enough tokens");
            assert!(out.iter().all(|&x| x >= 0 && (x as u64) < vocab as u64));
        } else {
            let mut out = vec![0i64; t + 1];
            assert!(random_windows(Tokens::U32(toks), 1, t, 0, 0, &mut out).is_err());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let mode = data[0] % 3;
    let mut b = data[1..].to_vec();
    if mode > 0 {
        fix_checksums(&mut b, mode == 2);
    }
    for verify in [true, false] {
        match validate_bytes(&b, "fuzz.lcshard", verify) {
            Err(e) => {
                assert!(e.msg.starts_with("fuzz.lcshard: "), "message does not name the file: {}", e.msg);
                assert!(!e.msg.contains('\n'), "multi-line message: {}", e.msg);
            }
            Ok(h) => {
                assert_eq!(h.file_size as usize, b.len());
                if verify {
                    let toks = tokens_of(&b, &h);
                    assert!(toks.iter().all(|&x| x < h.vocab_size));
                    if toks.len() <= 4096 {
                        check_windows(&toks, h.vocab_size);
                    }
                }
            }
        }
    }
});
