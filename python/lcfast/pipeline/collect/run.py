"""Collection: class statistics over the train shard and NC4 decisions over the val shard.

For one model checkpoint, `collect_checkpoint` runs

1. a **train pass**: every label position of the train shard (or of a seeded uniform random sample
   of its windows, `--max-tokens N --seed S`: lcfast.model.features.WindowPlan), in deterministic
   sequential windows of the model's context, feeds its final-layer-norm feature h (the LM head's input) and its label
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
with a `DataError` naming the file (`restart=True` ignores it; the new pass's saves replace it);
every state in the folder is checked against what the options decide before anything is written,
so a refused rerun leaves the collection that is there as it was.

The model is a lcfast run, a transformers GPT-Neo folder (both on lcfast's own GPT-Neo) or any
transformers causal LM (`lcfast.model.hf`: the head input read by a forward hook; refused unless
causal — by its config and by a probe on the first window — and loaded whole from its checkpoint), run in
`--dtype`; windows are `--context` tokens long (default: the model's maximum, at most 2048 for
transformers models). `--layers` adds the class statistics of chosen hidden states and
`--classes top:K` restricts them to the K most frequent classes, in the same forward and the same
accumulator (`lcfast.pipeline.collect.layers`); their memory is estimated before the first forward.

`--folds K` (the CLI's default 8; 1 with --covariance; `CollectOptions`' default 1) deals the
windows into K folds, a pure function of (seed, window index), and every pass accumulates the K
folds side by side in its one accumulator (lcfast.pipeline.collect.folds): their merge is the
single-fold total, and `lcfast measure` turns them into standard errors and a convergence table.
The memory estimate counts the K folds; when --folds is not given and 8 do not fit, the largest
of 4, 2, 1 that fits is used (collect.json says which).

The forward and the statistics are timed separately (CUDA synchronised), so `collect.json` says
what share of the collection the statistics cost on top of the model forward.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from lcfast import dist
from lcfast.data.datadir import DataDir
from lcfast.dist import resolve_device
from lcfast.errors import DataError, UsageError, interrupt_note
from lcfast.io import atomic_write_json, make_dir
from lcfast.model.gptneo import GPTNeo
from lcfast.model.sources import (
    ModelSource,
    check_compat,
    load_source,
    model_facts,
    model_head,
    resolve_sources,
)
from lcfast.pipeline.collect.options import CollectOptions
from lcfast.pipeline.collect.passes import PassJob, PassResult, check_saved_states, run_pass
from lcfast.pipeline.collect.state import COLLECT_JSON, PASS_FILES, interrupted_note

#: called after every state save with (pass kind, windows done, windows total); tests use it to
#: simulate a kill right after a save.
SaveHook = Callable[[str, int, int], None]


# --------------------------------------------------------------------------------------------
# where the model and the data come from


def data_paths(data_dir: Path) -> dict[str, Path]:
    """train/val shard and tokenizer paths of a tokenized data dir (checked: DataDir.check)."""
    d = DataDir.check(data_dir)
    return {"train": d.train, "val": d.val, "tokenizer": d.tokenizer}



def check_options(opts: CollectOptions) -> CollectOptions:
    """The numeric options checked (UsageError naming the flag) before anything is read or written."""
    from lcfast import validate

    validate.integer("--batch-size", opts.batch_size, min=1)
    validate.integer("--min-count", opts.min_count, min=1)
    if opts.max_tokens is not None:
        validate.integer("--max-tokens", opts.max_tokens, min=1)
    if opts.context is not None:
        validate.integer("--context", opts.context, min=1)
    validate.seed("--seed", opts.seed)
    if opts.folds is not None:
        from lcfast.pipeline.collect.folds import MAX_FOLDS

        validate.integer("--folds", opts.folds, min=1, max=MAX_FOLDS)
        if opts.folds > 1 and opts.covariance:
            raise UsageError(f"--folds {opts.folds}: not with --covariance (the within-class covariance is "
                             "accumulated for the totals only); use --folds 1")
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
        "accumulators": 3 * C * d * 8 * (opts.folds or 1) + (2 * d * d * 8 if opts.covariance else 0),
        "val logits": 8192 * C * 4 * 2,
    }
    by_batch = parts["model forward"] + parts["features in float64"] >= parts["accumulators"] + parts["val logits"]
    flags = f"--batch-size {B}" if by_batch else f"--batch-size {B} (model: vocabulary {C}, width {d})"
    return validate.check_memory(flags, "collection", parts, device,
                                 hint=f"context {T}; lower --batch-size" if by_batch else "")


# --------------------------------------------------------------------------------------------
# one checkpoint, set up


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


def _open_model(src: ModelSource, opts: CollectOptions, dtype: torch.dtype, device: torch.device, shards: dict,
                model=None) -> tuple[object, dict, int, list[str]]:
    """The model (loaded unless given), checked against the shards; (model on `device`, facts, T,
    notes: what transformers said while loading it and what could not be checked)."""
    if model is None:
        model = load_source(src, dtype)
    notes = check_compat(model, src, shards)
    notes = [*(f"{src.path}: transformers said while loading: {n[:300]}" for n in getattr(model, "load_notes", [])),
             *notes]
    facts = model_facts(model, src)
    T = window_length(opts.context, facts["context"], src)
    facts = {**facts, "context": T, "max_context": facts["context"]}
    if isinstance(model, GPTNeo):  # lcfast's own model: its forward's memory is known term by term
        check_memory(model.config, opts, device, T)
    return model, facts, T, notes


def _check_causal(model, shard, T: int) -> None:
    """A transformers model must be causal, checked on the first window: config.json can be wrong
    or silent (a BERT folder loads as BertLMHeadModel, bidirectional). lcfast's own GPT-Neo is
    causal by construction."""
    if not hasattr(model, "hf"):
        return
    from lcfast.model.features import window_batch
    from lcfast.model.hf import check_causal

    x, _, mask = window_batch(shard, T, 0, 1)
    check_causal(model, x[0, : int(mask[0].sum())], int(shard.vocab_size), f"the first window of {shard.path}")


def _parts(opts: CollectOptions) -> tuple[int, int, bool]:
    """(rank, world, grouped): this process's share of the windows, torchrun's or --shard's."""
    rank, world = dist.rank(), dist.world_size()
    grouped = world > 1
    if opts.part is not None:  # --shard i/n: this process is part i of n, without a group
        if grouped:
            raise UsageError(f"--shard {opts.part.spec}: not under torchrun (the ranks already split the windows)")
        rank, world = opts.part.index, opts.part.count
    # --max-tokens with parts: every part computes the same seeded sample (a pure function of the seed
    # and the window indices) and takes its contiguous share of it, so the parts still cover it once
    return rank, world, grouped


