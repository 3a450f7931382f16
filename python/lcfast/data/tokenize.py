"""Corpus → token shards (`lcfast tokenize`).

Inputs (documents):
  * ``.txt``   — documents are separated by one or more blank (empty or whitespace-only) lines;
                 line breaks inside a document are kept as ``\\n``; a UTF-8 BOM is dropped.
  * ``.jsonl`` — one JSON object per line, the document is its string field ``text``
                 (``null`` is skipped; a missing field is an error).
  * ``.parquet`` — the string column ``text`` (read with pyarrow, streamed to Rust in batches).
  * a directory — every .txt/.jsonl/.parquet file below it, recursively, in sorted order.
  * ``hf:PATH[:SPLIT]`` — a Hugging Face dataset written with ``save_to_disk`` (memory-mapped;
    a DatasetDict's split defaults to ``train``).
  * ``hf:NAME[:CONFIG][:SPLIT]`` — a Hugging Face dataset from the local caches only, never
    downloaded: its files in the hub cache (``huggingface-cli download --repo-type dataset NAME``),
    streamed; else what an earlier ``load_dataset`` left in the datasets cache (offline). With two
    parts, the second is the split when it looks like one (train, validation, test, …, or a slice
    such as ``train[:10%]``), else the config. Split defaults to ``train``.
  The text column of .parquet and ``hf:`` inputs is ``text`` unless ``text_column`` says otherwise;
  rows are read in batches, so a dataset larger than memory tokenizes in bounded memory.
Empty and whitespace-only documents are skipped (and counted).

Tokenizer: a tokenizer.json path, a model folder holding one (a transformers model: tokenize with
the model's own tokenizer), ``hf:ORG/NAME`` (that model's tokenizer.json in the local hub cache), or
``train:VOCAB`` (byte-level BPE trained on the inputs with the ``tokenizers`` library, special token
``<|endoftext|>``). Nothing is downloaded: a bare name is a usage error that lists these forms.

Tokenization, EOS insertion, the train/val split, counting and shard writing run in Rust
(rayon, chunks of a few MB: memory stays bounded). A document goes to val iff
XXH3-64(text, seed) / 2^64 < val_fraction — deterministic, independent of the number of threads,
and identical documents always land in the same split.

Long documents: memory is bounded by the chunk size, not by the longest document. A document
longer than 1 MiB (``lcfast._core.SEGMENT_BYTES``) is read, tokenized and written in segments of
at most that size, cut right before a space followed by a non-space character; for byte-level BPE
with the GPT-2 split pattern (GPT-2, GPT-Neo, ``train:VOCAB``) the ids are exactly those of the
whole document (a stretch of 512 KiB without such a space is cut at a character boundary, where the
ids may differ; they still decode to the same text). Such a document stays one document (one EOS)
and its split is decided by the hash of its first segment. A ``.txt`` file is read in pieces, so a
100 MB single line costs tens of MB; a ``.jsonl`` line is parsed whole (its text is then segmented).
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lcfast import validate
from lcfast.data.datadir import META, TOKENIZER, TRAIN_SHARD, VAL_SHARD
from lcfast.errors import DataError, UsageError, left_running

EOS_TOKEN = "<|endoftext|>"
EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "<|eos|>", "[EOS]")
NATIVE_SUFFIXES = (".txt", ".jsonl")
SUFFIXES = (".txt", ".jsonl", ".parquet")
MIN_TRAIN_VOCAB = 257  # 256 byte symbols + <|endoftext|>
MAX_TRAIN_VOCAB = 1 << 24
PARQUET_BATCH = 8192


_SPLIT_NAMES = {"train", "validation", "valid", "val", "test", "dev", "eval", "evaluation"}


@dataclass
class Source:
    """One input: kind in {"txt", "jsonl", "parquet", "hf", "hf_disk"}; ``path`` (files and
    save_to_disk folders) or hub ``name`` / ``config`` / ``split``."""

    kind: str
    path: Path | None = None
    name: str | None = None
    split: str | None = None
    config: str | None = None

    @property
    def label(self) -> str:
        if self.kind == "hf":
            return f"hf:{self.name}" + (f":{self.config}" if self.config else "") + f":{self.split}"
        if self.kind == "hf_disk":
            return f"hf:{self.path}" + (f":{self.split}" if self.split else "")
        return str(self.path)

    @property
    def size(self) -> int:
        if self.kind == "hf_disk":
            return sum(f.stat().st_size for f in self.path.rglob("*.arrow"))
        return self.path.stat().st_size if self.path is not None else 0


def resolve_inputs(inputs: Iterable[str | os.PathLike]) -> list[Source]:
    """Expand INPUT arguments into sources (directories walked recursively, sorted)."""
    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not inputs:
        raise UsageError("INPUT: no input given")
    out: list[Source] = []
    for raw in inputs:
        s = str(raw)
        if s.startswith("hf:"):
            out.append(_hf_source(s))
            continue
        p = Path(s)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES)
            if not found:
                raise DataError(f"INPUT {p}: directory holds no .txt, .jsonl or .parquet files")
            out.extend(Source(f.suffix.lower()[1:], path=f) for f in found)
        elif p.is_file():
            suf = p.suffix.lower()
            if suf not in SUFFIXES:
                raise UsageError(
                    f"INPUT {p}: unsupported file type {suf or '(none)'!r} "
                    "(expected .txt, .jsonl, .parquet, a directory or hf:NAME)"
                )
            out.append(Source(suf[1:], path=p))
        else:
            raise UsageError(f"INPUT {p}: no such file or directory")
    return out


def _hf_source(s: str) -> Source:
    """hf:PATH[:SPLIT] (a save_to_disk folder) or hf:NAME[:CONFIG][:SPLIT]."""
    rest = s[3:]
    if not rest:
        raise UsageError(f"INPUT {s!r}: expected hf:NAME[:CONFIG][:SPLIT] or hf:PATH "
                         "(a dataset saved with save_to_disk)")
    if Path(rest).is_dir():
        return Source("hf_disk", path=Path(rest))
    head, _, tail = rest.rpartition(":")
    if head and Path(head).is_dir():
        return Source("hf_disk", path=Path(head), split=tail or None)
    if rest.startswith((".", "/", "~")):
        raise UsageError(f"INPUT {s}: no such dataset folder (hf:PATH is a folder written by save_to_disk)")
    parts = re.split(r":(?![^\[]*\])", rest)  # a split slice such as train[:10%] keeps its colon
    if len(parts) > 3 or not all(parts[:1]):
        raise UsageError(f"INPUT {s!r}: expected hf:NAME[:CONFIG][:SPLIT]")
    name, config, split = parts[0], None, None
    if len(parts) == 2:
        second = parts[1]
        if second.split("[")[0].split("+")[0] in _SPLIT_NAMES or "[" in second:
            split = second
        else:
            config = second
    elif len(parts) == 3:
        config, split = parts[1] or None, parts[2]
    return Source("hf", name=name, config=config, split=split or "train")


# ---------------------------------------------------------------------------------------------
# Document streams (Python side): parquet, hf, and .txt/.jsonl through the Rust reader.


def _parquet_batches(
    src: Source, batch_rows: int = PARQUET_BATCH, text_column: str = "text"
) -> Iterator[tuple[list[str], int, float]]:
    """Yield (texts, nulls, fraction_done) batches of a parquet file's text column."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - pyarrow is a dependency
        raise UsageError(f"INPUT {src.path}: reading .parquet needs pyarrow ({e})") from e
    try:
        pf = pq.ParquetFile(src.path)
        schema = pf.schema_arrow
    except Exception as e:  # noqa: BLE001 - pyarrow raises many types
        raise DataError(f"{src.path}: not a readable parquet file ({_one_line(e)})") from e
    idx = schema.get_field_index(text_column)
    if idx < 0:
        cols = ", ".join(schema.names[:8]) or "none"
        raise DataError(f"{src.path}: no column {text_column!r} (columns: {cols})")
    typ = schema.field(idx).type
    if not (pa.types.is_string(typ) or pa.types.is_large_string(typ)
            or getattr(pa.types, "is_string_view", lambda t: False)(typ)):
        raise DataError(f"{src.path}: column {text_column!r} has type {typ}, expected strings")
    total = max(pf.metadata.num_rows, 1)
    done = 0
    try:
        for batch in pf.iter_batches(batch_size=batch_rows, columns=[text_column]):
            col = batch.column(0).to_pylist()
            done += len(col)
            texts = [t for t in col if t is not None]
            yield texts, len(col) - len(texts), done / total
    except Exception as e:  # noqa: BLE001
        raise DataError(f"{src.path}: cannot read parquet data ({_one_line(e)})") from e


