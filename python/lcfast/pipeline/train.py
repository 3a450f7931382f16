"""Train a GPT-Neo-style causal LM on a token-shard data folder (`lcfast train`), resumably.

A run folder holds
    config.json                     model + training config, data folder and shard fingerprints
    checkpoints/epoch_K/            model.safetensors (weights + model config in its header),
                                    state.json (step, metrics history, timings) and, for the latest
                                    checkpoint only, state.safetensors (AdamW moments, RNG states)
    metrics.jsonl                   one line per finished epoch

Determinism: the batch of global step s is `train.random_windows(B, T, seed, s)` and the learning rate a
pure function of s, so resuming from the checkpoint of epoch K (weights, optimizer moments, RNG) and
replaying steps from K * steps_per_epoch reproduces an uninterrupted run exactly (bit-identical on
the same device and thread count). An epoch is n_train_tokens // (B * T) steps unless
steps_per_epoch is given. Schedule: linear warm-up over `warmup_frac` of all steps, cosine decay to
`min_lr_frac * lr`; AdamW (betas 0.9/0.95, weight decay on matrices and embeddings only); gradient
norm clipped to `grad_clip`; bf16 autocast on CUDA.

Distributed (`torchrun --nproc-per-node N -m lcfast train …`): DistributedDataParallel, NCCL on
CUDA, gloo on CPU. `--batch-size` stays the *global* batch B (it must be divisible by N): rank r
trains on rows [r·B/N, (r+1)·B/N) of the same `random_windows(B, T, seed, s)` batch, so the ranks'
data are disjoint and an N-process run follows the same trajectory as the single-process run (equal
up to the float rounding of the gradient all-reduce), its config is the same, and it can be resumed
with another N. Evaluation splits the validation windows between the ranks and all-reduces the sums;
rank 0 alone writes the config, checkpoints and metrics, and shows progress.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lcfast import dist, validate
from lcfast.data.datadir import TRAIN_SHARD, VAL_SHARD, DataDir
from lcfast.errors import DataError, UsageError, interrupt_note
from lcfast.io import atomic_write_json, make_dir, read_json
from lcfast.model.checkpoint import RUN_FORMAT, list_checkpoints
from lcfast.model.gptneo import GPTNeo, GPTNeoConfig, memory_terms, param_groups
from lcfast.pipeline.train_config import DEFAULT_EVAL_TOKENS, TrainConfig, default_heads
from lcfast.pipeline.train_state import (
    load_resume_state,
    save_checkpoint,
    write_metrics,
)


# -- data -----------------------------------------------------------------------------------------
def open_data(data_dir: str | os.PathLike):
    """(train shard, val shard) of a `lcfast tokenize` folder, with clear errors (DataDir.check)."""
    return DataDir.check(data_dir).open()


def data_info(data_dir, train, val) -> dict:
    return {
        "dir": str(Path(data_dir).resolve()),
        "vocab_size": int(train.vocab_size),
        "tokenizer_fingerprint": str(train.tokenizer_fingerprint),
        "train_fingerprint": str(train.fingerprint),
        "val_fingerprint": str(val.fingerprint),
        "train_tokens": int(train.n_tokens),
        "val_tokens": int(val.n_tokens),
    }


def check_memory(*, vocab_size: int, layers: int, width: int, heads: int, context: int, window_size: int,
                 batch_size: int, world: int, device: torch.device) -> int:
    """Refuse (UsageError, before anything is allocated) a run whose estimated peak memory exceeds
    what `device` has free: the model with its gradients and AdamW moments, plus the larger of one
    training step on this rank's share of the batch and one evaluation forward of `batch_size`
    windows (`lcfast.model.gptneo.memory_terms`). Returns the estimate in bytes."""
    size = dict(vocab_size=vocab_size, layers=layers, width=width, heads=heads, context=context,
                window_size=window_size, n_local=layers // 2,  # default_attention_layers: every 2nd is local
                seq=context, device_type=device.type)
    step = memory_terms(**size, batch=max(1, batch_size // world), train=True)
    ev = memory_terms(**size, batch=batch_size, train=False)
    model_terms = {k: step[k] for k in ("weights", "gradients + AdamW state")}
    batch_step = {k: v for k, v in step.items() if k not in model_terms}
    batch_eval = {f"evaluation {k}": v for k, v in ev.items() if k != "weights"}
    batch = batch_step if sum(batch_step.values()) >= sum(batch_eval.values()) else batch_eval
    by_batch = [f"--batch-size {batch_size}", f"--context {context}"]
    by_model = [f"--width {width}", f"--layers {layers}"]
    flags = by_batch + by_model if sum(batch.values()) >= sum(model_terms.values()) else by_model + by_batch
    return validate.check_memory(" ".join(flags), "training", {**model_terms, **batch}, device,
                                 hint=f"vocabulary {vocab_size}; lower the flags named")


def lr_at(step: int, total: int, lr: float, warmup: int, min_lr: float) -> float:
    """Linear warm-up to lr over `warmup` steps, then cosine decay to min_lr at `total`."""
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    span = max(1, total - warmup)
    t = min(1.0, (step - warmup) / span)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * t))


# -- run folder -----------------------------------------------------------------------------------
def is_complete(run_dir: str | os.PathLike) -> bool:
    """True when the run's config exists and its final epoch's checkpoint is written."""
    cfg_path = Path(run_dir) / "config.json"
    if not cfg_path.is_file():
        return False
    try:
        epochs = int(json.loads(cfg_path.read_text())["train"]["epochs"])
    except (OSError, KeyError, ValueError, TypeError):
        return False
    return epochs in list_checkpoints(run_dir)


def _config_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    diffs = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _config_diff(a, b, f"{prefix}{k}.")
        elif a != b:
            diffs.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return diffs


def _check_existing_run(out: Path, new_cfg: dict) -> bool:
    """Validate --out; True if it already holds this run (resume), False if it is new/empty."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    cfg_path = out / "config.json"
    if not cfg_path.is_file():
        if out.is_dir() and any(out.iterdir()):
            raise UsageError(f"--out {out}: folder exists, is not empty and holds no lcfast run (config.json)")
        return False
    old = read_json(cfg_path, "run config")
    if old.get("format") != RUN_FORMAT:
        raise UsageError(f"--out {out}: config.json is not a lcfast run config (format {old.get('format')!r})")
    old_vocab = old.get("model", {}).get("vocab_size")
    if old_vocab != new_cfg["model"]["vocab_size"]:
        raise DataError(
            f"--data {new_cfg['data']['dir']}: vocab size {new_cfg['model']['vocab_size']} does not match the run "
            f"in --out {out} (model vocab_size {old_vocab})"
        )
    keys = ("train_fingerprint", "val_fingerprint", "tokenizer_fingerprint")
    old_data = {k: old.get("data", {}).get(k) for k in keys}
    new_data = {k: new_cfg["data"][k] for k in keys}
    if old_data != new_data:
        raise DataError(
            f"--data {new_cfg['data']['dir']}: shards differ from those the run in --out {out} was trained on "
            f"({'; '.join(_config_diff(old_data, new_data))})"
        )
    diffs = _config_diff({"model": old.get("model"), "train": old.get("train")},
                         {"model": new_cfg["model"], "train": new_cfg["train"]})
    if diffs and not list_checkpoints(out) and not (out / "metrics.jsonl").exists():
        return False  # an earlier attempt that stopped before its first checkpoint: start afresh
    if diffs:
        raise UsageError(f"--out {out}: holds a run with a different config ({'; '.join(diffs[:4])}); "
                         "use another --out")
    return True