def _fit_folds(layout, opts: CollectOptions, device: torch.device) -> tuple[int, int]:
    """(K, bytes the statistics need): --folds as given (refused when it does not fit), or by
    default 8 — 1 with --covariance — and the largest of 4, 2, 1 that fits when 8 do not."""
    from lcfast.pipeline.collect import layers as cl
    from lcfast.pipeline.collect.folds import DEFAULT_FOLDS

    def est(k: int) -> int:
        return cl.check_memory(layout, exact=opts.exact, covariance=opts.covariance, device=device,
                               budget=opts.max_memory, layers_flag=opts.layers.text if opts.layers else None, folds=k)

    if opts.folds is not None:
        return opts.folds, est(opts.folds)
    k = 1 if opts.covariance else DEFAULT_FOLDS
    while k > 1:
        try:
            return k, est(k)
        except UsageError:
            k //= 2
    return 1, est(1)


def _open_job(src: ModelSource, out_dir: Path | None, opts: CollectOptions, model, on_save, on_progress) -> PassJob:
    """Everything checked and loaded before the first pass: options, data, model, memory, the slot
    layout, this process's part, the output folder."""
    from lcfast.data.shards import TokenShard
    from lcfast.model.hf import dtype_name, parse_dtype
    from lcfast.pipeline.collect import layers as cl

    dtype = parse_dtype(opts.dtype)
    top_k = None if opts.classes is None else opts.classes.top_k  # (--layers: its range once the model is open)
    device = resolve_device(opts.device)
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(src)
    paths = DataDir.check(src.data_dir)
    shards = {"train": TokenShard(str(paths.train)), "val": TokenShard(str(paths.val))}
    model, facts, T, notes = _open_model(src, opts, dtype, device, shards, model)
    model_fp = str(model.fingerprint())
    model = model.to(device).eval()
    _check_causal(model, shards["train"], T)
    t_start = time.perf_counter()
    layout = cl.slot_layout(model, opts.layers, shards["train"], T, facts["n_classes"], facts["dim"], top_k, device)
    n_folds, est = _fit_folds(layout, opts, device)
    # None: a state of the plain layout / of float32 has no such key, and must not have one
    layout_want = {"layout": None if layout.trivial else layout.key(),
                   "dtype": None if dtype == torch.float32 else dtype_name(dtype)}
    rank, world, grouped = _parts(opts)
    job = PassJob(src=src, out_dir=out_dir, opts=opts, device=device, dtype=dtype, paths=paths, shards=shards,
                  model=model, model_fp=model_fp, facts=facts, T=T, head=model_head(model), layout=layout,
                  layout_want=layout_want, est=est, rank=rank, world=world, grouped=grouped, t_start=t_start,
                  on_save=on_save, on_progress=on_progress, notes=notes, n_folds=n_folds)
    check_saved_states(job)
    # --restart ignores the saved states instead of deleting them: each is replaced (atomically) by
    # the new pass's first save, so a restart that fails early loses nothing
    make_dir(out_dir, "the output folder")
    return job


