"""Measurement: every NC metric of a collected checkpoint, one CSV row per (model, checkpoint).

`measure(paths, out_dir)` finds the collections under `paths` (a run dir → its collect/*/, a
collect output dir, or a folder of runs), loads each one's train `ClassStats`, val `NCCStats` and
the model's LM head, runs `measure_stats` and writes

    out_dir/measurements.csv                     one row per (model, checkpoint)
    out_dir/convergence.csv                      each metric on nested random subsamples of the train
                                                 windows (unions of collect's folds; lcfast.pipeline.convergence)
    out_dir/per_token/<model>_<checkpoint>.parquet  the per-token table with decoded token strings
    out_dir/per_class.parquet                    one row per (model, checkpoint, class): context
                                                 entropy beside per-class NC (lcfast.pipeline.per_class)

A collection made with `collect --layers` gives one row per (model, checkpoint, layer): a `layer`
column (transformers' hidden_states index, 0 = embeddings) and a `head` column (True for the LM
head's input, the only row with NC3/NC4; its layer is the last one when that hidden state is the
head's input). The per-token table is the head row's. `collect --classes top:K` rows are over the K
kept classes (`classes` column; per-token ids are token ids).

A row holds model, checkpoint, n_params, layers, width, epochs (the checkpoint's epoch), seed,
val_loss, val_acc, perplexity (from the run's metrics.jsonl for that epoch; for a transformers
checkpoint, from collect's own val pass), `profile`, and every metric key of that profile
(docs/metrics.md): the canonical keys, or with `profile="paper"` the columns of the paper's own
tables under its names and definitions (such rows can be appended to the paper's lc-2024_10_24
table; `lcfast analyze` pools them with it). A model from the hub cache adds `revision` and `step`
after `checkpoint`: the revision as named, and N of a stepN revision (else empty).


Precision (docs/metrics.md, "Precision"): a collection made with `collect --folds K` holds K disjoint
folds of windows; every metric M is measured on their merge (the same value as one fold of all the
data) with `measure_folds`, which adds `n_positions`, `n_folds` and `M_se` (the delete-one-fold
jackknife). `M_stable` says whether the last doubling of positions (half of the folds → all) moved
M by less than 2·M_se. With K = 1 the SEs and `M_stable` are empty.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch

from lcfast import validate
from lcfast.data.datadir import token_decoder
from lcfast.dist import resolve_device
from lcfast.errors import DataError, UsageError
from lcfast.metrics.profiles import MetricProfile
from lcfast.pipeline.collect.state import COLLECT_JSON, PASS_FILES, read_state_meta
from lcfast.pipeline.collect.summary import CollectSummary
from lcfast.pipeline.per_class import DEFAULT_ORDERS, MAX_ORDERS, ShardEntropy, collection_frame

#: the leading columns of measurements.csv, in order; the canonical metric keys follow.
ID_COLUMNS = ["model", "checkpoint", "n_params", "layers", "width", "epochs", "seed", "val_loss", "val_acc",
              "perplexity"]
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _epoch_key(p: Path) -> tuple:
    m = re.match(r"^(?:epoch_|step)(\d+)$", p.name)  # epochs of a run, the stepN revisions of a sweep: in order
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
            for base in [p] + sorted((d for d in p.iterdir() if d.is_dir()), key=_epoch_key):
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


def _load_state(cdir: Path, kind: str, summary: CollectSummary, device: torch.device | str = "cpu"):
    from lcfast.stats.classstats import ClassStats
    from lcfast.stats.ncc import NCCStats

    path = cdir / summary.files.get(kind, PASS_FILES[kind])
    if not path.is_file():
        raise DataError(f"{path}: missing (rerun `lcfast collect`)")
    meta = read_state_meta(path)
    if meta.get("model_fingerprint") != summary.model_fingerprint:
        raise DataError(f"{path}: state of another model than {cdir / COLLECT_JSON} says; rerun `lcfast collect`")
    if meta.get("windows_done") != meta.get("n_windows"):
        raise DataError(
            f"{path}: incomplete collection ({meta.get('windows_done')}/{meta.get('n_windows')} windows); "
            "rerun `lcfast collect`"
        )
    return NCCStats.load(str(path)) if kind == "val" else ClassStats.load(str(path), device=device)


def _load_head(summary: CollectSummary, cdir: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The LM head of the collected model, checked against the collected fingerprint."""
    from lcfast.model.hf import parse_dtype
    from lcfast.model.sources import ModelSource, load_source, model_head

    src = summary.source
    path = Path(src.path)
    if not path.exists():
        raise DataError(f"{cdir / COLLECT_JSON}: its model {path} is gone (needed for the LM head W)")
    cfg = {}
    if src.kind == "hf" and (path / "config.json").is_file():
        from lcfast.io import read_json

        cfg = read_json(path / "config.json", "model config")
    ms = ModelSource(src.kind, path, summary.checkpoint, summary.epoch, Path(summary.data_dir or "."),
                     cfg if isinstance(cfg, dict) else {})
    model = load_source(ms, parse_dtype(summary.options.dtype))
    fp = str(model.fingerprint())
    if fp != summary.model_fingerprint:
        raise DataError(
            f"{path} ({summary.checkpoint}): model changed since collection (fingerprint {fp} != "
            f"{summary.model_fingerprint}); rerun `lcfast collect --restart`"
        )
    W, b = model_head(model)
    return W.float(), (b.float() if b is not None else None)  # exact for bfloat16/float16 heads


