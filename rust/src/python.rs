//! Thin PyO3 layer: `lcfast._core`. Heavy work runs with the interpreter detached (GIL
//! released); errors become `lcfast.errors.DataError` / `UsageError` / `OSError`.

use numpy::ndarray::Array2;
use numpy::{
    PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyReadwriteArray1, PyReadwriteArray2,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyOSError, PyStopIteration};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::ambiguity as amb;
use crate::classstats;
use crate::count;
use crate::error::{Error, ErrorKind};
use crate::shard::{self, Shard as RShard, NO_EOS};
use crate::tokenize::{
    self, DocReader as RDocReader, Encoder as REncoder, JobConfig, TokenizeJob as RJob,
};
use crate::windows;

fn to_py(e: Error) -> PyErr {
    Python::attach(|py| {
        let cls = match e.kind {
            ErrorKind::Data => "DataError",
            ErrorKind::Usage => "UsageError",
            ErrorKind::Io => return PyOSError::new_err(e.msg.clone()),
        };
        match py
            .import("lcfast.errors")
            .and_then(|m| m.getattr(cls))
            .and_then(|c| c.call1((e.msg.clone(),)))
        {
            Ok(v) => PyErr::from_value(v),
            Err(err) => err,
        }
    })
}

trait IntoPy<T> {
    fn py(self) -> PyResult<T>;
}
impl<T> IntoPy<T> for crate::Result<T> {
    fn py(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}

/// A memory-mapped, validated `.lcshard` (see docs/shard-format.md).
#[pyclass(module = "lcfast._core", frozen)]
struct Shard {
    inner: RShard,
}

#[pymethods]
impl Shard {
    #[new]
    #[pyo3(signature = (path, verify = true))]
    fn new(py: Python<'_>, path: std::path::PathBuf, verify: bool) -> PyResult<Self> {
        let inner = py.detach(|| RShard::open(&path, verify)).py()?;
        Ok(Shard { inner })
    }

    /// Header fields as a dict.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let h = self.inner.header();
        let d = PyDict::new(py);
        d.set_item("path", self.inner.path().display().to_string())?;
        d.set_item("version", h.version)?;
        d.set_item("header_size", h.header_size)?;
        d.set_item("token_bytes", h.token_bytes)?;
        d.set_item("dtype", h.dtype_name())?;
        d.set_item("vocab_size", h.vocab_size)?;
        d.set_item("n_tokens", h.n_tokens)?;
        d.set_item("n_docs", h.n_docs)?;
        d.set_item("tokens_offset", h.tokens_offset)?;
        d.set_item("doc_offsets_offset", h.doc_offsets_offset)?;
        d.set_item("counts_offset", h.counts_offset)?;
        d.set_item("file_size", h.file_size)?;
        d.set_item(
            "tokenizer_fingerprint",
            shard::hex(&h.tokenizer_fingerprint),
        )?;
        d.set_item(
            "eos_id",
            if h.eos_id == NO_EOS {
                None
            } else {
                Some(h.eos_id)
            },
        )?;
        d.set_item("payload_xxh3", format!("{:016x}", h.payload_xxh3))?;
        d.set_item("fingerprint", self.inner.fingerprint())?;
        Ok(d)
    }