def _start_progress(job: PassJob, console) -> None:
    """The progress display of the passes (the process that reports: rank 0, or a --shard part)."""
    if job.rank == 0 or job.opts.part is not None:
        from lcfast.progress import progress_bar

        job.pbar = progress_bar(unit="windows", fields=("tps",), console=console)
        job.pbar.start()
        job.pbar.console.print(f"[bold]{job.src.name}[/] {job.src.checkpoint} → {job.out_dir}", highlight=False)


def _load_classstats(path: Path, device: torch.device):
    from lcfast.stats.classstats import ClassStats

    return ClassStats.load(str(path), device=device)


def _load_ncc(path: Path, means, W, b):
    from lcfast.stats.ncc import NCCStats

    return NCCStats.load(str(path), means=means, W=W, b=b)


# --------------------------------------------------------------------------------------------
# the three passes of one checkpoint


@dataclass
class _Kept:
    """The classes the train pass kept (≥ --min-count samples in the head slot) and their means."""

    kept: torch.Tensor  # bool [C]
    kept_slot: torch.Tensor  # bool [K]: kept, by position in the head slot
    kept_means: torch.Tensor  # [kept, d]
    all_means: torch.Tensor | None  # the head slot's full [C, d] table (None with --classes top:K)
    means: torch.Tensor | None  # every slot's means [S·K, d], for the exact pass only


def _train_pass(job: PassJob):
    from lcfast.stats.classstats import ClassStats

    opts, layout, device = job.opts, job.layout, job.device
    write_classes = None
    if layout.class_ids is not None and (job.rank == 0 or opts.part is not None):
        write_classes = _classes_writer(job)
        if not opts.restart and (job.out_dir / PASS_FILES["train"]).exists():
            with dist.together():  # the train state agrees with this layout (checked): so must the list
                write_classes()
    # with hidden-state slots, the covariance covers the head slot's classes only
    cov0 = layout.head_mask(device) if opts.covariance and not layout.trivial else None
    nonfinite = "skip" if opts.skip_nonfinite else "error"
    return run_pass(job, "train", job.shards["train"],
                 lambda: ClassStats(layout.total_classes * job.n_folds, layout.dim, covariance=opts.covariance,
                                    device=device,
                                    nonfinite=nonfinite, cov_classes=cov0),
                 lambda p: _load_classstats(p, device), job.layout_want, before_save=write_classes)


def _classes_writer(job: PassJob) -> Callable[[], None]:
    """Writes classes.safetensors (the kept ids of --classes top:K) unless it already holds them.
    It goes with the train pass's first save, never before: until then the collection in the
    folder (its states, collect.json) is the earlier one, and `measure` reads the list with it."""
    from lcfast.io import load_tensors, save_tensors
    from lcfast.pipeline.collect.layers import CLASSES_FILE

    path, ids = job.out_dir / CLASSES_FILE, job.layout.class_ids.contiguous()
    meta = {"classes": f"top:{job.layout.per_slot}", "shard_fingerprint": str(job.shards["train"].fingerprint)}
    done = False

    def write() -> None:
        nonlocal done
        if done:
            return
        try:
            have, have_meta = load_tensors(path, "kept classes")
            same = have_meta == meta and torch.equal(have.get("class_ids", torch.empty(0)), ids)
        except DataError:  # absent or unreadable: our own output, rewritten
            same = False
        if not same:
            save_tensors(path, {"class_ids": ids}, meta)
        done = True

    return write


