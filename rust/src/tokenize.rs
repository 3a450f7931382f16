//! Documents → token ids → train/val shards (+ counts), in parallel and streaming.
//!
//! - [`Encoder`] wraps a `tokenizers` tokenizer. For byte-level BPE tokenizers with the GPT-2
//!   split pattern (GPT-2/GPT-Neo, and what `train:VOCAB` builds) it uses a fast path that
//!   produces the same ids as `Tokenizer::encode(text, false)`: the split pattern runs on the
//!   `regex` crate (DFA) with the `\s+(?!\S)` look-ahead emulated, and BPE results are cached
//!   per thread by word, so no `Encoding` (offsets, token strings, masks) is ever built.
//!   Other tokenizers, and documents containing an added/special token's text, take the generic
//!   `encode_fast` path.
//! - [`DocReader`] streams documents out of `.txt` (split on blank lines) and `.jsonl` (`text`).
//! - [`TokenizeJob`] tokenizes chunks of documents on a rayon pool, appends EOS to each
//!   document, assigns it to train or val by a seeded hash of its text (deterministic and
//!   independent of the thread count), and streams it into the two [`ShardWriter`]s, which count
//!   every id as they write.
//! - Memory is bounded by the chunk size, not by the longest document: a document longer than
//!   [`SEGMENT_BYTES`] is read, tokenized and written in [`Segment`]s cut at whitespace
//!   ([`safe_cut`]: for GPT-2-style byte-level BPE the ids are exactly those of the whole
//!   document); its split is decided by the hash of its first segment.

use std::cell::RefCell;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use aho_corasick::AhoCorasick;
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use tokenizers::{Model, ModelWrapper, PreTokenizerWrapper, Tokenizer};
use xxhash_rust::xxh3::{xxh3_128, xxh3_64_with_seed};

use crate::error::{Error, Result};
use crate::shard::{Header, ShardWriter};

/// The GPT-2 split pattern used by `tokenizers`' ByteLevel pre-tokenizer, minus the look-ahead
/// alternative `\s+(?!\S)`, which [`split_pieces`] emulates.
const GPT2_PATTERN_NO_LOOKAHEAD: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+";

/// GPT-2's reversible byte → printable-char table (same as `tokenizers`' ByteLevel).
fn bytes_char() -> [char; 256] {
    let mut bs: Vec<u8> = vec![];
    bs.extend(b'!'..=b'~');
    bs.extend(b'\xA1'..=b'\xAC');
    bs.extend(b'\xAE'..=b'\xFF');
    let mut cs: Vec<u32> = bs.iter().map(|&b| b as u32).collect();
    let mut n = 0;
    for b in 0..=255u8 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut out = ['\0'; 256];
    for (b, c) in bs.into_iter().zip(cs) {
        out[b as usize] = char::from_u32(c).expect("valid char");
    }
    out
}

/// Split `text` like the GPT-2 pattern `...|\s+(?!\S)|\s+` would, calling `f` on each piece.
pub fn split_pieces<'t>(re: &regex::Regex, text: &'t str, mut f: impl FnMut(&'t str)) {
    let mut pos = 0;
    while pos < text.len() {
        let Some(m) = re.find_at(text, pos) else {
            // Cannot happen: the alternatives cover every character. Keep the rest as one piece.
            f(&text[pos..]);
            return;
        };
        let mut end = m.end();
        let piece = &text[m.start()..end];
        if m.start() > pos {
            f(&text[pos..m.start()]);
        }
        // A whitespace run followed by a non-space char: `\s+(?!\S)` leaves its last char for
        // the next match (e.g. " word"), unless the run is a single char.
        if end < text.len() {
            let mut rev = piece.chars().rev();
            if let (Some(last), Some(_)) = (rev.next(), rev.next()) {
                if last.is_whitespace() {
                    end -= last.len_utf8();
                }
            }
        }
        f(&text[m.start()..end]);
        pos = end;
    }
}

struct FastPath {
    re: regex::Regex,
    add_prefix_space: bool,
    bytes_char: [char; 256],
    added: Option<AhoCorasick>,
}

static ENCODER_IDS: AtomicU64 = AtomicU64::new(1);
const CACHE_MAX: usize = 1 << 19;

type WordCache = FxHashMap<Box<str>, Box<[u32]>>;
thread_local! {
    static CACHE: RefCell<(u64, WordCache)> = RefCell::new((0, FxHashMap::default()));
}

/// A tokenizer ready for parallel encoding (Send + Sync).
pub struct Encoder {
    tok: Tokenizer,
    fast: Option<FastPath>,
    vocab_size: u32,
    fingerprint: [u8; 16],
    id: u64,
}

/// XXH3-128 of the tokenizer's canonical serialisation (as re-serialised by the `tokenizers`
/// crate, so formatting differences in tokenizer.json do not matter).
pub fn tokenizer_fingerprint(tok: &Tokenizer) -> Result<[u8; 16]> {
    let s = tok
        .to_string(false)
        .map_err(|e| Error::data(format!("cannot serialise tokenizer: {e}")))?;
    Ok(xxh3_128(s.as_bytes()).to_le_bytes())
}