def _open_hf(src: Source):
    """The `datasets` Dataset / IterableDataset of an hf: source, offline (never a download)."""
    from lcfast.hub import datasets_cache_dir, hub_cache_dir, hub_snapshot, offline, require

    datasets = require("datasets", f"INPUT {src.label}: reading Hugging Face datasets")
    # datasets' notes ("Using the latest cached version …") and progress bars would break the one-line contract
    datasets.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    with offline():
        if src.kind == "hf_disk":
            try:
                ds = datasets.load_from_disk(str(src.path))
            except Exception as e:  # noqa: BLE001 - not a save_to_disk folder, corrupt arrow, ...
                raise DataError(f"INPUT {src.label}: not a dataset written by save_to_disk "
                                f"({_one_line(e)[:200]})") from e
            if isinstance(ds, datasets.DatasetDict):
                split = src.split or "train"
                if split not in ds:
                    raise DataError(f"INPUT {src.label}: no split {split!r} (splits: {', '.join(ds)}); "
                                    "name one as hf:PATH:SPLIT")
                ds = ds[split]
            elif src.split:
                raise UsageError(f"INPUT {src.label}: this folder holds one dataset, not splits: drop ':{src.split}'")
            return ds
        snap = hub_snapshot(src.name, "dataset", "INPUT")
        try:
            cache = str(datasets_cache_dir())
            if snap is not None:  # the repo's files, as `huggingface-cli download --repo-type dataset` left them
                return datasets.load_dataset(str(snap), src.config, split=src.split, streaming=True, cache_dir=cache)
            return datasets.load_dataset(src.name, src.config, split=src.split, cache_dir=cache)  # datasets' own cache
        except Exception as e:  # noqa: BLE001 - offline miss, unknown config or split, ...
            msg = _one_line(e)
            if snap is None and (isinstance(e, (ConnectionError, FileNotFoundError)) or "NotFound" in type(e).__name__
                                 or "offline" in msg.lower()):
                raise DataError(
                    f"INPUT {src.label}: not in the local Hugging Face caches (datasets: {datasets_cache_dir()}, "
                    f"hub: {hub_cache_dir()}); lcfast never downloads: fetch it first (e.g. 'huggingface-cli download "
                    f"--repo-type dataset {src.name}') or give hf:PATH of a save_to_disk folder"
                ) from e
            raise DataError(f"INPUT {src.label}: cannot load the dataset ({msg[:300]})") from e


