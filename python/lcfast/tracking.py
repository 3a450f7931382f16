"""`lcfast.NCTracker`: neural collapse tracked inside any PyTorch training loop of a causal LM.

    tracker = lcfast.NCTracker(model, every=50, csv="run/nc_track.csv", log=print)
    for batch in loader:
        loss = model(**batch).loss          # batch has input_ids, labels (and attention_mask)
        loss.backward(); opt.step(); opt.zero_grad()
        tracker.step()                      # once per optimizer step: a row dict every 50th, else None

What is read, and from where
----------------------------
The features are the LM head's input, as `lcfast collect` reads them: a forward pre-hook on
`model.get_output_embeddings()` (transformers models: final norms, OPT's projection and other
quirks are the model's own); for lcfast's own GPT-Neo, the output of its final layer norm. Unlike
collect, the training forward is never stopped: the hook keeps a detached view of its input and
the forward goes on to the logits and the loss. With `layers=[i, …]` the inputs of decoder blocks
i (transformers' `hidden_states[i]`: 0 = the embeddings) are read the same way.

Only forwards of the model in training mode with gradients enabled count (an evaluation inside an
interval is not mixed in), and only while the model's own forward runs (the recomputation of
gradient checkpointing during backward is not counted twice).

The labels are those the loss uses, taken from the forward's `labels=` keyword (transformers
convention, `shift_labels=True`: the feature at position t predicts labels[t+1], the last
position predicts nothing) or, for loops that call the model without them (lcfast's GPT-Neo, a
loss computed outside the model), passed to `observe(labels)` / `step(labels=…)` after the
forward. Positions whose label is `ignore_index` (−100) are left out, and with an
`attention_mask` (keyword of the forward, or passed with the labels) so are padded positions:
position t counts only where the mask is 1 at t and at the label's position.

Intervals and rows
------------------
`step()` counts optimizer steps (call it once per optimizer step, after every micro-batch of a
gradient-accumulation step has run its forward). After every `every`-th step the interval's
statistics are summed over the ranks (torch.distributed, when a process group is initialised:
every rank must call `step()` at the same steps) and measured by `lcfast.measure_stats` against
the current LM head W, b: the row holds `step`, `interval_steps`, `n_positions` (positions fed to
the statistics, all ranks) and every key of `lcfast.metrics.measure.CANONICAL_KEYS`
(`nc4_agreement` is always empty: it needs held-out features), then `layer{i}/{key}` for each
tracked layer (NC1/NC2 only: the classifier reads the head input, not that layer). A row equals
`lcfast.measure_embeddings(H, Y, W, b)` over exactly the interval's positions (float64).

Rank 0 appends the row to `csv` (the whole file rewritten atomically, so a reader or a killed run
never sees half a row) and hands it to `log`; every rank gets it back from `step()`.

Resume: `state_dict()` / `load_state_dict()` hold the step count and the current interval's
accumulators (per rank: save every rank's). A resumed tracker drops rows of the CSV past its
restored step (written by a run killed after its last checkpoint) and goes on, so the file ends as
an uninterrupted run's.
"""

from __future__ import annotations

import csv as _csv
import io
import math
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from lcfast import dist, validate
from lcfast.errors import DataError, UsageError

#: the columns before the metrics in every row (and CSV line)
ID_COLUMNS = ("step", "interval_steps", "n_positions")
STATE_VERSION = 1


def _canonical_keys() -> tuple[str, ...]:
    from lcfast.metrics.measure import CANONICAL_KEYS

    # n_positions is one of the row's id columns (the positions fed to the tracker, skipped ones too)
    return tuple(k for k in CANONICAL_KEYS if k not in ID_COLUMNS)


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ""
    return str(v)


def _unwrap(model):
    """The module whose forward the loop calls, under DistributedDataParallel / DataParallel."""
    while isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
        model = model.module
    return model


def _stats_state(st) -> dict:
    # copies: on the CPU .cpu() returns the accumulator itself, which the next update changes in place
    def c(t):
        return t.detach().to("cpu", copy=True)

    return {"counts": c(st._n), "ref": c(st._ref), "s1": c(st._s1), "s2": c(st._s2),
            "cov": None if st._cov is None else c(st._cov), "skipped": int(st.skipped)}