def _layout(cdir: Path, summary: CollectSummary):
    """The SlotLayout of a collection made with --layers / --classes (None: the head alone)."""
    if summary.layout is None:
        return None
    from lcfast.io import load_tensors
    from lcfast.pipeline.collect.layers import SlotLayout

    lay = summary.layout
    ids = None
    if lay.get("classes_file"):
        path = cdir / lay["classes_file"]
        if not path.is_file():
            raise DataError(f"{path}: missing (the kept classes of --classes {lay.get('classes')}); "
                            "rerun `lcfast collect`")
        ids = load_tensors(path, "kept classes")[0].get("class_ids")
        if ids is None or ids.dim() != 1 or int(ids.numel()) != int(lay["classes_per_slot"]):
            raise DataError(f"{path}: malformed kept-class list; rerun `lcfast collect`")
        ids = ids.to(torch.int64)
    return SlotLayout.from_json(lay, ids)


def _compact_ncc(ncc, ids: torch.Tensor):
    """NC4 decisions restricted to the kept classes `ids` (every counted position has a kept label,
    so the agreement is unchanged)."""
    from lcfast.stats.ncc import NCCStats

    out = NCCStats(int(ids.numel()), None, ncc.kept[ids], None)
    out.hits, out.totals, out.meta = ncc.hits[ids].clone(), ncc.totals[ids].clone(), dict(ncc.meta)
    out.meta["no_all_classes"] = ("--classes top:K collected only K class means, and the paper's NC4 searches "
                                  "all C of them (docs/metrics.md)")
    return out


def n_folds_of(summary) -> int:
    """The folds of a collection (collect.json's options.folds; 1 for collections made before them)."""
    k = summary.options.folds
    return int(k) if isinstance(k, int) and k >= 1 else 1


def layer_rows(cdir: Path, head_row: dict, *, min_count: int, cdnv_power: float | None, backend: str, device: str,
               profile: str = "canonical", conv: list | None = None) -> list[dict]:
    """One row per hidden-state slot of a `collect --layers` collection: NC1, NC2, GNC2 of
    `hidden_states[i]` under `profile`'s keys (NC3/NC4 belong to the classifier's input: left empty),
    with their SEs over the collection's folds; their convergence rows are appended to `conv`."""
    from lcfast.pipeline.collect.folds import split_folds
    from lcfast.pipeline.convergence import measure_with_precision, row_keys

    profile = MetricProfile.parse(profile)
    keys = row_keys(profile.value)
    cdnv_power = profile.cdnv_power(cdnv_power)

    s = CollectSummary.read(cdir)
    layout = _layout(cdir, s)
    if layout is None or len(layout.slots) < 2:
        return []
    stats = _load_state(cdir, "train_exact" if s.options.exact else "train", s,
                        resolve_device(device))
    rows = []
    folds = split_folds(stats, n_folds_of(s))
    for j, slot in enumerate(layout.slots[1:], 1):
        metrics, _, levels = measure_with_precision([layout.slot_stats(f, j) for f in folds], None, None, None,
                                                    min_count, backend, profile=profile.value, cdnv_power=cdnv_power)
        row = {**head_row, **{k: metrics.get(k) for k in keys}, "layer": int(slot), "head": False}
        if conv is not None:
            conv.extend({"model": row["model"], "checkpoint": row["checkpoint"], "layer": int(slot), **lv}
                        for lv in levels)
        row.pop("per_token", None)
        rows.append(row)
    return rows


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


