//! The `.lcshard` token-shard format: writer, memory-mapped reader and validation.
//!
//! Layout (all integers little-endian; see docs/shard-format.md for the full description):
//!
//! ```text
//! [0, 128)                         header (below)
//! [128, 128 + n_tokens*w)          token ids, w = 2 (uint16) or 4 (uint32)
//! zero padding to a multiple of 8
//! [doc_offsets_offset, +8*(n_docs+1))  uint64 document offsets: 0 = o_0 <= o_1 <= ... <= o_n = n_tokens
//! [counts_offset, +8*vocab_size)   uint64 count of every token id
//! ```
//!
//! Header fields (byte offset, size): magic "LCSHARD\0" (0,8), version u32 (8,4), header_size u32
//! (12,4), token_bytes u32 (16,4), vocab_size u32 (20,4), n_tokens u64 (24,8), n_docs u64 (32,8),
//! tokens_offset u64 (40,8), doc_offsets_offset u64 (48,8), counts_offset u64 (56,8), file_size u64
//! (64,8), tokenizer_fingerprint [u8;16] (72,16), eos_id u32 (88,4), flags u32 (92,4),
//! payload_xxh3 u64 (96,8) = XXH3-64 of bytes [header_size, file_size), reserved (104,16) = 0,
//! header_xxh3 u64 (120,8) = XXH3-64 of bytes [0,120).

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use rayon::prelude::*;
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::error::{Error, Result};

#[cfg(not(target_endian = "little"))]
compile_error!("lcfast shards are little-endian and are memory-mapped without conversion");

pub const MAGIC: [u8; 8] = *b"LCSHARD\0";
pub const VERSION: u32 = 1;
pub const HEADER_SIZE: usize = 128;
/// `eos_id` value meaning "no end-of-text token".
pub const NO_EOS: u32 = u32::MAX;
/// Largest vocabulary stored with uint16 ids.
pub const U16_MAX_VOCAB: u32 = 1 << 16;

/// The decoded header of a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub header_size: u32,
    pub token_bytes: u32,
    pub vocab_size: u32,
    pub n_tokens: u64,
    pub n_docs: u64,
    pub tokens_offset: u64,
    pub doc_offsets_offset: u64,
    pub counts_offset: u64,
    pub file_size: u64,
    pub tokenizer_fingerprint: [u8; 16],
    pub eos_id: u32,
    pub flags: u32,
    pub payload_xxh3: u64,
    pub header_xxh3: u64,
}

/// Section offsets implied by (token_bytes, vocab, n_tokens, n_docs); None on arithmetic overflow.
pub fn layout(
    token_bytes: u32,
    vocab_size: u32,
    n_tokens: u64,
    n_docs: u64,
) -> Option<(u64, u64, u64, u64)> {
    let tokens_offset = HEADER_SIZE as u64;
    let end_tokens = n_tokens
        .checked_mul(token_bytes as u64)?
        .checked_add(tokens_offset)?;
    let doc_offsets_offset = end_tokens.checked_add(7)? & !7u64;
    let counts_offset = n_docs
        .checked_add(1)?
        .checked_mul(8)?
        .checked_add(doc_offsets_offset)?;
    let file_size = (vocab_size as u64)
        .checked_mul(8)?
        .checked_add(counts_offset)?;
    Some((tokens_offset, doc_offsets_offset, counts_offset, file_size))
}

/// Token width in bytes for a vocabulary: 2 (uint16) up to 65,536 ids, else 4 (uint32).
pub fn token_bytes_for(vocab_size: u32) -> u32 {
    if vocab_size <= U16_MAX_VOCAB {
        2
    } else {
        4
    }
}

