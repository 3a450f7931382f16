"""State files of the accumulators: what `ClassStats.save` / `NCCStats.save` write and `load` checks.

A state file is safetensors: the accumulator's tensors, and string metadata holding the caller's
`meta` (fingerprints of the model / shard that produced it), an "lcfast" JSON header (format, sizes,
flags) and a progress field (tokens or positions seen). Written atomically (lcfast.io: temp file in
the same folder, fsync, os.replace). Loading checks the header, every tensor's shape, dtype and
values, and the caller's `expect`ed metadata; anything else is a DataError naming the file.

The classes keep their `save` / `load` methods; the layout lives here so that both accumulators'
formats, and the helpers they share (fingerprints, header encoding), are in one place.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from lcfast.errors import DataError
from lcfast.io import atomic_write_bytes, check_meta, load_tensors

__all__ = ["FORMAT_VERSION", "tensor_fingerprint", "read_safetensors", "save_class_stats", "load_class_stats",
           "save_ncc_stats", "load_ncc_stats"]

F64 = torch.float64
#: version of the ClassStats layout (NCCStats files carry their own "1")
FORMAT_VERSION = "1"


def tensor_fingerprint(t: torch.Tensor) -> str:
    """sha256 (first 16 hex digits) of a tensor's float64 bytes, shape included."""
    x = t.detach().to("cpu", F64).contiguous()
    h = hashlib.sha256(repr(tuple(x.shape)).encode())
    h.update(x.numpy().tobytes())
    return h.hexdigest()[:16]


