"""Class statistics at several depths in one forward (`collect --layers`), on a subset of the
classes (`collect --classes top:K`), and the memory they need.

One accumulator, many slots: the statistics of the LM head's input and of each chosen hidden state
share a single `ClassStats` over S × K classes — slot j holds classes [j·K, (j+1)·K) — so saving,
resuming, torchrun all-reduce and `--shard` merging work exactly as for the head alone. Slot 0 is
always the head input (what NC3/NC4 use); slots 1.. are transformers' `hidden_states[i]` for the
chosen i (0 = the embeddings), except the last hidden state when it *is* the head input (checked
on the first window: then that layer is served by slot 0). Hidden states narrower than the widest
slot are zero-padded, which changes no class mean, distance, norm or variance; `SlotLayout.dims`
records each slot's true width. Without --layers and --classes there is one slot of all C classes:
the accumulator is exactly the one collect always wrote.

`--classes top:K` keeps the K classes most frequent in the train shard (its counts section; ties to
the lower id): labels are mapped to their rank among those, positions of other classes are left out
of the class statistics (the val pass still covers every position). The kept ids are written to
`classes.safetensors` beside the states, with the train pass's first save (never before: until then
the folder may hold an earlier collection, whose list `measure` reads).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from lcfast.errors import UsageError

CLASSES_FILE = "classes.safetensors"
F64_BYTES = 8


@dataclass(frozen=True)
class LayerChoice:
    """`--layers all|i,j,k` parsed (its syntax; the range once the model is open: `resolve`):
    `indices` sorted and distinct, None for every hidden state; `text` as given, for messages and
    collect.json."""

    text: str
    indices: tuple[int, ...] | None

    @classmethod
    def parse(cls, spec: str | LayerChoice | None) -> LayerChoice | None:
        if spec is None or isinstance(spec, LayerChoice):
            return spec
        s = str(spec).strip().lower()
        if s == "all":
            return cls(str(spec), None)
        if not re.fullmatch(r"\d+(\s*,\s*\d+)*", s):
            raise UsageError(f"--layers {spec}: expected 'all' or comma-separated hidden-state numbers "
                             "(0 = the embeddings)")
        return cls(str(spec), tuple(sorted({int(p) for p in s.split(",")})))

    def resolve(self, n_hidden_states: int) -> list[int]:
        """The hidden-state indices of a model with `n_hidden_states` (UsageError past its last)."""
        top = n_hidden_states - 1
        if self.indices is None:
            return list(range(n_hidden_states))
        if any(i > top for i in self.indices):
            raise UsageError(f"--layers {self.text}: this model has hidden states 0..{top} "
                             f"(0 = embeddings, {top} = the last layer)")
        return list(self.indices)


@dataclass(frozen=True)
class ClassChoice:
    """`--classes all|top:K` parsed: `top_k` K (None: every class); `text` as given."""

    text: str
    top_k: int | None

    @classmethod
    def parse(cls, spec: str | ClassChoice | None) -> ClassChoice | None:
        if spec is None or isinstance(spec, ClassChoice):
            return spec
        if str(spec).strip().lower() == "all":
            return cls(str(spec), None)
        m = re.fullmatch(r"\s*top\s*:\s*(\d+)\s*", str(spec))
        if not m or int(m.group(1)) < 1:
            raise UsageError(f"--classes {spec}: expected 'all' or top:K with K ≥ 1 (keep the K most frequent classes)")
        return cls(str(spec), int(m.group(1)))


def parse_layers(spec: str | None, n_hidden_states: int | None) -> list[int]:
    """--layers all|i,j,k -> sorted distinct hidden-state indices in [0, n_hidden_states)
    (n_hidden_states None: check the syntax only)."""
    choice = LayerChoice.parse(spec)
    if choice is None:
        return []
    if n_hidden_states is None:
        return list(choice.indices or [])
    return choice.resolve(n_hidden_states)


def parse_classes(spec: str | None) -> int | None:
    """--classes all|top:K -> K (None for all)."""
    choice = ClassChoice.parse(spec)
    return None if choice is None else choice.top_k


def top_classes(counts, k: int) -> torch.Tensor:
    """Ids of the k most frequent classes (counts [C]; ties to the lower id), ascending int64 [k]."""
    c = torch.as_tensor(counts, dtype=torch.int64)
    k = min(int(k), int(c.numel()))
    order = torch.argsort(-c, stable=True)  # descending count, lower id first among equals
    return torch.sort(order[:k]).values


@dataclass
class SlotLayout:
    """How head and hidden-state statistics share one ClassStats (see the module docstring).

    slots: "head" then hidden-state indices; n_classes: C of the model; class_ids: kept ids [K]
    (None = all C); dims: true width of each slot; head_layer: the hidden-state index equal to the
    head input (None when no chosen state is)."""

    slots: list = field(default_factory=lambda: ["head"])
    n_classes: int = 0
    dims: list[int] = field(default_factory=list)
    class_ids: torch.Tensor | None = None
    head_layer: int | None = None
    n_hidden_states: int | None = None

    @property
    def per_slot(self) -> int:
        return self.n_classes if self.class_ids is None else int(self.class_ids.numel())

    @property
    def total_classes(self) -> int:
        return len(self.slots) * self.per_slot

    @property
    def dim(self) -> int:
        return max(self.dims)

    @property
    def hidden(self) -> list[int]:
        """Hidden-state indices the forward must return (slots 1..)."""
        return [s for s in self.slots if s != "head"]

    @property
    def trivial(self) -> bool:
        """One slot of all classes: the plain head statistics."""
        return len(self.slots) == 1 and self.class_ids is None

    def remap(self, device) -> torch.Tensor | None:
        """class id -> index among the kept classes, −1 for the others (int64 [C]); None for all."""
        if self.class_ids is None:
            return None
        r = torch.full((self.n_classes,), -1, dtype=torch.int64)
        r[self.class_ids] = torch.arange(self.class_ids.numel())
        return r.to(device)

    def update(self, acc, H: torch.Tensor, hidden: list[torch.Tensor], y: torch.Tensor, remap, backend: str,
               fold: torch.Tensor | None = None) -> None:
        """Add one batch: head features H [N, d0], hidden [N, d_j] per hidden slot, labels y [N];
        `fold` [N] (int64, `collect --folds`): each row goes to its fold's block of total_classes
        classes (lcfast.pipeline.collect.folds)."""
        if remap is not None:
            yc = remap[y]
            keep = yc >= 0
            y = yc[keep]
            H = H[keep]
            hidden = [h[keep] for h in hidden]
            if fold is not None:
                fold = fold[keep]
        if fold is not None:
            y = y + fold.to(y.device) * self.total_classes
        if self.trivial:
            acc.update(H, y, backend=backend)
            return
        K, D = self.per_slot, self.dim
        for j, X in enumerate([H, *hidden]):
            if X.shape[1] < D:
                X = F.pad(X, (0, D - X.shape[1]))
            acc.update(X, y + j * K, backend=backend)

    def head_mask(self, device=None) -> torch.Tensor:
        """Bool [S·K]: the head slot's classes (the covariance covers only those)."""
        m = torch.zeros(self.total_classes, dtype=torch.bool)
        m[: self.per_slot] = True
        return m if device is None else m.to(device)

    def slot_stats(self, stats, j: int):
        """The ClassStats of slot j alone (K classes, the slot's true width)."""
        K = self.per_slot
        return stats.select(torch.arange(j * K, (j + 1) * K), dim=self.dims[j])

    def to_json(self) -> dict:
        return {"slots": list(self.slots), "n_classes": self.n_classes, "classes_per_slot": self.per_slot,
                "dims": list(self.dims), "head_layer": self.head_layer, "n_hidden_states": self.n_hidden_states,
                "classes": "all" if self.class_ids is None else f"top:{self.per_slot}",
                "classes_file": None if self.class_ids is None else CLASSES_FILE}

    def key(self) -> str:
        """What a saved state must agree on (state metadata)."""
        from lcfast.stats.state_file import tensor_fingerprint

        d = self.to_json()
        if self.class_ids is not None:
            d["class_ids"] = tensor_fingerprint(self.class_ids.to(torch.float64))
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, d: dict, class_ids: torch.Tensor | None = None) -> SlotLayout:
        return cls(slots=list(d["slots"]), n_classes=int(d["n_classes"]), dims=[int(x) for x in d["dims"]],
                   class_ids=class_ids, head_layer=d.get("head_layer"), n_hidden_states=d.get("n_hidden_states"))