def _refuse_untracked_resume(out: Path, spe: int) -> None:
    """UsageError when an unfinished run tracked with --track-nc is resumed without it: its
    nc_track.csv would keep the rows a killed attempt wrote past the checkpoint and get none for the
    epochs still to train. The message gives the flags it was tracked with."""
    from lcfast.pipeline.track import TRACK_COLUMNS, TRACK_FILE, read_track_rows

    path = out / TRACK_FILE
    if not path.is_file():
        return
    try:
        rows = read_track_rows(path)
    except DataError:  # not a tracking file of ours: nothing of this run to keep consistent
        return
    every = int(float(rows[0][TRACK_COLUMNS.index("interval_steps")])) if rows else None  # the first interval's
    flags = "--track-nc" + (f" --track-every {every}" if every is not None and every != spe else "")
    raise UsageError(f"--out {out}: a run tracked with {flags} ({path}); resume it with the same flags, "
                     "or move that file away to continue without tracking")


# -- evaluation -----------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model, shard, context: int, batch_size: int, eval_tokens: int, device: torch.device,
             progress=None, on_features=None) -> dict:
    """Mean next-token loss, token accuracy and perplexity over the first sequential windows of
    `shard` covering up to `eval_tokens` label positions. `on_features(h [n, d], y [n])`, when
    given (`--track-nc`: the NC4 decisions), is called with the same forward's features (the LM
    head's input) and labels at each batch's valid positions (this rank's windows)."""
    T = context
    n_win = min(int(shard.n_seq_windows(T)), max(1, math.ceil(eval_tokens / T)))
    n_labels_total = int(shard.n_tokens) - 1
    if n_win <= 0 or n_labels_total <= 0:
        raise DataError(f"{getattr(shard, 'path', 'val shard')}: too few tokens to evaluate (need at least 2)")
    # under torch.distributed each rank evaluates a contiguous share of the windows; sums all-reduced
    first, mine = dist.rank_slice(n_win, dist.rank(), dist.world_size())
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    hits = torch.zeros((), dtype=torch.int64, device=device)
    count = torch.zeros((), dtype=torch.int64, device=device)
    task = progress.add_task("eval", total=mine, loss="", tps="", unit="windows") if progress is not None else None
    for start in range(first, first + mine, batch_size):
        cnt = min(batch_size, first + mine - start)
        w, lengths = shard.seq_windows(T, start, cnt)
        w = torch.from_numpy(np.ascontiguousarray(w, dtype=np.int64)).to(device)
        # window k holds `lengths[k]` real tokens, i.e. lengths[k] - 1 labels (the last window is ragged)
        valid = torch.clamp(torch.as_tensor(np.asarray(lengths, dtype=np.int64), device=device) - 1, 0, T)
        mask = torch.arange(T, device=device)[None, :] < valid[:, None]
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(w[:, :-1], return_features=True) if on_features is not None else model(w[:, :-1])
        logits, h = out if on_features is not None else (out, None)
        logits = logits.float()[mask]
        y = w[:, 1:][mask]
        if on_features is not None:
            on_features(h[mask], y)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        hits += (logits.argmax(-1) == y).sum()
        count += valid.sum()
        if task is not None:
            progress.advance(task, cnt)
    if task is not None:
        progress.remove_task(task)
    model.train(was_training)
    dist.all_reduce_sum(loss_sum, "the sum of the validation loss")
    dist.all_reduce_sum(hits, "the sum of the validation hits")
    dist.all_reduce_sum(count, "the sum of the validation positions")
    count = int(count)
    val_loss = float(loss_sum) / count
    return {"val_loss": val_loss, "val_acc": int(hits) / count, "perplexity": math.exp(min(val_loss, 700.0)),
            "val_tokens": count}