fn rd_u32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn rd_u64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Header {
    /// Serialise; `header_xxh3` is recomputed from the other fields.
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&self.header_size.to_le_bytes());
        b[16..20].copy_from_slice(&self.token_bytes.to_le_bytes());
        b[20..24].copy_from_slice(&self.vocab_size.to_le_bytes());
        b[24..32].copy_from_slice(&self.n_tokens.to_le_bytes());
        b[32..40].copy_from_slice(&self.n_docs.to_le_bytes());
        b[40..48].copy_from_slice(&self.tokens_offset.to_le_bytes());
        b[48..56].copy_from_slice(&self.doc_offsets_offset.to_le_bytes());
        b[56..64].copy_from_slice(&self.counts_offset.to_le_bytes());
        b[64..72].copy_from_slice(&self.file_size.to_le_bytes());
        b[72..88].copy_from_slice(&self.tokenizer_fingerprint);
        b[88..92].copy_from_slice(&self.eos_id.to_le_bytes());
        b[92..96].copy_from_slice(&self.flags.to_le_bytes());
        b[96..104].copy_from_slice(&self.payload_xxh3.to_le_bytes());
        let h = xxh3_64(&b[0..120]);
        b[120..128].copy_from_slice(&h.to_le_bytes());
        b
    }

    /// Parse and check the header of a file whose bytes start with `b` and whose length is
    /// `file_len`. Checks everything that does not need the payload.
    pub fn parse(b: &[u8], file_len: u64, name: &str) -> Result<Header> {
        if b.len() < 8 || b[0..8] != MAGIC {
            if b.len() < 8 && MAGIC.starts_with(b) {
                return Err(Error::data(format!(
                    "{name}: truncated shard: {file_len} bytes, smaller than the {HEADER_SIZE}-byte header"
                )));
            }
            return Err(Error::data(format!(
                "{name}: not an lcfast token shard (bad magic)"
            )));
        }
        if b.len() < HEADER_SIZE {
            return Err(Error::data(format!(
                "{name}: truncated shard: {file_len} bytes, smaller than the {HEADER_SIZE}-byte header"
            )));
        }
        let version = rd_u32(b, 8);
        if version != VERSION {
            return Err(Error::data(format!(
                "{name}: unsupported shard format version {version} (this lcfast reads version {VERSION})"
            )));
        }
        let header_xxh3 = rd_u64(b, 120);
        if xxh3_64(&b[0..120]) != header_xxh3 {
            return Err(Error::data(format!(
                "{name}: corrupt shard header (header checksum mismatch)"
            )));
        }
        let mut fp = [0u8; 16];
        fp.copy_from_slice(&b[72..88]);
        let h = Header {
            version,
            header_size: rd_u32(b, 12),
            token_bytes: rd_u32(b, 16),
            vocab_size: rd_u32(b, 20),
            n_tokens: rd_u64(b, 24),
            n_docs: rd_u64(b, 32),
            tokens_offset: rd_u64(b, 40),
            doc_offsets_offset: rd_u64(b, 48),
            counts_offset: rd_u64(b, 56),
            file_size: rd_u64(b, 64),
            tokenizer_fingerprint: fp,
            eos_id: rd_u32(b, 88),
            flags: rd_u32(b, 92),
            payload_xxh3: rd_u64(b, 96),
            header_xxh3,
        };
        let bad = |what: String| Err(Error::data(format!("{name}: corrupt shard header: {what}")));
        if h.header_size as usize != HEADER_SIZE {
            return bad(format!(
                "header_size {} (expected {HEADER_SIZE})",
                h.header_size
            ));
        }
        if h.token_bytes != 2 && h.token_bytes != 4 {
            return bad(format!(
                "token width {} bytes (expected 2 or 4)",
                h.token_bytes
            ));
        }
        if h.vocab_size == 0 {
            return bad("vocab_size 0".into());
        }
        if h.token_bytes == 2 && h.vocab_size > U16_MAX_VOCAB {
            return bad(format!(
                "vocab_size {} does not fit uint16 ids",
                h.vocab_size
            ));
        }
        if h.flags != 0 {
            return bad(format!("unknown flags {:#x}", h.flags));
        }
        if h.eos_id != NO_EOS && h.eos_id >= h.vocab_size {
            return bad(format!(
                "eos_id {} >= vocab_size {}",
                h.eos_id, h.vocab_size
            ));
        }
        match layout(h.token_bytes, h.vocab_size, h.n_tokens, h.n_docs) {
            Some((t, d, c, f))
                if t == h.tokens_offset
                    && d == h.doc_offsets_offset
                    && c == h.counts_offset
                    && f == h.file_size => {}
            _ => return bad("section offsets do not match the token and document counts".into()),
        }
        if file_len < h.file_size {
            return Err(Error::data(format!(
                "{name}: truncated shard: {file_len} bytes, the header says {}",
                h.file_size
            )));
        }
        if file_len > h.file_size {
            return Err(Error::data(format!(
                "{name}: shard has {} unexpected trailing bytes after its end ({} bytes)",
                file_len - h.file_size,
                h.file_size
            )));
        }
        Ok(h)
    }

    pub fn dtype_name(&self) -> &'static str {
        if self.token_bytes == 2 {
            "uint16"
        } else {
            "uint32"
        }
    }
}

