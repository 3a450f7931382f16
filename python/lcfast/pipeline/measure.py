"""Measurement: every NC metric of a collected checkpoint, one CSV row per (model, checkpoint).

`measure(paths, out_dir)` finds the collections under `paths` (a run dir → its collect/*/, a
collect output dir, or a folder of runs), loads each one's train `ClassStats`, val `NCCStats` and
the model's LM head, runs `measure_stats` and writes

    out_dir/measurements.csv                     one row per (model, checkpoint)
    out_dir/per_token/<model>_<checkpoint>.parquet  the per-token table with decoded token strings

A row holds model, checkpoint, n_params, layers, width, epochs (the checkpoint's epoch), seed,
val_loss, val_acc, perplexity (from the run's metrics.jsonl for that epoch; for a transformers
checkpoint, from collect's own val pass) and every canonical metric key.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path
from typing import Iterable

import torch

from lcfast import validate
from lcfast.errors import DataError, UsageError
from lcfast.pipeline.collect import COLLECT_JSON, PASS_FILES, read_state_meta, resolve_device

#: the leading columns of measurements.csv, in order; the canonical metric keys follow.
ID_COLUMNS = ["model", "checkpoint", "n_params", "layers", "width", "epochs", "seed", "val_loss", "val_acc", "perplexity"]
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _epoch_key(p: Path) -> tuple:
    m = re.match(r"^epoch_(\d+)$", p.name)
    return (0, int(m.group(1))) if m else (1, p.name)


def find_collections(paths: Iterable[str | Path]) -> list[Path]:
    """Collect output dirs (holding collect.json) under each path, in a stable order."""
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise UsageError(f"RUN {p}: no such file or directory")
        if p.is_file():
            if p.name == COLLECT_JSON:
                found.append(p.parent)
                continue
            raise UsageError(f"RUN {p}: expected a run dir or a collect output dir, not a file")
        here: list[Path] = []
        if (p / COLLECT_JSON).is_file():
            here.append(p)
        else:
            for base in [p] + sorted(d for d in p.iterdir() if d.is_dir()):
                cdir = base / "collect"
                if cdir.is_dir():
                    here.extend(sorted((d for d in cdir.iterdir() if (d / COLLECT_JSON).is_file()), key=_epoch_key))
                elif base is not p and (base / COLLECT_JSON).is_file():
                    here.append(base)
        if not here:
            raise DataError(f"{p}: no collected checkpoint here (run `lcfast collect {p}` first)")
        found.extend(here)
    out, seen = [], set()
    for d in found:
        r = d.resolve()
        if r not in seen:
            seen.add(r)
            out.append(d)
    return out


def _read_summary(cdir: Path) -> dict:
    from lcfast.io import read_json

    s = read_json(cdir / COLLECT_JSON, "collect summary")
    for key in ("model", "checkpoint", "model_fingerprint", "files", "source"):
        if key not in s:
            raise DataError(f"{cdir / COLLECT_JSON}: missing {key!r} (not written by lcfast collect?)")
    return s


def _load_state(cdir: Path, kind: str, summary: dict, device: torch.device | str = "cpu"):
    from lcfast.stats.classstats import ClassStats
    from lcfast.stats.ncc import NCCStats

    path = cdir / summary["files"].get(kind, PASS_FILES[kind])
    if not path.is_file():
        raise DataError(f"{path}: missing (rerun `lcfast collect`)")
    meta = read_state_meta(path)
    if meta.get("model_fingerprint") != summary["model_fingerprint"]:
        raise DataError(f"{path}: state of another model than {cdir / COLLECT_JSON} says; rerun `lcfast collect`")
    if meta.get("windows_done") != meta.get("n_windows"):
        raise DataError(
            f"{path}: incomplete collection ({meta.get('windows_done')}/{meta.get('n_windows')} windows); rerun `lcfast collect`"
        )
    return NCCStats.load(str(path)) if kind == "val" else ClassStats.load(str(path), device=device)


def _load_head(summary: dict, cdir: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The LM head of the collected model, checked against the collected fingerprint."""
    from lcfast.pipeline.collect import ModelSource, load_source, model_head

    src = summary["source"]
    path = Path(src["path"])
    if not path.exists():
        raise DataError(f"{cdir / COLLECT_JSON}: its model {path} is gone (needed for the LM head W)")
    ms = ModelSource(src["kind"], path, summary["checkpoint"], summary.get("epoch"), Path(summary.get("data_dir", ".")))
    model = load_source(ms)
    fp = str(model.fingerprint())
    if fp != summary["model_fingerprint"]:
        raise DataError(
            f"{path} ({summary['checkpoint']}): model changed since collection (fingerprint {fp} != "
            f"{summary['model_fingerprint']}); rerun `lcfast collect --restart`"
        )
    return model_head(model)