# -- training -------------------------------------------------------------------------------------
#: on CUDA the loss is checked for NaN/inf every this many steps (a host sync); on CPU every step
NONFINITE_CHECK_EVERY = 16


def _nonfinite_code(loss: torch.Tensor, step: int) -> torch.Tensor:
    """4·step + 1 for a NaN loss, 4·step + 2 for ±inf, 0 when finite (computed on the device)."""
    kind = torch.isnan(loss).long() + 2 * torch.isinf(loss).long()
    return (kind > 0).long() * (4 * step) + kind


def _stop_if_nonfinite(
    first_bad: torch.Tensor, lr: float, out: Path, what: str = "loss", epoch: int | None = None
) -> None:
    """Stop the run (DataError, exit 1) if `first_bad` (a `_nonfinite_code`, 0 = none) is set on
    any rank. Called at the same step on every rank, so under DDP all ranks agree (the earliest bad
    step of any rank) and stop together; it runs before the epoch's checkpoint is written, so a
    non-finite model is never saved and the last good checkpoint stays as it was."""
    bad = first_bad.detach().clone()
    if dist.is_initialized() and dist.world_size() > 1:
        none = torch.full_like(bad, 2**62)
        bad = torch.where(bad > 0, bad, none)
        dist.all_reduce_min(bad, "the non-finite loss check")
        bad = torch.where(bad == none, torch.zeros_like(bad), bad)
    code = int(bad)
    if code == 0:
        return
    step, kind = divmod(code, 4)
    cks = list_checkpoints(out)
    kept = f"{cks[max(cks)]} (the last good checkpoint) is kept" if cks else "no checkpoint was written"
    at = f"at step {step}" if epoch is None else f"after epoch {epoch} (step {step})"
    raise DataError(f"{what} is {'NaN' if kind == 1 else 'inf'} {at}; lower --lr (now {lr:g}) "
                    f"and train into a new --out; {kept}")