impl Encoder {
    pub fn from_file(path: impl AsRef<Path>) -> Result<Encoder> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::usage(format!("{}: no such tokenizer file", path.display()))
            }
            _ => Error::io(path, "cannot read tokenizer", e),
        })?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    pub fn from_bytes(bytes: &[u8], name: &str) -> Result<Encoder> {
        let mut tok = Tokenizer::from_bytes(bytes).map_err(|e| {
            Error::data(format!(
                "{name}: not a valid tokenizer.json: {}",
                one_line(&e.to_string())
            ))
        })?;
        tok.with_truncation(None)
            .map_err(|e| Error::data(format!("{name}: {e}")))?;
        tok.with_padding(None);
        if let ModelWrapper::BPE(b) = tok.get_model() {
            if b.dropout.is_some_and(|p| p > 0.0) {
                return Err(Error::data(format!(
                    "{name}: BPE dropout is set; tokenization would not be deterministic"
                )));
            }
        }
        let vocab_size = tok
            .get_vocab(true)
            .values()
            .copied()
            .max()
            .map(|m| m + 1)
            .ok_or_else(|| Error::data(format!("{name}: tokenizer has an empty vocabulary")))?;
        let fast = match (
            tok.get_normalizer(),
            tok.get_pre_tokenizer(),
            tok.get_model(),
        ) {
            (None, Some(PreTokenizerWrapper::ByteLevel(bl)), ModelWrapper::BPE(_))
                if bl.use_regex =>
            {
                let contents: Vec<String> = tok
                    .get_added_vocabulary()
                    .get_added_tokens_decoder()
                    .values()
                    .map(|t| t.content.clone())
                    .filter(|c| !c.is_empty())
                    .collect();
                let added = if contents.is_empty() {
                    None
                } else {
                    Some(
                        AhoCorasick::new(&contents)
                            .map_err(|e| Error::data(format!("{name}: {e}")))?,
                    )
                };
                Some(FastPath {
                    re: regex::Regex::new(GPT2_PATTERN_NO_LOOKAHEAD).expect("valid pattern"),
                    add_prefix_space: bl.add_prefix_space,
                    bytes_char: bytes_char(),
                    added,
                })
            }
            _ => None,
        };
        let fingerprint = tokenizer_fingerprint(&tok)?;
        Ok(Encoder {
            tok,
            fast,
            vocab_size,
            fingerprint,
            id: ENCODER_IDS.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Ids run over 0..vocab_size (largest id + 1, added tokens included).
    pub fn vocab_size(&self) -> u32 {
        self.vocab_size
    }
    pub fn fingerprint(&self) -> [u8; 16] {
        self.fingerprint
    }
    pub fn uses_fast_path(&self) -> bool {
        self.fast.is_some()
    }
    pub fn token_to_id(&self, s: &str) -> Option<u32> {
        self.tok.token_to_id(s)
    }
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tok
    }

    /// The reference path: `Tokenizer::encode_fast(text, add_special_tokens = false)`.
    pub fn encode_generic(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        let enc = self
            .tok
            .encode_fast(text, false)
            .map_err(|e| Error::data(format!("tokenizer failed: {}", one_line(&e.to_string()))))?;
        out.extend_from_slice(enc.get_ids());
        Ok(())
    }

    /// Append the ids of `text` (no special tokens added) to `out`.
    pub fn encode(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        let Some(fp) = &self.fast else {
            return self.encode_generic(text, out);
        };
        if text.is_empty() {
            return Ok(());
        }
        if let Some(ac) = &fp.added {
            if ac.is_match(text) {
                return self.encode_generic(text, out);
            }
        }
        let ModelWrapper::BPE(bpe) = self.tok.get_model() else {
            unreachable!()
        };
        let prefixed;
        let text = if fp.add_prefix_space && !text.starts_with(' ') {
            prefixed = format!(" {text}");
            prefixed.as_str()
        } else {
            text
        };
        CACHE.with(|cell| -> Result<()> {
            let mut guard = cell.borrow_mut();
            let (owner, cache) = &mut *guard;
            if *owner != self.id || cache.len() > CACHE_MAX {
                cache.clear();
                *owner = self.id;
            }
            let mut err = None;
            let mut mapped = String::new();
            split_pieces(&fp.re, text, |piece| {
                if err.is_some() {
                    return;
                }
                if let Some(ids) = cache.get(piece) {
                    out.extend_from_slice(ids);
                    return;
                }
                mapped.clear();
                mapped.extend(piece.bytes().map(|b| fp.bytes_char[b as usize]));
                match bpe.tokenize(&mapped) {
                    Ok(toks) => {
                        let ids: Box<[u32]> = toks.iter().map(|t| t.id).collect();
                        out.extend_from_slice(&ids);
                        cache.insert(piece.into(), ids);
                    }
                    Err(e) => {
                        err = Some(Error::data(format!(
                            "tokenizer failed: {}",
                            one_line(&e.to_string())
                        )))
                    }
                }
            });
            err.map_or(Ok(()), Err)
        })
    }
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("vocab_size", &self.vocab_size)
            .field("fast_path", &self.fast.is_some())
            .field("fingerprint", &crate::shard::hex(&self.fingerprint))
            .finish()
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// True if a document goes to the validation split: XXH3-64(text, seed) / 2^64 < val_fraction.
/// Depends only on the text and the seed (identical documents always land on the same side).
pub fn is_val(text: &str, seed: u64, val_fraction: f64) -> bool {
    if val_fraction <= 0.0 {
        return false;
    }
    if val_fraction >= 1.0 {
        return true;
    }
    let u = (xxh3_64_with_seed(text.as_bytes(), seed) >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
    u < val_fraction
}

/// Input formats read natively.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Plain text; documents are separated by blank (empty or whitespace-only) lines.
    Txt,
    /// One JSON object per line with a string field `text`.
    Jsonl,
}

pub fn format_of(path: &Path) -> Option<Format> {
    match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
        "txt" => Some(Format::Txt),
        "jsonl" => Some(Format::Jsonl),
        _ => None,
    }
}

/// `text` missing → None (an error); `"text": null` → Some(None) (skipped).
#[derive(serde::Deserialize)]
struct TextRecord {
    #[serde(default, deserialize_with = "present")]
    text: Option<Option<String>>,
}

fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Option<String>>, D::Error> {
    serde::Deserialize::deserialize(d).map(Some)
}

/// Documents longer than this many bytes are read, tokenized and written in segments of at most
/// about this size, so memory stays bounded whatever the document (a 100 MB single-line file
/// included). See [`safe_cut`] for where a document is cut and why the tokens do not change.
pub const SEGMENT_BYTES: usize = 1 << 20;

/// A piece of a document: a document of at most [`SEGMENT_BYTES`] is one segment (`first` and
/// `last`); a longer one arrives as consecutive segments in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub text: String,
    pub first: bool,
    pub last: bool,
}