/// Borrowed token ids of a shard in their stored width.
#[derive(Clone, Copy, Debug)]
pub enum Tokens<'a> {
    U16(&'a [u16]),
    U32(&'a [u32]),
}

impl<'a> Tokens<'a> {
    pub fn len(&self) -> usize {
        match self {
            Tokens::U16(s) => s.len(),
            Tokens::U32(s) => s.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    #[inline]
    pub fn get(&self, i: usize) -> u32 {
        match self {
            Tokens::U16(s) => s[i] as u32,
            Tokens::U32(s) => s[i],
        }
    }
    pub fn to_vec_u32(&self) -> Vec<u32> {
        match self {
            Tokens::U16(s) => s.iter().map(|&x| x as u32).collect(),
            Tokens::U32(s) => s.to_vec(),
        }
    }
}

/// Reinterpret little-endian bytes as `T` if aligned (always true inside a mapped shard).
fn cast<T: Copy>(b: &[u8]) -> Option<&[T]> {
    // SAFETY: u16/u32/u64 have no invalid bit patterns; align_to only returns a middle part that
    // is correctly aligned, and we require the whole slice to be that middle part.
    let (pre, mid, post) = unsafe { b.align_to::<T>() };
    if pre.is_empty() && post.is_empty() {
        Some(mid)
    } else {
        None
    }
}

/// Max token id (and first position holding an id >= vocab, if any).
fn first_out_of_range(tokens: &[u8], token_bytes: u32, vocab: u32) -> Option<(u64, u32)> {
    const CHUNK: usize = 1 << 20;
    fn scan<T: Copy + Into<u32> + Send + Sync>(s: &[T], vocab: u32) -> Option<(u64, u32)> {
        let bad_chunk = s.par_chunks(CHUNK).position_first(|c| {
            let mut m: u32 = 0;
            for &x in c {
                let v: u32 = x.into();
                m = m.max(v);
            }
            m >= vocab
        })?;
        let base = bad_chunk * CHUNK;
        let c = &s[base..(base + CHUNK).min(s.len())];
        let (i, v) = c
            .iter()
            .enumerate()
            .map(|(i, &x)| (i, x.into()))
            .find(|&(_, v)| v >= vocab)?;
        Some(((base + i) as u64, v))
    }
    if token_bytes == 2 {
        match cast::<u16>(tokens) {
            Some(s) => scan(s, vocab),
            None => {
                let v: Vec<u16> = tokens
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect();
                scan(&v, vocab)
            }
        }
    } else {
        match cast::<u32>(tokens) {
            Some(s) => scan(s, vocab),
            None => {
                let v: Vec<u32> = tokens
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                scan(&v, vocab)
            }
        }
    }
}

/// Validate a whole shard held in `b` (the file's bytes). `verify` adds the payload checksum and
/// the token-id range check (one pass over the payload); the structural checks always run.
pub fn validate_bytes(b: &[u8], name: &str, verify: bool) -> Result<Header> {
    let h = Header::parse(b, b.len() as u64, name)?;
    let payload = &b[h.tokens_offset as usize..];
    let tok_end = (h.tokens_offset + h.n_tokens * h.token_bytes as u64) as usize;
    let tokens = &b[h.tokens_offset as usize..tok_end];
    if verify {
        let (sum, oor) = rayon::join(
            || xxh3_64(payload),
            || first_out_of_range(tokens, h.token_bytes, h.vocab_size),
        );
        if sum != h.payload_xxh3 {
            return Err(Error::data(format!(
                "{name}: shard payload checksum mismatch (file is corrupt: expected xxh3 {:016x}, got {sum:016x})",
                h.payload_xxh3
            )));
        }
        if let Some((pos, v)) = oor {
            return Err(Error::data(format!(
                "{name}: token id {v} at position {pos} is out of range (vocab_size {})",
                h.vocab_size
            )));
        }
    }
    if b[tok_end..h.doc_offsets_offset as usize]
        .iter()
        .any(|&x| x != 0)
    {
        return Err(Error::data(format!(
            "{name}: corrupt shard: non-zero padding after the tokens"
        )));
    }
    // Document offsets: 0 = o_0 <= o_1 <= ... <= o_n = n_tokens.
    let offs = &b[h.doc_offsets_offset as usize..h.counts_offset as usize];
    let mut prev = 0u64;
    for (i, c) in offs.chunks_exact(8).enumerate() {
        let o = u64::from_le_bytes(c.try_into().unwrap());
        if (i == 0 && o != 0) || o < prev || o > h.n_tokens {
            return Err(Error::data(format!(
                "{name}: corrupt shard: document offset {i} is {o} (offsets must rise from 0 to n_tokens {})",
                h.n_tokens
            )));
        }
        prev = o;
    }
    if prev != h.n_tokens {
        return Err(Error::data(format!(
            "{name}: corrupt shard: last document offset {prev} != n_tokens {}",
            h.n_tokens
        )));
    }
    let counts = &b[h.counts_offset as usize..h.file_size as usize];
    let mut total: u64 = 0;
    for c in counts.chunks_exact(8) {
        total = total.saturating_add(u64::from_le_bytes(c.try_into().unwrap()));
    }
    if total != h.n_tokens {
        return Err(Error::data(format!(
            "{name}: corrupt shard: token counts sum to {total}, not n_tokens {}",
            h.n_tokens
        )));
    }
    Ok(h)
}

/// A memory-mapped, validated shard.
pub struct Shard {
    path: PathBuf,
    map: Mmap,
    header: Header,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("path", &self.path)
            .field("header", &self.header)
            .finish()
    }
}

impl Shard {
    /// Open and validate (`verify`: also checksum + id range, one pass over the payload).
    pub fn open(path: impl AsRef<Path>, verify: bool) -> Result<Shard> {
        let path = path.as_ref().to_path_buf();
        let name = path.display().to_string();
        let file = File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::usage(format!("{name}: no such shard file")),
            _ => Error::io(&path, "cannot open shard", e),
        })?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io(&path, "cannot stat shard", e))?;
        if meta.is_dir() {
            return Err(Error::usage(format!(
                "{name}: is a directory, not a shard file"
            )));
        }
        if meta.len() < HEADER_SIZE as u64 {
            let mut head = Vec::new();
            (&file)
                .take(8)
                .read_to_end(&mut head)
                .map_err(|e| Error::io(&path, "cannot read shard", e))?;
            Header::parse(&head, meta.len(), &name)?;
            return Err(Error::data(format!(
                "{name}: truncated shard: {} bytes",
                meta.len()
            )));
        }
        // SAFETY: the map is read-only; lcfast never writes a shard in place (writers create a
        // temporary file and rename it). Another process truncating the file under us could
        // fault, as with any mmap-based reader.
        let map = unsafe {
            let mut opts = memmap2::MmapOptions::new();
            if verify {
                // The verify pass reads every page: fault them in up front, in bulk.
                opts.populate();
            }
            opts.map(&file)
        }
        .map_err(|e| Error::io(&path, "cannot memory-map shard", e))?;
        let header = validate_bytes(&map, &name, verify)?;
        Ok(Shard { path, map, header })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn header(&self) -> &Header {
        &self.header
    }
    pub fn n_tokens(&self) -> u64 {
        self.header.n_tokens
    }
    pub fn vocab_size(&self) -> u32 {
        self.header.vocab_size
    }
    /// Identifies this shard's content: XXH3-64 of its header (which holds the payload checksum).
    pub fn fingerprint(&self) -> String {
        format!("{:016x}", self.header.header_xxh3)
    }
    pub fn tokens(&self) -> Tokens<'_> {
        let h = &self.header;
        let b = &self.map[h.tokens_offset as usize
            ..(h.tokens_offset + h.n_tokens * h.token_bytes as u64) as usize];
        if h.token_bytes == 2 {
            Tokens::U16(cast::<u16>(b).expect("mapped shard tokens are aligned"))
        } else {
            Tokens::U32(cast::<u32>(b).expect("mapped shard tokens are aligned"))
        }
    }
    pub fn doc_offsets(&self) -> &[u64] {
        let h = &self.header;
        cast::<u64>(&self.map[h.doc_offsets_offset as usize..h.counts_offset as usize])
            .expect("aligned")
    }
    pub fn counts(&self) -> &[u64] {
        let h = &self.header;
        cast::<u64>(&self.map[h.counts_offset as usize..h.file_size as usize]).expect("aligned")
    }
    /// Token ids of document `i` (its EOS included when the shard was written by `tokenize`).
    pub fn document(&self, i: usize) -> Vec<u32> {
        let o = self.doc_offsets();
        let (a, b) = (o[i] as usize, o[i + 1] as usize);
        match self.tokens() {
            Tokens::U16(s) => s[a..b].iter().map(|&x| x as u32).collect(),
            Tokens::U32(s) => s[a..b].to_vec(),
        }
    }
}