def _stats_load(st, s: dict, what: str) -> None:
    if tuple(s["ref"].shape) != (st.n_classes, st.dim) or (s["cov"] is None) != (st._cov is None):
        raise UsageError(f"NCTracker.load_state_dict: {what}: the saved statistics are "
                         f"{tuple(s['ref'].shape)} (covariance {s['cov'] is not None}), this tracker's "
                         f"{(st.n_classes, st.dim)} (covariance {st._cov is not None})")
    z = dict(device=st.device, dtype=st.dtype, copy=True)  # never accumulate into the caller's tensors
    st._n, st._ref, st._s1, st._s2 = (s[k].to(**z) for k in ("counts", "ref", "s1", "s2"))
    if st._cov is not None:
        st._cov = s["cov"].to(**z)
    st.skipped = int(s["skipped"])


class NCTracker:
    """Neural-collapse metrics of a causal LM's training features, one row every `every` optimizer steps.

    model: a transformers causal LM (anything with `get_output_embeddings()` returning a module
        with a `weight` [C, d]), lcfast's GPT-Neo, or either wrapped in DistributedDataParallel.
    every: optimizer steps per row (≥ 1).
    csv: file that rank 0 rewrites with every row (None: no file); its folder is created.
    log: callable given each row dict on rank 0 (a logger: `wandb.log`, `print`, …).
    layers: decoder-block inputs to track too (transformers' hidden_states indices 0 … L−1).
    covariance: accumulate the within-class covariance (d × d float64, for `nc1_pinv`, as
        `measure_embeddings` does by default); False saves N·d² flops per step, nc1_pinv is empty.
    shift_labels: True (transformers convention) — feature t predicts labels[t+1]; False — labels[t].
    ignore_index: label value left out (−100, as in the loss).
    backend: ClassStats / metrics backend ("auto": Triton on CUDA, fused loop on CPU).

    Call `step()` once per optimizer step; `close()` (or `with NCTracker(...) as t:`) removes the
    hooks. `seconds` is the wall time spent by the tracker so far (accumulation and rows),
    `seconds_rows` the part spent computing rows (the metrics of an interval, writing, logging)."""

    def __init__(self, model: torch.nn.Module, every: int, *, csv: str | Path | None = None,
                 log: Callable[[dict], object] | None = None, layers: Sequence[int] | None = None,
                 covariance: bool = True, shift_labels: bool = True, ignore_index: int = -100,
                 backend: str = "auto") -> None:
        self.every = validate.integer("NCTracker: every", every, min=1)
        if log is not None and not callable(log):
            raise UsageError(f"NCTracker: log must be callable (it is given each row dict), got {type(log).__name__}")
        if not isinstance(model, torch.nn.Module):
            raise UsageError(f"NCTracker: model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = _unwrap(model)
        self.csv = None if csv is None else Path(csv)
        self.log = log
        self.covariance = bool(covariance)
        self.shift_labels = bool(shift_labels)
        self.ignore_index = int(ignore_index)
        self.backend = backend
        self.seconds = 0.0
        self.seconds_rows = 0.0
        self.global_step = 0
        self.interval_steps = 0
        self._rows: list[list[str]] | None = None  # the CSV's rows, read on the first write
        self._pending: list[tuple[dict, torch.Tensor | None]] = []
        self._fwd: dict | None = None  # the running training forward: its labels, mask, features
        self._hooks: list = []
        head_module, head_hook, W_of, b_of, blocks, hidden = self._find_parts(self.model)
        self._W_of, self._b_of = W_of, b_of
        W = W_of()
        self.n_classes, self.dim = int(W.shape[0]), int(W.shape[1])
        self.layers = self._check_layers(layers, blocks)
        self._layer_dims = {i: hidden for i in self.layers}
        self._hooks.append(self.model.register_forward_pre_hook(self._begin_forward, with_kwargs=True))
        self._hooks.append(self.model.register_forward_hook(self._end_forward, with_kwargs=True))
        if head_hook == "pre":
            self._hooks.append(head_module.register_forward_pre_hook(self._head_pre, with_kwargs=True))
        else:
            self._hooks.append(head_module.register_forward_hook(self._head_post))
        for i in self.layers:
            self._hooks.append(blocks[i].register_forward_pre_hook(self._block_hook(i), with_kwargs=True))
        self._reset()

    # -- finding the head and the blocks -----------------------------------------------------------
    @staticmethod
    def _find_parts(model):
        from lcfast.model.gptneo import GPTNeo

        if isinstance(model, GPTNeo):
            return (model.ln_f, "post", lambda: model.lm_head_weight, lambda: None, list(model.h),
                    model.config.width)
        get = getattr(model, "get_output_embeddings", None)
        head = get() if callable(get) else None
        if head is None or not isinstance(getattr(head, "weight", None), torch.Tensor) or head.weight.dim() != 2:
            raise UsageError(f"NCTracker: {type(model).__name__} has no output embedding (get_output_embeddings() "
                             "is missing or None, or has no 2-D weight): the tracker reads the LM head's input")

        def bias():
            b = getattr(head, "bias", None)
            return b if isinstance(b, torch.Tensor) else None

        cfg = getattr(model, "config", None)
        tc = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        n_layers = int(getattr(tc, "num_hidden_layers", 0) or 0)
        hidden = getattr(tc, "hidden_size", None)
        blocks: list = []
        if n_layers:
            for m in model.modules():  # the decoder's blocks: the first ModuleList of L modules
                if isinstance(m, torch.nn.ModuleList) and len(m) == n_layers:
                    blocks = list(m)
                    break
        return head, "pre", lambda: head.weight, bias, blocks, None if hidden is None else int(hidden)

    def _check_layers(self, layers, blocks) -> list[int]:
        if layers is None:
            return []
        if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence):
            raise UsageError(f"NCTracker: layers must be a list of block indices, got {layers!r}")
        out = []
        for v in layers:
            i = validate.integer("NCTracker: layers entry", v, min=0)
            if not blocks:
                raise UsageError(f"NCTracker: layers={list(layers)}: no decoder blocks found in "
                                 f"{type(self.model).__name__} (a ModuleList of config.num_hidden_layers modules)")
            if i >= len(blocks):
                raise UsageError(f"NCTracker: layers entry {i}: the model has {len(blocks)} blocks (0 … "
                                 f"{len(blocks) - 1}); the head input (hidden state {len(blocks)}) is always tracked")
            if i not in out:
                out.append(i)
        return out

    # -- accumulators ------------------------------------------------------------------------------
    def _new_stats(self, dim: int, device):
        from lcfast.stats.classstats import ClassStats

        # "skip": a non-finite feature never stops training from here (the loss check of the loop does)
        return ClassStats(self.n_classes, dim, covariance=self.covariance, device=device, nonfinite="skip")

    def _reset(self) -> None:
        dev = self._W_of().device
        self.stats = self._new_stats(self.dim, dev)
        self.layer_stats = {i: (self._new_stats(d, dev) if d else None) for i, d in self._layer_dims.items()}
        self.interval_steps = 0

    def _layer_acc(self, i: int, dim: int, device):
        st = self.layer_stats.get(i)
        if st is None:
            self._layer_dims[i] = dim
            st = self.layer_stats[i] = self._new_stats(dim, device)
        elif st.dim != dim:
            raise UsageError(f"NCTracker: block {i}'s input has {dim} features, expected {st.dim}")
        return st

    # -- hooks ---------------------------------------------------------------------------------------
    def _begin_forward(self, module, args, kwargs):
        if not (module.training and torch.is_grad_enabled()):
            self._fwd = None
            return
        self._fwd = {"labels": kwargs.get("labels"), "mask": kwargs.get("attention_mask"), "h": None, "hs": {},
                     "head_seen": False}

    def _end_forward(self, module, args, kwargs, output):
        fwd, self._fwd = self._fwd, None
        if fwd is None:
            return
        if not fwd["head_seen"]:
            raise UsageError(f"NCTracker: the training forward of {type(module).__name__} never called its output "
                             "embedding (get_output_embeddings()): cannot read the LM head's input")
        if fwd["labels"] is None:  # paired later by observe() / step(labels=…)
            self._pending.append(fwd)

    def _feed(self, fwd: dict) -> None:
        t0 = time.perf_counter()
        with torch.no_grad():
            sel = self._select(fwd["h"], fwd["labels"], fwd["mask"])
            if sel is not None:
                idx, y = sel
                self.stats.update(self._rows_of(fwd["h"], idx), y, backend=self.backend)
                for i, hs in fwd["hs"].items():
                    st = self._layer_acc(i, hs.shape[-1], self.stats.device)
                    st.update(self._rows_of(hs, idx), y, backend=self.backend)
        fwd["h"], fwd["hs"] = None, {}
        self.seconds += time.perf_counter() - t0

    def _capture(self, key, x) -> None:
        fwd = self._fwd
        if fwd is None:
            return
        if key == "h":
            if fwd["head_seen"]:  # only the head's first call in this forward
                return
            fwd["h"], fwd["head_seen"] = x.detach(), True
        else:
            fwd["hs"].setdefault(key, x.detach())
        if fwd["labels"] is not None and key == "h":
            # labels known now: accumulate while the forward goes on (block inputs are captured before the head)
            self._feed(fwd)

    def _head_pre(self, module, args, kwargs):
        self._capture("h", args[0] if args else next(iter(kwargs.values())))

    def _head_post(self, module, args, output):
        self._capture("h", output)

    def _block_hook(self, i: int):
        def hook(module, args, kwargs):
            x = args[0] if args else kwargs.get("hidden_states")
            if isinstance(x, torch.Tensor):
                self._capture(i, x)
        return hook

    # -- labels --------------------------------------------------------------------------------------
    def _select(self, h: torch.Tensor, labels, mask):
        """(flat row indices into h [B·T, d] or [B·(T−1), d] when shifted, their labels) or None."""
        labels = torch.as_tensor(labels)
        if h.dim() != 3 or labels.dim() != 2 or tuple(labels.shape) != tuple(h.shape[:2]):
            raise UsageError(f"NCTracker: labels must be [B, T] matching the features' [B, T] = "
                             f"{list(h.shape[:2])}, got {list(labels.shape)}")
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise UsageError(f"NCTracker: labels must be an integer tensor, got {labels.dtype}")
        labels = labels.to(h.device)
        if mask is not None:
            mask = torch.as_tensor(mask).to(h.device)
            if tuple(mask.shape) != tuple(labels.shape):
                raise UsageError(f"NCTracker: attention_mask must be [B, T] = {list(labels.shape)}, "
                                 f"got {list(mask.shape)}")
            mask = mask != 0
        if self.shift_labels:
            y = labels[:, 1:]
            keep = y != self.ignore_index
            if mask is not None:
                keep &= mask[:, :-1] & mask[:, 1:]
        else:
            y = labels
            keep = y != self.ignore_index
            if mask is not None:
                keep &= mask
        idx = keep.reshape(-1).nonzero().squeeze(1)
        if idx.numel() == 0:
            return None
        return idx, y.reshape(-1).index_select(0, idx)

    def _rows_of(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if self.shift_labels:
            x = x[:, :-1]
        return x.reshape(-1, x.shape[-1]).index_select(0, idx)

    def observe(self, labels: torch.Tensor, attention_mask: torch.Tensor | None = None) -> None:
        """The labels [B, T] (integer; `ignore_index` left out) and optional attention_mask [B, T] (0 =
        padding) of the oldest training forward that was called without `labels=`: for loops that
        compute the loss outside the model. Shapes must match that forward's input."""
        if not self._pending:
            raise UsageError("NCTracker.observe: no training forward without labels is waiting for them "
                             "(forwards called with labels= are paired already; eval-mode forwards are not tracked)")
        fwd = self._pending.pop(0)
        fwd["labels"] = labels
        if attention_mask is not None:
            fwd["mask"] = attention_mask
        self._feed(fwd)

    # -- steps and rows --------------------------------------------------------------------------------
    def step(self, labels: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None, *,
             global_step: int | None = None) -> dict | None:
        """Count one optimizer step; after every `every`-th, measure the interval and return its row
        (on every rank; rank 0 also writes and logs it), else None. `labels` / `attention_mask`: as
        `observe`, for the last forward when it had no labels=. `global_step`: the step number this
        call ends (a Trainer's state.global_step) instead of counting."""
        if labels is not None:
            self.observe(labels, attention_mask)
        if self._pending:
            n = len(self._pending)
            self._pending.clear()
            raise UsageError(f"NCTracker.step: {n} training forward(s) since the last step had no labels=; pass "
                             "them with tracker.observe(labels) after each forward (or step(labels=…) for one)")
        t0 = time.perf_counter()
        if global_step is None:
            self.global_step += 1
        else:
            self.global_step = validate.integer("NCTracker.step: global_step", global_step, min=1)
        self.interval_steps += 1
        row = None
        if self.global_step % self.every == 0:
            row = self._finish()
            self.seconds_rows += time.perf_counter() - t0
        self.seconds += time.perf_counter() - t0
        return row

    def _finish(self) -> dict:
        parts = [("", self.stats, self._W_of(), self._b_of())]
        parts += [(f"layer{i}/", self.layer_stats[i], None, None) for i in self.layers]
        if dist.is_initialized() and dist.world_size() > 1:
            missing = torch.tensor([float(st is None) for _, st, _, _ in parts], dtype=torch.float64,
                                   device=self.stats.device)
            if float(dist.all_reduce_sum(missing).sum()):
                raise UsageError("NCTracker: a tracked layer's features were never seen on some rank; "
                                 "every rank must run a training forward in each interval")
            for _, st, _, _ in parts:
                st.all_reduce()
        from lcfast.metrics.measure import measure_stats

        keys = _canonical_keys()
        row: dict = {"step": self.global_step, "interval_steps": self.interval_steps,
                     "n_positions": self.stats.n_samples + self.stats.skipped}
        for prefix, st, W, b in parts:
            metrics = {}
            if st is not None and st.n_samples > 0:
                with warnings.catch_warnings():
                    # a degenerate interval (one class seen, …) leaves those metrics empty; saying so on
                    # every interval of a training run would drown the loop's own output
                    warnings.simplefilter("ignore")
                    metrics = measure_stats(st, None if W is None else W.detach(),
                                            None if b is None else b.detach(), backend=self.backend)
            row.update({prefix + k: metrics.get(k) for k in keys})
        if dist.is_main():
            if self.csv is not None:
                self._write(row)
            if self.log is not None:
                self.log(dict(row))
        self._reset()
        return row

    @property
    def columns(self) -> list[str]:
        keys = _canonical_keys()
        return list(ID_COLUMNS) + list(keys) + [f"layer{i}/{k}" for i in self.layers for k in keys]

    def _write(self, row: dict) -> None:
        from lcfast.io import atomic_write_text

        cols = self.columns
        if self._rows is None:
            self._rows = self._read_csv(cols)
        # rows past this step come from a run killed after its last checkpoint: recomputed now
        self._rows = [r for r in self._rows if int(r[0]) < self.global_step]
        self._rows.append([_cell(row[c]) for c in cols])
        buf = io.StringIO()
        w = _csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        w.writerows(self._rows)
        self.csv.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.csv, buf.getvalue())

    def _read_csv(self, cols: list[str]) -> list[list[str]]:
        if not self.csv.exists():
            return []
        try:
            rows = list(_csv.reader(io.StringIO(self.csv.read_text(encoding="utf-8"))))
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{self.csv}: cannot read it as an NC track ({e}); move it away") from None
        if not rows:
            return []
        if rows[0] != cols:
            raise DataError(f"{self.csv}: its columns are not this tracker's (other layers, or not an NC track); "
                            "move it away or name another csv")
        return [r for r in rows[1:] if r and r[0].isdigit()]

    # -- resume ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The step count and this rank's accumulators of the current interval (CPU tensors, ints,
        lists: `torch.save`-able, loadable with weights_only=True)."""
        return {"version": STATE_VERSION, "every": self.every, "layers": list(self.layers),
                "global_step": self.global_step, "interval_steps": self.interval_steps,
                "stats": _stats_state(self.stats),
                "layer_stats": {str(i): None if st is None else _stats_state(st) for i, st in self.layer_stats.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()` of a tracker with the same model shape, `every` and `layers`."""
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise UsageError("NCTracker.load_state_dict: not a state of this NCTracker (version differs)")
        if state["every"] != self.every or list(state["layers"]) != self.layers:
            raise UsageError(f"NCTracker.load_state_dict: saved every={state['every']}, layers={state['layers']}; "
                             f"this tracker has every={self.every}, layers={self.layers}")
        _stats_load(self.stats, state["stats"], "head input")
        for key, s in state["layer_stats"].items():
            i = int(key)
            if s is None:
                continue
            st = self._layer_acc(i, int(s["ref"].shape[1]), self.stats.device)
            _stats_load(st, s, f"layer {i}")
        self.global_step = int(state["global_step"])
        self.interval_steps = int(state["interval_steps"])
        self._pending.clear()

    # -- hooks off ---------------------------------------------------------------------------------------
    def close(self) -> None:
        """Remove the hooks (the model runs as if never tracked); idempotent."""
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    def __enter__(self) -> NCTracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"NCTracker(every={self.every}, step={self.global_step}, classes={self.n_classes}, dim={self.dim}, "
                f"layers={self.layers}, interval_positions={self.stats.n_samples})")


__all__ = ["ID_COLUMNS", "NCTracker"]