def measure_collection(
    cdir: str | Path,
    *,
    min_count: int | None = None,
    cdnv_power: float | None = None,
    backend: str = "auto",
    device: str = "auto",
    per_token: bool = True,
    profile: str = "canonical",
    conv: list | None = None,
) -> tuple[dict, object | None, list[str]]:
    """(CSV row, per-token DataFrame or None, notes) of one collect output dir; the head row's
    convergence rows (lcfast.pipeline.convergence) are appended to `conv` when given."""
    from lcfast.pipeline.collect.folds import merge_all, split_folds, split_ncc
    from lcfast.pipeline.convergence import measure_with_precision, row_keys

    profile = MetricProfile.parse(profile)
    cdnv_power = profile.cdnv_power(cdnv_power)
    keys = row_keys(profile.value)

    cdir = Path(cdir)
    s = CollectSummary.read(cdir)
    notes: list[str] = []
    dev = resolve_device(device)
    stats = _load_state(cdir, "train", s, dev)
    if s.options.exact:
        # the exact second pass has the same counts and means, and σ²_c = Σ‖h − μ_c‖²/n_c directly
        stats = _load_state(cdir, "train_exact", s, dev)
    ncc = _load_state(cdir, "val", s)
    layout = _layout(cdir, s)
    K = n_folds_of(s)
    folds, ncc_folds = split_folds(stats, K), split_ncc(ncc, K)
    if layout is not None:  # --layers / --classes: the head slot, over the kept classes
        folds = [layout.slot_stats(f, 0) for f in folds]
        if layout.class_ids is not None:
            ncc_folds = [_compact_ncc(f, layout.class_ids) for f in ncc_folds]
    stats = merge_all(folds) if K > 1 else folds[0]
    collect_mc = int(s.options.min_count)
    mc = collect_mc if min_count is None else int(min_count)
    if mc < 1:
        raise UsageError(f"--min-count {mc}: must be ≥ 1")
    if mc != collect_mc:
        notes.append(
            f"{s.model}/{s.checkpoint}: NC4 was collected with --min-count {collect_mc}, not {mc}: "
            f"{'hits/misses' if profile is MetricProfile.PAPER else 'nc4_agreement'} left empty "
            "(recollect with the same --min-count)"
        )
        ncc_folds = None
    n_kept = int((stats.counts >= mc).sum())
    if n_kept < 2:
        raise DataError(
            f"--min-count {mc}: {n_kept} class{'' if n_kept == 1 else 'es'} of {cdir} "
            f"{'has' if n_kept == 1 else 'have'} "
            f"≥ {mc} train samples (most frequent: {int(stats.counts.max())}); "
            "the NC metrics need at least 2 kept classes"
        )
    W, b = _load_head(s, cdir)
    ids = layout.class_ids if layout is not None else None
    if ids is not None:
        W, b = W[ids], (b[ids] if b is not None else None)
    W = W.to(dev)
    b = b.to(dev) if b is not None else None
    decode = token_decoder(s.tokenizer) if per_token else None
    if decode is not None and ids is not None:
        decode = (lambda f: lambda i: f(int(ids[int(i)])))(decode)
    if per_token and decode is None:
        notes.append(f"{s.model}/{s.checkpoint}: no tokenizer.json beside the shards: token strings left empty")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics, table, levels = measure_with_precision(folds, W, b, ncc_folds, mc, backend, profile=profile.value,
                                                        cdnv_power=cdnv_power, decode=decode, table=per_token)
    notes += [f"{s.model}/{s.checkpoint}: {' '.join(str(w.message).split())}" for w in caught]
    metrics = {k: metrics.get(k) for k in keys}
    if table is not None and ids is not None:
        table["id"] = ids[torch.from_numpy(table["id"].to_numpy(copy=True))].numpy()

    run_dir = Path(s.source.path)
    rec = run_metrics(run_dir, s.epoch) if s.source.kind == "run" else {}
    vp = s.val_pass
    if rec:
        vl, va, ppl = rec.get("val_loss"), rec.get("val_acc"), rec.get("perplexity")
        if ppl is None and isinstance(vl, (int, float)):
            ppl = math.exp(vl)
    else:
        vl, va, ppl = vp.loss, vp.acc, vp.perplexity
        if s.source.kind == "run":
            notes.append(f"{s.model}/{s.checkpoint}: no metrics.jsonl record for epoch {s.epoch}: "
                         "val_* from collect's val pass")
    row = {
        "model": s.model,
        "checkpoint": s.checkpoint,
        "n_params": s.n_params,
        "layers": s.layers,
        "width": s.width,
        "epochs": s.epoch,
        "seed": s.seed,
        "val_loss": vl,
        "val_acc": va,
        "perplexity": ppl,
        "profile": profile.value,
        **metrics,
        "heads": s.heads,
        "context": s.context,
        "min_count": mc,
        "cdnv_power": cdnv_power,
        "exact": bool(s.options.exact),
        "collect_val_loss": vp.loss,
        "train_tokens": s.pass_tokens("train"),
        "val_tokens": s.pass_tokens("val"),
        "model_fingerprint": s.model_fingerprint,
        "collect_dir": str(cdir),
    }
    if layout is not None and len(layout.slots) > 1:  # the head row of a per-layer collection
        row["layer"], row["head"] = layout.head_layer, True
        if layout.head_layer is None:
            notes.append(f"{s.model}/{s.checkpoint}: the LM head's input is not any hidden_states[i]: "
                         "its row has no layer")
    if ids is not None:
        row["classes"] = f"top:{int(ids.numel())}"
    if s.revision is not None:  # a hub model's revision (a training history): beside the checkpoint
        row = with_revision(row, s.revision)
    if conv is not None:
        conv.extend({"model": row["model"], "checkpoint": row["checkpoint"], "layer": row.get("layer"), **lv}
                    for lv in levels)
    return row, table, notes


