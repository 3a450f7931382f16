"""One pass of `lcfast collect` (lcfast.pipeline.collect): windows of a shard through the model into
an accumulator, resumable.

`run_pass` finds this process's state of the pass (`lcfast.pipeline.collect.state`: the pass's own,
or a torchrun rank's / `--shard` part's), refuses one written for anything else, continues it with
the same batches (bit-identical totals) or reuses it when finished, saves every `save_every_s`
seconds / `save_every_windows` windows, and under torchrun sums the ranks' accumulators and
counters into the pass's state, which rank 0 writes. The forward, the statistics and the data are
timed separately (`_Timer`, CUDA synchronised), so collect.json can say what the statistics cost
on top of the model forward.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from lcfast import dist
from lcfast.data.datadir import DataDir
from lcfast.errors import DataError
from lcfast.model.features import WindowPlan, plan_windows, windows_by_id
from lcfast.model.sources import ModelSource
from lcfast.pipeline.collect.folds import fold_rows
from lcfast.pipeline.collect.layers import SlotLayout
from lcfast.pipeline.collect.options import CollectOptions
from lcfast.pipeline.collect.state import (
    PASS_FILES,
    STATE_VERSION,
    check_state,
    part_path,
    read_progress,
    read_state_meta,
)

if TYPE_CHECKING:  # annotations only: neither is needed to run a pass
    from rich.progress import Progress

    from lcfast.data.shards import TokenShard
    from lcfast.model.gptneo import GPTNeo
    from lcfast.model.hf import HFCausalLM

_TIMINGS = ("forward_s", "stats_s", "data_s", "wall_s", "forward_cpu_s", "stats_cpu_s")


class _Timer:
    """Accumulates the wall time of a code block (CUDA synchronised on both ends) and, on CPU, the
    process CPU time it used — a fairer measure when other programs compete for the cores."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.total = 0.0
        self.cpu = 0.0

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
        self._t0 = time.perf_counter()
        self._c0 = time.process_time()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
        self.total += time.perf_counter() - self._t0
        self.cpu += time.process_time() - self._c0
        return False


@dataclass
class PassJob:
    """One checkpoint's collection once set up (lcfast.pipeline.collect): what its passes share."""

    src: ModelSource
    out_dir: Path
    opts: CollectOptions
    device: torch.device
    dtype: torch.dtype
    paths: DataDir
    shards: dict[str, TokenShard]  # "train", "val"
    model: GPTNeo | HFCausalLM  # on `device`, in evaluation mode
    model_fp: str
    facts: dict  # lcfast.model.sources.model_facts, `context` the window length
    T: int  # window length
    head: tuple[torch.Tensor, torch.Tensor | None]  # LM head W [C, d], b [C] or None
    layout: SlotLayout
    layout_want: dict[str, str | None]  # layout and dtype the train states were written for (None: absent)
    est: int  # bytes the statistics need
    rank: int  # this process's part: torchrun rank or --shard index
    world: int
    grouped: bool  # a torch.distributed group: all-reduce at the end of each pass
    t_start: float
    on_save: Callable[[str, int, int], None] | None = None
    on_progress: Callable[[str, int, int], None] | None = None
    pbar: Progress | None = None  # lcfast.progress.progress_bar, started by the reporting process
    partial: dict[str, Path] = field(default_factory=dict)  # --shard: passes of which this process wrote only its part
    notes: list[str] = field(default_factory=list)  # what could not be checked, said once the job is set up
    n_folds: int = 1  # collect --folds K: K folds of windows side by side in each accumulator
    plans: dict = field(default_factory=dict)  # shard path -> its WindowPlan (pass_plan)

    @property
    def C(self) -> int:
        return int(self.facts["n_classes"])


@dataclass
class PassResult:
    kind: str
    windows: int
    tokens: int
    forward_s: float
    stats_s: float
    data_s: float
    wall_s: float
    resumed_from: int
    skipped_nonfinite: int
    val_nll: float = 0.0
    val_correct: int = 0
    reused: bool = False
    forward_cpu_s: float = 0.0
    stats_cpu_s: float = 0.0
    cuda_timed: bool = False

    @classmethod
    def reused_from(cls, kind: str, windows: int, start: int, prior: dict, cuda_timed: bool) -> PassResult:
        """A pass finished earlier: its counters and timings as its state saved them."""
        r = cls(kind, windows, int(prior.get("tokens", 0)), 0.0, 0.0, 0.0, 0.0, start,
                int(prior.get("skipped_nonfinite", 0)), float(prior.get("val_nll", 0.0)),
                int(prior.get("val_correct", 0)), reused=True, cuda_timed=cuda_timed)
        for k in _TIMINGS:
            setattr(r, k, float(prior.get(k, 0.0)))
        return r

    def counters(self) -> dict:
        """The `progress` metadata of a finished pass's state: counters, then timings."""
        return {"tokens": self.tokens, "skipped_nonfinite": self.skipped_nonfinite, "val_nll": self.val_nll,
                "val_correct": self.val_correct, **{k: getattr(self, k) for k in _TIMINGS}}

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["tokens_per_s"] = self.tokens / self.wall_s if self.wall_s > 0 else None
        d["stats_share_of_forward"] = self.stats_s / self.forward_s if self.forward_s > 0 else None
        d["stats_share_of_forward_cpu"] = (
            self.stats_cpu_s / self.forward_cpu_s if self.forward_cpu_s > 0 and not self.cuda_timed else None
        )
        del d["cuda_timed"]
        return d


