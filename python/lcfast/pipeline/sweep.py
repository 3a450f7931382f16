"""A grid of training runs (layers x widths x epochs x seeds) in one folder: RUNS/L{l}_W{w}_E{e}_S{s}.

Each run is an ordinary `train_run`: a finished run is skipped (after checking that its config matches
the requested one), an interrupted run resumes. After every run RUNS/sweep.json and RUNS/sweep.csv
are rewritten with one row per run finished so far.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from lcfast import validate
from lcfast.dist import resolve_device
from lcfast.errors import UsageError
from lcfast.io import atomic_write_json, atomic_write_text
from lcfast.pipeline.train import check_memory, open_data, train_run
from lcfast.pipeline.train_config import TrainConfig

SUMMARY_COLUMNS = ["name", "layers", "width", "epochs", "seed", "status", "n_params", "step", "train_loss",
                   "val_loss", "val_acc", "perplexity", "tokens_per_s", "elapsed", "model_fingerprint", "path"]


def run_name(layers: int, width: int, epochs: int, seed: int) -> str:
    return f"L{layers}_W{width}_E{epochs}_S{seed}"


def _grid(flag: str, values: Iterable[int]) -> list[int]:
    vals = list(values)
    if not vals:
        raise UsageError(f"{flag} needs at least one value")
    vals = [validate.seed(flag, v) if flag == "--seeds" else validate.integer(flag, v, min=1) for v in vals]
    return list(dict.fromkeys(vals))  # de-duplicated, order kept


def run_sweep(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    layers: Iterable[int],
    widths: Iterable[int],
    epochs: Iterable[int],
    seeds: Iterable[int] = (0,),
    heads: int | None = TrainConfig.heads,
    context: int = TrainConfig.context,
    batch_size: int = TrainConfig.batch_size,
    lr: float = TrainConfig.lr,
    weight_decay: float = TrainConfig.weight_decay,
    device: str | None = "auto",
    steps_per_epoch: int | None = TrainConfig.steps_per_epoch,
    eval_tokens: int = TrainConfig.eval_tokens,
    compile: bool = False,
    progress: bool = True,
    window_size: int = TrainConfig.window_size,
    on_run: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Train every (layers, width, epochs, seed) of the grid into out_dir; returns one dict per run:
    name, path, layers, width, epochs, seed, status ("trained" | "skipped"), and the final metrics.
    heads=None picks lcfast.pipeline.train.default_heads(width) per width. `on_run(row)` is called
    after each run. The hyper-parameters and their defaults: lcfast.pipeline.train_config.TrainConfig."""
    grid = [(l, w, e, s) for l in _grid("--layers", layers) for w in _grid("--widths", widths)
            for e in _grid("--epochs", epochs) for s in _grid("--seeds", seeds)]
    # every run's arguments (and its memory need) are checked before the sweep folder is created
    train, _val = open_data(data_dir)
    dev = resolve_device(device)
    for l, w, e, s in grid:
        hp = TrainConfig(layers=l, width=w, heads=heads, context=context, epochs=e, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, seed=s, steps_per_epoch=steps_per_epoch, eval_tokens=eval_tokens,
                         window_size=window_size).checked()
        check_memory(vocab_size=int(train.vocab_size), layers=l, width=w, heads=hp.heads, context=hp.context,
                     window_size=hp.window_size, batch_size=hp.batch_size, world=1, device=dev)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for i, (l, w, e, s) in enumerate(grid):
        name = run_name(l, w, e, s)
        if progress:
            from rich.console import Console

            Console(stderr=True).print(f"[bold]sweep {i + 1}/{len(grid)}[/bold] {name}")
        m = train_run(data_dir, out / name, layers=l, width=w, heads=heads, context=context, epochs=e,
                      batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=s, device=device,
                      steps_per_epoch=steps_per_epoch, eval_tokens=eval_tokens, compile=compile,
                      progress=progress, window_size=window_size)
        row = {"name": name, "path": str(out / name), "layers": l, "width": w, "epochs": e, "seed": s,
               "status": "skipped" if m.get("already_complete") else "trained",
               **{k: v for k, v in m.items()
                  if k not in ("run_dir", "already_complete", "resumed_from_epoch", "epoch")}}
        rows.append(row)
        _write_summary(out, rows)
        if on_run is not None:
            on_run(row)
    return rows


def _write_summary(out: Path, rows: list[dict]) -> None:
    atomic_write_json(out / "sweep.json", {"runs": rows})
    buf = io.StringIO()
    wr = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore")
    wr.writeheader()
    wr.writerows(rows)
    atomic_write_text(out / "sweep.csv", buf.getvalue())


__all__ = ["run_sweep", "run_name", "SUMMARY_COLUMNS"]