def _kept_classes(job: PassJob, train) -> _Kept:
    opts, layout = job.opts, job.layout
    K = layout.per_slot
    kept_slot = (train.counts[:K] >= opts.min_count).to("cpu")  # the head slot decides (counts equal in every slot)
    if not bool(kept_slot.any()):
        raise DataError(f"{job.paths.train}: no class has ≥ {opts.min_count} samples (--min-count)")
    kept_in_slot = kept_slot.nonzero().squeeze(1)
    kept_ids = kept_in_slot if layout.class_ids is None else layout.class_ids[kept_in_slot]
    kept = torch.zeros(job.C, dtype=torch.bool)
    kept[kept_ids] = True
    head_means = (train if layout.trivial else layout.slot_stats(train, 0)).means
    kept_means = head_means.index_select(0, kept_in_slot.to(head_means.device))
    # the paper's NC4 (nearest of all C means, docs/metrics.md) needs the head slot's full table;
    # with --classes top:K only K classes were collected, so it is not decided (measure says so)
    all_means = head_means if layout.class_ids is None else None
    return _Kept(kept, kept_slot, kept_means, all_means, train.means if opts.exact else None)


def _exact_pass(job: PassJob, sel: _Kept) -> PassResult:
    """The second train pass: Σ‖h − μ_y‖² (and the covariance) about the first pass's means."""
    from lcfast.stats.classstats import ClassStats
    from lcfast.stats.state_file import tensor_fingerprint as stats_fingerprint

    opts, layout, device = job.opts, job.layout, job.device
    cov_kept = None
    if opts.covariance:  # (the within-class covariance of this pass covers exactly the kept classes)
        cov_kept = torch.zeros(layout.total_classes, dtype=torch.bool)
        cov_kept[:layout.per_slot] = sel.kept_slot
        cov_kept = cov_kept.to(device)
    nonfinite = "skip" if opts.skip_nonfinite else "error"
    means = sel.means
    _, r = run_pass(job, "train_exact", job.shards["train"],
                 lambda: ClassStats.second_pass(means, covariance=opts.covariance, device=device, nonfinite=nonfinite,
                                                cov_classes=cov_kept),
                 lambda p: _load_classstats(p, device),
                 {"means_fingerprint": stats_fingerprint(means), "min_count": str(opts.min_count), **job.layout_want})
    return r


