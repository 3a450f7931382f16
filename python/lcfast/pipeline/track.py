"""Neural collapse tracked during training (`lcfast train --track-nc [--track-every N]`).

`TrainTracker` is `lcfast train`'s own: it knows epochs, adds NC4 from the epoch-end evaluation and
resumes at epoch checkpoints. Any other loop (a transformers Trainer included) uses the public
`lcfast.NCTracker` (lcfast/tracking.py), which reads the features through hooks instead.

Every training step's forward already computes the LM head's input h (the final-layer-norm
features) for its batch. With tracking on, the model returns them beside the logits
(`GPTNeo.forward(idx, return_features=True)`: no second forward), and `TrainTracker` feeds them,
detached, with the batch's labels to a `ClassStats` (one-pass float64, the same accumulators as
`lcfast collect`; the Triton kernel on CUDA through backend "auto", the fused loop on CPU). An
*interval* is `every` optimizer steps; it also ends at every epoch's end, so intervals never
straddle a checkpoint (see "Resume"). When an interval ends:

1. the accumulators are all-reduced over the ranks (torchrun), once;
2. at an epoch's end only, the evaluation that training runs anyway also feeds its features to an
   `NCCStats` built from the interval's class means and the current LM head W (b: none for GPT-Neo)
   — the NC4 decisions, summed over the ranks;
3. `lcfast.metrics.measure.measure_stats` computes every canonical metric from the accumulators,
   the current W and (at epoch ends) the NC4 decisions, and rank 0 appends one row to
   RUN/nc_track.csv: `TRACK_COLUMNS` = step, tokens (trained so far, all ranks), epoch (step /
   steps per epoch: a fraction inside an epoch), interval_steps, train_loss (mean over the
   interval's steps), val_loss (epoch ends only; empty elsewhere), then `CANONICAL_KEYS`
   (nc4_agreement empty where there was no evaluation);
4. the accumulators are reset.

What the numbers are: the features of one interval come from weights that move while the interval
runs (each batch is seen by the weights *before* its optimizer step), W is the one at the
interval's end, and the samples are the interval's random training windows, not every position of
the train shard. Tracked statistics are therefore not those of a frozen checkpoint; the README
("Tracking neural collapse during training") quantifies the gap against `lcfast collect` of the
same checkpoints.

Resume: intervals are counted inside each epoch (an interval ends after steps every, 2·every, …
of the epoch and at its last step), so a checkpoint (written at each epoch's end) never falls
inside an interval and no partial-interval state has to be saved. A resumed run reads
nc_track.csv, keeps the rows up to its checkpoint's step (a killed run may have written rows past
it), and recomputes the rest: training resumes bit-identically on the same device, so the file
ends byte-identical to an uninterrupted run's. The file is rewritten whole at every interval
through `lcfast.io.atomic_write_text` (temporary file, fsync, rename): a reader, or a run killed
at any moment, sees the previous or the new version, never half of one. An unfinished tracked run
resumed without --track-nc is refused (`lcfast.pipeline.train`): its file would keep rows past the
checkpoint and miss the epochs still to train.
"""

from __future__ import annotations

import csv
import io
import math
import time
import warnings
from pathlib import Path

import torch

from lcfast import dist
from lcfast.errors import DataError, UsageError
from lcfast.metrics.measure import CANONICAL_KEYS, measure_stats
from lcfast.stats.classstats import ClassStats
from lcfast.stats.ncc import NCCStats

TRACK_FILE = "nc_track.csv"
ID_COLUMNS = ["step", "tokens", "epoch", "interval_steps", "train_loss", "val_loss"]
TRACK_COLUMNS = ID_COLUMNS + list(CANONICAL_KEYS)