/// Streaming writer. Tokens go to `<path>.tmp.<pid>` (offsets to a second temporary file, so
/// memory stays bounded by the vocabulary size); `finish` appends offsets and counts, writes the
/// header, fsyncs and renames into place. Dropping an unfinished writer removes its temporaries.
pub struct ShardWriter {
    path: PathBuf,
    tmp: PathBuf,
    offs_tmp: PathBuf,
    file: Option<BufWriter<File>>,
    offs: Option<BufWriter<File>>,
    hasher: Xxh3,
    token_bytes: u32,
    vocab_size: u32,
    tokenizer_fingerprint: [u8; 16],
    eos_id: u32,
    counts: Vec<u64>,
    n_tokens: u64,
    n_docs: u64,
    buf: Vec<u8>,
    finished: bool,
}

impl ShardWriter {
    pub fn create(
        path: impl AsRef<Path>,
        vocab_size: u32,
        tokenizer_fingerprint: [u8; 16],
        eos_id: u32,
    ) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if vocab_size == 0 {
            return Err(Error::usage("vocab_size must be at least 1"));
        }
        if eos_id != NO_EOS && eos_id >= vocab_size {
            return Err(Error::usage(format!(
                "eos id {eos_id} >= vocab_size {vocab_size}"
            )));
        }
        let fname = path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let pid = std::process::id();
        let tmp = path.with_file_name(format!(".{fname}.tmp.{pid}"));
        let offs_tmp = path.with_file_name(format!(".{fname}.offsets.tmp.{pid}"));
        let mk = |p: &Path| -> Result<BufWriter<File>> {
            let f = OpenOptions::new()
                .write(true)
                .read(true)
                .create(true)
                .truncate(true)
                .open(p)
                .map_err(|e| Error::io(p, "cannot create", e))?;
            Ok(BufWriter::with_capacity(1 << 20, f))
        };
        let mut file = mk(&tmp)?;
        file.write_all(&[0u8; HEADER_SIZE])
            .map_err(|e| Error::io(&tmp, "write failed", e))?;
        let mut offs = mk(&offs_tmp)?;
        offs.write_all(&0u64.to_le_bytes())
            .map_err(|e| Error::io(&offs_tmp, "write failed", e))?;
        Ok(ShardWriter {
            path,
            tmp,
            offs_tmp,
            file: Some(file),
            offs: Some(offs),
            hasher: Xxh3::new(),
            token_bytes: token_bytes_for(vocab_size),
            vocab_size,
            tokenizer_fingerprint,
            eos_id,
            counts: vec![0; vocab_size as usize],
            n_tokens: 0,
            n_docs: 0,
            buf: Vec::new(),
            finished: false,
        })
    }

    pub fn n_tokens(&self) -> u64 {
        self.n_tokens
    }
    pub fn n_docs(&self) -> u64 {
        self.n_docs
    }
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// Append one document (ids must be < vocab_size).
    pub fn push_doc(&mut self, ids: &[u32]) -> Result<()> {
        self.push_tokens(ids)?;
        self.end_doc()
    }

    /// Append tokens to the current document without ending it (a long document arrives in
    /// pieces); `end_doc` closes it.
    pub fn push_tokens(&mut self, ids: &[u32]) -> Result<()> {
        self.buf.clear();
        for &t in ids {
            if t >= self.vocab_size {
                return Err(Error::data(format!(
                    "{}: token id {t} is out of range for vocab_size {}",
                    self.path.display(),
                    self.vocab_size
                )));
            }
            self.counts[t as usize] += 1;
            if self.token_bytes == 2 {
                self.buf.extend_from_slice(&(t as u16).to_le_bytes());
            } else {
                self.buf.extend_from_slice(&t.to_le_bytes());
            }
        }
        self.hasher.update(&self.buf);
        let f = self.file.as_mut().expect("writer is open");
        f.write_all(&self.buf)
            .map_err(|e| Error::io(&self.tmp, "write failed", e))?;
        self.n_tokens += ids.len() as u64;
        Ok(())
    }

    /// End the current document: its offset goes into the document table.
    pub fn end_doc(&mut self) -> Result<()> {
        self.n_docs += 1;
        let o = self.offs.as_mut().expect("writer is open");
        o.write_all(&self.n_tokens.to_le_bytes())
            .map_err(|e| Error::io(&self.offs_tmp, "write failed", e))?;
        Ok(())
    }

    /// Complete the file and rename it into place.
    pub fn finish(mut self) -> Result<Header> {
        let (tokens_offset, doc_offsets_offset, counts_offset, file_size) = layout(
            self.token_bytes,
            self.vocab_size,
            self.n_tokens,
            self.n_docs,
        )
        .ok_or_else(|| Error::data(format!("{}: shard too large", self.path.display())))?;
        let tmp = self.tmp.clone();
        let wr = |e| Error::io(&tmp, "write failed", e);
        let mut file = self.file.take().expect("writer is open");
        let pad =
            (doc_offsets_offset - tokens_offset - self.n_tokens * self.token_bytes as u64) as usize;
        let zeros = [0u8; 8];
        file.write_all(&zeros[..pad]).map_err(wr)?;
        self.hasher.update(&zeros[..pad]);
        // Copy the offsets from their temporary file.
        let offs = self.offs.take().expect("writer is open");
        let mut of = offs
            .into_inner()
            .map_err(|e| Error::io(&self.offs_tmp, "write failed", e.into_error()))?;
        of.seek(SeekFrom::Start(0))
            .map_err(|e| Error::io(&self.offs_tmp, "seek failed", e))?;
        let mut chunk = vec![0u8; 1 << 20];
        let mut copied = 0u64;
        loop {
            let n = of
                .read(&mut chunk)
                .map_err(|e| Error::io(&self.offs_tmp, "read failed", e))?;
            if n == 0 {
                break;
            }
            self.hasher.update(&chunk[..n]);
            file.write_all(&chunk[..n]).map_err(wr)?;
            copied += n as u64;
        }
        drop(of);
        if copied != 8 * (self.n_docs + 1) {
            return Err(Error::data(format!(
                "{}: offsets file lost data",
                self.offs_tmp.display()
            )));
        }
        self.buf.clear();
        for &c in &self.counts {
            self.buf.extend_from_slice(&c.to_le_bytes());
        }
        self.hasher.update(&self.buf);
        file.write_all(&self.buf).map_err(wr)?;
        let header = Header {
            version: VERSION,
            header_size: HEADER_SIZE as u32,
            token_bytes: self.token_bytes,
            vocab_size: self.vocab_size,
            n_tokens: self.n_tokens,
            n_docs: self.n_docs,
            tokens_offset,
            doc_offsets_offset,
            counts_offset,
            file_size,
            tokenizer_fingerprint: self.tokenizer_fingerprint,
            eos_id: self.eos_id,
            flags: 0,
            payload_xxh3: self.hasher.digest(),
            header_xxh3: 0,
        };
        let hb = header.to_bytes();
        let mut f = file
            .into_inner()
            .map_err(|e| Error::io(&tmp, "write failed", e.into_error()))?;
        f.seek(SeekFrom::Start(0))
            .map_err(|e| Error::io(&tmp, "seek failed", e))?;
        f.write_all(&hb).map_err(wr)?;
        f.sync_all()
            .map_err(|e| Error::io(&tmp, "fsync failed", e))?;
        drop(f);
        fs::rename(&self.tmp, &self.path)
            .map_err(|e| Error::io(&self.path, "cannot rename into place", e))?;
        let _ = fs::remove_file(&self.offs_tmp);
        self.finished = true;
        Ok(Header {
            header_xxh3: u64::from_le_bytes(hb[120..128].try_into().unwrap()),
            ..header
        })
    }
}