def _track_finish(tracker, step: int, model, val_loss: float | None = None) -> None:
    """Measure and write the tracking interval ending at `step` (rank 0), failing on every rank together."""
    err = None
    try:
        tracker.finish(step, model.lm_head_weight, model.lm_head_bias, val_loss)
    except Exception as e:  # noqa: BLE001 - re-raised on every rank by dist.agree
        err = e
    dist.agree(err)
    if err is not None:
        raise err


def _progress(enabled: bool):
    from lcfast.progress import progress_bar

    return progress_bar(unit="steps", fields=("loss", "tps"), enabled=enabled)


def train_run(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    layers: int,
    width: int,
    heads: int | None = TrainConfig.heads,
    context: int = TrainConfig.context,
    epochs: int = TrainConfig.epochs,
    batch_size: int = TrainConfig.batch_size,
    lr: float = TrainConfig.lr,
    weight_decay: float = TrainConfig.weight_decay,
    seed: int = TrainConfig.seed,
    device: str | None = "auto",
    steps_per_epoch: int | None = TrainConfig.steps_per_epoch,
    eval_tokens: int = TrainConfig.eval_tokens,
    compile: bool = False,
    progress: bool = True,
    window_size: int = TrainConfig.window_size,
    warmup_frac: float = TrainConfig.warmup_frac,
    min_lr_frac: float = TrainConfig.min_lr_frac,
    grad_clip: float = TrainConfig.grad_clip,
    callback: Callable[[dict], None] | None = None,
    track_nc: bool = False,
    track_every: int | None = None,
    dist_timeout: float | None = None,
) -> dict:
    """Train (or resume, or return at once if complete) the run in `out_dir`; returns the final epoch's
    metrics plus run facts. `callback(info)` is called after every optimizer step with
    {step, epoch, loss, lr}; an exception raised there interrupts the run like a crash would.
    `track_nc`: also track neural collapse from the training forward into RUN/nc_track.csv, one
    row every `track_every` optimizer steps and at every epoch's end (default: once per epoch;
    lcfast.pipeline.track). `dist_timeout`: seconds a collective may wait under torchrun (default:
    LCFAST_DIST_TIMEOUT, else 600; lcfast.dist). The hyper-parameters and their defaults:
    lcfast.pipeline.train_config.TrainConfig."""
    hp = TrainConfig(layers=layers, width=width, heads=heads, context=context, epochs=epochs, batch_size=batch_size,
                     lr=lr, weight_decay=weight_decay, seed=seed, steps_per_epoch=steps_per_epoch,
                     eval_tokens=eval_tokens, window_size=window_size, warmup_frac=warmup_frac,
                     min_lr_frac=min_lr_frac, grad_clip=grad_clip)
    return run_training(data_dir, out_dir, hp, device=device, compile=compile, progress=progress, callback=callback,
                        track_nc=track_nc, track_every=track_every, dist_timeout=dist_timeout)