# --------------------------------------------------------------------------------------------
# memory


def slot_layout(model, layers: LayerChoice | str | None, train_shard, T: int, C: int, d: int, top_k: int | None,
                device: torch.device) -> SlotLayout:
    """Which statistics collect's train passes accumulate for `--layers` / `--classes top:K`
    (`top_k`), of a model with C classes and head width d, over windows of T tokens of `train_shard`
    (its first window tells whether the last hidden state is the head's input)."""
    import numpy as np

    n_states = int(getattr(model, "n_hidden_states", 0) or 0)
    if layers is not None and n_states < 1:
        raise UsageError(f"--layers: {type(model).__name__} does not expose its hidden states")
    layers = LayerChoice.parse(layers)
    chosen = layers.resolve(n_states) if layers is not None else []
    class_ids = None
    if top_k is not None and top_k < C:
        class_ids = top_classes(train_shard.counts(), top_k)
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
    return SlotLayout(slots=slots, n_classes=C, dims=dims, class_ids=class_ids, head_layer=head_layer,
                      n_hidden_states=n_states or None)


def stats_bytes(n_slots: int, n_classes: int, dim: int, *, exact: bool = False, covariance: bool = False) -> int:
    """Peak bytes of the class statistics during collect: per slot and class a reference point and a
    sum (2 × d float64), as much again while a state is saved (safetensors serialises it in memory)
    or the means are formed at the end of a pass; --exact keeps the first pass's means (d more) beside
    the second pass's state. The covariance adds d × d (twice, saved)."""
    vectors = 5 if exact else 4
    return n_slots * n_classes * (vectors * dim + 4) * F64_BYTES + (2 * dim * dim * F64_BYTES if covariance else 0)