impl Drop for ShardWriter {
    fn drop(&mut self) {
        if !self.finished {
            self.file.take();
            self.offs.take();
            let _ = fs::remove_file(&self.tmp);
            let _ = fs::remove_file(&self.offs_tmp);
        }
    }
}

/// Convenience for tests and small tools: write `docs` as one shard.
pub fn write_shard(
    path: impl AsRef<Path>,
    vocab_size: u32,
    docs: &[Vec<u32>],
    tokenizer_fingerprint: [u8; 16],
    eos_id: u32,
) -> Result<Header> {
    let mut w = ShardWriter::create(path, vocab_size, tokenizer_fingerprint, eos_id)?;
    for d in docs {
        w.push_doc(d)?;
    }
    w.finish()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "lcfast-test-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn sample_docs(vocab: u32) -> Vec<Vec<u32>> {
        let mut x: u64 = 12345;
        (0..37)
            .map(|i| {
                (0..(i * 7 % 23 + 1))
                    .map(|_| {
                        x = x
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        ((x >> 33) % vocab as u64) as u32
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn round_trip_u16_and_u32() {
        let d = tmpdir("rt");
        for &vocab in &[300u32, 65536, 70000] {
            let docs = sample_docs(vocab);
            let p = d.join(format!("s{vocab}.lcshard"));
            let fp = [7u8; 16];
            let h = write_shard(&p, vocab, &docs, fp, vocab - 1).unwrap();
            let s = Shard::open(&p, true).unwrap();
            assert_eq!(s.header(), &h);
            assert_eq!(s.header().token_bytes, if vocab <= 65536 { 2 } else { 4 });
            assert_eq!(s.header().n_docs, docs.len() as u64);
            let flat: Vec<u32> = docs.concat();
            assert_eq!(s.tokens().to_vec_u32(), flat);
            for (i, doc) in docs.iter().enumerate() {
                assert_eq!(&s.document(i), doc);
            }
            let mut counts = vec![0u64; vocab as usize];
            for &t in &flat {
                counts[t as usize] += 1;
            }
            assert_eq!(s.counts(), &counts[..]);
            assert_eq!(s.header().tokenizer_fingerprint, fp);
            assert_eq!(fs::metadata(&p).unwrap().len(), h.file_size);
            // no temporaries left behind
            assert_eq!(
                fs::read_dir(&d)
                    .unwrap()
                    .filter(|e| e
                        .as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .contains("tmp"))
                    .count(),
                0
            );
        }
    }

    #[test]
    fn empty_shard_round_trips() {
        let d = tmpdir("empty");
        let p = d.join("e.lcshard");
        write_shard(&p, 10, &[], [0; 16], NO_EOS).unwrap();
        let s = Shard::open(&p, true).unwrap();
        assert_eq!(s.n_tokens(), 0);
        assert_eq!(s.doc_offsets(), &[0]);
        assert!(s.tokens().is_empty());
    }

    #[test]
    fn writer_rejects_out_of_range_and_cleans_up() {
        let d = tmpdir("oor");
        let p = d.join("x.lcshard");
        let mut w = ShardWriter::create(&p, 10, [0; 16], 9).unwrap();
        assert!(w.push_doc(&[10]).is_err());
        drop(w);
        assert_eq!(fs::read_dir(&d).unwrap().count(), 0);
    }

    fn valid_bytes() -> Vec<u8> {
        let d = tmpdir("vb");
        let p = d.join("v.lcshard");
        write_shard(&p, 50, &sample_docs(50), [1; 16], 49).unwrap();
        fs::read(&p).unwrap()
    }

    fn err_of(b: &[u8], verify: bool) -> String {
        validate_bytes(b, "f.lcshard", verify).unwrap_err().msg
    }

    #[test]
    fn every_corruption_is_a_clean_error() {
        let good = valid_bytes();
        assert!(validate_bytes(&good, "f", true).is_ok());
        // bad magic
        let mut b = good.clone();
        b[0] = b'X';
        assert!(err_of(&b, true).contains("bad magic"));
        // wrong version (re-sealed header checksum so the version check is what fires)
        let mut h = Header::parse(&good, good.len() as u64, "f").unwrap();
        h.version = 2;
        let mut b = good.clone();
        let mut hb = h.to_bytes();
        hb[8..12].copy_from_slice(&2u32.to_le_bytes());
        b[..HEADER_SIZE].copy_from_slice(&hb);
        assert!(
            err_of(&b, true).contains("version 2"),
            "{}",
            err_of(&b, true)
        );
        // header bit flip
        let mut b = good.clone();
        b[25] ^= 1;
        assert!(err_of(&b, true).contains("header checksum"));
        // truncation at several places
        for cut in [0usize, 4, 100, 130, good.len() - 1] {
            let e = err_of(&good[..cut], true);
            assert!(e.contains("truncated"), "cut {cut}: {e}");
        }
        // trailing bytes
        let mut b = good.clone();
        b.push(0);
        assert!(err_of(&b, true).contains("trailing"));
        // payload bit flip -> checksum
        let mut b = good.clone();
        b[HEADER_SIZE + 3] ^= 0x10;
        assert!(err_of(&b, true).contains("checksum mismatch"));
        // ... which verify=false does not look at
        assert!(validate_bytes(&b, "f", false).is_ok());
        // token id >= vocab with a valid checksum
        let mut b = good.clone();
        b[HEADER_SIZE + 4..HEADER_SIZE + 6].copy_from_slice(&60u16.to_le_bytes());
        let h = Header::parse(&b, b.len() as u64, "f").unwrap();
        let sum = xxh3_64(&b[HEADER_SIZE..]);
        let h2 = Header {
            payload_xxh3: sum,
            ..h
        };
        b[..HEADER_SIZE].copy_from_slice(&h2.to_bytes());
        let e = err_of(&b, true);
        assert!(
            e.contains("token id 60 at position 2 is out of range"),
            "{e}"
        );
        assert!(e.starts_with("f.lcshard: "));
    }

    #[test]
    fn open_names_the_file() {
        let d = tmpdir("open");
        let p = d.join("bad.lcshard");
        fs::write(&p, b"hello world, this is not a shard").unwrap();
        let e = Shard::open(&p, true).unwrap_err();
        assert!(
            e.msg.contains("bad.lcshard") && e.msg.contains("bad magic"),
            "{}",
            e.msg
        );
        let e = Shard::open(d.join("missing.lcshard"), true).unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::Usage);
        fs::write(&p, b"LCSH").unwrap();
        assert!(Shard::open(&p, true).unwrap_err().msg.contains("truncated"));
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn valid() -> Vec<u8> {
        let d = std::env::temp_dir().join(format!("lcfast-fuzz-{}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        let p = d.join("v.lcshard");
        let docs: Vec<Vec<u32>> = (0..9u32)
            .map(|i| (0..i + 1).map(|j| (i * 7 + j) % 40).collect())
            .collect();
        write_shard(&p, 40, &docs, [3; 16], 39).unwrap();
        let b = fs::read(&p).unwrap();
        let _ = fs::remove_dir_all(&d);
        b
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..400)) {
            let r = validate_bytes(&b, "fuzz", true);
            prop_assert!(r.is_err());
            prop_assert!(r.unwrap_err().msg.starts_with("fuzz: "));
        }

        #[test]
        fn random_bytes_with_magic_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..400), v in 0u32..3) {
            let mut b = MAGIC.to_vec();
            b.extend_from_slice(&v.to_le_bytes());
            b.extend_from_slice(&tail);
            let _ = validate_bytes(&b, "fuzz", true);
        }

        #[test]
        fn mutated_valid_files_are_caught(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
                                          cut in proptest::option::of(any::<usize>()),
                                          reseal in any::<bool>()) {
            let good = valid();
            let mut b = good.clone();
            for (i, v) in edits {
                let i = i % b.len();
                b[i] = v;
            }
            if let Some(c) = cut { b.truncate(c % (b.len() + 1)); }
            if reseal && b.len() >= HEADER_SIZE {
                // Recompute both checksums, so that only the structural checks can catch it.
                let sum = xxh3_64(&b[HEADER_SIZE..]);
                b[96..104].copy_from_slice(&sum.to_le_bytes());
                let h = xxh3_64(&b[0..120]);
                b[120..128].copy_from_slice(&h.to_le_bytes());
            }
            match validate_bytes(&b, "fuzz", true) {
                Err(e) => prop_assert!(e.msg.starts_with("fuzz: ")),
                Ok(h) => {
                    // Accepted only if it is still a well-formed shard: every id in range, offsets sane.
                    let toks = &b[HEADER_SIZE..HEADER_SIZE + (h.n_tokens * h.token_bytes as u64) as usize];
                    for c in toks.chunks_exact(h.token_bytes as usize) {
                        let v = if h.token_bytes == 2 { u16::from_le_bytes([c[0], c[1]]) as u32 } else { u32::from_le_bytes(c.try_into().unwrap()) };
                        prop_assert!(v < h.vocab_size);
                    }
                    if !reseal { prop_assert_eq!(&b, &good); }
                }
            }
        }
    }
}
