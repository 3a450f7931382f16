"""Collection: class statistics over the train shard and NC4 decisions over the val shard.

For one model checkpoint, `collect_checkpoint` runs

1. a **train pass**: every label position of the train shard, in deterministic sequential windows
   of the model's context, feeds its final-layer-norm feature h (the LM head's input) and its label
   (the next token) to a `ClassStats` accumulator (one pass: n_c, Σh, Σ‖h‖², optionally Σhhᵀ);
2. with `exact=True`, a **second train pass** over the same windows accumulating Σ‖h − μ_y‖²
   (and Σ(h − μ_y)(h − μ_y)ᵀ) about the means of pass 1 — the paper's two-pass variances;
3. a **val pass**: every val position feeds an `NCCStats` (nearest kept class mean vs the model's
   argmax of W h + b) built from the train means of the kept classes — and, from the same search,
   the nearest of all C class means (the paper's NC4, for `lcfast measure --profile paper`); the
   same pass records the model's val loss/accuracy over those positions.

Every pass saves its accumulator atomically (safetensors + metadata in the header) every
`save_every_s` seconds / `save_every_windows` windows, and a rerun continues from the last save:
the same windows in the same batches in the same order, so the totals are bit-identical to an
uninterrupted run. A state written for another model, shard, set of means or options is refused
with a `DataError` naming the file (`restart=True` ignores it; the new pass's saves replace it).

The model is a lcfast run, a transformers GPT-Neo folder (both on lcfast's own GPT-Neo) or any
transformers causal LM (`lcfast.model.hf`: the head input read by a forward hook), run in
`--dtype`; windows are `--context` tokens long (default: the model's maximum, at most 2048 for
transformers models). `--layers` adds the class statistics of chosen hidden states and
`--classes top:K` restricts them to the K most frequent classes, in the same forward and the same
accumulator (`lcfast.pipeline.collect_layers`); their memory is estimated before the first forward.

The forward and the statistics are timed separately (CUDA synchronised), so `collect.json` says
what share of the collection the statistics cost on top of the model forward.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from lcfast.errors import DataError, UsageError, interrupt_note
from lcfast.model.features import window_batch
from lcfast.model.gptneo import GPTNeo
from lcfast.model.sources import (  # noqa: F401 (model sources live in lcfast.model; re-exported for callers)
    ModelSource,
    check_compat,
    is_hf_dir,
    is_run_dir,
    load_source,
    model_facts,
    model_head,
    resolve_sources,
    run_epochs,
)
from lcfast.pipeline.collect_parts import Part
from lcfast.dist import resolve_device  # noqa: F401 (also used by measure and demo)

STATE_VERSION = "1"
COLLECT_JSON = "collect.json"
PASS_FILES = {
    "train": "train_stats.safetensors",
    "train_exact": "train_exact.safetensors",
    "val": "val_ncc.safetensors",
}

#: called after every state save with (pass kind, windows done, windows total); tests use it to
#: simulate a kill right after a save.
SaveHook = Callable[[str, int, int], None]


# --------------------------------------------------------------------------------------------
# where the model and the data come from


def data_paths(data_dir: Path) -> dict[str, Path]:
    """train/val shard and tokenizer paths of a tokenized data dir (checked)."""
    if not data_dir.is_dir():
        raise UsageError(f"--data {data_dir}: no such directory")
    out = {"train": data_dir / "train.lcshard", "val": data_dir / "val.lcshard", "tokenizer": data_dir / "tokenizer.json"}
    for k in ("train", "val"):
        if not out[k].is_file():
            raise DataError(f"{out[k]}: missing (expected a tokenized data dir with train.lcshard and val.lcshard)")
    return out


# --------------------------------------------------------------------------------------------
# device and timing


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


# --------------------------------------------------------------------------------------------
# state files


_RESTART_HINT = "; delete it or rerun with --restart"


def read_state_meta(path: Path) -> dict[str, str]:
    """The metadata dict of a safetensors state file (header only)."""
    from lcfast.io import read_tensor_meta

    return read_tensor_meta(path, "state file", _RESTART_HINT)


def _check_state(path: Path, meta: dict[str, str], want: dict[str, str]) -> None:
    from lcfast.io import check_meta

    check_meta(path, meta, want, "; rerun with --restart to discard it, or use another --out")


# --------------------------------------------------------------------------------------------
# one pass


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

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["tokens_per_s"] = self.tokens / self.wall_s if self.wall_s > 0 else None
        d["stats_share_of_forward"] = self.stats_s / self.forward_s if self.forward_s > 0 else None
        d["stats_share_of_forward_cpu"] = (
            self.stats_cpu_s / self.forward_cpu_s if self.forward_cpu_s > 0 and not self.cuda_timed else None
        )
        del d["cuda_timed"]
        return d


@dataclass
class CollectOptions:
    exact: bool = False
    covariance: bool = False
    min_count: int = 1
    batch_size: int = 16
    device: str = "auto"
    max_tokens: int | None = None
    save_every_s: float = 60.0
    save_every_windows: int | None = None
    backend: str = "auto"
    skip_nonfinite: bool = False
    restart: bool = False
    part: Part | None = None  # `--shard i/n`: collect part i of n alone (array jobs), then `lcfast merge`
    context: int | None = None  # window length T (default: the model's max positions, at most 2048)
    dtype: str = "float32"  # parameters and activations of the forward; statistics stay float64
    layers: str | None = None  # `--layers all|0,6,12`: also the class statistics of these hidden states
    classes: str | None = None  # `--classes top:K`: class statistics of the K most frequent classes only
    max_memory: int | None = None  # bytes the statistics may use (default: what is free on the device)


def check_options(opts: CollectOptions) -> CollectOptions:
    """The numeric options checked (UsageError naming the flag) before anything is read or written."""
    from lcfast import validate

    validate.integer("--batch-size", opts.batch_size, min=1)
    validate.integer("--min-count", opts.min_count, min=1)
    if opts.max_tokens is not None:
        validate.integer("--max-tokens", opts.max_tokens, min=1)
    if opts.context is not None:
        validate.integer("--context", opts.context, min=1)
    validate.number("--save-every", opts.save_every_s, min=0, min_open=True, max=validate.SAVE_EVERY_MAX)
    if opts.save_every_windows is not None:
        validate.integer("save_every_windows", opts.save_every_windows, min=1)
    return opts


def check_memory(cfg, opts: CollectOptions, device: torch.device, T: int | None = None) -> int:
    """Refuse (UsageError) a collection whose batch cannot fit: the features-only forward of
    --batch-size windows, the float64 copies the class statistics make of them, the accumulators
    (and the d×d covariance) and the val pass's logits chunks; the model itself is already loaded."""
    from lcfast import validate
    from lcfast.model.gptneo import memory_terms

    B, C, d = opts.batch_size, int(cfg.vocab_size), int(cfg.width)
    T = int(cfg.context if T is None else T)
    fwd = memory_terms(vocab_size=C, layers=cfg.layers, width=d, heads=cfg.heads, context=T,
                       window_size=cfg.window_size, n_local=sum(a == "local" for a in cfg.attention_layers),
                       mlp_dim=cfg.mlp_dim, batch=B, seq=T, train=False, logits=False, device_type=device.type)
    parts = {
        "model forward": fwd["activations"] + fwd.get("attention mask", 0),
        "features in float64": 2 * B * T * d * 8,
        "accumulators": 3 * C * d * 8 + (2 * d * d * 8 if opts.covariance else 0),
        "val logits": 8192 * C * 4 * 2,
    }
    by_batch = parts["model forward"] + parts["features in float64"] >= parts["accumulators"] + parts["val logits"]
    flags = f"--batch-size {B}" if by_batch else f"--batch-size {B} (model: vocabulary {C}, width {d})"
    return validate.check_memory(flags, "collection", parts, device,
                                 hint=f"context {T}; lower --batch-size" if by_batch else "")