    /// Recount every id from the tokens (parallel): int64 [vocab_size].
    fn histogram<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let v = self.inner.vocab_size();
        let h = py
            .detach(|| count::histogram(self.inner.tokens(), v))
            .py()?;
        Ok(PyArray1::from_vec(
            py,
            h.into_iter().map(|x| x as i64).collect(),
        ))
    }

    /// Stored counts (the trailing section): int64 [vocab_size].
    fn counts<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        PyArray1::from_vec(py, self.inner.counts().iter().map(|&x| x as i64).collect())
    }

    fn random_windows<'py>(
        &self,
        py: Python<'py>,
        batch: usize,
        t: usize,
        seed: u64,
        step: u64,
    ) -> PyResult<Bound<'py, PyArray2<i64>>> {
        let mut out = vec![0i64; batch * (t + 1)];
        py.detach(|| windows::random_windows(self.inner.tokens(), batch, t, seed, step, &mut out))
            .py()?;
        Ok(PyArray2::from_owned_array(
            py,
            Array2::from_shape_vec((batch, t + 1), out).expect("shape"),
        ))
    }

    #[pyo3(signature = (t, rank = 0, world = 1))]
    fn n_seq_windows(&self, t: usize, rank: u64, world: u64) -> PyResult<u64> {
        windows::n_seq_windows(self.inner.n_tokens(), t, rank, world).py()
    }

    #[pyo3(signature = (t, start, count, rank = 0, world = 1))]
    #[allow(clippy::type_complexity)]
    fn seq_windows<'py>(
        &self,
        py: Python<'py>,
        t: usize,
        start: u64,
        count: u64,
        rank: u64,
        world: u64,
    ) -> PyResult<(Bound<'py, PyArray2<i64>>, Bound<'py, PyArray1<i64>>)> {
        let have = windows::n_seq_windows(self.inner.n_tokens(), t, rank, world).py()?;
        if start.saturating_add(count) > have {
            return Err(to_py(Error::usage(format!(
                "windows {start}..{} requested, but rank {rank} of {world} has {have} windows of T = {t}",
                start.saturating_add(count)
            ))));
        }
        let mut out = vec![0i64; count as usize * (t + 1)];
        let mut valid = vec![0i64; count as usize];
        py.detach(|| {
            windows::seq_windows(
                self.inner.tokens(),
                t,
                start,
                count,
                rank,
                world,
                &mut out,
                &mut valid,
            )
        })
        .py()?;
        Ok((
            PyArray2::from_owned_array(
                py,
                Array2::from_shape_vec((count as usize, t + 1), out).expect("shape"),
            ),
            PyArray1::from_vec(py, valid),
        ))
    }
}

/// A tokenizer.json loaded by the Rust `tokenizers` crate (fast path for byte-level BPE).
#[pyclass(module = "lcfast._core", frozen)]
struct Encoder {
    inner: REncoder,
}

#[pymethods]
impl Encoder {
    #[new]
    fn new(path: std::path::PathBuf) -> PyResult<Self> {
        Ok(Encoder {
            inner: REncoder::from_file(&path).py()?,
        })
    }
    #[getter]
    fn vocab_size(&self) -> u32 {
        self.inner.vocab_size()
    }
    #[getter]
    fn fingerprint(&self) -> String {
        shard::hex(&self.inner.fingerprint())
    }
    #[getter]
    fn fast_path(&self) -> bool {
        self.inner.uses_fast_path()
    }
    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
    /// Ids of one text (no special tokens added); `fast=False` forces the reference path.
    #[pyo3(signature = (text, fast = true))]
    fn encode(&self, py: Python<'_>, text: String, fast: bool) -> PyResult<Vec<u32>> {
        let mut out = vec![];
        py.detach(|| {
            if fast {
                self.inner.encode(&text, &mut out)
            } else {
                self.inner.encode_generic(&text, &mut out)
            }
        })
        .py()?;
        Ok(out)
    }
}

/// One tokenization run: documents in, train/val shards out.
#[pyclass(module = "lcfast._core")]
struct TokenizeJob {
    inner: Option<RJob>,
}

impl TokenizeJob {
    fn job(&mut self) -> PyResult<&mut RJob> {
        self.inner
            .as_mut()
            .ok_or_else(|| to_py(Error::usage("tokenize job already finished")))
    }
}