/// Where to cut `s` (longer than `cap`) so that its first part has at most `cap` bytes.
///
/// Right before a single space between two non-whitespace characters ("x| y"), searched in the
/// upper half of `s[..cap]` (segments are ≥ cap/2 bytes). The GPT-2 split pattern (what the fast
/// path and `train:VOCAB` tokenizers use) always has a piece boundary there — no piece of
/// non-whitespace characters takes a following space, and the next piece is the space with the
/// run of letters / digits / other symbols after it — and that piece, " y…", is the same whether or
/// not the text before it is present (also with `add_prefix_space`: the segment already starts
/// with a space, and next to an added token, which splits the text into sections: "x " ends its
/// section with the single-space piece either way). So the segments encode to exactly the ids of
/// the whole document (tests check this). Not covered: an added token that contains a space or
/// strips the space after it (`rstrip`), and tokenizers off the fast path, whose normalizers may
/// look across the cut. A stretch of `cap/2` bytes without such a space is cut at a character
/// boundary instead; the ids next to that cut may differ (they still decode to the same text,
/// unless the tokenizer adds a prefix space to every text it encodes).
pub fn safe_cut(s: &str, cap: usize) -> usize {
    let b = s.as_bytes();
    let hi = cap.min(s.len().saturating_sub(2));
    let lo = (cap / 2).max(1);
    if hi >= lo {
        for p in (lo..=hi).rev() {
            if b[p] == b' '
                && s[p + 1..].chars().next().is_some_and(|c| !c.is_whitespace())
                && s.is_char_boundary(p)
                && s[..p].chars().next_back().is_some_and(|c| !c.is_whitespace())
            {
                return p;
            }
        }
    }
    let mut p = cap.min(s.len()).max(1);
    while p > 1 && !s.is_char_boundary(p) {
        p -= 1;
    }
    if !s.is_char_boundary(p) {
        p = s.char_indices().nth(1).map_or(s.len(), |(i, _)| i);
    }
    p
}

/// `text` as segments of at most about `cap` bytes (one segment if it fits or is blank).
pub fn segments_of(text: String, cap: usize) -> Vec<Segment> {
    if text.len() <= cap || text.trim().is_empty() {
        return vec![Segment { text, first: true, last: true }];
    }
    let mut out = vec![];
    let mut rest: &str = &text;
    while rest.len() > cap {
        let c = safe_cut(rest, cap);
        out.push(Segment { text: rest[..c].to_string(), first: out.is_empty(), last: false });
        rest = &rest[c..];
    }
    out.push(Segment { text: rest.to_string(), first: out.is_empty(), last: true });
    out
}

/// Streams the documents of one `.txt` / `.jsonl` file in chunks of about `chunk_bytes` bytes,
/// as [`Segment`]s. A `.txt` file is read in pieces of at most the buffer size, never a whole
/// line at once, so a huge single-line document costs O(segment) memory; a `.jsonl` line is one
/// JSON value and is held whole while it is parsed (its document is still tokenized in segments).
pub struct DocReader {
    path: PathBuf,
    format: Format,
    reader: BufReader<File>,
    line_no: u64,
    bytes_read: u64,
    segment_bytes: usize,
    // .txt state: the current document's text not yet emitted, whether part of it was emitted,
    // the whitespace-only start of the current line (a blank line ends the document), whether
    // the current line has shown a non-whitespace character, and bytes carried to the next read
    // (an incomplete UTF-8 character or a '\r' that may precede a '\n')
    pending: String,
    doc_open: bool,
    ws_line: String,
    line_text: bool,
    line_started: bool,
    line_offset: u64,
    carry: Vec<u8>,
    bom_checked: bool,
    line: Vec<u8>,
    done: bool,
    /// jsonl lines with `"text": null`
    pub null_texts: u64,
}