def run_training(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    hp: TrainConfig,
    *,
    device: str | None = "auto",
    compile: bool = False,
    progress: bool = True,
    callback: Callable[[dict], None] | None = None,
    track_nc: bool = False,
    track_every: int | None = None,
    dist_timeout: float | None = None,
) -> dict:
    """`train_run` with the hyper-parameters as one TrainConfig (checked here); the same result."""
    if track_every is not None:  # the range and the pairing now; the bound (an epoch) once the data is open
        track_every = validate.integer("--track-every", track_every, min=1)
        if not track_nc:
            raise UsageError(f"--track-every {track_every}: only with --track-nc")
    hp = hp.checked()
    if dist.in_job():
        ctx = dist.init(device, timeout_s=dist_timeout)  # under torchrun: join (or reuse) the process group
    else:
        ctx = dist.Context(device=dist.resolve_device(device))
    try:
        with interrupt_note(lambda: interrupted_note(out_dir, track_nc)):
            res = _train(ctx, data_dir, out_dir, hp, compile=compile, progress=progress, callback=callback,
                         track_nc=track_nc, track_every=track_every)
    except BaseException:
        dist.shutdown(ctx, ok=False)  # (no closing barrier: a peer may be gone)
        raise
    dist.shutdown(ctx)
    return res


def interrupted_note(run_dir, track_nc: bool = False) -> str:
    """What an interrupted `train` kept: the latest checkpoint, or that there is none yet (and,
    tracking, how far nc_track.csv goes)."""
    cks = list_checkpoints(run_dir)
    track = ""
    if track_nc:
        from lcfast.pipeline.track import TRACK_FILE, read_track_rows

        p = Path(run_dir) / TRACK_FILE
        try:
            rows = read_track_rows(p) if p.is_file() else []
        except DataError:
            rows = []
        if rows:
            track = f", {p} has its rows up to step {rows[-1][0]}"
    if cks:
        return f"checkpoint {list(cks.values())[-1]} is intact{track}; rerun the same command to resume"
    return f"no checkpoint of {run_dir} was written yet; rerun the same command to start it"


@dataclass
class _Run:
    """One training run once set up: the data, the model and optimizer (resumed), where it stands,
    and the NC tracker (`--track-nc`), as `_train`'s steps share them."""

    ctx: dist.Context
    out: Path
    hp: TrainConfig  # checked
    compile: bool
    train: object  # TokenShard
    val: object
    vocab: int
    spe: int  # optimizer steps per epoch
    total: int  # optimizer steps of the whole run
    warmup: int
    model: GPTNeo
    opt: torch.optim.Optimizer
    n_params: int
    start_epoch: int = 0
    step: int = 0
    history: list = field(default_factory=list)
    elapsed: float = 0.0
    tracker: object = None  # lcfast.pipeline.track.TrainTracker or None

    def result(self, resumed_from: int, already_complete: bool) -> dict:
        final = dict(self.history[-1]) if self.history else {}
        return {**final, "run_dir": str(self.out), "n_params": self.n_params,
                "model_fingerprint": self.model.fingerprint(), "resumed_from_epoch": resumed_from,
                "already_complete": already_complete, "world_size": self.ctx.world}


def _run_config(hp: TrainConfig, cfg: GPTNeoConfig, data_dir, train, val) -> dict:
    """The run's config.json (before the runtime facts): what a resume must find unchanged."""
    run_cfg = {
        "format": RUN_FORMAT,
        "model": cfg.to_dict(),
        "train": hp.train_section(int(train.n_tokens)),
        "data": data_info(data_dir, train, val),
    }
    return json.loads(json.dumps(run_cfg))  # normalise (tuples -> lists) for comparison with the file