def pass_plan(job: PassJob, shard) -> WindowPlan:
    """The windows a pass over `shard` visits (all, or the --max-tokens sample of --seed) and their
    folds: the same for every pass over that shard, every rank and every resumed run."""
    key = str(shard.path)
    if key not in job.plans:
        job.plans[key] = plan_windows(shard, job.T, job.opts.max_tokens, job.opts.seed, job.n_folds)
    return job.plans[key]


def _forward(model, x: torch.Tensor, mask: torch.Tensor, hidden_ids: list) -> tuple[torch.Tensor, list]:
    """Head input H [n, d] at the valid positions (`mask` [B, T]) of windows x [B, T], and the chosen
    hidden states there (the same forward)."""
    if hidden_ids:
        H, hidden = model.features_and_hidden(x, hidden_ids)
        return H[mask], [h[mask] for h in hidden]
    return model.features(x)[mask], []


def _val_sums(H: torch.Tensor, y: torch.Tensor, head, to_logits) -> tuple[float, int]:
    """The model's own summed loss and correct predictions at these positions (logits in row chunks)."""
    W, b = head
    nll, correct = 0.0, 0
    for i in range(0, H.shape[0], 8192):
        if to_logits is not None:  # a transformers model: its own logit scale / soft-capping
            logits = to_logits(H[i : i + 8192], W, b)
        else:
            logits = F.linear(H[i : i + 8192].float(), W.float(), None if b is None else b.float())
        yy = y[i : i + 8192]
        nll += float(F.cross_entropy(logits, yy, reduction="sum"))
        correct += int((logits.argmax(dim=1) == yy).sum())
    return nll, correct


def _stats_error(e: DataError, shard, done: int, count: int, label: str, opts: CollectOptions) -> DataError:
    """An accumulator's refusal (non-finite features), naming the shard, the windows and the flag."""
    hint = (" (rerun with --skip-nonfinite to skip and count them)"
            if "non-finite" in str(e) and not opts.skip_nonfinite else "")
    msg = str(e).replace("; pass nonfinite='skip' to drop and count them", "")  # the CLI's hint below
    return DataError(f"{shard.path}: windows {done}..{done + count - 1} of {label}: {msg}{hint}")