impl DocReader {
    pub fn open(path: impl AsRef<Path>) -> Result<DocReader> {
        let path = path.as_ref().to_path_buf();
        let format = format_of(&path).ok_or_else(|| {
            Error::usage(format!(
                "{}: unsupported input type (expected .txt or .jsonl)",
                path.display()
            ))
        })?;
        let f = File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::usage(format!("{}: no such input file", path.display()))
            }
            _ => Error::io(&path, "cannot open input", e),
        })?;
        Ok(DocReader {
            path,
            format,
            reader: BufReader::with_capacity(1 << 20, f),
            line_no: 0,
            bytes_read: 0,
            segment_bytes: SEGMENT_BYTES,
            pending: String::new(),
            doc_open: false,
            ws_line: String::new(),
            line_text: false,
            line_started: false,
            line_offset: 0,
            carry: Vec::new(),
            bom_checked: false,
            line: Vec::new(),
            done: false,
            null_texts: 0,
        })
    }

    /// Segment size (default [`SEGMENT_BYTES`]; tests use small ones).
    pub fn with_segment_bytes(mut self, n: usize) -> DocReader {
        self.segment_bytes = n.max(16);
        self
    }

    /// Read buffer size (default 1 MiB; tests use tiny ones to split lines and characters).
    #[cfg(test)]
    fn with_buffer(mut self, n: usize) -> DocReader {
        self.reader = BufReader::with_capacity(n.max(1), self.reader.into_inner());
        self
    }

    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Next chunk of document texts (None at end of file): the segments of
    /// [`next_segments`](Self::next_segments), i.e. whole documents unless they are longer
    /// than the segment size. Documents may be empty or whitespace-only (jsonl).
    pub fn next_chunk(&mut self, chunk_bytes: usize) -> Result<Option<Vec<String>>> {
        Ok(self
            .next_segments(chunk_bytes)?
            .map(|v| v.into_iter().map(|s| s.text).collect()))
    }

    /// Next chunk of about `chunk_bytes` bytes of segments (None at end of file).
    pub fn next_segments(&mut self, chunk_bytes: usize) -> Result<Option<Vec<Segment>>> {
        if self.done {
            return Ok(None);
        }
        let mut out = Vec::new();
        let mut size = 0usize;
        while size < chunk_bytes && !self.done {
            size += match self.format {
                Format::Txt => self.read_txt_piece(&mut out)?,
                Format::Jsonl => self.read_jsonl_line(&mut out)?,
            };
        }
        if out.is_empty() && self.done {
            return Ok(None);
        }
        Ok(Some(out))
    }

    fn emit(&mut self, out: &mut Vec<Segment>, text: String, last: bool) -> usize {
        let n = text.len();
        out.push(Segment { text, first: !self.doc_open, last });
        self.doc_open = !last;
        n
    }

    /// End of the current .txt document (a blank line or the end of the file).
    fn end_doc(&mut self, out: &mut Vec<Segment>) -> usize {
        if self.pending.is_empty() && !self.doc_open {
            return 0;
        }
        let text = std::mem::take(&mut self.pending);
        self.emit(out, text, true)
    }

    /// Cut the pending document while it is longer than a segment.
    fn cut_pending(&mut self, out: &mut Vec<Segment>) -> usize {
        let mut n = 0;
        while self.pending.len() > self.segment_bytes {
            let c = safe_cut(&self.pending, self.segment_bytes);
            let head: String = self.pending.drain(..c).collect();
            n += self.emit(out, head, false);
        }
        n
    }

    /// Read up to the next '\n' or the end of the buffer and feed it to the current document.
    /// Returns the bytes of text it emitted as segments.
    fn read_txt_piece(&mut self, out: &mut Vec<Segment>) -> Result<usize> {
        let (mut bytes, newline, eof) = {
            let buf = self
                .reader
                .fill_buf()
                .map_err(|e| Error::io(&self.path, "read failed", e))?;
            if buf.is_empty() {
                (std::mem::take(&mut self.carry), false, true)
            } else {
                let (take, newline) = match buf.iter().position(|&c| c == b'\n') {
                    Some(i) => (i + 1, true),
                    None => (buf.len(), false),
                };
                let mut v = std::mem::take(&mut self.carry);
                v.extend_from_slice(&buf[..take - newline as usize]);
                self.reader.consume(take);
                self.bytes_read += take as u64;
                (v, newline, false)
            }
        };
        if !self.bom_checked {
            // a UTF-8 BOM opening the file is dropped (it may arrive over several reads)
            if !newline && !eof && bytes.len() < 3 && b"\xEF\xBB\xBF".starts_with(&bytes) {
                self.carry = bytes;
                return Ok(0);
            }
            if bytes.starts_with(b"\xEF\xBB\xBF") {
                bytes.drain(..3);
            }
            self.bom_checked = true;
        }
        if !self.line_started && (!bytes.is_empty() || newline) {
            self.line_started = true;
            self.line_no += 1;
        }
        if newline || eof {
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        } else {
            // keep a trailing '\r' (it may precede the '\n' of the next read) and an incomplete
            // UTF-8 character for the next read
            let mut keep = 0;
            if bytes.last() == Some(&b'\r') {
                keep = 1;
            } else if let Err(e) = std::str::from_utf8(&bytes) {
                if e.error_len().is_none() {
                    keep = bytes.len() - e.valid_up_to();
                }
            }
            self.carry = bytes.split_off(bytes.len() - keep);
        }
        let text = match std::str::from_utf8(&bytes) {
            Ok(t) => t,
            Err(e) => {
                return Err(Error::data(format!(
                    "{}: line {} is not valid UTF-8 (byte {})",
                    self.path.display(),
                    self.line_no,
                    self.line_offset + e.valid_up_to() as u64
                )))
            }
        };
        self.line_offset += bytes.len() as u64;
        let mut n = 0;
        if !text.is_empty() {
            if self.line_text {
                self.pending.push_str(text);
            } else if text.trim().is_empty() {
                self.ws_line.push_str(text);
            } else {
                // the line is not blank: it joins the document (after a '\n' if it is not the first)
                self.line_text = true;
                if !self.pending.is_empty() || self.doc_open {
                    self.pending.push('\n');
                }
                self.pending.push_str(&self.ws_line);
                self.ws_line.clear();
                self.pending.push_str(text);
            }
            n += self.cut_pending(out);
        }
        if newline || eof {
            if !self.line_text {
                n += self.end_doc(out); // a blank line (or the end) ends the document
            }
            self.ws_line.clear();
            self.line_text = false;
            self.line_started = false;
            self.line_offset = 0;
        }
        if eof {
            n += self.end_doc(out);
            self.done = true;
        }
        Ok(n)
    }

    /// One .jsonl line: its `text` as the segments of one document.
    fn read_jsonl_line(&mut self, out: &mut Vec<Segment>) -> Result<usize> {
        self.line.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.line)
            .map_err(|e| Error::io(&self.path, "read failed", e))?;
        if n == 0 {
            self.done = true;
            return Ok(0);
        }
        self.line_no += 1;
        self.bytes_read += n as u64;
        let mut l: &[u8] = &self.line;
        if self.line_no == 1 && l.starts_with(b"\xEF\xBB\xBF") {
            l = &l[3..];
        }
        if l.last() == Some(&b'\n') {
            l = &l[..l.len() - 1];
        }
        if l.last() == Some(&b'\r') {
            l = &l[..l.len() - 1];
        }
        let s = std::str::from_utf8(l).map_err(|e| {
            Error::data(format!(
                "{}: line {} is not valid UTF-8 (byte {})",
                self.path.display(),
                self.line_no,
                e.valid_up_to()
            ))
        })?;
        if s.trim().is_empty() {
            return Ok(0);
        }
        let rec: TextRecord = serde_json::from_str(s).map_err(|e| {
            let what = if e.is_data() {
                "has no string field \"text\"".to_string()
            } else {
                format!("is not valid JSON ({})", one_line(&e.to_string()))
            };
            Error::data(format!(
                "{}: line {} {what}",
                self.path.display(),
                self.line_no
            ))
        })?;
        match rec.text {
            Some(Some(t)) => {
                let n = t.len().max(1); // an empty text still counts towards the chunk
                out.extend(segments_of(t, self.segment_bytes));
                Ok(n)
            }
            Some(None) => {
                self.null_texts += 1;
                Ok(0)
            }
            None => Err(Error::data(format!(
                "{}: line {} has no string field \"text\"",
                self.path.display(),
                self.line_no
            ))),
        }
    }
}