def with_revision(row: dict, rev: str) -> dict:
    """`row` with `revision` (the hub cache's revision as named: main, step1000, a commit hash) and
    `step` (N of a stepN revision, else empty) right after `checkpoint`, from collect.json."""
    from lcfast.hub import parse_step

    out = {}
    for k, v in row.items():
        out[k] = v
        if k == "checkpoint":
            out["revision"], out["step"] = rev, parse_step(rev)
    return out


def output_name(row: dict) -> str:
    return _SAFE.sub("_", f"{row['model']}_{row['checkpoint']}")


def measure(
    paths: Iterable[str | Path],
    out_dir: str | Path,
    *,
    min_count: int | None = None,
    cdnv_power: float | None = None,
    backend: str = "auto",
    device: str = "auto",
    console=None,
    progress: bool = True,
    profile: str = "canonical",
    context_orders: int | None = None,
):
    """Measure every collection under `paths`; writes measurements.csv + per_token/*.parquet +
    per_class.parquet (context entropy at orders 1..`context_orders`, default 3; 0: no per-class table).
    `profile`: "canonical" (default) or "paper" (docs/metrics.md); `cdnv_power` defaults to the
    profile's (1, or 2 — the only one the paper profile accepts)."""
    from lcfast.io import staged
    from lcfast.pipeline.per_class import DEFAULT_ORDERS, MAX_ORDERS, PER_CLASS_FILE

    profile = MetricProfile.parse(profile, "--profile")
    if cdnv_power is not None:
        cdnv_power = validate.number("--cdnv-power", cdnv_power, min=0, min_open=True, max=validate.CDNV_POWER_MAX)
    if profile is MetricProfile.PAPER and cdnv_power is not None and cdnv_power != 2:
        raise UsageError(f"--cdnv-power {cdnv_power}: --profile paper defines cdnv with power 2 (‖μ_c − μ_c′‖⁴)")
    if min_count is not None:
        min_count = validate.integer("--min-count", min_count, min=1)
    orders = DEFAULT_ORDERS if context_orders is None else validate.integer("--context-orders", context_orders,
                                                                           min=0, max=MAX_ORDERS)
    cdirs = find_collections(list(paths))
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    with staged() as st:  # measurements.csv and the per-token tables are published together, when all are done
        df, notes = _measure_into(st, cdirs, out, min_count=min_count, cdnv_power=cdnv_power, backend=backend,
                                  device=device, console=console, progress=progress, profile=profile, orders=orders)
    stale = out / PER_CLASS_FILE
    if not df.attrs.get("per_class_written") and stale.is_file():
        # an earlier measure's table beside these measurements would be analysed as theirs
        stale.unlink()
        notes.append(f"removed {stale}: the per-class table of an earlier measurement (none was made this time)")
    if notes and console is not None:
        for n in notes:
            console.print(f"[yellow]note:[/] {n}")
    df.attrs["notes"] = notes
    return df