def _hf_batches(
    src: Source, batch_rows: int = 4096, text_column: str = "text"
) -> Iterator[tuple[list[str], int, float]]:
    """Yield (texts, nulls, fraction_done) batches of an hf: source's text column: only that
    column, `batch_rows` rows at a time (memory-mapped or streamed: memory stays bounded)."""
    ds = _open_hf(src)
    cols = list(getattr(ds, "column_names", None) or [])
    if cols and text_column not in cols:
        raise DataError(f"INPUT {src.label}: no column {text_column!r} (columns: {', '.join(cols[:12])}); "
                        "name the text column with --text-column")
    if cols and len(cols) > 1:
        ds = ds.select_columns([text_column])
    try:
        n = max(len(ds), 1)
    except TypeError:  # a streamed dataset has no length
        n = 0
    done = 0
    try:
        for batch in ds.iter(batch_size=batch_rows):
            col = batch[text_column]
            done += len(col)
            texts = [t for t in col if isinstance(t, str)]
            if len(texts) + sum(t is None for t in col) != len(col):
                raise DataError(f"INPUT {src.label}: column {text_column!r} holds non-text values")
            yield texts, len(col) - len(texts), (done / n if n else 0.0)
    except KeyError:
        raise DataError(f"INPUT {src.label}: no column {text_column!r}; "
                        "name the text column with --text-column") from None