def _val_pass(job: PassJob, sel: _Kept) -> PassResult:
    """NC4 decisions (and the model's val loss) over the val shard, from the kept train means."""
    from lcfast.stats.ncc import NCCStats
    from lcfast.stats.state_file import tensor_fingerprint as stats_fingerprint

    W, b = job.head
    means = sel.kept_means if sel.all_means is None else sel.all_means
    K = job.n_folds
    if K > 1:  # K folds of val positions, all searched with the merged train means
        from lcfast.pipeline.collect.folds import FoldedNCC

        make = lambda: FoldedNCC(K, job.C, means, sel.kept, W, b, all_classes=sel.all_means is not None)  # noqa: E731
        load = lambda p: FoldedNCC.resume(_load_ncc(p, None, None, None), K, job.C, means, sel.kept, W, b)  # noqa: E731
    else:
        # all_classes: the paper's NC4 from the same search; a state saved by an older lcfast
        # without it resumes as it was (measure then says so)
        make = lambda: NCCStats(job.C, means, sel.kept, W, b, all_classes=sel.all_means is not None)  # noqa: E731
        load = lambda p: _load_ncc(p, means, W, b)  # noqa: E731
    _, r = run_pass(job, "val", job.shards["val"], make, load,
                 {"means_fingerprint": stats_fingerprint(sel.kept_means), "min_count": str(job.opts.min_count)})
    return r


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
    `on_progress(pass kind, windows done, windows of the pass)` is called after every batch.
    With `--shard i/n` it stops after writing its part of the first pass that is not merged yet."""
    opts = check_options(opts or CollectOptions())
    with dist.together():
        job = _open_job(src, out_dir, opts, model, on_save, on_progress)
    if job.rank == 0 or opts.part is not None:  # after every refusal: a refused collection says one line
        import warnings

        from lcfast.errors import LcfastWarning

        for note in job.notes:
            warnings.warn(note, LcfastWarning, stacklevel=2)
    results: dict[str, PassResult] = {}
    try:
        if progress:
            _start_progress(job, console)
        train, results["train"] = _train_pass(job)
        if job.partial:
            return _part_summary(job, results)
        if job.n_folds > 1:  # the kept classes and the val pass's means: of the merged folds
            from lcfast.pipeline.collect.folds import merge_all, split_folds

            sel = _kept_classes(job, merge_all(split_folds(train, job.n_folds)))
            sel.means = train.means if opts.exact else None  # the exact pass: about each fold's own means
        else:
            sel = _kept_classes(job, train)
        del train  # the first pass's state is freed before the next pass
        if opts.exact:
            results["train_exact"] = _exact_pass(job, sel)
            if job.partial:
                return _part_summary(job, results)
            sel.means = None
        results["val"] = _val_pass(job, sel)
        if job.partial:
            return _part_summary(job, results)
    finally:
        if job.pbar is not None:
            job.pbar.stop()
    summary = _summary(job, results, int(sel.kept.sum()))
    with dist.together():
        if job.rank == 0:
            atomic_write_json(job.out_dir / COLLECT_JSON, summary)
    return summary


def _summary(job: PassJob, results: dict[str, PassResult], kept: int) -> dict:
    """collect.json: the model, data, options, passes and timing of a finished collection."""
    from lcfast.model.hf import dtype_name

    src, opts, paths = job.src, job.opts, job.paths
    fwd = sum(r.forward_s for r in results.values())
    stats_s = sum(r.stats_s for r in results.values())
    val = results["val"]
    vt = val.tokens - val.skipped_nonfinite
    train = results["train"].as_dict()
    return {
        "version": 1,
        "model": src.name,
        "checkpoint": src.checkpoint,
        "epoch": src.epoch,
        "out_dir": str(job.out_dir),
        "source": {"kind": src.kind, "path": str(src.path.resolve())},
        "model_fingerprint": job.model_fp,
        **job.facts,
        "data_dir": str(src.data_dir.resolve()),
        "tokenizer": str(paths.tokenizer.resolve()) if paths.tokenizer.is_file() else None,
        "shards": {
            k: {"path": str(Path(str(s.path)).resolve()), "fingerprint": str(s.fingerprint),
                "n_tokens": int(s.n_tokens), "vocab_size": int(s.vocab_size)}
            for k, s in job.shards.items()
        },
        "options": {"exact": opts.exact, "covariance": opts.covariance, "min_count": opts.min_count,
                    "batch_size": opts.batch_size, "max_tokens": opts.max_tokens, "device": str(job.device),
                    "backend": opts.backend, "skip_nonfinite": opts.skip_nonfinite, "dtype": dtype_name(job.dtype),
                    "layers": opts.layers.text if opts.layers else None,
                    "classes": opts.classes.text if opts.classes else "all", "seed": opts.seed,
                    "folds": job.n_folds},
        "windows": {k: {"windows": len(p), "of": p.n_total, "sampled": p.sampled}
                    for k, p in (("train", job.plans.get(str(job.shards["train"].path))),
                                 ("val", job.plans.get(str(job.shards["val"].path)))) if p is not None},
        "kept_classes": kept,
        **({} if job.layout.trivial else {"layout": job.layout.to_json()}),
        "stats_bytes": job.est,
        "files": {k: PASS_FILES[k] for k in results},
        "passes": {k: r.as_dict() for k, r in results.items()},
        "val_pass": {
            "positions": vt,
            "loss": val.val_nll / vt if vt else None,
            "acc": val.val_correct / vt if vt else None,
            "perplexity": math.exp(min(val.val_nll / vt, 700.0)) if vt else None,
        },
        "world_size": job.world,
        "timing": {
            "forward_s": fwd,
            "stats_s": stats_s,
            "stats_share_of_forward": stats_s / fwd if fwd > 0 else None,
            "train_stats_share_of_forward": train["stats_share_of_forward"],
            "train_stats_share_of_forward_cpu": train["stats_share_of_forward_cpu"],
            "wall_s": time.perf_counter() - job.t_start,
            "device": str(job.device),
            "torch_threads": torch.get_num_threads(),
        },
    }


def _part_summary(job: PassJob, results: dict) -> dict:
    """What `collect --shard i/n` returns when it stopped after writing its part of a pass (the
    next pass needs the merged means): nothing but the part state is written."""
    src, opts = job.src, job.opts
    kind, path = next(iter(job.partial.items()))
    r = results[kind]
    return {"model": src.name, "checkpoint": src.checkpoint, "out_dir": str(job.out_dir), "shard": opts.part.spec,
            "status": "part done", "pass": kind, "state": str(path), "windows": r.windows, "tokens": r.tokens,
            "next": f"when all {opts.part.count} parts are done: lcfast merge {job.out_dir}, then rerun the shards"
                    " (or one plain 'lcfast collect') for the next pass"}


def merge(out_dir: str | Path) -> list[dict]:
    """`lcfast merge OUT`: add the finished `--shard i/n` parts of each pass into its state file."""
    from lcfast.pipeline.collect.parts import merge_dir

    return merge_dir(Path(out_dir))


# --------------------------------------------------------------------------------------------
# every checkpoint of a MODEL argument


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
    revisions: str | None = None,
) -> list[dict]:
    """Collect every selected checkpoint of RUN; returns their collect.json summaries. Under
    torchrun, every rank takes a disjoint block of the windows and the accumulators are summed.
    `on_progress(pass kind, windows done, windows of the pass)` is called after every batch.
    `revisions` ("all" or "A,B,…", RUN = hf:ORG/NAME): each cached revision in turn into
    OUT/<revision>/, those done before skipped (lcfast.pipeline.revisions)."""
    import dataclasses

    opts = check_options(opts or CollectOptions())
    srcs = resolve_sources(run, checkpoint, data, revisions=revisions)
    ctx = None
    if dist.in_job():  # under torchrun: join (or reuse) the process group; this rank's device
        ctx = dist.init(opts.device, timeout_s=opts.dist_timeout)
        opts = dataclasses.replace(opts, device=str(ctx.device))
    try:
        res = _collect_sources(srcs, checkpoint, out, opts, console, progress, on_save, on_progress,
                               sweep=revisions is not None)
    except BaseException:
        if ctx is not None:
            dist.shutdown(ctx, ok=False)  # (no closing barrier: a peer may be gone)
        raise
    if ctx is not None:
        dist.shutdown(ctx)
    return res


def _collect_sources(srcs, checkpoint, out, opts, console, progress, on_save, on_progress=None,
                     sweep: bool = False) -> list[dict]:
    out_root = Path(out) if out is not None else None
    res = []
    for src in srcs:
        od = None
        if out_root is not None:
            od = out_root / src.checkpoint if len(srcs) > 1 or str(checkpoint).lower() == "all" or sweep else out_root
        where = od if od is not None else default_out_dir(src)
        if sweep:  # a training history: the revisions done before are skipped without loading them
            from lcfast.pipeline.revisions import done_before

            done = done_before(src, where, opts)
            if done is not None:
                if console is not None and progress and dist.rank() == 0:
                    console.print(f"{src.name} {src.checkpoint}: collected before in {where}, skipped", highlight=False)
                res.append(done)
                continue
        saved: set[str] = set()  # passes that saved a state in this run (what a --restart may name)
        existed = where.is_dir()
        # the state files there before this run: an interrupt landing between a save's rename and
        # `saving` below must still count that save (the disk, not the callback, says what is there)
        states_before = _state_files(where)

        def saving(kind: str, done: int, total: int, saved=saved) -> None:
            saved.add(kind)
            if on_save is not None:
                on_save(kind, done, total)

        def note(where=where, saved=saved, existed=existed, states_before=states_before) -> str:
            wrote = bool(saved) or _state_files(where).items() - states_before.items() != set()
            return interrupted_note(where, opts.restart, wrote, existed)

        with interrupt_note(note):
            res.append(collect_checkpoint(src, od, opts, console=console, progress=progress, on_save=saving,
                                          on_progress=on_progress))
    return res


def _state_files(folder: Path) -> dict[str, tuple[int, int]]:
    """{name: (inode, mtime ns)} of the state files in `folder` ({} when there is none): a save
    replaces a file by rename, so a new inode or mtime means this run wrote it."""
    out = {}
    try:
        for p in Path(folder).glob("*.safetensors"):
            st = p.stat()
            out[p.name] = (st.st_ino, st.st_mtime_ns)
    except OSError:
        pass
    return out


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