def _measure_into(st, cdirs, out: Path, *, min_count, cdnv_power, backend, device, console, progress, profile,
                  orders: int = 0):
    import pandas as pd

    from lcfast.pipeline.per_class import PER_CLASS_FILE, ShardEntropy, collection_frame

    rows, notes, classes, conv = [], [], [], []
    entropy = ShardEntropy(orders) if orders else None
    names: dict[str, int] = {}
    pbar = task = None
    if progress:
        from lcfast.progress import progress_bar

        pbar = progress_bar(unit="checkpoints", fields=("what",), console=console)
        pbar.start()
        task = pbar.add_task("measure", total=len(cdirs), what="")
    try:
        for cdir in cdirs:
            if pbar is not None:  # which collection: model/checkpoint (RUN/collect/epoch_K) or the folder's name
                p = Path(cdir)
                pbar.update(task, what=f"{p.parent.parent.name}/{p.name}" if p.parent.name == "collect" else p.name)
            here: list[dict] = []
            row, table, n = measure_collection(cdir, min_count=min_count, cdnv_power=cdnv_power, backend=backend,
                                               device=device, profile=profile, conv=here)
            notes.extend(n)
            key = f"{row['model']}/{row['checkpoint']}"
            if key in names:  # the same model/checkpoint name twice (two sweeps, two --out): tell them apart
                names[key] += 1
                row["model"] = f"{row['model']}~{names[key]}"
                notes.append(f"{cdir}: renamed to {row['model']} "
                             "(another collection has the same model/checkpoint name)")
            else:
                names[key] = 0
            if table is not None:
                st.write_bytes(out / "per_token" / f"{output_name(row)}.parquet", _parquet_bytes(table))
                row["per_token"] = f"per_token/{output_name(row)}.parquet"
                if entropy is not None:
                    try:
                        frame, more = collection_frame(cdir, row, table, entropy)
                        classes.append(frame)
                        notes.extend(more)
                    except DataError as e:  # the shard moved: the measurement stands without the per-class rows
                        notes.append(f"{row['model']}/{row['checkpoint']}: no per-class rows: {e}")
            more = layer_rows(cdir, row, min_count=row["min_count"], cdnv_power=cdnv_power, backend=backend,
                              device=device, profile=profile, conv=here)
            for c in here:  # (the row's model name, renamed or not)
                c["model"] = row["model"]
            conv.extend(here)
            rows.extend(sorted([row, *more], key=lambda r: (r.get("layer") is None, r.get("layer") or 0)))
            if pbar is not None:
                pbar.advance(task)
    finally:
        if pbar is not None:
            pbar.stop()
    df = pd.DataFrame(rows)
    if "step" in df.columns:  # an integer column with gaps (rows of other models, revisions not named stepN)
        df["step"] = pd.to_numeric(df["step"], errors="coerce").astype("Int64")
    if "layer" in df.columns:  # one row per (model, checkpoint, layer): the layer beside the checkpoint
        df["layer"] = df["layer"].astype("Int64")
        df = df[["model", "checkpoint", "layer"] + [c for c in df.columns if c not in ("model", "checkpoint", "layer")]]
    st.write_bytes(out / "measurements.csv", df.to_csv(index=False).encode("utf-8"))
    from lcfast.pipeline.convergence import CONVERGENCE_FILE, convergence_frame

    st.write_bytes(out / CONVERGENCE_FILE, convergence_frame(conv).to_csv(index=False).encode("utf-8"))
    if classes:
        st.write_bytes(out / PER_CLASS_FILE, _parquet_bytes(pd.concat(classes, ignore_index=True)))
    df.attrs["per_class_written"] = bool(classes)
    return df, notes