def check_every(track_nc: bool, every: int | None, steps_per_epoch: int) -> int | None:
    """The interval in optimizer steps (None: tracking off). Default: one interval per epoch.
    UsageError for --track-every without --track-nc and for an interval longer than an epoch
    (intervals end at every epoch's end, where the checkpoint is written)."""
    from lcfast import validate

    if every is not None:
        every = validate.integer("--track-every", every, min=1)
    if not track_nc:
        if every is not None:
            raise UsageError(f"--track-every {every}: only with --track-nc")
        return None
    if every is None:
        return steps_per_epoch
    if every > steps_per_epoch:
        raise UsageError(f"--track-every {every}: longer than an epoch ({steps_per_epoch} steps); intervals end at "
                         f"every epoch's end (the checkpoint), so use at most {steps_per_epoch}")
    return every


def _cell(v) -> str:
    """CSV text of a value: '' for None, repr for floats (round-trips exactly), str otherwise."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ""
    return str(v)


def _csv_text(rows: list[list[str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(TRACK_COLUMNS)
    w.writerows(rows)
    return buf.getvalue()


def read_track_rows(path: Path) -> list[list[str]]:
    """The rows (as CSV cells) of an nc_track.csv written by this lcfast; DataError naming the file
    when it is something else."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        from lcfast.io import os_reason

        raise DataError(f"{path}: cannot read ({os_reason(e)})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text file; move it away to track this run") from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or rows[0] != TRACK_COLUMNS:
        raise DataError(f"{path}: not an nc_track.csv of this lcfast (its columns differ); "
                        "move it away to track this run")
    body = rows[1:]
    for i, r in enumerate(body, 2):
        if len(r) != len(TRACK_COLUMNS) or not r[0].isdigit():
            raise DataError(f"{path}: line {i} is malformed; move the file away to track this run")
    return body