def run_metrics(run_dir: Path, epoch: int | None) -> dict:
    """val_loss/val_acc/perplexity (and friends) of one epoch from RUN/metrics.jsonl ({} if absent)."""
    path = run_dir / "metrics.jsonl"
    if epoch is None or not path.is_file():
        return {}
    found = {}
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                raise DataError(f"{path}: line {i} is not valid JSON") from None
            if isinstance(rec, dict) and rec.get("epoch") == epoch and "val_loss" in rec:
                found = rec  # the last record of that epoch wins (a resumed run may repeat one)
    return found


def token_decoder(tokenizer_path: str | Path | None):
    """decode(id) -> the token's text (byte-level BPE pieces decoded), or None without a tokenizer."""
    if not tokenizer_path or not Path(tokenizer_path).is_file():
        return None
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_file(str(tokenizer_path))
    except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exceptions
        raise DataError(f"{tokenizer_path}: unreadable tokenizer ({' '.join(str(e).split())})") from None
    n = tok.get_vocab_size(with_added_tokens=True)

    def decode(i: int):
        return tok.decode([int(i)], skip_special_tokens=False) if 0 <= int(i) < n else None

    return decode


def measure_collection(
    cdir: str | Path,
    *,
    min_count: int | None = None,
    cdnv_power: float = 1.0,
    backend: str = "auto",
    device: str = "auto",
    per_token: bool = True,
) -> tuple[dict, "object | None", list[str]]:
    """(CSV row, per-token DataFrame or None, notes) of one collect output dir."""
    from lcfast.metrics.measure import CANONICAL_KEYS, measure_all

    cdir = Path(cdir)
    s = _read_summary(cdir)
    notes: list[str] = []
    dev = resolve_device(device)
    stats = _load_state(cdir, "train", s, dev)
    if s.get("options", {}).get("exact"):
        # the exact second pass has the same counts and means, and σ²_c = Σ‖h − μ_c‖²/n_c directly
        stats = _load_state(cdir, "train_exact", s, dev)
    ncc = _load_state(cdir, "val", s)
    collect_mc = int(s.get("options", {}).get("min_count", 1))
    mc = collect_mc if min_count is None else int(min_count)
    if mc < 1:
        raise UsageError(f"--min-count {mc}: must be ≥ 1")
    if mc != collect_mc:
        notes.append(
            f"{s['model']}/{s['checkpoint']}: NC4 was collected with --min-count {collect_mc}, not {mc}: "
            "nc4_agreement left empty (recollect with the same --min-count)"
        )
        ncc = None
    n_kept = int((stats.counts >= mc).sum())
    if n_kept < 2:
        raise DataError(
            f"--min-count {mc}: {n_kept} class{'' if n_kept == 1 else 'es'} of {cdir} {'has' if n_kept == 1 else 'have'} "
            f"≥ {mc} train samples (most frequent: {int(stats.counts.max())}); the NC metrics need at least 2 kept classes"
        )
    W, b = _load_head(s, cdir)
    W = W.to(dev)
    b = b.to(dev) if b is not None else None
    decode = token_decoder(s.get("tokenizer")) if per_token else None
    if per_token and decode is None:
        notes.append(f"{s['model']}/{s['checkpoint']}: no tokenizer.json beside the shards: token strings left empty")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics, table = measure_all(stats, W, b, ncc, mc, backend, cdnv_power=cdnv_power, decode=decode, table=per_token)
    notes += [f"{s['model']}/{s['checkpoint']}: {' '.join(str(w.message).split())}" for w in caught]
    metrics = {k: metrics.get(k) for k in CANONICAL_KEYS}

    run_dir = Path(s["source"]["path"])
    rec = run_metrics(run_dir, s.get("epoch")) if s["source"]["kind"] == "run" else {}
    vp = s.get("val_pass", {})
    if rec:
        vl, va, ppl = rec.get("val_loss"), rec.get("val_acc"), rec.get("perplexity")
        if ppl is None and isinstance(vl, (int, float)):
            ppl = math.exp(vl)
    else:
        vl, va, ppl = vp.get("loss"), vp.get("acc"), vp.get("perplexity")
        if s["source"]["kind"] == "run":
            notes.append(f"{s['model']}/{s['checkpoint']}: no metrics.jsonl record for epoch {s.get('epoch')}: val_* from collect's val pass")
    row = {
        "model": s["model"],
        "checkpoint": s["checkpoint"],
        "n_params": s.get("n_params"),
        "layers": s.get("layers"),
        "width": s.get("width"),
        "epochs": s.get("epoch"),
        "seed": s.get("seed"),
        "val_loss": vl,
        "val_acc": va,
        "perplexity": ppl,
        **metrics,
        "heads": s.get("heads"),
        "context": s.get("context"),
        "min_count": mc,
        "cdnv_power": cdnv_power,
        "exact": bool(s.get("options", {}).get("exact")),
        "collect_val_loss": vp.get("loss"),
        "train_tokens": s.get("passes", {}).get("train", {}).get("tokens"),
        "val_tokens": s.get("passes", {}).get("val", {}).get("tokens"),
        "model_fingerprint": s["model_fingerprint"],
        "collect_dir": str(cdir),
    }
    return row, table, notes