def _run_windows(job: PassJob, kind: str, acc, shard, n_windows: int, start: int, batch_size: int,
              save: Callable[[int, dict], None], prior: dict | None = None) -> PassResult:
    """Feed windows [start, n_windows) of `shard` (this process's block) through the model into
    `acc`; save periodically; `job.on_progress(kind, windows done, n_windows)` after every batch.

    Train passes: `acc` is a ClassStats (it skips/counts non-finite rows itself when asked), fed
    through the job's slot layout. Val pass: `acc` is an NCCStats; the same features also give the
    model's val loss/accuracy. `prior` carries the counters of a resumed state."""
    opts, device, model, layout, label = job.opts, job.device, job.model, job.layout, f"{kind} pass"
    hidden_ids = layout.hidden if kind != "val" else []
    remap = layout.remap(device) if kind != "val" else None
    to_logits = getattr(model, "logits", None)
    prior = prior or {}
    fwd, st, dat = _Timer(device), _Timer(device), _Timer(torch.device("cpu"))
    tokens0 = tokens = int(prior.get("tokens", 0))
    skipped_val = int(prior.get("skipped_nonfinite", 0)) if kind == "val" else 0
    nll = float(prior.get("val_nll", 0.0))
    correct = int(prior.get("val_correct", 0))
    t_wall0 = last_save = time.perf_counter()
    since_save = 0
    progress = job.pbar
    task = progress.add_task(label, total=n_windows, completed=start, tps="") if progress is not None else None
    done = start
    plan = pass_plan(job, shard)
    first = plan.block(job.rank, job.world)[0] if n_windows != len(plan) else 0  # this process's share
    folded = job.n_folds > 1
    while done < n_windows:
        count = min(batch_size, n_windows - done)
        with dat:
            ids = plan.ids[first + done : first + done + count]
            x, y, mask = windows_by_id(shard, job.T, ids)  # the windows of lcfast.features
            fold = fold_rows(plan.folds[first + done : first + done + count], mask) if folded else None
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            mask_d = mask.to(device, non_blocking=True)
        with fwd, torch.inference_mode():
            H, hidden = _forward(model, x, mask_d, hidden_ids)
            if kind == "val":
                if opts.skip_nonfinite:
                    finite = torch.isfinite(H).all(dim=1)
                    if not bool(finite.all()):
                        skipped_val += int((~finite).sum())
                        H, y = H[finite], y[finite]
                        if fold is not None:
                            fold = fold[finite.cpu()]
                n, c = _val_sums(H, y, job.head, to_logits)
                nll, correct = nll + n, correct + c
        with st, torch.inference_mode():
            try:
                if kind != "val":
                    layout.update(acc, H, hidden, y, remap, opts.backend, fold=fold)
                elif folded:
                    acc.update(H, y, backend=opts.backend, fold=fold)
                else:
                    acc.update(H, y, backend=opts.backend)
            except DataError as e:
                raise _stats_error(e, shard, done, count, label, opts) from None
        tokens += int(mask.sum())
        done += count
        since_save += count
        if task is not None:
            rate = (tokens - tokens0) / max(time.perf_counter() - t_wall0, 1e-9)
            progress.update(task, completed=done, tps=f"{rate:,.0f} tok/s")
        if job.on_progress is not None:
            job.on_progress(kind, done, n_windows)
        due = (opts.save_every_windows is not None and since_save >= opts.save_every_windows) or (
            time.perf_counter() - last_save >= opts.save_every_s
        )
        if done < n_windows and due:
            save(done, {"tokens": tokens, "skipped_nonfinite": skipped_val, "val_nll": nll, "val_correct": correct})
            last_save = time.perf_counter()
            since_save = 0
    wall = time.perf_counter() - t_wall0
    if task is not None:  # the finished pass as one line (the next pass gets a fresh bar)
        progress.remove_task(task)
        progress.console.print(f"  {label}: {tokens - tokens0:,} positions in {wall:.1f} s, "
                               f"{(tokens - tokens0) / max(wall, 1e-9):,.0f} tok/s", highlight=False)
    skipped = skipped_val if kind == "val" else int(getattr(acc, "skipped", 0))
    return PassResult(kind, n_windows, tokens, fwd.total, st.total, dat.total, wall, start, skipped, nll, correct,
                      forward_cpu_s=fwd.cpu, stats_cpu_s=st.cpu, cuda_timed=device.type == "cuda")


def _state_file(job: PassJob, final: Path, shard, n_total: int, want: dict) -> tuple[Path, int, dict]:
    """(state path, windows, metadata it must have) of this process's share of a pass: the pass's
    own state for a single process (or a pass already summed/merged), else its part's."""
    if job.world == 1:
        return final, n_total, want
    path = part_path(final, job.rank, job.world)
    n_windows = pass_plan(job, shard).block(job.rank, job.world)[1]
    want_here = {**want, "n_windows": str(n_windows), "rank": str(job.rank), "world": str(job.world)}
    if final.exists() and not job.opts.restart:
        meta = read_state_meta(final)
        check_state(final, meta, want)
        if meta.get("windows_done") != meta.get("n_windows"):
            raise DataError(f"{final}: an unfinished single-process state: resume it without torchrun, or --restart")
        return final, n_total, want
    return path, n_windows, want_here


def _resume(path: Path, want: dict, load_acc, opts: CollectOptions) -> tuple[int, object, int, dict]:
    """(windows done, accumulator or None, batch size, counters) of a saved state to continue."""
    if not path.exists() or opts.restart:
        return 0, None, opts.batch_size, {}
    meta = read_state_meta(path)
    check_state(path, meta, want)
    acc = load_acc(path)
    start = int(meta.get("windows_done", "0"))
    batch_size = int(meta.get("batch_size", opts.batch_size))  # same batches as before → bit-identical totals
    return start, acc, batch_size, read_progress(meta, path, "; rerun with --restart")