#[derive(Clone, Debug)]
pub struct JobConfig {
    pub val_fraction: f64,
    pub seed: u64,
    /// Appended after every document (must be < the encoder's vocab size).
    pub eos_id: u32,
    /// Text bytes per parallel chunk (bounds memory).
    pub chunk_bytes: usize,
    /// rayon threads; 0 = RAYON_NUM_THREADS or the number of cores.
    pub threads: usize,
    /// Longer documents are tokenized and written in segments of about this size ([`SEGMENT_BYTES`]).
    pub segment_bytes: usize,
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            val_fraction: 0.01,
            seed: 0,
            eos_id: 0,
            chunk_bytes: 4 << 20,
            threads: 0,
            segment_bytes: SEGMENT_BYTES,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct FileReport {
    pub documents: u64,
    pub bytes: u64,
    pub skipped_empty: u64,
}

#[derive(Clone, Debug)]
pub struct JobReport {
    pub train: Header,
    pub val: Header,
    pub documents: u64,
    pub skipped_empty: u64,
    pub text_bytes: u64,
    pub threads: usize,
    pub fast_path: bool,
}

/// One tokenization run writing `train` and `val` shards.
pub struct TokenizeJob {
    enc: Encoder,
    cfg: JobConfig,
    pool: rayon::ThreadPool,
    train: ShardWriter,
    val: ShardWriter,
    documents: u64,
    skipped_empty: u64,
    text_bytes: u64,
    /// the split of the document being written (a long one spans several calls)
    in_val: bool,
}

impl TokenizeJob {
    pub fn new(
        enc: Encoder,
        train_path: &Path,
        val_path: &Path,
        cfg: JobConfig,
    ) -> Result<TokenizeJob> {
        if !(0.0..=1.0).contains(&cfg.val_fraction) {
            return Err(Error::usage(format!(
                "--val-fraction must be in [0, 1], got {}",
                cfg.val_fraction
            )));
        }
        if cfg.eos_id >= enc.vocab_size() {
            return Err(Error::usage(format!(
                "eos id {} >= vocab size {}",
                cfg.eos_id,
                enc.vocab_size()
            )));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.threads)
            .thread_name(|i| format!("lcfast-tok-{i}"))
            .build()
            .map_err(|e| Error::usage(format!("cannot start {} threads: {e}", cfg.threads)))?;
        let train =
            ShardWriter::create(train_path, enc.vocab_size(), enc.fingerprint(), cfg.eos_id)?;
        let val = ShardWriter::create(val_path, enc.vocab_size(), enc.fingerprint(), cfg.eos_id)?;
        Ok(TokenizeJob {
            enc,
            cfg,
            pool,
            train,
            val,
            documents: 0,
            skipped_empty: 0,
            text_bytes: 0,
            in_val: false,
        })
    }