#[pymethods]
impl TokenizeJob {
    #[new]
    #[pyo3(signature = (tokenizer_path, train_path, val_path, val_fraction, seed, eos_id, chunk_bytes = 4 << 20, threads = 0, segment_bytes = tokenize::SEGMENT_BYTES))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        tokenizer_path: std::path::PathBuf,
        train_path: std::path::PathBuf,
        val_path: std::path::PathBuf,
        val_fraction: f64,
        seed: u64,
        eos_id: u32,
        chunk_bytes: usize,
        threads: usize,
        segment_bytes: usize,
    ) -> PyResult<Self> {
        let job = py
            .detach(|| {
                let enc = REncoder::from_file(&tokenizer_path)?;
                let cfg = JobConfig {
                    val_fraction,
                    seed,
                    eos_id,
                    chunk_bytes,
                    threads,
                    segment_bytes,
                };
                RJob::new(enc, &train_path, &val_path, cfg)
            })
            .py()?;
        Ok(TokenizeJob { inner: Some(job) })
    }

    #[getter]
    fn threads(&mut self) -> PyResult<usize> {
        Ok(self.job()?.threads())
    }
    #[getter]
    fn vocab_size(&mut self) -> PyResult<u32> {
        Ok(self.job()?.encoder().vocab_size())
    }
    #[getter]
    fn fast_path(&mut self) -> PyResult<bool> {
        Ok(self.job()?.encoder().uses_fast_path())
    }

    /// Stream a .txt / .jsonl file; `progress(bytes_read)` is called after each chunk.
    #[pyo3(signature = (path, progress = None))]
    fn add_file<'py>(
        &mut self,
        py: Python<'py>,
        path: std::path::PathBuf,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let job = self.job()?;
        let mut py_err: Option<PyErr> = None;
        let r = py.detach(|| {
            job.add_file(&path, &mut |b| {
                let Some(cb) = &progress else { return Ok(()) };
                Python::attach(
                    |py| match py.check_signals().and_then(|_| cb.call1(py, (b,))) {
                        Ok(_) => Ok(()),
                        Err(e) => {
                            py_err = Some(e);
                            Err(Error::usage("interrupted"))
                        }
                    },
                )
            })
        });
        if let Some(e) = py_err {
            return Err(e);
        }
        let rep = r.py()?;
        let d = PyDict::new(py);
        d.set_item("documents", rep.documents)?;
        d.set_item("bytes", rep.bytes)?;
        d.set_item("skipped_empty", rep.skipped_empty)?;
        Ok(d)
    }

    /// Tokenize a batch of documents; returns (written, skipped_empty).
    fn add_texts(&mut self, py: Python<'_>, texts: Vec<String>) -> PyResult<(u64, u64)> {
        let job = self.job()?;
        py.detach(|| job.add_texts(&texts)).py()
    }

    /// Finish both shards; returns a summary dict.
    fn finish<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let job = self
            .inner
            .take()
            .ok_or_else(|| to_py(Error::usage("tokenize job already finished")))?;
        let r = py.detach(|| job.finish()).py()?;
        let d = PyDict::new(py);
        for (name, h) in [("train", &r.train), ("val", &r.val)] {
            let s = PyDict::new(py);
            s.set_item("documents", h.n_docs)?;
            s.set_item("tokens", h.n_tokens)?;
            s.set_item("bytes", h.file_size)?;
            s.set_item("fingerprint", format!("{:016x}", h.header_xxh3))?;
            d.set_item(name, s)?;
        }
        d.set_item("documents", r.documents)?;
        d.set_item("skipped_empty", r.skipped_empty)?;
        d.set_item("text_bytes", r.text_bytes)?;
        d.set_item("threads", r.threads)?;
        d.set_item("fast_path", r.fast_path)?;
        d.set_item("vocab_size", r.train.vocab_size)?;
        d.set_item("dtype", r.train.dtype_name())?;
        d.set_item(
            "tokenizer_fingerprint",
            shard::hex(&r.train.tokenizer_fingerprint),
        )?;
        Ok(d)
    }
}

/// Iterator over lists of documents (about `chunk_bytes` of text each) of a .txt / .jsonl file.
#[pyclass(module = "lcfast._core")]
struct DocReader {
    inner: RDocReader,
    chunk_bytes: usize,
}