def pass_want(job: PassJob, kind: str, shard) -> dict[str, str | None]:
    """What a state of pass `kind` over `shard` must have been written for, as far as the options
    and the model decide it before any pass runs (the means a later pass starts from come on top).
    None: the key must be absent (a state of the plain layout, of float32)."""
    want = {
        "lcfast_collect": STATE_VERSION,
        "pass": kind,
        "model_fingerprint": job.model_fp,
        "shard_fingerprint": str(shard.fingerprint),
        "context": str(job.T),
        "n_windows": str(len(pass_plan(job, shard))),
        "max_tokens": str(job.opts.max_tokens or 0),
        # which windows and folds (None: all windows, one fold — what states without these keys hold)
        "seed": str(job.opts.seed) if pass_plan(job, shard).sampled or job.n_folds > 1 else None,
        "folds": str(job.n_folds) if job.n_folds > 1 else None,
        "covariance": str(int(job.opts.covariance and kind != "val")),
    }
    if kind != "train":
        want["min_count"] = str(job.opts.min_count)
    if kind != "val":
        want["layout"] = job.layout_want.get("layout")
    want["dtype"] = job.layout_want.get("dtype")
    return want


def check_saved_states(job: PassJob) -> None:
    """Refuse (DataError naming the file) any state in the output folder that this collection would
    resume or reuse but that was written for other options, before anything is written: a refusal
    found only when its pass begins would come after the earlier passes' saves (and the kept-class
    list) had replaced files of the collection that is there. `--restart` ignores them all."""
    if job.opts.restart:
        return
    for kind, name in PASS_FILES.items():
        if kind == "train_exact" and not job.opts.exact:  # left alone, never read: not this run's to judge
            continue
        want = pass_want(job, kind, job.shards["val" if kind == "val" else "train"])
        paths = [job.out_dir / name]
        if job.world > 1:  # this process's part too (its own window count)
            paths.append(part_path(paths[0], job.rank, job.world))
        for path in paths:
            if path.exists():
                w = want if path == paths[0] else {k: v for k, v in want.items() if k != "n_windows"}
                check_state(path, read_state_meta(path), w)


def run_pass(
    job: PassJob, kind: str, shard, make_acc, load_acc, extra_want: dict[str, str], before_save=None
) -> tuple[object, PassResult]:
    """One pass of `kind` over `shard`, resumed from its state (reused when finished), saved, and
    under torchrun summed over the ranks; returns (accumulator, result). Every rank agrees on each
    step any one of them may fail (`dist.together`), so a failing rank stops them all.
    `before_save()` runs before every save of the pass's state (what must be on disk beside it)."""
    opts = job.opts
    final = job.out_dir / PASS_FILES[kind]
    want = {**pass_want(job, kind, shard), **extra_want}
    n_total = int(want["n_windows"])
    with dist.together():  # this process's state: found, checked, loaded (or a new accumulator)
        path, n_windows, want_here = _state_file(job, final, shard, n_total, want)
        start, acc, batch_size, prior = _resume(path, want_here, load_acc, opts)
        if acc is None:
            acc = make_acc()

    def save(done: int, progress_meta: dict, to: Path = path, meta: dict = want_here) -> None:
        if before_save is not None:
            before_save()
        acc.save(str(to), meta={**{k: v for k, v in meta.items() if v is not None}, "batch_size": str(batch_size),
                                "windows_done": str(done), "progress": json.dumps(progress_meta)})
        if job.on_save is not None:
            job.on_save(kind, done, n_windows)

    if start >= n_windows and (path == final or not job.grouped):  # finished earlier: reuse
        return acc, PassResult.reused_from(kind, n_windows, start, prior, job.device.type == "cuda")
    with dist.together():
        if start >= n_windows:  # this rank's part, finished before an interrupted sum: sum it again
            r = PassResult.reused_from(kind, n_windows, start, prior, job.device.type == "cuda")
        else:
            r = _run_windows(job, kind, acc, shard, n_windows, start, batch_size, save, prior)
            if start > 0:  # timings of a resumed pass: add those of the part done before
                for k in _TIMINGS:
                    setattr(r, k, getattr(r, k) + float(prior.get(k, 0.0)))
            save(n_windows, r.counters())  # single process or --shard: complete; torchrun: this rank's part
    if not job.grouped:
        if job.world > 1:
            job.partial[kind] = path
        return acc, r
    # all ranks: sum the accumulators and counters; rank 0 writes the total, then the parts go
    with dist.collective(f"the sum of the {kind} pass's statistics"):
        acc.all_reduce()
    sums = torch.tensor([float(r.tokens), float(r.skipped_nonfinite), r.val_nll, float(r.val_correct)],
                        dtype=torch.float64, device=job.device)
    tokens, skipped, r.val_nll, correct = dist.all_reduce_sum(sums, f"the sum of the {kind} pass's counters").tolist()
    r.tokens, r.skipped_nonfinite, r.val_correct = int(tokens), int(skipped), int(correct)
    with dist.together():  # (every rank waits for rank 0's total before it deletes its part)
        if job.rank == 0:
            save(n_total, {**r.counters(), "world": job.world}, to=final, meta=want)
    path.unlink(missing_ok=True)
    return acc, r


__all__ = ["PassJob", "PassResult", "run_pass", "pass_want", "check_saved_states"]