def iter_documents(sources: list[Source], chunk_bytes: int = 1 << 20, text_column: str = "text") -> Iterator[list[str]]:
    """Batches of documents from all sources, in order (used to train a tokenizer)."""
    from lcfast.data.shards import _core

    core = _core()
    for src in sources:
        if src.kind in ("txt", "jsonl"):
            yield from core.DocReader(str(src.path), chunk_bytes)
        elif src.kind == "parquet":
            for texts, _, _ in _parquet_batches(src, text_column=text_column):
                yield texts
        else:
            for texts, _, _ in _hf_batches(src, text_column=text_column):
                yield texts


# ---------------------------------------------------------------------------------------------
# Tokenizers


def train_bpe(sources: list[Source], vocab_size: int, path: Path, text_column: str = "text"):
    """Train a byte-level BPE (GPT-2 style, ``<|endoftext|>`` special) on the sources; save to path."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    seen = [0]
    stop = threading.Event()

    def docs():
        for batch in iter_documents(sources, text_column=text_column):
            if stop.is_set():
                return
            for d in batch:
                if d.strip():
                    seen[0] += 1
                    yield d

    # The trainer pulls the documents from its own threads and keeps the calling thread in Rust until
    # it is done (minutes on a big corpus), where Python cannot act on Ctrl-C. So it trains in a
    # thread of its own and this thread waits, ready to be interrupted (the trainer then stops
    # reading, and the half-trained thread dies with the process).
    failed: list[BaseException] = []

    def train():
        try:
            tok.train_from_iterator(docs(), trainer=trainer)
        except BaseException as e:  # noqa: BLE001 - re-raised in the calling thread
            failed.append(e)

    worker = threading.Thread(target=train, name="lcfast-bpe", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.1)
    except BaseException:
        stop.set()
        left_running(worker)  # the console script then exits without killing it mid-call
        raise
    if failed:
        raise failed[0]
    if seen[0] == 0:
        labels = ", ".join(s.label for s in sources[:3]) + (" ..." if len(sources) > 3 else "")
        raise DataError(f"INPUT {labels}: no documents found (empty corpus)")
    Path(path).write_text(tok.to_str(), encoding="utf-8")
    return tok


def load_tokenizer(
    spec: str, sources: list[Source], out_tok: Path | None, text_column: str = "text"
) -> tuple[object, str, bool]:
    """Resolve --tokenizer into a `tokenizers.Tokenizer` and save it at ``out_tok`` (a plain write:
    callers pass a staged temporary; None when --tokenizer already is the output file).

    Returns (tokenizer, description, trained).
    """
    from tokenizers import Tokenizer

    spec = str(spec)
    if spec.startswith("train:"):
        v = spec[len("train:") :]
        try:
            vocab = int(v)
        except ValueError:
            raise UsageError(f"--tokenizer {spec!r}: expected train:VOCAB with an integer VOCAB") from None
        if not MIN_TRAIN_VOCAB <= vocab <= MAX_TRAIN_VOCAB:
            raise UsageError(
                f"--tokenizer {spec!r}: VOCAB must be between {MIN_TRAIN_VOCAB} (256 bytes + EOS) and {MAX_TRAIN_VOCAB}"
            )
        if out_tok is None:
            raise UsageError(f"--tokenizer {spec!r}: cannot train into the tokenizer file being read")
        return train_bpe(sources, vocab, out_tok, text_column), f"trained byte-level BPE (vocab {vocab})", True
    if spec.startswith("hf:"):  # a model's tokenizer from the local hub cache
        from lcfast.hub import hub_cache_dir, hub_snapshot

        snap = hub_snapshot(spec[3:], "model", "--tokenizer")
        if snap is None or not (snap / "tokenizer.json").is_file():
            raise DataError(f"--tokenizer {spec}: no tokenizer.json for {spec[3:]} in the local Hugging Face cache "
                            f"{hub_cache_dir()} (lcfast never downloads: fetch the model first)")
        spec = str(snap / "tokenizer.json")
    p = Path(spec)
    if p.is_dir() and (p / "tokenizer.json").is_file():
        p = p / "tokenizer.json"
    if p.is_file():
        try:
            tok = Tokenizer.from_file(str(p))
        except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exception
            raise DataError(f"--tokenizer {p}: not a valid tokenizer.json ({_one_line(e)})") from e
        if out_tok is not None:
            shutil.copyfile(p, out_tok)
        return tok, str(p), False
    if p.is_dir():
        extra = (" (a transformers model folder with only a sentencepiece/vocab tokenizer: convert it once with "
                 "AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR), which writes tokenizer.json)"
                 if (p / "config.json").is_file() else "")
        raise UsageError(f"--tokenizer {spec}: directory has no tokenizer.json{extra}")
    _refuse_bare_name(spec)
    raise UsageError(f"--tokenizer {spec}: no such tokenizer file")


def _refuse_bare_name(spec: str) -> None:
    """A --tokenizer that is no local path and no hf:/train: form used to be fetched from the hub:
    lcfast never reaches the network, so it is a usage error listing the accepted forms."""
    p = Path(spec)
    if spec.startswith(("train:", "hf:", ".", "/", "~")) or p.exists() or p.suffix == ".json":
        return
    cached = (f" (from the cache: --tokenizer hf:{spec})"
              if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?", spec) else "")
    raise UsageError(
        f"--tokenizer {spec}: no such file or folder, and lcfast never downloads; accepted: a tokenizer.json path, "
        f"a model folder holding one, hf:ORG/NAME (a model's tokenizer.json in the local Hugging Face cache){cached}, "
        f"or train:VOCAB (byte-level BPE trained on the input)")


def find_eos(tok, eos: str | None, where: str) -> tuple[int, str]:
    """Id and text of the end-of-text token (``eos`` if given, else the first known candidate)."""
    if eos is not None:
        i = tok.token_to_id(eos)
        if i is None:
            raise UsageError(f"--eos {eos!r}: token not in the vocabulary of {where}")
        return i, eos
    for cand in EOS_CANDIDATES:
        i = tok.token_to_id(cand)
        if i is not None:
            return i, cand
    raise UsageError(
        f"--tokenizer {where}: no end-of-text token found ({', '.join(EOS_CANDIDATES)}); name one with --eos"
    )


# ---------------------------------------------------------------------------------------------


def tokenize_files(
    inputs,
    tokenizer: str | os.PathLike,
    out_dir: str | os.PathLike,
    val_fraction: float = 0.01,
    seed: int = 0,
    *,
    eos: str | None = None,
    threads: int = 0,
    chunk_bytes: int = 4 << 20,
    segment_bytes: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    text_column: str = "text",
) -> dict:
    """Tokenize ``inputs`` into ``out_dir``: train.lcshard, val.lcshard, tokenizer.json, meta.json.

    Args:
        inputs: paths (.txt, .jsonl, .parquet, directories) and/or ``hf:NAME[:SPLIT]`` strings.
        tokenizer: tokenizer.json path, a model folder, ``"hf:ORG/NAME"`` (local cache) or ``"train:VOCAB"``.
        out_dir: output directory (created; existing outputs are replaced atomically).
        val_fraction: expected share of documents in val (per-document hash split, in [0, 1]).
        seed: split seed (non-negative int).
        eos: end-of-text token text (default: auto-detect; ``<|endoftext|>`` for trained BPE).
        threads: Rust worker threads (0 = RAYON_NUM_THREADS or all cores).
        chunk_bytes: text bytes per parallel chunk (memory bound).
        segment_bytes: documents longer than this are read, tokenized and written in segments
            (default ``lcfast._core.SEGMENT_BYTES``, 1 MiB; see the module docstring).
        progress: called as ``progress(done_bytes, total_bytes)``.
        text_column: the column holding the documents in .parquet and ``hf:`` inputs.

    Returns the summary also written to meta.json: inputs, documents and tokens per split,
    vocab_size, dtype, tokenizer fingerprint, eos id, timing. Per-token counts are stored in each
    shard's counts section (``TokenShard.counts()``, np.int64 [vocab_size]).
    """
    t0 = time.perf_counter()
    val_fraction = validate.number("--val-fraction", val_fraction, min=0, max=1)
    seed = validate.seed("--seed", seed)
    threads = validate.integer("--threads", threads, min=0, max=validate.THREADS_MAX)
    chunk_bytes = validate.integer("chunk_bytes", chunk_bytes, min=1)
    if segment_bytes is not None:
        segment_bytes = validate.integer("segment_bytes", segment_bytes, min=64)
    sources = resolve_inputs(inputs)
    if text_column != "text" and any(src.kind == "jsonl" for src in sources):
        raise UsageError(f"--text-column {text_column}: .jsonl inputs are read by their 'text' field only")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    out_tok = out / TOKENIZER
    if not str(text_column or "").strip():
        raise UsageError("--text-column: give the name of the column that holds the text")
    train_path, val_path = out / TRAIN_SHARD, out / VAL_SHARD
    from lcfast.io import refuse_overwriting_inputs, staged

    refuse_overwriting_inputs([train_path, val_path, out / META], [s.path for s in sources if s.path], "--out")
    _refuse_bare_name(str(tokenizer))  # before the output folder is made
    spec = Path(str(tokenizer))
    spec = spec / "tokenizer.json" if spec.is_dir() else spec
    tok_is_output = spec.is_file() and out_tok.is_file() and os.path.samefile(spec, out_tok)
    # Every output (shards, tokenizer, meta.json) is written to a temporary file and published only
    # when all are complete: a failure, an empty corpus or an interrupt leaves the folder as it was.
    with staged() as st:
        try:
            st.make_dirs(out)  # removed again (when empty) if nothing is published
        except OSError as e:
            raise DataError(f"--out {out}: cannot create the folder "
                            f"({' '.join(str(e.strerror or e).split())})") from None
        tok_file = out_tok if tok_is_output else st.path(out_tok)
        tok, tok_desc, trained = load_tokenizer(str(tokenizer), sources, None if tok_is_output else tok_file,
                                                text_column)
        eos_id, eos_text = find_eos(tok, EOS_TOKEN if trained and eos is None else eos, str(tokenizer))
        t_tok = time.perf_counter()
        meta = _tokenize_into(
            st, sources, tok_file, train_path, val_path, val_fraction=val_fraction, seed=seed, eos_id=eos_id,
            chunk_bytes=chunk_bytes, threads=threads, progress=progress, tok_desc=tok_desc, trained=trained,
            eos_text=eos_text, t0=t0, t_tok=t_tok, text_column=text_column, segment_bytes=segment_bytes,
        )
    return meta


def _tokenize_into(st, sources, tok_file, train_path, val_path, *, val_fraction, seed, eos_id, chunk_bytes, threads,
                   progress, tok_desc, trained, eos_text, t0, t_tok, text_column="text", segment_bytes=None) -> dict:
    """Run the Rust job into staged temporaries of the shards; stage meta.json; return it."""
    from lcfast.data.shards import _core

    job = _core().TokenizeJob(
        str(tok_file), str(st.path(train_path)), str(st.path(val_path)), float(val_fraction), int(seed), int(eos_id),
        int(chunk_bytes), int(threads), int(segment_bytes or _core().SEGMENT_BYTES)
    )
    try:
        reports, py_nulls = _feed(job, sources, progress, text_column)
        summary = job.finish()
    except BaseException:
        job = None  # drop it now: the Rust writers delete their temporary files
        raise
    t_end = time.perf_counter()
    if summary["documents"] == 0:  # nothing is published: the shards already there stay
        labels = ", ".join(r["source"] for r in reports[:3]) + (" ..." if len(reports) > 3 else "")
        raise DataError(f"INPUT {labels}: no documents found (empty corpus)")
    meta = _meta(summary, reports, py_nulls, val_fraction, seed, eos_id, eos_text, tok_desc, trained,
                 {"t0": t0, "t_tok": t_tok, "t_end": t_end})
    st.write_json(train_path.parent / META, meta, sort_keys=False)
    return meta


def _feed(job, sources: list[Source], progress, text_column: str) -> tuple[list[dict], int]:
    """Every source's documents into the Rust job, in order; (one report per source, null texts of
    parquet/hf inputs, which are filtered here — Rust counts the empty ones it sees)."""
    total = sum(s.size for s in sources)
    done_before = 0
    py_nulls = 0
    reports = []
    try:
        for src in sources:
            rep = {"source": src.label, "kind": src.kind}
            if src.kind in ("txt", "jsonl"):
                cb = None
                if progress is not None:
                    base = done_before
                    cb = lambda b, base=base: progress(base + b, total)  # noqa: E731
                r = job.add_file(str(src.path), cb)
                rep.update(documents=r["documents"], skipped_empty=r["skipped_empty"], bytes=r["bytes"])
            else:
                docs = skipped = 0
                gen = (_parquet_batches(src, text_column=text_column) if src.kind == "parquet"
                       else _hf_batches(src, text_column=text_column))
                for texts, nulls, frac in gen:
                    w, s = job.add_texts(texts)
                    docs += w
                    skipped += s + nulls
                    py_nulls += nulls
                    if progress is not None:
                        progress(done_before + int(frac * src.size), total)
                rep.update(documents=docs, skipped_empty=skipped, bytes=src.size)
            done_before += src.size
            reports.append(rep)
    except BaseException:
        job = None  # a traceback keeps this frame: drop the job here too (see _tokenize_into)
        raise
    return reports, py_nulls


def _meta(summary: dict, reports: list[dict], py_nulls: int, val_fraction: float, seed: int, eos_id: int,
          eos_text: str, tok_desc: str, trained: bool, times: dict[str, float]) -> dict:
    """meta.json of a finished job: inputs, documents and tokens per split, tokenizer, split rule,
    timing (`times`: t0 start, t_tok tokenizer ready, t_end job finished) and warnings."""
    warnings = []
    if val_fraction > 0 and summary["val"]["documents"] == 0:
        warnings.append(
            f"the val split is empty ({summary['documents']} documents at --val-fraction {val_fraction}); "
            "raise --val-fraction for a validation set"
        )
    if val_fraction < 1 and summary["train"]["documents"] == 0:
        warnings.append("the train split is empty; lower --val-fraction")
    n_tok = summary["train"]["tokens"] + summary["val"]["tokens"]
    t0, t_tok, t_end = times["t0"], times["t_tok"], times["t_end"]
    secs = max(t_end - t_tok, 1e-9)
    from lcfast import __version__

    return {
        "format": "lcfast-tokenized",
        "lcfast_version": __version__,
        "inputs": reports,
        "documents": {
            "train": summary["train"]["documents"],
            "val": summary["val"]["documents"],
            "total": summary["documents"],
            "skipped_empty": summary["skipped_empty"] + py_nulls,
        },
        "tokens": {"train": summary["train"]["tokens"], "val": summary["val"]["tokens"], "total": n_tok},
        "vocab_size": summary["vocab_size"],
        "dtype": summary["dtype"],
        "tokenizer": {
            "source": tok_desc,
            "trained": trained,
            "path": "tokenizer.json",
            "fingerprint": summary["tokenizer_fingerprint"],
            "eos_id": eos_id,
            "eos_token": eos_text,
            "fast_path": summary["fast_path"],
        },
        "eos_id": eos_id,
        "tokenizer_fingerprint": summary["tokenizer_fingerprint"],
        "split": {
            "val_fraction": float(val_fraction),
            "seed": int(seed),
            "rule": "document goes to val iff XXH3-64(utf8 text, seed) / 2^64 < val_fraction "
                    "(a document longer than 1 MiB: the text of its first segment)",
        },
        "shards": {
            "train": {"path": TRAIN_SHARD, **summary["train"]},
            "val": {"path": VAL_SHARD, **summary["val"]},
        },
        "counts": "stored in each shard's counts section (uint64 [vocab_size]); TokenShard.counts()",
        "threads": summary["threads"],
        "timing": {
            "tokenizer_s": round(t_tok - t0, 4),
            "tokenize_s": round(t_end - t_tok, 4),
            "total_s": round(t_end - t0, 4),
            "tokens_per_s": round(n_tok / secs, 1),
            "text_mb_per_s": round(summary["text_bytes"] / secs / 1e6, 3),
        },
        "text_bytes": summary["text_bytes"],
        "warnings": warnings,
    }


def _one_line(e: object) -> str:
    return " ".join(str(e).split())
