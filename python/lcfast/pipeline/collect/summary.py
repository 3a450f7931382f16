"""`CollectSummary`: collect.json read back as a record (what `lcfast collect` wrote about one
finished collection: the model, the data, the options, the passes, the val pass), for `measure`,
the per-class table and the demo.

Tolerant by design: a key this lcfast does not know (written by a newer one, or a field added on
another branch such as folds or a revision) is kept in `extra` and readable as an attribute
(`summary.folds`), so a reader that wants it needs no change here; a key every reader needs
(`REQUIRED`) missing is a DataError naming the file. Absent optional keys read as their defaults,
the same values the readers used to give `dict.get`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from lcfast.errors import DataError
from lcfast.io import read_json
from lcfast.pipeline.collect.state import COLLECT_JSON

#: the keys without which a collect.json is not one lcfast collect wrote
REQUIRED = ("model", "checkpoint", "model_fingerprint", "files", "source")


class _Record:
    """from_json: the known keys as fields, the others in `extra` (readable as attributes)."""

    extra: dict[str, Any]

    @classmethod
    def from_json(cls, d: Any, where: str = COLLECT_JSON):
        if not isinstance(d, dict):
            raise DataError(f"{where}: expected a JSON object for {cls.__name__}, got {type(d).__name__} "
                            "(not written by lcfast collect?)")
        names = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in d.items() if k in names}, extra={k: v for k, v in d.items() if k not in names})

    def __getattr__(self, name: str):  # only reached when no field has the name
        extra = self.__dict__.get("extra") or {}
        if name in extra:
            return extra[name]
        raise AttributeError(f"{type(self).__name__} has no {name!r} (and collect.json no such key)")


@dataclass(frozen=True)
class SourceRecord(_Record):
    kind: str  # "run", "gptneo" or "hf" (lcfast.model.sources.ModelSource.kind)
    path: str  # the model's folder, resolved
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ShardRecord(_Record):
    path: str
    fingerprint: str | None = None
    n_tokens: int | None = None
    vocab_size: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OptionsRecord(_Record):
    """The collection's options as collect.json records them (strings as given, `device` resolved)."""

    exact: bool = False
    covariance: bool = False
    min_count: int = 1
    batch_size: int | None = None
    max_tokens: int | None = None
    device: str | None = None
    backend: str | None = None
    skip_nonfinite: bool = False
    dtype: str = "float32"
    layers: str | None = None
    classes: str = "all"
    seed: int = 0  # the --max-tokens sample and the folds (lcfast.model.features)
    folds: int = 1  # --folds K (1 for collections made before folds)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PassRecord(_Record):
    """One pass (lcfast.pipeline.collect.passes.PassResult.as_dict)."""

    kind: str | None = None
    windows: int | None = None
    tokens: int | None = None
    reused: bool = False
    resumed_from: int | None = None
    skipped_nonfinite: int | None = None
    tokens_per_s: float | None = None
    # seconds: the model forward, the statistics, the data, the whole pass; on CPU also CPU seconds
    forward_s: float | None = None
    stats_s: float | None = None
    data_s: float | None = None
    wall_s: float | None = None
    forward_cpu_s: float | None = None
    stats_cpu_s: float | None = None
    stats_share_of_forward: float | None = None
    stats_share_of_forward_cpu: float | None = None
    val_nll: float | None = None
    val_correct: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ValPassRecord(_Record):
    """The model's loss over the val pass's positions (None where there were none)."""

    positions: int | None = None
    loss: float | None = None
    acc: float | None = None
    perplexity: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CollectSummary(_Record):
    model: str
    checkpoint: str
    model_fingerprint: str
    files: dict[str, str]  # pass kind → state file name
    source: SourceRecord
    version: int | None = None
    epoch: int | None = None
    out_dir: str | None = None
    # the model (lcfast.model.sources.model_facts); `context` the window length collected with
    n_params: int | None = None
    layers: int | None = None
    width: int | None = None
    heads: int | None = None
    context: int | None = None
    max_context: int | None = None
    seed: int | None = None
    n_classes: int | None = None
    dim: int | None = None
    data_dir: str | None = None
    tokenizer: str | None = None  # tokenizer.json beside the shards, or None
    shards: dict[str, ShardRecord] = field(default_factory=dict)  # "train", "val"
    options: OptionsRecord = field(default_factory=OptionsRecord)
    kept_classes: int | None = None
    layout: dict | None = None  # lcfast.pipeline.collect.layers.SlotLayout.to_json (--layers / --classes)
    stats_bytes: int | None = None
    passes: dict[str, PassRecord] = field(default_factory=dict)  # "train", "train_exact", "val"
    val_pass: ValPassRecord = field(default_factory=ValPassRecord)
    world_size: int | None = None
    timing: dict[str, Any] = field(default_factory=dict)
    # a hub model's revision as named (main, step1000, a commit) and its commit (lcfast.pipeline.revisions)
    revision: str | None = None
    commit: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: Any, where: str = COLLECT_JSON) -> CollectSummary:
        """A collect.json's object (or what `collect` returns), checked for REQUIRED."""
        if not isinstance(d, dict):
            raise DataError(f"{where}: not a JSON object (not written by lcfast collect?)")
        for key in REQUIRED:
            if key not in d:
                raise DataError(f"{where}: missing {key!r} (not written by lcfast collect?)")
        nested = {
            "source": SourceRecord.from_json(d["source"], where),
            "shards": {k: ShardRecord.from_json(v, where) for k, v in _obj(d, "shards", where).items()},
            "options": OptionsRecord.from_json(_obj(d, "options", where), where),
            "passes": {k: PassRecord.from_json(v, where) for k, v in _obj(d, "passes", where).items()},
            "val_pass": ValPassRecord.from_json(_obj(d, "val_pass", where), where),
        }
        return dataclasses.replace(super().from_json({**d, **{k: None for k in nested}}, where), **nested)

    @classmethod
    def read(cls, cdir: str | Path) -> CollectSummary:
        """The collect.json of a collect output dir."""
        path = Path(cdir) / COLLECT_JSON
        return cls.from_json(read_json(path, "collect summary"), str(path))

    def pass_tokens(self, kind: str) -> int | None:
        """Label positions the pass `kind` covered (None when it is not recorded)."""
        p = self.passes.get(kind)
        return None if p is None else p.tokens


def _obj(d: dict, key: str, where: str) -> dict:
    v = d.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise DataError(f"{where}: {key!r} is not a JSON object (not written by lcfast collect?)")
    return v