def _write_config(ctx: dist.Context, out: Path, run_cfg: dict, compile: bool) -> None:
    """Create the run folder and write config.json with the runtime facts (rank 0)."""
    make_dir(out, "the run folder")
    import lcfast

    atomic_write_json(out / "config.json", {
        **run_cfg, "lcfast_version": lcfast.__version__, "torch_version": torch.__version__,
        "runtime": {"device": str(ctx.device), "compile": bool(compile), "world_size": ctx.world,
                    "backend": ctx.backend},
    })


def _set_up(ctx: dist.Context, data_dir, out: Path, hp: TrainConfig, compile: bool, track_nc: bool,
            track_every) -> _Run:
    """Open the data, check memory and --out, build the model and optimizer, write config.json or
    resume from the latest checkpoint, start the tracker. Every check any one rank may fail is
    agreed on by all ranks (`dist.together`), so they stop together."""
    train, val = open_data(data_dir)
    vocab = int(train.vocab_size)
    with dist.together():  # every rank checks its own device
        check_memory(vocab_size=vocab, layers=hp.layers, width=hp.width, heads=hp.heads, context=hp.context,
                     window_size=hp.window_size, batch_size=hp.batch_size, world=ctx.world, device=ctx.device)
    cfg = GPTNeoConfig(vocab_size=vocab, layers=hp.layers, width=hp.width, heads=hp.heads, context=hp.context,
                       window_size=hp.window_size)
    if int(train.n_tokens) < hp.context + 1:
        raise DataError(f"--data {data_dir}: {TRAIN_SHARD} has {train.n_tokens} tokens, "
                        f"fewer than --context {hp.context} + 1")
    if int(val.n_tokens) < 2:
        raise DataError(f"--data {data_dir}: {VAL_SHARD} has {val.n_tokens} tokens, too few to evaluate (need 2)")
    spe, total, warmup = hp.steps(int(train.n_tokens))
    from lcfast.pipeline.track import check_every

    every = check_every(track_nc, track_every, spe)
    run_cfg = _run_config(hp, cfg, data_dir, train, val)
    resuming = False
    with dist.together():  # rank 0 validates --out (reading only); every rank learns the outcome
        if ctx.is_main:
            resuming = _check_existing_run(out, run_cfg)
            if resuming and every is None and not is_complete(out):
                _refuse_untracked_resume(out, spe)
    resuming = bool(dist.broadcast_object(resuming, name="the broadcast of whether the run resumes"))

    # Everything the flags can break (seed, model, optimizer) is built before the first write, so a
    # bad value never leaves a config.json behind that would refuse the corrected rerun.
    torch.manual_seed(hp.seed)
    model = GPTNeo(cfg)  # initialised on CPU: same weights whatever the device (and on every rank)
    n_params = model.n_params()
    model.to(ctx.device)
    opt = torch.optim.AdamW(param_groups(model, hp.weight_decay), lr=hp.lr, betas=hp.betas, eps=hp.eps,
                            **({"fused": True} if ctx.device.type == "cuda" else {}))
    with dist.together():
        if ctx.is_main and not resuming:
            _write_config(ctx, out, run_cfg, compile)
    run = _Run(ctx=ctx, out=out, hp=hp, compile=compile, train=train, val=val, vocab=vocab, spe=spe, total=total,
               warmup=warmup, model=model, opt=opt, n_params=n_params)
    with dist.together():
        if resuming:
            run.start_epoch, run.step, run.history, run.elapsed = load_resume_state(out, model, opt)
    if every is not None and run.start_epoch < hp.epochs:
        from lcfast.pipeline.track import TrainTracker

        run.tracker = TrainTracker(out, vocab, hp.width, ctx.device, every, spe, hp.batch_size * hp.context,
                                write=ctx.is_main)
        with dist.together():  # continue the file from the checkpoint (rows past it are recomputed), or start it
            run.tracker.resume(run.start_epoch * spe)
    return run