def read_safetensors(path: str | os.PathLike, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and string metadata of a state file; DataError naming the file otherwise."""
    return load_tensors(path, f"{kind} state file")


def _write(path, tensors: dict[str, torch.Tensor], meta: dict[str, Any], header: dict[str, str]) -> Path:
    """`meta` (non-strings JSON-encoded: safetensors metadata is a dict of strings) + `header`."""
    from safetensors.torch import save as st_save

    out = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in (meta or {}).items()}
    out.update(header)
    path = Path(path)
    atomic_write_bytes(path, st_save(tensors, metadata=out))
    return path


def _read(path, kind: str, sizes: tuple[str, ...]) -> tuple[dict, dict, dict, list[int]]:
    """(tensors, raw metadata, the "lcfast" header, its integer `sizes`) of a `kind` state file."""
    tensors, raw = read_safetensors(path, kind)
    try:
        info = json.loads(raw["lcfast"])
        if info.get("format") != f"lcfast.{kind}":
            raise KeyError("format")
        dims = [int(info[k]) for k in sizes]
    except (KeyError, ValueError, TypeError):
        raise DataError(f"{path}: not an lcfast {kind} state file (missing or bad 'lcfast' header)") from None
    return tensors, raw, info, dims


# --------------------------------------------------------------------------------------------
# ClassStats: counts [C], ref [C, d], s1 [C, d], s2 [C], optional cov [d, d] and cov_classes [C]
# --------------------------------------------------------------------------------------------


def save_class_stats(st, path: str | os.PathLike) -> Path:
    """Write a ClassStats (its `.meta` included) to `path`; see `ClassStats.save`."""
    info = {
        "format": "lcfast.ClassStats",
        "version": FORMAT_VERSION,
        "n_classes": st.n_classes,
        "dim": st.dim,
        "covariance": st._cov is not None,
        "pass_kind": st.pass_kind,
        "ref_fixed": st.ref_fixed,
        "nonfinite": st.nonfinite,
        "skipped": st.skipped,
        "dtype": str(st.dtype).replace("torch.", ""),
    }
    tensors = {
        "counts": st._n.detach().to("cpu").contiguous(),
        "ref": st._ref.detach().to("cpu").contiguous(),
        "s1": st._s1.detach().to("cpu").contiguous(),
        "s2": st._s2.detach().to("cpu").contiguous(),
    }
    if st._cov is not None:
        tensors["cov"] = st._cov.detach().to("cpu").contiguous()
    if st.cov_classes is not None:
        tensors["cov_classes"] = st.cov_classes.to("cpu", torch.uint8).contiguous()
    header = {"lcfast": json.dumps(info), "pass_kind": st.pass_kind, "tokens_seen": str(st.n_samples)}
    return _write(path, tensors, st.meta, header)


def _check_float_tensors(path, tensors: dict[str, torch.Tensor], want: dict[str, tuple[int, ...]]) -> None:
    for k, shape in want.items():
        t = tensors.get(k)
        if t is None or tuple(t.shape) != shape or not t.is_floating_point():
            got = None if t is None else tuple(t.shape)
            raise DataError(f"{path}: tensor {k!r} missing or malformed (expected float {shape}, got {got})")
        if not bool(torch.isfinite(t).all()):
            raise DataError(f"{path}: tensor {k!r} contains non-finite values")


def load_class_stats(cls, path: str | os.PathLike, expect: dict[str, Any] | None, device):
    """A `cls` (ClassStats) from a file written by `save_class_stats`; see `ClassStats.load`."""
    tensors, raw, info, (C, d) = _read(path, "ClassStats", ("n_classes", "dim"))
    if info.get("version") != FORMAT_VERSION:
        raise DataError(
            f"{path}: ClassStats format version {info.get('version')!r}, this lcfast reads {FORMAT_VERSION}"
        )
    want = {"counts": (C,), "ref": (C, d), "s1": (C, d), "s2": (C,)}
    if info.get("covariance"):
        want["cov"] = (d, d)
    _check_float_tensors(path, tensors, want)
    n = tensors["counts"]
    if bool((n < 0).any()) or bool((n != n.round()).any()):
        raise DataError(f"{path}: counts are not non-negative integers")
    dtype = getattr(torch, info.get("dtype", "float64"), F64)
    cov_classes = tensors.get("cov_classes")
    if cov_classes is not None:
        if tuple(cov_classes.shape) != (C,):
            raise DataError(f"{path}: tensor 'cov_classes' malformed")
        cov_classes = cov_classes.to(torch.bool)
    st = cls(C, d, covariance=bool(info.get("covariance")), device=device, dtype=dtype,
             nonfinite=info.get("nonfinite", "error"), cov_classes=cov_classes)
    st._n = n.to(device, dtype)
    st._ref = tensors["ref"].to(device, dtype)
    st._s1 = tensors["s1"].to(device, dtype)
    st._s2 = tensors["s2"].to(device, dtype)
    if st._cov is not None:
        st._cov = tensors["cov"].to(device, dtype)
    st.pass_kind = info.get("pass_kind", "one-pass")
    st.ref_fixed = bool(info.get("ref_fixed", False))
    st.skipped = int(info.get("skipped", 0))
    st.meta = {k: v for k, v in raw.items() if k not in ("lcfast", "pass_kind", "tokens_seen")}
    check_meta(path, raw, expect)
    return st


# --------------------------------------------------------------------------------------------
# NCCStats: hits [C], totals [C], kept [C] (uint8), optional hits_all [C]
# --------------------------------------------------------------------------------------------


def save_ncc_stats(st, path: str | os.PathLike) -> Path:
    """Write an NCCStats (its `.meta` included) to `path`; see `NCCStats.save`."""
    tensors = {"hits": st.hits.contiguous(), "totals": st.totals.contiguous(), "kept": st.kept.to(torch.uint8)}
    if st.all_classes:
        tensors["hits_all"] = st.hits_all.contiguous()
    header = {
        "lcfast": json.dumps({"format": "lcfast.NCCStats", "version": "1", "n_classes": st.n_classes}),
        "positions_seen": str(int(st.totals.sum())),
    }
    return _write(path, tensors, st.meta, header)


def _hit_counts(path, t: torch.Tensor, name: str, totals: torch.Tensor) -> torch.Tensor:
    t = t.to(torch.int64)
    if bool((t < 0).any()) or bool((t > totals).any()):
        raise DataError(f"{path}: {name} must lie in [0, totals]")
    return t


def load_ncc_stats(cls, path: str | os.PathLike, expect: dict[str, Any] | None):
    """A `cls` (NCCStats, no means bound) from a file written by `save_ncc_stats`."""
    tensors, raw, _info, (C,) = _read(path, "NCCStats", ("n_classes",))
    for k in ("hits", "totals", "kept"):
        t = tensors.get(k)
        if t is None or tuple(t.shape) != (C,):
            raise DataError(f"{path}: tensor {k!r} missing or malformed (expected shape ({C},))")
    totals = tensors["totals"].to(torch.int64)
    hits = _hit_counts(path, tensors["hits"], "hits", totals)
    hits_all = tensors.get("hits_all")  # absent in states saved without the all-class decisions
    if hits_all is not None:
        if tuple(hits_all.shape) != (C,):
            raise DataError(f"{path}: tensor 'hits_all' malformed (expected shape ({C},))")
        hits_all = _hit_counts(path, hits_all, "hits_all", totals)
    st = cls(C, None, tensors["kept"].to(torch.bool), None, all_classes=hits_all is not None)
    st.hits, st.totals = hits, totals
    if hits_all is not None:
        st.hits_all = hits_all
    st.meta = {k: v for k, v in raw.items() if k not in ("lcfast", "positions_seen")}
    check_meta(path, raw, expect)
    return st