def available_bytes(device: torch.device) -> int | None:
    """Free memory where the statistics live: free GPU memory on CUDA, MemAvailable on Linux CPUs."""
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except RuntimeError:
            return None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def parse_size(spec: str | None) -> int | None:
    """--max-memory 8GB / 512MB / 1.5GiB / a byte count -> bytes (None: the free memory)."""
    if spec is None or str(spec).strip().lower() in ("", "auto"):
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*", str(spec).lower())
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"--max-memory {spec}: expected a size such as 8GB, 512MB or 'auto'")
    base = 1024 if m.group(3).startswith("i") else 1000
    return int(float(m.group(1)) * base ** " kmgt".index(m.group(2) or " "))


def human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"


def check_memory(layout: SlotLayout, *, exact: bool, covariance: bool, device: torch.device,
                 budget: int | None, layers_flag: str | None, folds: int = 1) -> int:
    """Refuse (UsageError, before any forward) when the statistics will not fit; returns the estimate.
    `folds` (collect --folds K): K accumulators side by side, K times the slots' memory."""
    need = stats_bytes(len(layout.slots) * folds, layout.per_slot, layout.dim, exact=exact, covariance=covariance)
    have = budget if budget is not None else available_bytes(device)
    if have is None or need <= have:
        return need
    if folds > 1:
        one = stats_bytes(len(layout.slots), layout.per_slot, layout.dim, exact=exact, covariance=covariance)
        fit = max(1, int(have // max(one, 1)))
        raise UsageError(
            f"--folds {folds}: the class statistics of {folds} folds need {human(need)} at their peak but "
            f"{human(have)} is {'the --max-memory budget' if budget is not None else f'free on {device}'}; "
            f"use --folds {min(fit, folds - 1)} or fewer (--folds 1: no standard errors)")
    S, K, D = len(layout.slots), layout.per_slot, layout.dim
    per_class = stats_bytes(S, 1, D, exact=exact)
    fit_k = max(0, int((have - (need - stats_bytes(S, K, D, exact=exact))) // per_class))
    per_layer = stats_bytes(1, K, D, exact=exact)
    fit_layers = max(0, int(have // per_layer) - 1)
    what = f"--layers {layers_flag}" if layers_flag else "collect"
    where = "the --max-memory budget" if budget is not None else f"free on {device}"
    ways = []
    if S > 1:
        ways.append(f"choose at most {fit_layers} layer{'s' * (fit_layers > 1)} (--layers i,j,…)" if fit_layers
                    else "drop --layers")
    ways.append(f"keep the most frequent classes (--classes top:{fit_k})" if fit_k >= 2
                else "use a machine with more memory")
    raise UsageError(
        f"{what}: the class statistics need {human(need)} at their peak ({S} slot{'s' * (S > 1)} × {K:,} classes × "
        f"{D:,} dims × {5 if exact else 4} float64) but {human(have)} is {where}; {' or '.join(ways)}"
    )


__all__ = ["SlotLayout", "slot_layout", "LayerChoice", "ClassChoice", "parse_layers", "parse_classes", "top_classes",
           "stats_bytes", "available_bytes", "parse_size", "check_memory", "CLASSES_FILE", "human"]