_TIMINGS = ("forward_s", "stats_s", "data_s", "wall_s", "forward_cpu_s", "stats_cpu_s")


def _windows_for(shard, T: int, max_tokens: int | None) -> int:
    from lcfast.model.features import n_windows

    return n_windows(shard, T, max_tokens)


def _run_pass(
    kind: str,
    acc,
    model,
    shard,
    T: int,
    n_windows: int,
    start: int,
    batch_size: int,
    device: torch.device,
    opts: CollectOptions,
    save: Callable[[int, dict], None],
    progress,
    label: str,
    head: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    prior: dict | None = None,
    rank: int = 0,
    world: int = 1,
    layout=None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> PassResult:
    """Feed windows [start, n_windows) of `shard` (this rank's block) through `model` into `acc`;
    save periodically; `on_progress(kind, windows done, n_windows)` after every batch.

    Train passes: `acc` is a ClassStats (it skips/counts non-finite rows itself when asked), fed
    through `layout` (a `SlotLayout`: hidden-state slots, kept classes) when given.
    Val pass: `acc` is an NCCStats; the same features also give the model's val loss/accuracy.
    `prior` carries the counters of a resumed state (tokens, skipped, val nll/correct)."""
    hidden_ids = layout.hidden if layout is not None and kind != "val" else []
    remap = layout.remap(device) if layout is not None and kind != "val" else None
    to_logits = getattr(model, "logits", None)
    prior = prior or {}
    fwd, st, dat = _Timer(device), _Timer(device), _Timer(torch.device("cpu"))
    tokens0 = tokens = int(prior.get("tokens", 0))
    skipped_val = int(prior.get("skipped_nonfinite", 0)) if kind == "val" else 0
    nll = float(prior.get("val_nll", 0.0))
    correct = int(prior.get("val_correct", 0))
    t_wall0 = last_save = time.perf_counter()
    since_save = 0
    task = progress.add_task(label, total=n_windows, completed=start, tps="") if progress is not None else None
    done = start
    W, b = head if head is not None else (None, None)
    while done < n_windows:
        count = min(batch_size, n_windows - done)
        with dat:
            x, y, mask = window_batch(shard, T, done, count, rank, world)  # the same windows as lcfast.features
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            mask_d = mask.to(device, non_blocking=True)
        with fwd, torch.inference_mode():
            if hidden_ids:
                H, hidden = model.features_and_hidden(x, hidden_ids)
                hidden = [h[mask_d] for h in hidden]
            else:
                H, hidden = model.features(x), []
            H = H[mask_d]
            if kind == "val":
                if opts.skip_nonfinite:
                    finite = torch.isfinite(H).all(dim=1)
                    if not bool(finite.all()):
                        skipped_val += int((~finite).sum())
                        H, y = H[finite], y[finite]
                # the model's own loss / accuracy on these positions (logits in row chunks)
                for i in range(0, H.shape[0], 8192):
                    if to_logits is not None:  # a transformers model: its own logit scale / soft-capping
                        logits = to_logits(H[i : i + 8192], W, b)
                    else:
                        logits = F.linear(H[i : i + 8192].float(), W.float(), None if b is None else b.float())
                    yy = y[i : i + 8192]
                    nll += float(F.cross_entropy(logits, yy, reduction="sum"))
                    correct += int((logits.argmax(dim=1) == yy).sum())
        with st, torch.inference_mode():
            try:
                if layout is not None and kind != "val":
                    layout.update(acc, H, hidden, y, remap, opts.backend)
                else:
                    acc.update(H, y, backend=opts.backend)
            except DataError as e:
                hint = " (rerun with --skip-nonfinite to skip and count them)" if "non-finite" in str(e) and not opts.skip_nonfinite else ""
                msg = str(e).replace("; pass nonfinite='skip' to drop and count them", "")  # the CLI's hint below
                raise DataError(f"{shard.path}: windows {done}..{done + count - 1} of {label}: {msg}{hint}") from None
        tokens += int(mask.sum())
        done += count
        since_save += count
        if task is not None:
            rate = (tokens - tokens0) / max(time.perf_counter() - t_wall0, 1e-9)
            progress.update(task, completed=done, tps=f"{rate:,.0f} tok/s")
        if on_progress is not None:
            on_progress(kind, done, n_windows)
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


# --------------------------------------------------------------------------------------------
# one checkpoint


def default_out_dir(src: ModelSource) -> Path:
    if src.repo:
        raise UsageError(f"MODEL hf:{src.repo}: pass --out DIR (lcfast does not write into the Hugging Face cache)")
    return src.path / "collect" / src.checkpoint


def window_length(context: int | None, max_context: int | None, src: ModelSource) -> int:
    """--context T, checked against the model's maximum; by default that maximum, at most 2048
    (a Llama config says 131,072)."""
    from lcfast.model.hf import MAX_DEFAULT_CONTEXT

    if context is None:
        if max_context is None:
            raise UsageError(f"{src.path / 'config.json'} gives no maximum sequence length: pass --context T")
        return min(int(max_context), MAX_DEFAULT_CONTEXT) if src.kind == "hf" else int(max_context)
    if max_context is not None and context > max_context:
        raise UsageError(f"--context {context}: longer than the model's maximum sequence length {max_context}")
    return int(context)


def _slot_layout(model, opts: CollectOptions, train_shard, T: int, C: int, d: int, top_k: int | None, device):
    """Which statistics the train passes accumulate (see lcfast.pipeline.collect_layers)."""
    from lcfast.pipeline import collect_layers as cl

    n_states = int(getattr(model, "n_hidden_states", 0) or 0)
    if opts.layers is not None and n_states < 1:
        raise UsageError(f"--layers: {type(model).__name__} does not expose its hidden states")
    chosen = cl.parse_layers(opts.layers, n_states) if opts.layers is not None else []
    class_ids = None
    if top_k is not None and top_k < C:
        class_ids = cl.top_classes(train_shard.counts(), top_k)
    head_layer = None
    dims = [d]
    slots: list = ["head"]
    if chosen:
        last = n_states - 1
        # is the last hidden state the head's input? (lcfast's GPT-Neo: by construction; others: look).
        # Then the head row is that layer's row, and the layer needs no slot of its own.
        if not hasattr(model, "hf"):
            head_layer = last
        else:
            win, lengths = train_shard.seq_windows(T, 0, 1)
            x = torch.from_numpy(np.ascontiguousarray(win[:, :-1], dtype=np.int64)).to(device)
            with torch.inference_mode():
                h, (hl,) = model.features_and_hidden(x, [last])
            n = max(int(lengths[0]) - 1, 1)
            head_layer = last if h.shape == hl.shape and torch.equal(h[:, :n], hl[:, :n]) else None
        for i in chosen:
            if i != head_layer:
                slots.append(i)
        if len(slots) > 1:
            x = torch.zeros(1, 1, dtype=torch.int64, device=device)
            with torch.inference_mode():
                _, hs = model.features_and_hidden(x, slots[1:])
            dims += [int(h.shape[-1]) for h in hs]
    return cl.SlotLayout(slots=slots, n_classes=C, dims=dims, class_ids=class_ids, head_layer=head_layer,
                         n_hidden_states=n_states or None)


def collect_checkpoint(
    src: ModelSource,
    out_dir: Path | None = None,
    opts: CollectOptions | None = None,
    *,
    console=None,
    progress: bool = True,
    on_save: SaveHook | None = None,
    model=None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Collect one checkpoint into `out_dir` (default RUN/collect/<checkpoint>); returns the
    collect.json summary (also written there). Passes already complete are reused.
    `on_progress(pass kind, windows done, windows of the pass)` is called after every batch."""
    from lcfast.data.shards import TokenShard
    from lcfast.io import atomic_write_json
    from lcfast.stats.classstats import ClassStats
    from lcfast.stats.classstats import tensor_fingerprint as stats_fingerprint
    from lcfast.stats.ncc import NCCStats

    opts = check_options(opts or CollectOptions())
    from lcfast.model.hf import dtype_name, parse_dtype
    from lcfast.pipeline import collect_layers as cl

    dtype = parse_dtype(opts.dtype)
    top_k = cl.parse_classes(opts.classes)
    cl.parse_layers(opts.layers, None)  # the syntax now; the range once the model is open
    device = resolve_device(opts.device)
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(src)
    paths = data_paths(src.data_dir)
    shards = {"train": TokenShard(str(paths["train"])), "val": TokenShard(str(paths["val"]))}
    if model is None:
        model = load_source(src, dtype)
    check_compat(model, src, shards)
    facts = model_facts(model, src)
    C, d = facts["n_classes"], facts["dim"]
    T = window_length(opts.context, facts["context"], src)
    facts = {**facts, "context": T, "max_context": facts["context"]}
    if isinstance(model, GPTNeo):  # lcfast's own model: its forward's memory is known term by term
        check_memory(model.config, opts, device, T)
    model_fp = str(model.fingerprint())
    model = model.to(device).eval()
    W, b = model_head(model)
    nonfinite = "skip" if opts.skip_nonfinite else "error"
    t_start = time.perf_counter()
    layout = _slot_layout(model, opts, shards["train"], T, C, d, top_k, device)
    est = cl.check_memory(layout, exact=opts.exact, covariance=opts.covariance, device=device,
                          budget=opts.max_memory, layers_flag=opts.layers)
    layout_want = {} if layout.trivial else {"layout": layout.key()}
    if dtype != torch.float32:
        layout_want["dtype"] = dtype_name(dtype)

    rank, world = dist_rank_world()
    grouped = world > 1  # a torch.distributed group: all-reduce at the end of each pass
    if opts.part is not None:  # --shard i/n: this process is part i of n, without a group
        if grouped:
            raise UsageError(f"--shard {opts.part.spec}: not under torchrun (the ranks already split the windows)")
        rank, world = opts.part.index, opts.part.count
    if world > 1 and opts.max_tokens is not None:
        raise UsageError("--max-tokens: not supported with torchrun or --shard (parts own contiguous blocks of all the windows)")
    partial: dict[str, Path] = {}  # --shard: passes of which this process wrote only its part
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir}: exists and is not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"--out {out_dir}: cannot create the output folder ({' '.join(str(e.strerror or e).split())})") from None
    # --restart ignores the saved states instead of deleting them: each is replaced (atomically) by
    # the new pass's first save, so a restart that fails early loses nothing

    pbar = None
    if progress and (rank == 0 or opts.part is not None):
        from lcfast.progress import progress_bar

        pbar = progress_bar(unit="windows", fields=("tps",), console=console)
        pbar.start()
        pbar.console.print(f"[bold]{src.name}[/] {src.checkpoint} → {out_dir}", highlight=False)

    def run_pass(kind: str, shard, make_acc, load_acc, extra_want: dict[str, str], head=None):
        final = out_dir / PASS_FILES[kind]
        n_total = _windows_for(shard, T, opts.max_tokens)
        want = {
            "lcfast_collect": STATE_VERSION,
            "pass": kind,
            "model_fingerprint": model_fp,
            "shard_fingerprint": str(shard.fingerprint),
            "context": str(T),
            "n_windows": str(n_total),
            "max_tokens": str(opts.max_tokens or 0),
            "covariance": str(int(opts.covariance and kind != "val")),
            **extra_want,
        }
        if world == 1:
            path, n_windows, want_here = final, n_total, want
        else:  # each rank saves its own part; the all-reduced total goes to `final`
            path = final.with_name(f"{final.stem}.rank{rank}of{world}{final.suffix}")
            n_windows = int(shard.n_seq_windows(T, rank, world))
            want_here = {**want, "n_windows": str(n_windows), "rank": str(rank), "world": str(world)}
            if final.exists() and not opts.restart:
                meta = read_state_meta(final)
                _check_state(final, meta, want)
                if meta.get("windows_done") != meta.get("n_windows"):
                    raise DataError(f"{final}: an unfinished single-process state: resume it without torchrun, or --restart")
                path, n_windows, want_here = final, n_total, want
        start, acc, batch_size, prior = 0, None, opts.batch_size, {}
        if path.exists() and not opts.restart:
            meta = read_state_meta(path)
            _check_state(path, meta, want_here)
            acc = load_acc(path)
            start = int(meta.get("windows_done", "0"))
            batch_size = int(meta.get("batch_size", batch_size))  # same batches as before → bit-identical totals
            try:
                prior = json.loads(meta.get("progress", "{}"))
            except ValueError:
                raise DataError(f"{path}: corrupt progress metadata; rerun with --restart") from None
        if acc is None:
            acc = make_acc()

        def save(done: int, progress_meta: dict, to: Path = path, meta: dict = want_here) -> None:
            acc.save(str(to), meta={**meta, "batch_size": str(batch_size), "windows_done": str(done),
                                    "progress": json.dumps(progress_meta)})
            if on_save is not None:
                on_save(kind, done, n_windows)

        if start >= n_windows:  # finished earlier: reuse
            r = PassResult(kind, n_windows, int(prior.get("tokens", 0)), 0.0, 0.0, 0.0, 0.0,
                           start, int(prior.get("skipped_nonfinite", 0)), float(prior.get("val_nll", 0.0)),
                           int(prior.get("val_correct", 0)), reused=True, cuda_timed=device.type == "cuda")
            for k in _TIMINGS:
                setattr(r, k, float(prior.get(k, 0.0)))
            return acc, r
        r = _run_pass(kind, acc, model, shard, T, n_windows, start, batch_size, device, opts, save, pbar,
                      f"{kind} pass", head=head, prior=prior, rank=rank, world=world, layout=layout,
                      on_progress=on_progress)
        if start > 0:  # timings of a resumed pass: add those of the part done before
            for k in _TIMINGS:
                setattr(r, k, getattr(r, k) + float(prior.get(k, 0.0)))
        if world == 1 or not grouped:  # single process, or --shard: this part's state is complete
            save(n_windows, {"tokens": r.tokens, "skipped_nonfinite": r.skipped_nonfinite, "val_nll": r.val_nll,
                             "val_correct": r.val_correct, **{k: getattr(r, k) for k in _TIMINGS}})
            if not grouped and world > 1:
                partial[kind] = path
            return acc, r
        # all ranks: sum the accumulators and counters; rank 0 writes the total, then the parts go
        save(n_windows, {"tokens": r.tokens, "skipped_nonfinite": r.skipped_nonfinite, "val_nll": r.val_nll,
                         "val_correct": r.val_correct, **{k: getattr(r, k) for k in _TIMINGS}})
        acc.all_reduce()
        r.tokens, r.skipped_nonfinite, r.val_nll, r.val_correct = _all_reduce_sum(
            [r.tokens, r.skipped_nonfinite, r.val_nll, r.val_correct], device)
        r.tokens, r.skipped_nonfinite, r.val_correct = int(r.tokens), int(r.skipped_nonfinite), int(r.val_correct)
        if rank == 0:
            save(n_total, {"tokens": r.tokens, "skipped_nonfinite": r.skipped_nonfinite, "val_nll": r.val_nll,
                           "val_correct": r.val_correct, **{k: getattr(r, k) for k in _TIMINGS}, "world": world},
                 to=final, meta=want)
        import torch.distributed as dist

        dist.barrier()
        path.unlink(missing_ok=True)
        return acc, r

    results: dict[str, PassResult] = {}
    try:
        if layout.class_ids is not None and (rank == 0 or opts.part is not None):
            from lcfast.io import save_tensors

            save_tensors(out_dir / cl.CLASSES_FILE, {"class_ids": layout.class_ids.contiguous()},
                         {"classes": f"top:{layout.per_slot}", "shard_fingerprint": str(shards["train"].fingerprint)})
        # with hidden-state slots, the covariance covers the head slot's classes only
        cov0 = layout.head_mask(device) if opts.covariance and not layout.trivial else None
        train, results["train"] = run_pass(
            "train", shards["train"],
            lambda: ClassStats(layout.total_classes, layout.dim, covariance=opts.covariance, device=device,
                               nonfinite=nonfinite, cov_classes=cov0),
            lambda p: _load_classstats(p, device), layout_want,
        )
        if partial:
            return _part_summary(src, out_dir, opts, partial, results)
        K = layout.per_slot
        kept_slot = (train.counts[:K] >= opts.min_count).to("cpu")  # the head slot decides (counts equal in every slot)
        if not bool(kept_slot.any()):
            raise DataError(f"{paths['train']}: no class has ≥ {opts.min_count} samples (--min-count)")
        kept_in_slot = kept_slot.nonzero().squeeze(1)
        kept_ids = kept_in_slot if layout.class_ids is None else layout.class_ids[kept_in_slot]
        kept = torch.zeros(C, dtype=torch.bool)
        kept[kept_ids] = True
        head_means = (train if layout.trivial else layout.slot_stats(train, 0)).means
        kept_means = head_means.index_select(0, kept_in_slot.to(head_means.device))
        # the paper's NC4 (nearest of all C means, docs/metrics.md) needs the head slot's full table;
        # with --classes top:K only K classes were collected, so it is not decided (measure says so)
        all_means = head_means if layout.class_ids is None else None
        # the full S·K×d means only for the exact pass; the first pass's state is freed before the next pass
        means = train.means if opts.exact else None
        del train, head_means
        if opts.exact:
            cov_kept = None
            if opts.covariance:  # (the within-class covariance of this pass covers exactly the kept classes)
                cov_kept = torch.zeros(layout.total_classes, dtype=torch.bool)
                cov_kept[:K] = kept_slot
                cov_kept = cov_kept.to(device)
            _, results["train_exact"] = run_pass(
                "train_exact", shards["train"],
                lambda: ClassStats.second_pass(means, covariance=opts.covariance, device=device, nonfinite=nonfinite,
                                               cov_classes=cov_kept),
                lambda p: _load_classstats(p, device),
                {"means_fingerprint": stats_fingerprint(means), "min_count": str(opts.min_count), **layout_want},
            )
            if partial:
                return _part_summary(src, out_dir, opts, partial, results)
            del means
        _, results["val"] = run_pass(
            "val", shards["val"],
            # all_classes: the paper's NC4 from the same search; a state saved by an older lcfast
            # without it resumes as it was (measure then says so)
            lambda: NCCStats(C, kept_means if all_means is None else all_means, kept, W, b,
                             all_classes=all_means is not None),
            lambda p: _load_ncc(p, kept_means if all_means is None else all_means, W, b),
            {"means_fingerprint": stats_fingerprint(kept_means), "min_count": str(opts.min_count),
             **({"dtype": layout_want["dtype"]} if "dtype" in layout_want else {})},
            head=(W, b),
        )
        if partial:
            return _part_summary(src, out_dir, opts, partial, results)
    finally:
        if pbar is not None:
            pbar.stop()

    fwd = sum(r.forward_s for r in results.values())
    stats_s = sum(r.stats_s for r in results.values())
    val = results["val"]
    vt = val.tokens - val.skipped_nonfinite
    summary = {
        "version": 1,
        "model": src.name,
        "checkpoint": src.checkpoint,
        "epoch": src.epoch,
        "out_dir": str(out_dir),
        "source": {"kind": src.kind, "path": str(src.path.resolve())},
        "model_fingerprint": model_fp,
        **facts,
        "data_dir": str(src.data_dir.resolve()),
        "tokenizer": str(paths["tokenizer"].resolve()) if paths["tokenizer"].is_file() else None,
        "shards": {
            k: {"path": str(Path(str(s.path)).resolve()), "fingerprint": str(s.fingerprint), "n_tokens": int(s.n_tokens),
                "vocab_size": int(s.vocab_size)}
            for k, s in shards.items()
        },
        "options": {"exact": opts.exact, "covariance": opts.covariance, "min_count": opts.min_count,
                    "batch_size": opts.batch_size, "max_tokens": opts.max_tokens, "device": str(device),
                    "backend": opts.backend, "skip_nonfinite": opts.skip_nonfinite, "dtype": dtype_name(dtype),
                    "layers": opts.layers, "classes": opts.classes or "all"},
        "kept_classes": int(kept.sum()),
        **({} if layout.trivial else {"layout": layout.to_json()}),
        "stats_bytes": est,
        "files": {k: PASS_FILES[k] for k in results},
        "passes": {k: r.as_dict() for k, r in results.items()},
        "val_pass": {
            "positions": vt,
            "loss": val.val_nll / vt if vt else None,
            "acc": val.val_correct / vt if vt else None,
            "perplexity": math.exp(min(val.val_nll / vt, 700.0)) if vt else None,
        },
        "world_size": world,
        "timing": {
            "forward_s": fwd,
            "stats_s": stats_s,
            "stats_share_of_forward": stats_s / fwd if fwd > 0 else None,
            "train_stats_share_of_forward": results["train"].as_dict()["stats_share_of_forward"],
            "train_stats_share_of_forward_cpu": results["train"].as_dict()["stats_share_of_forward_cpu"],
            "wall_s": time.perf_counter() - t_start,
            "device": str(device),
            "torch_threads": torch.get_num_threads(),
        },
    }
    if rank == 0:
        atomic_write_json(out_dir / COLLECT_JSON, summary)
    return summary


def _part_summary(src, out_dir: Path, opts: CollectOptions, partial: dict[str, Path], results: dict) -> dict:
    """What `collect --shard i/n` returns when it stopped after writing its part of a pass (the
    next pass needs the merged means): nothing but the part state is written."""
    kind, path = next(iter(partial.items()))
    r = results[kind]
    return {"model": src.name, "checkpoint": src.checkpoint, "out_dir": str(out_dir), "shard": opts.part.spec,
            "status": "part done", "pass": kind, "state": str(path), "windows": r.windows, "tokens": r.tokens,
            "next": f"when all {opts.part.count} parts are done: lcfast merge {out_dir}, then rerun the shards"
                    " (or one plain 'lcfast collect') for the next pass"}


def merge(out_dir: str | Path) -> list[dict]:
    """`lcfast merge OUT`: add the finished `--shard i/n` parts of each pass into its state file."""
    from lcfast.pipeline.collect_parts import merge_dir

    return merge_dir(Path(out_dir), read_state_meta, {PASS_FILES[k]: k for k in ("train", "train_exact", "val")})


# --------------------------------------------------------------------------------------------
# torchrun


def dist_rank_world() -> tuple[int, int]:
    """(rank, world size) of an initialised torch.distributed group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: str) -> tuple[str, bool]:
    """Under torchrun (WORLD_SIZE > 1 in the environment) start the process group — NCCL on CUDA,
    else gloo — and pin this rank to cuda:LOCAL_RANK. Returns (device to use, whether this call
    started the group, so the caller destroys it)."""
    import os

    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1 or dist.is_initialized():
        return device, False
    dev = resolve_device(device)
    if dev.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return device, True


def _all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    import torch.distributed as dist

    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _load_classstats(path: Path, device: torch.device):
    from lcfast.stats.classstats import ClassStats

    return ClassStats.load(str(path), device=device)


def _load_ncc(path: Path, means, W, b):
    from lcfast.stats.ncc import NCCStats

    return NCCStats.load(str(path), means=means, W=W, b=b)


def collect(
    run: str | Path,
    *,
    checkpoint: str | int = "last",
    data: str | Path | None = None,
    out: str | Path | None = None,
    opts: CollectOptions | None = None,
    console=None,
    progress: bool = True,
    on_save: SaveHook | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> list[dict]:
    """Collect every selected checkpoint of RUN; returns their collect.json summaries. Under
    torchrun, every rank takes a disjoint block of the windows and the accumulators are summed.
    `on_progress(pass kind, windows done, windows of the pass)` is called after every batch."""
    import dataclasses

    opts = check_options(opts or CollectOptions())
    srcs = resolve_sources(run, checkpoint, data)
    device, started = init_distributed(opts.device)
    opts = dataclasses.replace(opts, device=device)
    try:
        return _collect_sources(srcs, checkpoint, out, opts, console, progress, on_save, on_progress)
    finally:
        if started:
            import torch.distributed as dist

            dist.destroy_process_group()


def _collect_sources(srcs, checkpoint, out, opts, console, progress, on_save, on_progress=None) -> list[dict]:
    out_root = Path(out) if out is not None else None
    res = []
    for src in srcs:
        od = None
        if out_root is not None:
            od = out_root / src.checkpoint if len(srcs) > 1 or str(checkpoint).lower() == "all" else out_root
        where = od if od is not None else default_out_dir(src)
        with interrupt_note(lambda where=where: interrupted_note(where)):
            res.append(collect_checkpoint(src, od, opts, console=console, progress=progress, on_save=on_save,
                                          on_progress=on_progress))
    return res


def interrupted_note(out_dir: Path) -> str:
    """What an interrupted `collect` kept in `out_dir`: its latest resume state, or none yet."""
    from lcfast.io import read_tensor_meta

    states = sorted((p for p in Path(out_dir).glob("*.safetensors") if p.is_file()), key=lambda p: p.stat().st_mtime)
    if not states:
        return f"no resume state in {out_dir} yet; rerun the same command to start again"
    p = states[-1]
    try:
        meta = read_tensor_meta(p, "state file")
        where = f" ({meta.get('pass', '?')} pass at window {meta.get('windows_done', '?')} of {meta.get('n_windows', '?')})"
    except DataError:
        where = ""
    return f"resume state {p}{where} is intact; rerun the same command to resume"


def print_collect_summary(summaries: list[dict], console) -> None:
    """What `collect` did, as a table that is never cut: positions, throughput, the statistics' cost
    (their time as a share of the model forward), kept classes, val loss, the output folder."""
    from lcfast.tables import print_table

    def pct(v):
        return f"{v:.1%}" if v is not None else "-"

    heads = ["model", "checkpoint", "train positions", "val positions", "train tok/s", "class stats / forward",
             "NC4 / val forward", "kept classes", "val loss", "out"]
    rows = []
    for s in summaries:
        tr, va = s["passes"]["train"], s["passes"]["val"]
        tps = tr.get("tokens_per_s")
        vl = s["val_pass"]["loss"]
        rows.append([
            s["model"], s["checkpoint"], f"{tr['tokens']:,}", f"{va['tokens']:,}",
            "reused" if tr.get("reused") else (f"{tps:,.0f}" if tps else "-"),
            pct(tr.get("stats_share_of_forward")), pct(va.get("stats_share_of_forward")),
            f"{s['kept_classes']:,}", f"{vl:.4f}" if vl is not None else "-", s.get("out_dir", ""),
        ])
    print_table(console, "lcfast collect", heads, rows, keys=2, fold=["out"],
                justify={h: "right" for h in heads[2:9]})