def _parquet_bytes(table) -> bytes:
    import io

    buf = io.BytesIO()
    table.to_parquet(buf, index=False)
    return buf.getvalue()


def print_measure_table(df, console, columns: list[str] | None = None) -> None:
    """The headline columns of measurements.csv on `console`, never cut: split into parts that fit
    (each repeating model and checkpoint) when the console is narrow."""
    from lcfast.tables import print_table

    heads = ("nc1_cdnv", "nc2_norm_cov", "nc2_interference_mean", "gnc2_log_var", "nc3_dual_cos_mean", "nc4_agreement")
    if "nc1_cdnv" not in df.columns:  # --profile paper
        heads = ("cdnv", "norms_var", "interfere_mean", "log_kern_var", "simcos_mean", "hits", "misses")
    cols = columns or [c for c in ("model", "checkpoint", "layer", "n_params", "val_loss") + heads if c in df.columns]
    keys = sum(c in cols for c in ("model", "checkpoint", "layer"))
    rows = [[_fmt(r[c]) for c in cols] for _, r in df.iterrows()]
    print_table(console, "lcfast measure", cols, rows, keys=keys,
                justify={c: "right" for c in cols if c not in ("model", "checkpoint")})


def _fmt(v) -> str:
    if v is None or type(v).__name__ == "NAType":  # pandas' missing integer (a head row without a layer)
        return "-"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v) if not math.isnan(v) else "-"
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.3e}"
        return f"{v:.4f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def per_class(
    paths: str | Path | Iterable[str | Path],
    orders: int = DEFAULT_ORDERS,
    *,
    min_count: int | None = None,
    cdnv_power: float | None = None,
    backend: str = "auto",
    device: str = "auto",
):
    """The per-class table of every collection under `paths` (run dirs, collect output dirs, folders of runs).

    One row per (model, checkpoint, class) for every class that is a label of the collection's train
    shard or is kept by the measurement, exactly once. Columns: model, checkpoint, epochs, n_params,
    then `lcfast.metrics.per_class.PER_CLASS_COLUMNS` (id int64, token str, kept bool, n int64,
    shard_count int64), ctx_entropy_1..`orders` (float64 bits, NaN where the class never has a
    context that long), norm, var, var_rel, cdnv_nearest (float64), nearest (Int64 token id),
    dual_cos, nc4_hits, nc4_total, nc4_hit_rate — the NC columns NaN (counts 0) for classes not kept.
    `.attrs["notes"]` says what is approximate. Canonical profile; `min_count`, `cdnv_power` as in
    `lcfast measure`.
    """
    import pandas as pd

    orders = validate.integer("--context-orders", orders, min=1, max=MAX_ORDERS)
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    entropy = ShardEntropy(orders)
    frames, notes = [], []
    for cdir in find_collections(items):
        row, table, n = measure_collection(cdir, min_count=min_count, cdnv_power=cdnv_power, backend=backend,
                                           device=device)
        df, more = collection_frame(cdir, row, table, entropy)
        frames.append(df)
        notes += n + more
    out = pd.concat(frames, ignore_index=True)
    out.attrs["notes"] = notes
    return out