def _train_epoch(run: _Run, epoch: int, fwd, bar, callback) -> tuple[float, float]:
    """One epoch of optimizer steps on this rank's rows of every step's batch; (mean train loss over
    all ranks, seconds). Stops the run on a non-finite loss (all ranks together); tracking
    intervals that end inside the epoch are measured and written here."""
    hp, ctx, dev, model, opt, tracker = run.hp, run.ctx, run.ctx.device, run.model, run.opt, run.tracker
    local_b = hp.batch_size // ctx.world
    rows = slice(ctx.rank * local_b, (ctx.rank + 1) * local_b)
    amp = dict(device_type="cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda")
    nonfinite_every = 1 if dev.type == "cpu" else NONFINITE_CHECK_EVERY
    min_lr = hp.lr * hp.min_lr_frac
    spe = run.spe
    task = bar.add_task(f"epoch {epoch}/{hp.epochs}", total=spe, loss="", tps="")
    step = run.step = (epoch - 1) * spe
    loss_acc = torch.zeros((), dtype=torch.float64, device=dev)
    t0 = time.perf_counter()
    last_ui = t0
    first_bad = torch.zeros((), dtype=torch.int64, device=dev)  # first step with a non-finite loss
    for i in range(spe):
        w = run.train.random_windows(hp.batch_size, hp.context, hp.seed, step)[rows]  # this rank's disjoint rows
        wt = torch.from_numpy(np.ascontiguousarray(w, dtype=np.int64))
        if dev.type == "cuda":
            wt = wt.pin_memory().to(dev, non_blocking=True)
        x, y = wt[:, :-1], wt[:, 1:]
        cur_lr = lr_at(step, run.total, hp.lr, run.warmup, min_lr)
        for g in opt.param_groups:
            g["lr"] = cur_lr
        with torch.autocast(**amp):
            if tracker is None:
                logits = fwd(x)
            else:  # the LM head's input from the same forward (no second pass)
                logits, feats = fwd(x, return_features=True)
        loss = F.cross_entropy(logits.float().reshape(-1, run.vocab), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        with dist.collective("the gradient all-reduce (DDP, in the backward)", mark=False):
            loss.backward()  # DDP: gradients averaged over the ranks = the global batch's mean
        if hp.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), hp.grad_clip)
        opt.step()
        if tracker is not None:
            # after the step is queued: on CUDA the statistics' host syncs then wait for a
            # finished step instead of stalling between the forward and the backward
            tracker.update(feats, y, loss)
            del feats
        loss_acc += loss.detach().double()
        step = run.step = step + 1
        # recorded on the device (no sync); looked at every `nonfinite_every` steps, on every rank
        first_bad += (first_bad == 0).long() * _nonfinite_code(loss.detach(), step)
        if (i + 1) % nonfinite_every == 0 or i == spe - 1:
            _stop_if_nonfinite(first_bad, hp.lr, run.out)
        if tracker is not None and i < spe - 1 and tracker.due(i):  # (the epoch's last: after evaluation)
            tracker.reduce()
            _track_finish(tracker, step, model)
        now = time.perf_counter()
        if callback is not None or now - last_ui > 0.5 or i == spe - 1:
            cur = float(loss.detach())
            bar.update(task, completed=i + 1, loss=f"loss {cur:.4f}",
                       tps=f"{(i + 1) * hp.batch_size * hp.context / max(now - t0, 1e-9):,.0f} tok/s")
            last_ui = now
            if callback is not None:
                callback({"step": step, "epoch": epoch, "loss": cur, "lr": cur_lr, "rank": ctx.rank})
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    train_time = time.perf_counter() - t0
    dist.all_reduce_sum(loss_acc, "the sum of the epoch's train loss")
    bar.remove_task(task)
    return float(loss_acc) / (spe * ctx.world), train_time