#[pymethods]
impl DocReader {
    #[new]
    #[pyo3(signature = (path, chunk_bytes = 1 << 20, segment_bytes = tokenize::SEGMENT_BYTES))]
    fn new(path: std::path::PathBuf, chunk_bytes: usize, segment_bytes: usize) -> PyResult<Self> {
        Ok(DocReader {
            inner: RDocReader::open(&path).py()?.with_segment_bytes(segment_bytes),
            chunk_bytes: chunk_bytes.max(1),
        })
    }
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }
    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let (inner, cb) = (&mut self.inner, self.chunk_bytes);
        match py.detach(|| inner.next_chunk(cb)).py()? {
            Some(docs) => PyList::new(py, docs),
            None => Err(PyStopIteration::new_err(())),
        }
    }
    #[getter]
    fn bytes_read(&self) -> u64 {
        self.inner.bytes_read()
    }
}

/// Fingerprint (32 hex chars) of a tokenizer.json, as stored in shard headers.
#[pyfunction]
fn tokenizer_fingerprint(path: std::path::PathBuf) -> PyResult<String> {
    let enc = REncoder::from_file(&path).py()?;
    Ok(shard::hex(&enc.fingerprint()))
}

/// Ambiguity rows for k = 1..max_k over the given shards (each its own stream).
#[pyfunction]
#[pyo3(signature = (shards, max_k, memory_bytes = 1 << 30))]
fn ambiguity<'py>(
    py: Python<'py>,
    shards: Vec<PyRef<'py, Shard>>,
    max_k: usize,
    memory_bytes: u64,
) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyDict>)> {
    let streams: Vec<shard::Tokens<'_>> = shards.iter().map(|s| s.inner.tokens()).collect();
    let (rows, info) = py
        .detach(|| amb::ambiguity(&streams, max_k, memory_bytes))
        .py()?;
    let out = PyList::empty(py);
    for r in rows {
        let d = PyDict::new(py);
        d.set_item("k", r.k)?;
        d.set_item("positions", r.positions)?;
        d.set_item("contexts", r.contexts)?;
        d.set_item("ambiguous_contexts", r.ambiguous_contexts)?;
        d.set_item("ambiguous_positions", r.ambiguous_positions)?;
        d.set_item("ambiguous_share", r.ambiguous_share())?;
        d.set_item("cond_entropy_bits", r.cond_entropy_bits)?;
        out.append(d)?;
    }
    let i = PyDict::new(py);
    i.set_item("partitions", info.partitions)?;
    i.set_item("pair_bound", info.pair_bound)?;
    i.set_item("bytes_per_pair", amb::BYTES_PER_PAIR)?;
    Ok((out, i))
}

fn counts_u64(counts: &PyReadonlyArray1<'_, i64>) -> PyResult<Vec<u64>> {
    let s = counts
        .as_slice()
        .map_err(|e| to_py(Error::usage(format!("counts: {e}"))))?;
    s.iter()
        .map(|&c| u64::try_from(c).map_err(|_| to_py(Error::data(format!("negative count {c}")))))
        .collect()
}

/// Imbalance statistics of an int64 count vector.
#[pyfunction]
#[pyo3(signature = (counts, ks = vec![1, 10, 100]))]
fn summarize_counts<'py>(
    py: Python<'py>,
    counts: PyReadonlyArray1<'py, i64>,
    ks: Vec<u64>,
) -> PyResult<Bound<'py, PyDict>> {
    let c = counts_u64(&counts)?;
    let s = count::summarize(&c, &ks);
    let d = PyDict::new(py);
    d.set_item("n_tokens", s.n_tokens)?;
    d.set_item("vocab_size", s.vocab_size)?;
    d.set_item("classes_seen", s.classes_seen)?;
    let ge = PyDict::new(py);
    for (k, n) in s.classes_ge {
        ge.set_item(k, n)?;
    }
    d.set_item("classes_ge", ge)?;
    d.set_item("entropy_bits", s.entropy_bits)?;
    d.set_item("gini", s.gini)?;
    d.set_item("gini_seen", s.gini_seen)?;
    d.set_item("max_count", s.max_count)?;
    Ok(d)
}

/// The k most frequent ids as [(id, count)], count descending.
#[pyfunction]
fn top_k(counts: PyReadonlyArray1<'_, i64>, k: usize) -> PyResult<Vec<(u32, u64)>> {
    Ok(count::top_k(&counts_u64(&counts)?, k))
}