    pub fn encoder(&self) -> &Encoder {
        &self.enc
    }
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Tokenize a chunk of documents in parallel and append them in order (documents longer
    /// than the segment size are cut into segments first, see [`safe_cut`]).
    /// Returns (documents written, empty documents skipped).
    pub fn add_texts<S: AsRef<str> + Sync>(&mut self, docs: &[S]) -> Result<(u64, u64)> {
        let cap = self.cfg.segment_bytes.max(16);
        if docs.iter().all(|d| d.as_ref().len() <= cap) {
            let segs: Vec<Segment> = docs
                .iter()
                .map(|d| Segment { text: d.as_ref().to_string(), first: true, last: true })
                .collect();
            return self.add_segments(&segs);
        }
        let mut segs = vec![];
        for d in docs {
            segs.extend(segments_of(d.as_ref().to_string(), cap));
        }
        self.add_segments(&segs)
    }

    /// Tokenize segments in parallel and append them in order. A document's split (train/val) is
    /// decided by its first segment — for a document of one segment, its whole text, as
    /// [`is_val`] says; a longer one by its first segment's text — and EOS follows its last.
    /// A blank single-segment document is skipped. Returns (documents completed, skipped).
    pub fn add_segments(&mut self, segs: &[Segment]) -> Result<(u64, u64)> {
        let enc = &self.enc;
        type Encoded = Option<Result<Vec<u32>>>;
        let encoded: Vec<Encoded> = self.pool.install(|| {
            segs.par_iter()
                .with_max_len(64)
                .map(|sg| {
                    if sg.first && sg.last && sg.text.trim().is_empty() {
                        return None;
                    }
                    let mut ids = Vec::with_capacity(sg.text.len() / 3 + 2);
                    Some(enc.encode(&sg.text, &mut ids).map(|()| ids))
                })
                .collect()
        });
        let (eos, seed, frac) = (self.cfg.eos_id, self.cfg.seed, self.cfg.val_fraction);
        let (mut written, mut skipped) = (0, 0);
        for (sg, r) in segs.iter().zip(encoded) {
            self.text_bytes += sg.text.len() as u64;
            let Some(r) = r else {
                skipped += 1;
                continue;
            };
            let ids = r?;
            if sg.first {
                self.in_val = is_val(&sg.text, seed, frac);
            }
            let w = if self.in_val { &mut self.val } else { &mut self.train };
            w.push_tokens(&ids)?;
            if sg.last {
                w.push_tokens(&[eos])?;
                w.end_doc()?;
                written += 1;
            }
        }
        self.documents += written;
        self.skipped_empty += skipped;
        Ok((written, skipped))
    }

    /// Stream one `.txt` / `.jsonl` file. A reader thread parses the next chunk while the pool
    /// tokenizes the current one. `progress` gets the bytes read so far after each chunk; an
    /// error from it stops the job (e.g. Ctrl-C seen by the Python caller).
    pub fn add_file(
        &mut self,
        path: &Path,
        progress: &mut dyn FnMut(u64) -> Result<()>,
    ) -> Result<FileReport> {
        let mut reader = DocReader::open(path)?.with_segment_bytes(self.cfg.segment_bytes);
        let chunk = self.cfg.chunk_bytes.max(1);
        let mut report = FileReport::default();
        std::thread::scope(|s| -> Result<()> {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<(Vec<Segment>, u64)>>(1);
            let handle = s.spawn(move || {
                loop {
                    let r = reader
                        .next_segments(chunk)
                        .map(|c| c.map(|docs| (docs, reader.bytes_read())));
                    match r {
                        Ok(Some(x)) => {
                            if tx.send(Ok(x)).is_err() {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            break;
                        }
                    }
                }
                reader.null_texts
            });
            for item in rx.iter() {
                let (segs, bytes) = item?;
                let (w, sk) = self.add_segments(&segs)?;
                report.documents += w;
                report.skipped_empty += sk;
                report.bytes = bytes;
                progress(bytes)?;
            }
            let nulls = handle.join().expect("reader thread");
            report.skipped_empty += nulls;
            self.skipped_empty += nulls;
            Ok(())
        })?;
        Ok(report)
    }

    /// Write both shards (header, offsets, counts; fsync + rename).
    pub fn finish(self) -> Result<JobReport> {
        let threads = self.pool.current_num_threads();
        let fast_path = self.enc.uses_fast_path();
        let train = self.train.finish()?;
        let val = self.val.finish()?;
        Ok(JobReport {
            train,
            val,
            documents: self.documents,
            skipped_empty: self.skipped_empty,
            text_bytes: self.text_bytes,
            threads,
            fast_path,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::shard::Shard;
    use proptest::prelude::*;

    /// A small byte-level BPE tokenizer.json built by hand: 256 byte symbols, a few merges, and
    /// `<|endoftext|>` as an added special token.
    pub(crate) fn tiny_tokenizer_json() -> String {
        let bc = bytes_char();
        let mut vocab: Vec<String> = (0..256).map(|b| bc[b].to_string()).collect();
        let merges = [
            ("Ġ", "t"),
            ("h", "e"),
            ("Ġt", "he"),
            ("Ġ", "a"),
            ("i", "n"),
            ("Ġ", "s"),
            ("o", "n"),
            ("Ġs", "on"),
            ("e", "r"),
            ("Ġ", "Ġ"),
        ];
        for (a, b) in merges {
            vocab.push(format!("{a}{b}"));
        }
        let vocab_json: Vec<String> = vocab
            .iter()
            .enumerate()
            .map(|(i, t)| format!("{}: {i}", serde_json::to_string(t).unwrap()))
            .collect();
        let merges_json: Vec<String> = merges
            .iter()
            .map(|(a, b)| serde_json::to_string(&[a, b]).unwrap())
            .collect();
        let eos = vocab.len();
        format!(
            r#"{{"version":"1.0","truncation":null,"padding":null,
            "added_tokens":[{{"id":{eos},"content":"<|endoftext|>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}}],
            "normalizer":null,
            "pre_tokenizer":{{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true}},
            "post_processor":{{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":false,"use_regex":true}},
            "decoder":{{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true}},
            "model":{{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,"ignore_merges":false,
            "vocab":{{{}}},"merges":[{}]}}}}"#,
            vocab_json.join(","),
            merges_json.join(",")
        )
    }

    pub(crate) fn tiny_encoder() -> Encoder {
        Encoder::from_bytes(tiny_tokenizer_json().as_bytes(), "tiny").unwrap()
    }

    fn both(enc: &Encoder, s: &str) -> (Vec<u32>, Vec<u32>) {
        let (mut a, mut b) = (vec![], vec![]);
        enc.encode(s, &mut a).unwrap();
        enc.encode_generic(s, &mut b).unwrap();
        (a, b)
    }

    #[test]
    fn fast_path_matches_reference() {
        let enc = tiny_encoder();
        assert!(enc.uses_fast_path());
        assert_eq!(enc.vocab_size(), 267);
        for s in [
            "the son is in the sun.",
            "  leading spaces and trailing   ",
            "tabs\tand\nnew\n\nlines\r\n  x",
            "it's they're we've I'm we'll he'd 'S",
            "numbers 123 4,5 and ünïcödé wörds — “quotes” 你好 🙂",
            "a\u{a0}\u{a0}b \u{3000}c\u{2028}d",
            "   \n\t ",
            "x<|endoftext|>y  the",
            "",
        ] {
            let (a, b) = both(&enc, s);
            assert_eq!(a, b, "text {s:?}");
        }
    }

    fn text_strategy() -> impl Strategy<Value = String> {
        let atoms = prop_oneof![
            Just(" ".to_string()),
            Just("  ".to_string()),
            Just("\n".to_string()),
            Just("\t".to_string()),
            Just("\u{a0}".to_string()),
            Just("\u{3000}".to_string()),
            Just("'s".to_string()),
            Just("'".to_string()),
            Just("the".to_string()),
            Just("son".to_string()),
            Just("in".to_string()),
            Just("é".to_string()),
            Just("9".to_string()),
            Just("½".to_string()),
            Just("!?".to_string()),
            Just("🙂".to_string()),
            Just("\u{301}".to_string()),
            Just("<|endoftext|>".to_string()),
            Just("日本".to_string()),
            any::<char>().prop_map(|c| c.to_string()),
        ];
        proptest::collection::vec(atoms, 0..30).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        #[test]
        fn fast_path_equals_reference_on_random_text(s in text_strategy()) {
            let enc = tiny_encoder();
            let (a, b) = both(&enc, &s);
            prop_assert_eq!(a, b);
            // the same with ByteLevel(add_prefix_space = true)
            let json = tiny_tokenizer_json().replacen(
                r#""type":"ByteLevel","add_prefix_space":false"#, r#""type":"ByteLevel","add_prefix_space":true"#, 1);
            let enc = Encoder::from_bytes(json.as_bytes(), "prefix").unwrap();
            prop_assert!(enc.uses_fast_path());
            let (a, b) = both(&enc, &s);
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn other_tokenizers_take_the_generic_path() {
        let json = tiny_tokenizer_json().replacen(
            r#""normalizer":null"#,
            r#""normalizer":{"type":"Lowercase"}"#,
            1,
        );
        let enc = Encoder::from_bytes(json.as_bytes(), "lower").unwrap();
        assert!(!enc.uses_fast_path());
        let (a, b) = both(&enc, "The SON");
        assert_eq!(a, b);
        let mut lower = vec![];
        enc.encode("the son", &mut lower).unwrap();
        assert_eq!(a, lower);
        let bad = tiny_tokenizer_json().replacen(r#""dropout":null"#, r#""dropout":0.5"#, 1);
        assert!(Encoder::from_bytes(bad.as_bytes(), "drop")
            .unwrap_err()
            .msg
            .contains("dropout"));
        assert!(Encoder::from_bytes(b"{}", "junk.json")
            .unwrap_err()
            .msg
            .starts_with("junk.json: not a valid tokenizer.json"));
    }

    #[test]
    fn split_is_seeded_and_proportional() {
        let n = 20000;
        let vals = (0..n)
            .filter(|i| is_val(&format!("doc {i}"), 7, 0.1))
            .count();
        assert!((1700..2300).contains(&vals), "{vals}");
        let other = (0..n)
            .filter(|i| is_val(&format!("doc {i}"), 8, 0.1) != is_val(&format!("doc {i}"), 7, 0.1))
            .count();
        assert!(other > 1000);
        assert!(!is_val("x", 0, 0.0));
        assert!(is_val("x", 0, 1.0));
    }

    #[test]
    fn reads_txt_and_jsonl() {
        let d = crate::shard::tests::tmpdir("read");
        let p = d.join("a.txt");
        std::fs::write(
            &p,
            "\u{feff}first line\r\nsecond line\n\n\n  \nsecond doc\n\nthird",
        )
        .unwrap();
        let mut r = DocReader::open(&p).unwrap();
        let mut all = vec![];
        while let Some(c) = r.next_chunk(5).unwrap() {
            all.extend(c);
        }
        assert_eq!(all, vec!["first line\nsecond line", "second doc", "third"]);
        let p = d.join("b.jsonl");
        std::fs::write(
            &p,
            "{\"text\": \"a\\nb\", \"id\": 1}\n\n{\"text\": null}\n{\"text\": \"c\"}\n",
        )
        .unwrap();
        let mut r = DocReader::open(&p).unwrap();
        assert_eq!(r.next_chunk(1 << 20).unwrap().unwrap(), vec!["a\nb", "c"]);
        assert_eq!(r.null_texts, 1);
        std::fs::write(&p, "{\"text\": \"a\"}\n{\"txt\": \"b\"}\n").unwrap();
        let e = DocReader::open(&p)
            .unwrap()
            .next_chunk(1 << 20)
            .unwrap_err();
        assert!(
            e.msg
                .contains("b.jsonl: line 2 has no string field \"text\""),
            "{}",
            e.msg
        );
        std::fs::write(&p, "{\"text\": \"a\"\n").unwrap();
        let e = DocReader::open(&p)
            .unwrap()
            .next_chunk(1 << 20)
            .unwrap_err();
        assert!(e.msg.contains("line 1 is not valid JSON"), "{}", e.msg);
        std::fs::write(&p, b"{\"text\": \"\xff\"}\n").unwrap();
        let e = DocReader::open(&p)
            .unwrap()
            .next_chunk(1 << 20)
            .unwrap_err();
        assert!(e.msg.contains("line 1 is not valid UTF-8"), "{}", e.msg);
    }

    /// The .txt rule, the simple way: lines (BOM dropped, "\r\n" = "\n"), blank lines separate
    /// documents, a document's lines are joined with "\n".
    fn reference_docs(raw: &str) -> Vec<String> {
        let raw = raw.strip_prefix('\u{feff}').unwrap_or(raw);
        let (mut docs, mut cur) = (vec![], Vec::<&str>::new());
        let mut lines: Vec<&str> = raw.split('\n').collect();
        if raw.ends_with('\n') {
            lines.pop();
        }
        for l in lines {
            let l = l.strip_suffix('\r').unwrap_or(l);
            if l.trim().is_empty() {
                if !cur.is_empty() {
                    docs.push(cur.join("\n"));
                    cur.clear();
                }
            } else {
                cur.push(l);
            }
        }
        if !cur.is_empty() {
            docs.push(cur.join("\n"));
        }
        docs
    }

    fn read_all(path: &Path, buf: usize, seg: usize) -> Vec<Segment> {
        let mut r = DocReader::open(path).unwrap().with_segment_bytes(seg).with_buffer(buf);
        let mut all = vec![];
        while let Some(c) = r.next_segments(37).unwrap() {
            all.extend(c);
        }
        all
    }

    fn txt_strategy() -> impl Strategy<Value = String> {
        let atoms = prop_oneof![
            Just("word".to_string()),
            Just("the son".to_string()),
            Just(" ".to_string()),
            Just("  ".to_string()),
            Just("\n".to_string()),
            Just("\r\n".to_string()),
            Just("\n\n".to_string()),
            Just(" \t \n".to_string()),
            Just("\t".to_string()),
            Just("é".to_string()),
            Just("日本語".to_string()),
            Just("🙂".to_string()),
            Just("\r".to_string()),
            Just("\u{a0}".to_string()),
        ];
        (any::<bool>(), proptest::collection::vec(atoms, 0..80))
            .prop_map(|(bom, v)| format!("{}{}", if bom { "\u{feff}" } else { "" }, v.concat()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        /// Read in pieces of any size, with any segment size, the segments put back together are
        /// exactly the documents of the simple rule; first/last flags frame each document.
        #[test]
        fn txt_reader_in_pieces_equals_the_simple_rule(raw in txt_strategy(), buf in 1usize..12, seg in 16usize..48) {
            let d = crate::shard::tests::tmpdir("pieces");
            let p = d.join("x.txt");
            std::fs::write(&p, &raw).unwrap();
            let segs = read_all(&p, buf, seg);
            let mut docs = vec![];
            for sg in &segs {
                if sg.first {
                    docs.push(String::new());
                }
                prop_assert!(!docs.is_empty());
                docs.last_mut().unwrap().push_str(&sg.text);
                prop_assert!(sg.last || sg.text.len() <= seg, "segment of {} bytes > {}", sg.text.len(), seg);
            }
            prop_assert!(segs.last().map_or(true, |s| s.last));
            prop_assert_eq!(docs, reference_docs(&raw));
            // one big buffer, default segments: the same documents, one segment each
            let whole: Vec<String> = read_all(&p, 1 << 20, SEGMENT_BYTES).into_iter().map(|s| s.text).collect();
            prop_assert_eq!(whole, reference_docs(&raw));
        }

        /// Segments cut at " X" encode to exactly the ids of the whole text (fast path, with and
        /// without add_prefix_space); a hard cut (no such space in reach) still round-trips.
        #[test]
        fn segments_encode_like_the_whole(words in proptest::collection::vec(
                prop_oneof![Just("the"), Just("son"), Just("in"), Just("é"), Just("9,5"), Just("!?"), Just("🙂"),
                            Just("'s"), Just("<|endoftext|>"), Just("sun.")], 1..120),
                seps in proptest::collection::vec(prop_oneof![Just(" "), Just("  "), Just("\n"), Just(" \n "),
                            Just("\t "), Just(""), Just("   ")], 120),
                cap in 16usize..80, prefix in any::<bool>()) {
            let text: String = words.iter().zip(&seps).map(|(w, s)| format!("{w}{s}")).collect();
            let json = if prefix {
                tiny_tokenizer_json().replacen(r#""type":"ByteLevel","add_prefix_space":false"#,
                                               r#""type":"ByteLevel","add_prefix_space":true"#, 1)
            } else {
                tiny_tokenizer_json()
            };
            let enc = Encoder::from_bytes(json.as_bytes(), "t").unwrap();
            let segs = segments_of(text.clone(), cap);
            prop_assert_eq!(segs.iter().map(|s| s.text.as_str()).collect::<String>(), text.clone());
            let (mut whole, mut parts) = (vec![], vec![]);
            enc.encode(&text, &mut whole).unwrap();
            for sg in &segs {
                enc.encode(&sg.text, &mut parts).unwrap();
            }
            let space_cuts = segs.windows(2).all(|w| w[1].text.starts_with(' ')
                && w[1].text[1..].chars().next().is_some_and(|c| !c.is_whitespace())
                && w[0].text.chars().next_back().is_some_and(|c| !c.is_whitespace()));
            if space_cuts {
                prop_assert_eq!(parts, whole);
            } else if !prefix {
                // a hard cut (no " y" in reach): other ids, same text (with add_prefix_space the
                // second part would gain a space: documented on safe_cut)
                let dec = |ids: &[u32]| enc.tokenizer().decode(ids, false).unwrap();
                prop_assert_eq!(dec(&parts), dec(&whole));
            }
        }
    }

    #[test]
    fn long_document_is_one_document_in_its_split() {
        let d = crate::shard::tests::tmpdir("long");
        let input = d.join("in.txt");
        let long: String = (0..400).map(|i| format!("the son {i} is in the sun. ")).collect();
        std::fs::write(&input, format!("short one\n\n{long}\n\nlast")).unwrap();
        let enc = tiny_encoder();
        let eos = enc.token_to_id("<|endoftext|>").unwrap();
        let cfg = JobConfig { val_fraction: 0.0, eos_id: eos, segment_bytes: 256, chunk_bytes: 1000, threads: 2, ..Default::default() };
        let (tp, vp) = (d.join("t.lcshard"), d.join("v.lcshard"));
        let mut job = TokenizeJob::new(enc, &tp, &vp, cfg).unwrap();
        let rep = job.add_file(&input, &mut |_| Ok(())).unwrap();
        assert_eq!(rep.documents, 3);
        job.finish().unwrap();
        let t = Shard::open(&tp, true).unwrap();
        assert_eq!(t.header().n_docs, 3);
        let enc = tiny_encoder();
        let mut want = vec![];
        enc.encode_generic(&long, &mut want).unwrap();
        want.push(eos);
        assert_eq!(t.document(1), want);
    }

    #[test]
    fn job_round_trip_and_thread_independence() {
        let d = crate::shard::tests::tmpdir("job");
        let input = d.join("in.txt");
        let docs: Vec<String> = (0..300)
            .map(|i| format!("the son {i} is in the sun.\nline two of {i}"))
            .collect();
        std::fs::write(&input, docs.join("\n\n")).unwrap();
        let mut bytes = vec![];
        for threads in [1usize, 2, 3] {
            let enc = tiny_encoder();
            let eos = enc.token_to_id("<|endoftext|>").unwrap();
            let cfg = JobConfig {
                val_fraction: 0.2,
                seed: 3,
                eos_id: eos,
                chunk_bytes: 700,
                threads,
                segment_bytes: SEGMENT_BYTES,
            };
            let (tp, vp) = (
                d.join(format!("t{threads}.lcshard")),
                d.join(format!("v{threads}.lcshard")),
            );
            let mut job = TokenizeJob::new(enc, &tp, &vp, cfg).unwrap();
            let mut last = 0;
            let rep = job
                .add_file(&input, &mut |b| {
                    assert!(b >= last);
                    last = b;
                    Ok(())
                })
                .unwrap();
            assert_eq!(rep.documents, 300);
            let r = job.finish().unwrap();
            assert_eq!(r.train.n_docs + r.val.n_docs, 300);
            assert!(r.val.n_docs > 20 && r.val.n_docs < 100);
            let (t, v) = (
                Shard::open(&tp, true).unwrap(),
                Shard::open(&vp, true).unwrap(),
            );
            // Every document is present once, with EOS, in order within its split.
            let enc = tiny_encoder();
            let (mut ti, mut vi) = (0, 0);
            for doc in &docs {
                let mut want = vec![];
                enc.encode_generic(doc, &mut want).unwrap();
                want.push(eos);
                if is_val(doc, 3, 0.2) {
                    assert_eq!(v.document(vi), want);
                    vi += 1;
                } else {
                    assert_eq!(t.document(ti), want);
                    ti += 1;
                }
            }
            bytes.push((std::fs::read(&tp).unwrap(), std::fs::read(&vp).unwrap()));
        }
        assert!(bytes.windows(2).all(|w| w[0] == w[1]));
    }
}