def _end_epoch(run: _Run, epoch: int, eval_fwd, bar, t0: float, train_loss: float, train_time: float,
               progress: bool) -> None:
    """Evaluate, finish the epoch's tracking interval, record the epoch and write its checkpoint
    (rank 0; every rank stops if that fails)."""
    hp, tracker, model = run.hp, run.tracker, run.model
    if tracker is not None:  # the epoch's last interval: NC4 decisions from the evaluation
        tracker.reduce()
        tracker.begin_eval(model.lm_head_weight, model.lm_head_bias)
    ev = evaluate(eval_fwd, run.val, hp.context, hp.batch_size, hp.eval_tokens, run.ctx.device, progress=bar,
                  on_features=None if tracker is None else tracker.eval_features)
    if not math.isfinite(ev["val_loss"]):  # identical on every rank (all-reduced sums)
        _stop_if_nonfinite(_nonfinite_code(torch.tensor(ev["val_loss"]), run.step), hp.lr, run.out,
                           "validation loss", epoch)
    if tracker is not None:  # written before the checkpoint: a resume never misses a row
        _track_finish(tracker, run.step, model, ev["val_loss"])
    run.elapsed += time.perf_counter() - t0
    rec = {"epoch": epoch, "step": run.step, "train_loss": train_loss, **ev,
           "tokens_per_s": run.spe * hp.batch_size * hp.context / max(train_time, 1e-9), "elapsed": run.elapsed}
    if tracker is not None:  # wall seconds of this epoch spent tracking: in the loop, at its end (NC4)
        rec["track_loop_s"], rec["track_end_s"] = tracker.take_seconds()
    run.history.append(rec)
    with dist.together():
        if run.ctx.is_main:
            save_checkpoint(run.out, model, run.opt, epoch, run.step, run.history, run.elapsed)
    if progress:
        bar.console.print(
            f"epoch {epoch}/{hp.epochs}: train_loss {train_loss:.4f}, val_loss {ev['val_loss']:.4f}, "
            f"val_acc {ev['val_acc']:.3f}, {rec['tokens_per_s']:,.0f} tok/s"  # (ppl = exp(val_loss))
        )


def _train(ctx: dist.Context, data_dir, out_dir, hp: TrainConfig, *, compile, progress, callback, track_nc=False,
           track_every=None) -> dict:
    """Set up (or resume) the run, then train epoch by epoch: steps, evaluation, checkpoint."""
    if hp.batch_size % ctx.world:
        raise UsageError(f"--batch-size {hp.batch_size} must be divisible by the number of processes ({ctx.world}): "
                         "it is the global batch, split between the ranks")
    progress = progress and ctx.is_main
    run = _set_up(ctx, data_dir, Path(out_dir), hp, compile, track_nc, track_every)
    resumed_from = run.start_epoch
    if run.start_epoch >= hp.epochs:
        if ctx.is_main and run.history:  # a kill after the last checkpoint but before metrics.jsonl
            write_metrics(run.out, run.history)
        return run.result(resumed_from, already_complete=True)
    net = run.model
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        with dist.collective("DDP's broadcast of the initial weights"):
            net = DDP(run.model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    fwd = torch.compile(net) if compile else net
    # evaluation runs on the plain module under DDP: ranks may evaluate different numbers of batches,
    # and DDP's forward would wait for the others (buffer broadcast)
    eval_fwd = fwd if not ctx.distributed else (torch.compile(run.model) if compile else run.model)
    run.model.train()
    with _progress(progress) as bar:
        for epoch in range(run.start_epoch + 1, hp.epochs + 1):
            t0 = time.perf_counter()
            train_loss, train_time = _train_epoch(run, epoch, fwd, bar, callback)
            _end_epoch(run, epoch, eval_fwd, bar, t0, train_loss, train_time, progress)
    return run.result(resumed_from, already_complete=False)


__all__ = ["train_run", "run_training", "evaluate", "open_data", "is_complete", "lr_at",
           "default_heads", "DEFAULT_EVAL_TOKENS", "TrainConfig"]