/// Write a shard from flat ids and document lengths (both int64); returns the fingerprint.
#[pyfunction]
#[pyo3(signature = (path, vocab_size, tokens, doc_lengths, eos_id = None, tokenizer_fingerprint = None))]
fn write_shard(
    py: Python<'_>,
    path: std::path::PathBuf,
    vocab_size: u32,
    tokens: PyReadonlyArray1<'_, i64>,
    doc_lengths: PyReadonlyArray1<'_, i64>,
    eos_id: Option<u32>,
    tokenizer_fingerprint: Option<String>,
) -> PyResult<String> {
    let toks = tokens
        .as_slice()
        .map_err(|e| to_py(Error::usage(format!("tokens: {e}"))))?;
    let lens = doc_lengths
        .as_slice()
        .map_err(|e| to_py(Error::usage(format!("doc_lengths: {e}"))))?;
    let mut fp = [0u8; 16];
    if let Some(h) = tokenizer_fingerprint {
        if h.len() != 32 || !h.is_ascii() {
            return Err(to_py(Error::usage(
                "tokenizer_fingerprint must be 32 hex characters",
            )));
        }
        for i in 0..16 {
            fp[i] = u8::from_str_radix(&h[2 * i..2 * i + 2], 16).map_err(|_| {
                to_py(Error::usage(
                    "tokenizer_fingerprint must be 32 hex characters",
                ))
            })?;
        }
    }
    if lens.iter().any(|&l| l < 0) || lens.iter().sum::<i64>() != toks.len() as i64 {
        return Err(to_py(Error::usage(
            "doc_lengths must be non-negative and sum to len(tokens)",
        )));
    }
    if let Some(bad) = toks.iter().find(|&&t| t < 0 || t >= vocab_size as i64) {
        return Err(to_py(Error::usage(format!(
            "token id {bad} out of range for vocab_size {vocab_size}"
        ))));
    }
    let toks: Vec<u32> = toks.iter().map(|&t| t as u32).collect();
    let lens = lens.to_vec();
    let h = py
        .detach(|| -> crate::Result<shard::Header> {
            let mut w =
                shard::ShardWriter::create(&path, vocab_size, fp, eos_id.unwrap_or(NO_EOS))?;
            let mut a = 0usize;
            for l in lens {
                let l = l as usize;
                w.push_doc(&toks[a..a + l])?;
                a += l;
            }
            w.finish()
        })
        .py()?;
    Ok(format!("{:016x}", h.header_xxh3))
}

/// XXH3-64 (seed 0) of bytes: the checksum used in shard headers.
#[pyfunction]
fn xxh3_64(data: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(data)
}

/// Whether a document goes to the validation split (same rule as TokenizeJob).
#[pyfunction]
fn is_val(text: &str, seed: u64, val_fraction: f64) -> bool {
    tokenize::is_val(text, seed, val_fraction)
}

/// `$body` with `$h` bound to `$obj` as a read-only 2-D numpy array of float32, or else of float64:
/// one body for both element types (the `classstats` functions are generic over them, so each
/// expansion calls its own instance); `$other` when `$obj` is neither.
macro_rules! with_features {
    ($obj:expr, |$h:ident| $body:block else $other:block) => {
        if let Ok($h) = $obj.extract::<PyReadonlyArray2<'_, f32>>() {
            $body
        } else if let Ok($h) = $obj.extract::<PyReadonlyArray2<'_, f64>>() {
            $body
        } else {
            $other
        }
    };
}