def output_name(row: dict) -> str:
    return _SAFE.sub("_", f"{row['model']}_{row['checkpoint']}")


def measure(
    paths: Iterable[str | Path],
    out_dir: str | Path,
    *,
    min_count: int | None = None,
    cdnv_power: float = 1.0,
    backend: str = "auto",
    device: str = "auto",
    console=None,
    progress: bool = True,
):
    """Measure every collection under `paths`; writes measurements.csv + per_token/*.parquet."""
    import pandas as pd

    from lcfast.io import atomic_write_bytes

    cdnv_power = validate.number("--cdnv-power", cdnv_power, min=0, min_open=True, max=validate.CDNV_POWER_MAX)
    if min_count is not None:
        min_count = validate.integer("--min-count", min_count, min=1)
    cdirs = find_collections(list(paths))
    out = Path(out_dir)
    (out / "per_token").mkdir(parents=True, exist_ok=True)
    rows, notes = [], []
    names: dict[str, int] = {}
    pbar = task = None
    if progress:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        pbar = Progress(TextColumn("[bold]measure"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[what]}"),
                        TimeElapsedColumn(), console=console or Console(stderr=True))
        pbar.start()
        task = pbar.add_task("measure", total=len(cdirs), what="")
    try:
        for cdir in cdirs:
            if pbar is not None:
                pbar.update(task, what=str(cdir))
            row, table, n = measure_collection(cdir, min_count=min_count, cdnv_power=cdnv_power, backend=backend, device=device)
            notes.extend(n)
            key = f"{row['model']}/{row['checkpoint']}"
            if key in names:  # the same model/checkpoint name twice (two sweeps, two --out): tell them apart
                names[key] += 1
                row["model"] = f"{row['model']}~{names[key]}"
                notes.append(f"{cdir}: renamed to {row['model']} (another collection has the same model/checkpoint name)")
            else:
                names[key] = 0
            if table is not None:
                buf = _parquet_bytes(table)
                atomic_write_bytes(out / "per_token" / f"{output_name(row)}.parquet", buf)
                row["per_token"] = f"per_token/{output_name(row)}.parquet"
            rows.append(row)
            if pbar is not None:
                pbar.advance(task)
    finally:
        if pbar is not None:
            pbar.stop()
    df = pd.DataFrame(rows)
    atomic_write_bytes(out / "measurements.csv", df.to_csv(index=False).encode("utf-8"))
    if notes and console is not None:
        for n in notes:
            console.print(f"[yellow]note:[/] {n}")
    df.attrs["notes"] = notes
    return df


def _parquet_bytes(table) -> bytes:
    import io

    buf = io.BytesIO()
    table.to_parquet(buf, index=False)
    return buf.getvalue()


def print_measure_table(df, console, columns: list[str] | None = None) -> None:
    """A rich table of the headline columns of measurements.csv."""
    from rich.table import Table

    cols = columns or [c for c in ("model", "checkpoint", "n_params", "val_loss", "nc1_cdnv", "nc2_norm_cov",
                                   "nc2_interference_mean", "gnc2_log_var", "nc3_dual_cos_mean", "nc4_agreement") if c in df.columns]
    t = Table(title="lcfast measure")
    for c in cols:
        t.add_column(c, justify="left" if c in ("model", "checkpoint") else "right")
    for _, r in df.iterrows():
        t.add_row(*[_fmt(r[c]) for c in cols])
    console.print(t)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v) if not math.isnan(v) else "-"
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.3e}"
        return f"{v:.4f}"
    if isinstance(v, int) and abs(v) >= 10000:
        return f"{v:,}"
    return str(v)