class TrainTracker:
    """Class statistics of the training features, one row of nc_track.csv per interval.

    TrainTracker(out_dir, n_classes, dim, device, every, steps_per_epoch, tokens_per_step, write=True)
    update(h [B, T, d] or [N, d], y [B, T] or [N], loss)   after each optimizer step (detached inputs)
    due(i)                  whether the interval ends after step i (0-based) of the epoch
    reduce()                all-reduce the interval's accumulators (every rank; a no-op for one)
    begin_eval(W, b)        at an epoch's end: NC4 decisions against the interval's means and W, b …
    eval_features(h, y)     … fed with the evaluation's features [n, d] and labels [n] (this rank's)
    finish(step, W, b, val_loss=None) -> row dict   measure, append, write, reset (every rank)
    take_seconds()          (loop, epoch end): wall seconds spent in the above since the last call —
                            in the training loop (updates, mid-epoch rows) and at the epoch's end
                            (its NC4 decisions and row): what tracking costs
    `write` False on ranks other than 0 (they accumulate and reduce but never write)."""

    def __init__(self, out_dir, n_classes: int, dim: int, device: torch.device, every: int, steps_per_epoch: int,
                 tokens_per_step: int, *, write: bool = True, backend: str = "auto") -> None:
        self.path = Path(out_dir) / TRACK_FILE
        self.C, self.d, self.device = int(n_classes), int(dim), device
        self.every, self.spe, self.tokens_per_step = int(every), int(steps_per_epoch), int(tokens_per_step)
        self.write, self.backend = write, backend
        self.rows: list[list[str]] = []
        self.seconds = [0.0, 0.0]  # (in the training loop, at the epoch's end)
        self._ncc: NCCStats | None = None
        self._at_end = False
        self._reset()

    def _reset(self) -> None:
        # "skip": a non-finite feature never stops training from here; a diverging run is stopped
        # by the non-finite loss check, which names --lr
        self.stats = ClassStats(self.C, self.d, device=self.device, nonfinite="skip")
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.steps = 0

    def resume(self, step: int) -> None:
        """Continue the file of a run (re)starting at global `step`: keep its rows up to that step (a
        killed run may have written rows past its last checkpoint; they are recomputed, identically;
        at step 0 the file of an attempt killed before its first checkpoint is emptied). A file that
        is not an nc_track.csv is refused (DataError naming it), never overwritten."""
        if not self.write or not self.path.exists():
            return
        rows = read_track_rows(self.path)
        keep = [r for r in rows if int(r[0]) <= step]
        self.rows = keep
        if len(keep) != len(rows):
            from lcfast.io import atomic_write_text

            atomic_write_text(self.path, _csv_text(keep))

    def due(self, i: int) -> bool:
        return (i + 1) % self.every == 0 or i == self.spe - 1

    def take_seconds(self) -> tuple[float, float]:
        t, self.seconds = tuple(self.seconds), [0.0, 0.0]
        return t

    def _add(self, t0: float) -> None:
        self.seconds[self._at_end] += time.perf_counter() - t0

    @torch.no_grad()
    def update(self, h: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> None:
        t0 = time.perf_counter()
        self.stats.update(h.detach().reshape(-1, self.d), y.reshape(-1), backend=self.backend)
        self.loss_sum += loss.detach().double()
        self.steps += 1
        self._add(t0)

    def reduce(self) -> None:
        if dist.is_initialized() and dist.world_size() > 1:
            t0 = time.perf_counter()
            with dist.collective("the sum of a tracking interval's class statistics"):
                self.stats.all_reduce()
            dist.all_reduce_sum(self.loss_sum, "the sum of a tracking interval's loss")
            self._add(t0)

    def begin_eval(self, W: torch.Tensor, b: torch.Tensor | None = None) -> None:
        """NC4 decisions of the coming evaluation against the interval's class means (kept: seen
        ≥ once) and the current W, b; none when the interval kept no feature (all non-finite)."""
        t0 = time.perf_counter()
        self._ncc, self._at_end = None, True
        kept = (self.stats.counts >= 1).cpu()
        if bool(kept.any()):
            means = self.stats.means.index_select(0, kept.nonzero().squeeze(1).to(self.stats.means.device))
            self._ncc = NCCStats(self.C, means, kept, W.detach(), None if b is None else b.detach())
        self._add(t0)

    @torch.no_grad()
    def eval_features(self, h: torch.Tensor, y: torch.Tensor) -> None:
        """One evaluation batch's features [n, d] and labels [n] (its valid positions)."""
        if self._ncc is not None:
            t0 = time.perf_counter()
            self._ncc.update(h, y, backend=self.backend)
            self._add(t0)

    def finish(self, step: int, W: torch.Tensor, b: torch.Tensor | None = None,
               val_loss: float | None = None) -> dict | None:
        """Measure the interval that ends at global `step` and (rank 0) append its row; reset. Returns
        the row (None on other ranks). Call `reduce()` first (at an epoch's end: `begin_eval`, then
        the evaluation through `eval_features`). Every rank calls it (the NC4 decisions are summed)."""
        t0 = time.perf_counter()
        ncc, self._ncc = self._ncc, None
        if ncc is not None and dist.is_initialized() and dist.world_size() > 1:
            with dist.collective("the sum of a tracking interval's NC4 decisions"):
                ncc.all_reduce()
        row = None
        if self.write:
            metrics = {}
            if self.stats.n_samples > 0:  # (0: every feature of the interval was non-finite)
                with warnings.catch_warnings():
                    # degenerate intervals (one class seen, …) leave metrics empty; the warning says
                    # why in `lcfast measure`, not on every interval of a training run
                    warnings.simplefilter("ignore")
                    metrics = measure_stats(self.stats, W.detach(), None if b is None else b.detach(), ncc,
                                            backend=self.backend)
            world = dist.world_size() if dist.is_initialized() else 1
            row = {
                "step": int(step),
                "tokens": int(step) * self.tokens_per_step,
                "epoch": step / self.spe,
                "interval_steps": self.steps,
                "train_loss": float(self.loss_sum) / max(1, self.steps * world),
                "val_loss": val_loss,
                **{k: metrics.get(k) for k in CANONICAL_KEYS},
            }
            self.rows.append([_cell(row[c]) for c in TRACK_COLUMNS])
            from lcfast.io import atomic_write_text

            atomic_write_text(self.path, _csv_text(self.rows))
        self._reset()
        self._add(t0)
        self._at_end = False
        return row

    @property
    def last_step(self) -> int | None:
        return int(self.rows[-1][0]) if self.rows else None


__all__ = ["TRACK_COLUMNS", "TRACK_FILE", "TrainTracker", "check_every", "read_track_rows"]