/// Fused per-class accumulation for ClassStats.update on CPU (rust/src/classstats.rs):
/// for each row i, x = h[i] − refs[y[i]]; s1[y] += x; s2[y] += ‖x‖²; n[y] += 1; x_out[i] = x.
/// h: float32 or float64 [B, d] C-contiguous; y int64 [B]; refs, s1 float64 [C, d]; s2, n float64 [C];
/// x_out: optional float64 [B, d]. The caller checks finiteness first (`rows_finite`).
#[pyfunction]
#[pyo3(signature = (h, y, refs, s1, s2, n, x_out = None, threads = 1))]
#[allow(clippy::too_many_arguments)]
fn class_stats_accumulate(
    py: Python<'_>,
    h: &Bound<'_, PyAny>,
    y: PyReadonlyArray1<'_, i64>,
    refs: PyReadonlyArray2<'_, f64>,
    mut s1: PyReadwriteArray2<'_, f64>,
    mut s2: PyReadwriteArray1<'_, f64>,
    mut n: PyReadwriteArray1<'_, f64>,
    x_out: Option<PyReadwriteArray2<'_, f64>>,
    threads: usize,
) -> PyResult<()> {
    let usage = |what: &str, e: &dyn std::fmt::Display| {
        to_py(Error::usage(format!("class_stats_accumulate: {what}: {e}")))
    };
    let y = y.as_slice().map_err(|e| usage("y", &e))?;
    let d = refs.shape()[1];
    let refs = refs.as_slice().map_err(|e| usage("refs", &e))?;
    let s1 = s1.as_slice_mut().map_err(|e| usage("s1", &e))?;
    let s2 = s2.as_slice_mut().map_err(|e| usage("s2", &e))?;
    let n = n.as_slice_mut().map_err(|e| usage("n", &e))?;
    let mut x_out = x_out;
    let xo = match x_out.as_mut() {
        Some(x) => Some(x.as_slice_mut().map_err(|e| usage("x_out", &e))?),
        None => None,
    };
    with_features!(h, |h| {
        if h.shape()[1] != d {
            return Err(usage(
                "h",
                &format!("has {} columns, refs {d}", h.shape()[1]),
            ));
        }
        let h = h.as_slice().map_err(|e| usage("h", &e))?;
        py.detach(|| classstats::accumulate(h, y, d, refs, s1, s2, n, xo, threads))
            .py()
    } else {
        Err(usage("h", &"must be a 2-D float32 or float64 numpy array"))
    })
}

/// Whether every element of h (float32 or float64, C-contiguous) is finite with |h| ≤ 1e140
/// (the precondition of class_stats_accumulate: no row can overflow ‖h − r‖²).
#[pyfunction]
#[pyo3(signature = (h, threads = 1))]
fn class_stats_rows_finite(py: Python<'_>, h: &Bound<'_, PyAny>, threads: usize) -> PyResult<bool> {
    let usage =
        |e: &dyn std::fmt::Display| to_py(Error::usage(format!("class_stats_rows_finite: h: {e}")));
    with_features!(h, |h| {
        let h = h.as_slice().map_err(|e| usage(&e))?;
        Ok(py.detach(|| classstats::rows_finite(h, threads)))
    } else {
        Err(usage(&"must be a 2-D float32 or float64 numpy array"))
    })
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("SHARD_VERSION", shard::VERSION)?;
    m.add("HEADER_SIZE", shard::HEADER_SIZE)?;
    m.add("MAX_AMBIGUITY_K", amb::MAX_K)?;
    m.add("SEGMENT_BYTES", tokenize::SEGMENT_BYTES)?;
    m.add_class::<Shard>()?;
    m.add_class::<Encoder>()?;
    m.add_class::<TokenizeJob>()?;
    m.add_class::<DocReader>()?;
    m.add_function(wrap_pyfunction!(tokenizer_fingerprint, m)?)?;
    m.add_function(wrap_pyfunction!(ambiguity, m)?)?;
    m.add_function(wrap_pyfunction!(summarize_counts, m)?)?;
    m.add_function(wrap_pyfunction!(top_k, m)?)?;
    m.add_function(wrap_pyfunction!(is_val, m)?)?;
    m.add_function(wrap_pyfunction!(xxh3_64, m)?)?;
    m.add_function(wrap_pyfunction!(write_shard, m)?)?;
    m.add_function(wrap_pyfunction!(class_stats_accumulate, m)?)?;
    m.add_function(wrap_pyfunction!(class_stats_rows_finite, m)?)?;
    Ok(())
}
