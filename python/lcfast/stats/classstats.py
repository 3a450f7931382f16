"""Per-class feature statistics in one pass: the `ClassStats` accumulator and its torch primitive.

What is accumulated, and why it is shifted
------------------------------------------
The design asks for n_c, Σh and Σ‖h‖² per class in float64, so that
σ²_c = Σ‖h‖²/n_c − ‖μ_c‖². Written that way the variance is a difference of two numbers of size
‖μ_c‖², and it loses about log10(‖μ_c‖²/σ²_c) of float64's 16 digits — hidden states with a large
common offset (outlier dimensions, ‖μ‖ ≫ σ) or a well-collapsed model (σ_c ≪ ‖μ_c − μ_c'‖) are
exactly the cases where that matters.

So every class keeps a *reference point* r_c, and the state holds the same three sums about it:

    n_c,   S1_c = Σ (h − r_c),   S2_c = Σ ‖h − r_c‖²,   (optional, global) K = Σ (h − r_y)(h − r_y)ᵀ

r_c is the first sample of class c ever seen (chosen deterministically: the lowest row index of the
batch in which c first appears), and never moves afterwards. Then μ_c = r_c + S1_c/n_c and
σ²_c = S2_c/n_c − ‖S1_c/n_c‖², where ‖S1_c/n_c‖² = ‖μ_c − r_c‖² is of the size of σ²_c itself, so
there is no catastrophic cancellation whatever the offset. (It is the classical "shifted data"
algorithm; shifting by a *global* vector would guard against a common offset only.)
The within-class scatter follows the same way: Σ_W·N = K − Σ_c S1_c S1_cᵀ / n_c.

The exact two-pass mode (`ClassStats.second_pass(means)`) is the same accumulator with r_c fixed to
the given means: S2_c is then Σ‖h − μ_c‖² computed directly (the reference), and the −‖S1/n‖²
term is the "corrected two-pass" correction (≈ 0 when the means are exact).

Merging two accumulators moves the other's sums to this one's references exactly
(Σ‖h − r‖² = S2' + 2 δ·S1' + n'‖δ‖² with δ = r' − r, both references samples of the same class, so
again no cancellation); `all_reduce` does the Chan-style two-step (global means first, then the
second moments about them).

Torch primitive `class_stats_torch` has the signature of the Triton launcher
`lcfast.kernels.class_stats.class_stats_triton` and is its reference ("twin").

On CPU (float64 state, float32/float64 features) `ClassStats.update` with the torch backend runs
the same accumulation fused in one pass (`lcfast._core.class_stats_accumulate`, Rust:
rust/src/classstats.rs): the torch path materialises B×d float64 temporaries and scatters them
element by element, about 7× the minimum memory traffic; the fused loop reads H once and each
touched accumulator row once per row of its class (rows grouped by class, as the Triton kernel
does), at about the speed of a plain copy of the same bytes (bench/bench_classstats_bandwidth.py).
It is used only when the whole batch is finite and of safe magnitude (checked first, so a refused
batch never half-updates the state); any other batch, device or dtype takes the torch path.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import Any

import torch

from lcfast import validate
from lcfast.backend import (
    check_label_range,
    check_label_shape,
    load_launcher,
    resolve_backend,
)
from lcfast.errors import DataError, UsageError
from lcfast.stats import state_file
from lcfast.stats.inputs import as_tensor
from lcfast.stats.state_file import tensor_fingerprint

__all__ = ["ClassStats", "class_stats_torch"]

F64 = torch.float64


# --------------------------------------------------------------------------------------------
# torch primitive
# --------------------------------------------------------------------------------------------


def _buffer(ws: dict | None, key: str, shape: tuple[int, ...], device, dtype=F64) -> torch.Tensor:
    """A reusable float64 scratch buffer (fresh allocations page-fault: reuse is ~2× faster on CPU)."""
    if ws is None:
        return torch.empty(shape, dtype=dtype, device=device)
    buf = ws.get(key)
    n = shape[0]
    if buf is None or buf.shape[1:] != shape[1:] or buf.shape[0] < n or buf.device != torch.device(device):
        buf = torch.empty((max(n, 1),) + tuple(shape[1:]), dtype=dtype, device=device)
        ws[key] = buf
    return buf[:n]


def _deviations(
    H: torch.Tensor,
    Y: torch.Tensor,
    shift: torch.Tensor | None,
    centers: torch.Tensor | None,
    ws: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """X = h − shift[y] (float64), Dv = h − centers[y] (or X), q = ‖Dv‖² per row."""
    B, d = H.shape
    X = _buffer(ws, "x", (B, d), H.device)
    X.copy_(H)
    G = None
    if shift is not None:
        if shift.dim() == 1:
            X.sub_(shift.to(F64))
        else:
            G = _buffer(ws, "g", (B, d), H.device)
            torch.index_select(shift.to(F64), 0, Y, out=G)
            X.sub_(G)
    if centers is None:
        Dv = X
    else:
        G = _buffer(ws, "g", (B, d), H.device)
        torch.index_select(centers.to(F64), 0, Y, out=G)
        if shift is None:
            Dv = torch.sub(X, G, out=G)
        else:  # h − c = (h − shift) + shift − c
            G.neg_().add_(H.to(F64))
            Dv = G
    # ‖row‖² as vector_norm² (a single fused reduction, ~3× einsum on CPU; ≤ 2 ulp from Σx²)
    q = torch.linalg.vector_norm(Dv, dim=1).square_()
    return X, Dv, q


def _scatter(counts, sums, sqsums, Y, X, q) -> None:
    """Accumulate rows into per-class sums: index_put_(accumulate=True), ~10× index_add_ on CPU."""
    sums.index_put_((Y,), X, accumulate=True)
    sqsums.index_put_((Y,), q, accumulate=True)
    counts.add_(torch.bincount(Y, minlength=counts.shape[0]).to(counts.dtype))


# The fused CPU accumulation (module docstring). Tests switch it off to exercise the torch path.
_FUSED_ENABLED = True
# |h|, |r| ≤ this bound keeps ‖h − r‖² finite in float64 (same constant as rust/src/classstats.rs)
_FUSED_LIMIT = 1e140


def _fused_core():
    """lcfast._core when it has the fused accumulation (an older build may not), else None."""
    if not _FUSED_ENABLED:
        return None
    try:
        from lcfast import _core
    except ImportError:  # the torch path computes the same sums
        return None
    return _core if hasattr(_core, "class_stats_accumulate") else None


def _check_shapes(H, Y, n_classes, shift, centers, what):
    if H.dim() != 2:
        raise UsageError(f"{what}: H must be 2-D [N, d], got shape {tuple(H.shape)}")
    B, d = H.shape
    check_label_shape(Y, B, what)
    if shift is not None and not (shift.shape == (d,) or shift.shape == (n_classes, d)):
        raise UsageError(f"{what}: shift must be [{d}] or [{n_classes}, {d}], got {tuple(shift.shape)}")
    if centers is not None and centers.shape != (n_classes, d):
        raise UsageError(f"{what}: centers must be [{n_classes}, {d}], got {tuple(centers.shape)}")


def class_stats_torch(
    H: torch.Tensor,
    Y: torch.Tensor,
    n_classes: int,
    shift: torch.Tensor | None = None,
    centers: torch.Tensor | None = None,
    *,
    out: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    workspace: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class `(counts f64[C], sums f64[C,d], sqsums f64[C])` — the torch twin of
    `lcfast.kernels.class_stats.class_stats_triton`, same signature and contract:

    H: B×d features (any float dtype; converted to float64 exactly), Y: B integer labels in [0, C).
    shift: None, a [d] vector or a per-class [C, d] matrix; `sums` = Σ(h − shift[y]).
    centers: None or [C, d]; when given `sqsums` = Σ‖h − centers[y]‖² (two-pass mode), else
    Σ‖h − shift[y]‖² (Σ‖h‖² without shift).
    out: optional float64 buffers to accumulate into (returned); else fresh zeros.
    workspace: optional dict for reusable B×d scratch buffers (ClassStats passes one).

    Scatter style (index_put_ with accumulate), never a one-hot B×C matrix; all arithmetic after
    the load is float64. Labels out of range raise DataError.
    """
    n_classes = int(n_classes)
    if n_classes < 1:
        raise UsageError(f"class_stats_torch: n_classes must be ≥ 1, got {n_classes}")
    _check_shapes(H, Y, n_classes, shift, centers, "class_stats_torch")
    B, d = H.shape
    dev = H.device
    if out is None:
        counts = torch.zeros(n_classes, dtype=F64, device=dev)
        sums = torch.zeros(n_classes, d, dtype=F64, device=dev)
        sqsums = torch.zeros(n_classes, dtype=F64, device=dev)
    else:
        counts, sums, sqsums = out
        if counts.shape != (n_classes,) or sums.shape != (n_classes, d) or sqsums.shape != (n_classes,):
            raise UsageError(f"class_stats_torch: out must be ({n_classes},), ({n_classes}, {d}), "
                             f"({n_classes},) buffers")
    if B == 0:
        return counts, sums, sqsums
    Y = Y.to(device=dev, dtype=torch.int64)
    check_label_range(Y, n_classes, "class_stats_torch")
    X, _Dv, q = _deviations(H, Y, shift, centers, workspace)
    _scatter(counts, sums, sqsums, Y, X, q)
    return counts, sums, sqsums


# --------------------------------------------------------------------------------------------
# the accumulator
# --------------------------------------------------------------------------------------------


class ClassStats:
    """Streaming per-class statistics (see the module docstring for the shifted formulation).

    ClassStats(n_classes, dim, covariance=False, device="cpu", dtype=torch.float64,
               nonfinite="error", cov_classes=None)

    update(H, Y, backend="auto")   one batch: H [N, d] (any float or integer dtype), Y [N] integer
                                   labels; torch tensors or numpy arrays
    merge(other)                   in place; exact (up to float64 rounding), associative
    all_reduce(group=None)         sum over torch.distributed ranks (every rank ends identical)
    save(path, meta={}) / ClassStats.load(path, expect=None, device="cpu")
    counts [C] int64, means [C,d], variances [C] (σ²_c, population; 0 for unseen classes),
    covariance [d,d] within-class Σ_W over the covered classes (or None), meta dict.

    dtype: of the accumulators, torch.float64 (default) or torch.float32 (counts exact to 2^24 per
    class); float16/bfloat16 are refused (UsageError): they lose counts.
    nonfinite: "error" (DataError) or "skip" (drop rows with a non-finite feature; counted in
    `.skipped`). cov_classes: optional bool mask [C]; only rows whose label is in it enter the
    covariance (lets collection restrict Σ_W to the classes that will be kept).
    """

    def __init__(
        self,
        n_classes: int,
        dim: int,
        covariance: bool = False,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = F64,
        nonfinite: str = "error",
        cov_classes: torch.Tensor | None = None,
    ) -> None:
        n_classes = validate.integer("ClassStats: n_classes", n_classes, min=1)
        dim = validate.integer("ClassStats: dim", dim, min=1)
        if nonfinite not in ("error", "skip"):
            raise UsageError(f"ClassStats: nonfinite must be 'error' or 'skip', got {nonfinite!r}")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise UsageError(f"ClassStats: dtype must be torch.float64 or torch.float32, got {dtype}")
        if dtype not in (torch.float64, torch.float32):
            # half-precision accumulators silently lose counts and sums; features may be any float dtype
            raise UsageError(f"ClassStats: dtype {dtype} cannot hold the accumulators (counts are exact only up "
                             "to 2,048 in float16 and 256 in bfloat16); use torch.float64 (the default)")
        self.n_classes = n_classes
        self.dim = dim
        self.device = torch.device(device)
        self.dtype = dtype
        self.nonfinite = nonfinite
        self.pass_kind = "one-pass"
        self.ref_fixed = False
        z = dict(dtype=dtype, device=self.device)
        self._n = torch.zeros(n_classes, **z)
        self._ref = torch.zeros(n_classes, dim, **z)
        self._s1 = torch.zeros(n_classes, dim, **z)
        self._s2 = torch.zeros(n_classes, **z)
        self._cov = torch.zeros(dim, dim, **z) if covariance else None
        self.cov_classes = None
        if cov_classes is not None:
            if not covariance:
                raise UsageError("ClassStats: cov_classes needs covariance=True")
            m = torch.as_tensor(cov_classes, device=self.device)
            if m.dtype != torch.bool or m.shape != (n_classes,):
                raise UsageError(f"ClassStats: cov_classes must be a bool mask of shape [{n_classes}]")
            self.cov_classes = m
        self.skipped = 0
        self.meta: dict[str, Any] = {}
        self._ws: dict = {}

    # ---- construction helpers -------------------------------------------------------------

    @classmethod
    def second_pass(
        cls,
        means: torch.Tensor,
        covariance: bool = False,
        device: str | torch.device | None = None,
        dtype: torch.dtype = F64,
        nonfinite: str = "error",
        cov_classes: torch.Tensor | None = None,
    ) -> ClassStats:
        """The exact two-pass accumulator: references fixed to `means` [C, d] (from a first pass),
        so S2_c = Σ‖h − μ_c‖² and K = Σ(h − μ_y)(h − μ_y)ᵀ are accumulated directly."""
        means = as_tensor(means, "ClassStats.second_pass: means")
        if means.dim() != 2:
            raise UsageError(f"ClassStats.second_pass: means must be [C, d], got shape {tuple(means.shape)}")
        dev = means.device if device is None else device
        st = cls(means.shape[0], means.shape[1], covariance, dev, dtype, nonfinite, cov_classes)
        st._ref.copy_(means.to(st.device, dtype))
        if not torch.isfinite(st._ref).all():
            raise DataError("ClassStats.second_pass: means contain non-finite values")
        st.ref_fixed = True
        st.pass_kind = "two-pass"
        st.meta["means_fingerprint"] = tensor_fingerprint(means)
        return st

    def copy(self) -> ClassStats:
        new = ClassStats.__new__(ClassStats)
        new.__dict__.update(self.__dict__)
        for k in ("_n", "_ref", "_s1", "_s2"):
            setattr(new, k, getattr(self, k).clone())
        new._cov = None if self._cov is None else self._cov.clone()
        new.cov_classes = None if self.cov_classes is None else self.cov_classes.clone()
        new.meta = dict(self.meta)
        new._ws = {}
        return new

    def select(self, ids: torch.Tensor, dim: int | None = None) -> ClassStats:
        """A new accumulator holding only classes `ids` (int64 [K], in that order) and the first `dim`
        feature columns (default all; the dropped columns must be zero padding). The covariance
        comes along only when every class that entered it is among `ids`."""
        ids = torch.as_tensor(ids, dtype=torch.int64, device=self.device)
        d = self.dim if dim is None else int(dim)
        if not 1 <= d <= self.dim:
            raise UsageError(f"ClassStats.select: dim must lie in [1, {self.dim}], got {d}")
        covered = self.cov_classes if self.cov_classes is not None else self._n > 0
        inside = torch.zeros(self.n_classes, dtype=torch.bool, device=self.device)
        inside[ids] = True
        keep_cov = self._cov is not None and not bool((covered.to(self.device) & ~inside).any())
        new = ClassStats(int(ids.numel()), d, covariance=keep_cov, device=self.device, dtype=self.dtype,
                         nonfinite=self.nonfinite,
                         cov_classes=self.cov_classes[ids] if keep_cov and self.cov_classes is not None else None)
        new._n = self._n[ids].clone()
        new._ref = self._ref[ids, :d].clone()
        new._s1 = self._s1[ids, :d].clone()
        new._s2 = self._s2[ids].clone()
        if keep_cov:
            new._cov = self._cov[:d, :d].clone()
        new.pass_kind, new.ref_fixed, new.skipped = self.pass_kind, self.ref_fixed, self.skipped
        new.meta = dict(self.meta)
        return new

    # ---- accumulation ---------------------------------------------------------------------

    def update(self, H: torch.Tensor, Y: torch.Tensor, backend: str = "auto") -> ClassStats:
        """Accumulate one batch (in place; returns self). H [N, d] float (any dtype; torch tensor or
        numpy array), Y [N] integer labels. On CPU the torch backend runs the fused one-pass loop when
        it applies (module docstring), else the torch ops."""
        H, Y = as_tensor(H, "ClassStats.update: H"), as_tensor(Y, "ClassStats.update: Y")
        if H.dim() != 2 or H.shape[1] != self.dim:
            raise UsageError(f"ClassStats.update: H must be [N, {self.dim}], got shape {tuple(H.shape)}")
        if Y.dim() != 1 or Y.numel() != H.shape[0]:
            raise UsageError(f"ClassStats.update: Y must be 1-D with {H.shape[0]} labels, got shape {tuple(Y.shape)}")
        if Y.dtype.is_floating_point or Y.dtype == torch.bool:
            raise UsageError(f"ClassStats.update: Y must be an integer tensor, got {Y.dtype}")
        if not H.is_floating_point():
            if H.dtype == torch.bool or H.is_complex():
                raise UsageError(f"ClassStats.update: H must be real numbers, got {H.dtype}")
            H = H.to(F64)  # integer features (exact up to 2^53)
        if H.shape[0] == 0:
            return self
        H = H.detach().to(self.device)
        Y = Y.detach().to(self.device, torch.int64)
        check_label_range(Y, self.n_classes, "ClassStats.update")
        be = resolve_backend(backend, H, family="class_stats")
        if be == "triton":
            bad = ~torch.isfinite(H).all(1)
            if bool(bad.any()):
                H, Y = self._drop_nonfinite(H, Y, bad)
                if H.shape[0] == 0:
                    return self
            self._set_refs(H, Y)
            launch = load_launcher("class_stats", "class_stats_triton")
            if self.dtype == F64:
                launch(H, Y, self.n_classes, shift=self._ref, out=(self._n, self._s1, self._s2))
            else:
                n, s1, s2 = launch(H, Y, self.n_classes, shift=self._ref)
                self._n += n.to(self.dtype)
                self._s1 += s1.to(self.dtype)
                self._s2 += s2.to(self.dtype)
            if self._cov is not None:
                X, _, _ = _deviations(H, Y, self._ref, None, self._ws)
                self._add_cov(X, Y)
            return self
        self._set_refs(H, Y)
        if self._fused_update(H, Y):
            return self
        # torch: deviations first, a finiteness check on the row norms, then scatter into the state
        X, _, q = _deviations(H, Y, self._ref, None, self._ws)
        if not bool(torch.isfinite(q.sum())):
            bad = ~torch.isfinite(q)
            H, Y = self._drop_nonfinite(H, Y, bad)
            if H.shape[0] == 0:
                return self
            X, _, q = _deviations(H, Y, self._ref, None, self._ws)
        if self.dtype == F64:
            _scatter(self._n, self._s1, self._s2, Y, X, q)
        else:
            _scatter(self._n, self._s1, self._s2, Y, X.to(self.dtype), q.to(self.dtype))
        if self._cov is not None:
            self._add_cov(X, Y)
        return self

    def _fused_update(self, H: torch.Tensor, Y: torch.Tensor) -> bool:
        """The one-pass Rust accumulation (module docstring); False (nothing done) when it does
        not apply: not CPU / float64 state / float32-float64 features, extension missing, or a
        batch with a non-finite or huge value (the torch path then errors or skips exactly as
        documented). Same sums as the torch path up to float64 rounding."""
        core = _fused_core()
        if core is None or H.device.type != "cpu" or self.dtype != F64 or H.dtype not in (torch.float32, F64):
            return False
        state = (self._ref, self._s1, self._s2, self._n)
        if not all(t.is_contiguous() for t in state):
            return False
        threads = torch.get_num_threads()
        Hn = H.contiguous().numpy()
        if not core.class_stats_rows_finite(Hn, threads) or not self._refs_within_limit():
            return False
        X = None
        if self._cov is not None:  # the kernel also writes the deviations for the scatter matrix
            X = _buffer(self._ws, "x", tuple(H.shape), H.device)
        core.class_stats_accumulate(Hn, Y.contiguous().numpy(), *(t.numpy() for t in state),
                                    None if X is None else X.numpy(), threads)
        if X is not None:
            self._add_cov(X, Y)
        return True

    def _refs_within_limit(self) -> bool:
        """max |r_c| ≤ _FUSED_LIMIT, cached per reference tensor and version (references change
        rarely: new classes, merge, all_reduce, load), so steady-state updates never re-read them."""
        key = self.__dict__.get("_ref_amax_key")
        if key is None or key[0]() is not self._ref or key[1] != self._ref._version:
            self._ref_amax = float(self._ref.abs().amax()) if self._ref.numel() else 0.0
            self._ref_amax_key = (weakref.ref(self._ref), self._ref._version)
        return self._ref_amax <= _FUSED_LIMIT

    def _drop_nonfinite(self, H, Y, bad):
        nbad = int(bad.sum())
        if self.nonfinite == "error":
            raise DataError(
                f"ClassStats.update: {nbad} of {H.shape[0]} feature rows are non-finite "
                "(or their squared norm overflows float64); pass nonfinite='skip' to drop and count them"
            )
        self.skipped += nbad
        keep = ~bad
        return H[keep], Y[keep]

    def _set_refs(self, H: torch.Tensor, Y: torch.Tensor) -> None:
        """Reference r_c of classes seen for the first time: their first row in this batch."""
        if self.ref_fixed:
            return
        B = H.shape[0]
        first = torch.full((self.n_classes,), B, dtype=torch.int64, device=H.device)
        first.scatter_reduce_(0, Y, torch.arange(B, device=H.device), reduce="amin")
        new = (first < B) & (self._n == 0)
        if bool(new.any()):
            ids = new.nonzero().squeeze(1)
            rows = H.index_select(0, first[ids]).to(self.dtype)
            if not bool(torch.isfinite(rows).all()):
                # a non-finite first row: use the class's first finite row instead (if any)
                ok = torch.isfinite(H).all(1)
                idx = torch.arange(B, device=H.device).masked_fill(~ok, B)
                first = torch.full((self.n_classes,), B, dtype=torch.int64, device=H.device)
                first.scatter_reduce_(0, Y, idx, reduce="amin")
                new = (first < B) & (self._n == 0)
                ids = new.nonzero().squeeze(1)
                rows = H.index_select(0, first[ids]).to(self.dtype)
            key = self.__dict__.get("_ref_amax_key")
            fresh = key is not None and key[0]() is self._ref and key[1] == self._ref._version
            self._ref[ids] = rows
            if fresh:  # extend the cached max |r| by the new rows instead of re-reading all C rows
                self._ref_amax = max(self._ref_amax, float(rows.abs().amax()))
                self._ref_amax_key = (key[0], self._ref._version)

    def _add_cov(self, X: torch.Tensor, Y: torch.Tensor) -> None:
        if self.cov_classes is not None:
            X = X[self.cov_classes[Y]]
        self._cov.addmm_(X.T.to(self.dtype), X.to(self.dtype))

    # ---- combination ----------------------------------------------------------------------

    def _check_compatible(self, other: ClassStats, what: str) -> None:
        if not isinstance(other, ClassStats):
            raise UsageError(f"ClassStats.{what}: expected a ClassStats, got {type(other).__name__}")
        if (other.n_classes, other.dim) != (self.n_classes, self.dim):
            raise DataError(
                f"ClassStats.{what}: shapes differ ({other.n_classes}×{other.dim} vs {self.n_classes}×{self.dim})"
            )
        if (other._cov is None) != (self._cov is None):
            raise DataError(f"ClassStats.{what}: one accumulator has the covariance and the other has not")
        if other.pass_kind != self.pass_kind:
            raise DataError(f"ClassStats.{what}: pass kinds differ ({other.pass_kind} vs {self.pass_kind})")
        a, b = self.cov_classes, other.cov_classes
        if (a is None) != (b is None) or (a is not None and not torch.equal(a.cpu(), b.cpu())):
            raise DataError(f"ClassStats.{what}: covariance class masks differ")

    def merge(self, other: ClassStats) -> ClassStats:
        """Add `other`'s samples to this accumulator (in place; returns self). Exact: the other's
        sums are moved to this accumulator's references before adding."""
        self._check_compatible(other, "merge")
        n_o = other._n.to(self.device, self.dtype)
        ref_o = other._ref.to(self.device, self.dtype)
        s1_o = other._s1.to(self.device, self.dtype)
        s2_o = other._s2.to(self.device, self.dtype)
        if not self.ref_fixed:  # classes new to self adopt the other's reference
            adopt = (self._n == 0) & (n_o > 0)
            self._ref[adopt] = ref_o[adopt]
        delta = ref_o - self._ref  # move other's sums from ref_o to self._ref
        delta[n_o == 0] = 0
        dots = torch.einsum("ij,ij->i", delta, s1_o)
        dn2 = torch.einsum("ij,ij->i", delta, delta)
        self._s2 += s2_o + 2 * dots + n_o * dn2
        self._s1 += s1_o + n_o[:, None] * delta
        if self._cov is not None:
            cov_o = other._cov.to(self.device, self.dtype)
            if self.cov_classes is not None:
                m = self.cov_classes.to(self.device)
                delta, s1_c, n_c = delta[m], s1_o[m], n_o[m]
            else:
                s1_c, n_c = s1_o, n_o
            cross = delta.T @ s1_c
            self._cov += cov_o + cross + cross.T + (delta * n_c[:, None]).T @ delta
        self._n += n_o
        self.skipped += other.skipped
        return self

    def all_reduce(self, group=None) -> ClassStats:
        """Sum this accumulator over all ranks of `group` (torch.distributed); every rank ends with
        the same state, equal to the single-process result up to float64 rounding.

        Two steps (Chan et al.): all-reduce n_c and Σh → global means μ_c; each rank moves its sums
        to the references μ_c (no cancellation: its own references are samples of the class) and
        the moved sums are all-reduced. References become the global means (or stay fixed in the
        two-pass mode, where all ranks share them)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise UsageError("ClassStats.all_reduce: torch.distributed is not initialised (init_process_group first)")
        C, d = self.n_classes, self.dim
        if self.ref_fixed:
            flat = torch.cat([self._n, self._s1.reshape(-1), self._s2]
                             + ([self._cov.reshape(-1)] if self._cov is not None else []))
            dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
            self._unpack(flat)
            self._reduce_skipped(dist, group)
            return self
        raw = torch.cat([self._n, (self._s1 + self._n[:, None] * self._ref).reshape(-1)])
        dist.all_reduce(raw, op=dist.ReduceOp.SUM, group=group)
        n_g = raw[:C]
        mu = raw[C:].reshape(C, d) / n_g.clamp_min(1)[:, None]
        mu[n_g == 0] = 0
        delta = self._ref - mu  # move local sums from self._ref to the global means
        delta[self._n == 0] = 0
        s2 = self._s2 + 2 * torch.einsum("ij,ij->i", delta, self._s1) + self._n * torch.einsum("ij,ij->i", delta, delta)
        s1 = self._s1 + self._n[:, None] * delta
        parts = [s1.reshape(-1), s2]
        if self._cov is not None:
            if self.cov_classes is not None:
                m = self.cov_classes
                dl, s1l, nl = delta[m], self._s1[m], self._n[m]
            else:
                dl, s1l, nl = delta, self._s1, self._n
            cross = dl.T @ s1l
            parts.append((self._cov + cross + cross.T + (dl * nl[:, None]).T @ dl).reshape(-1))
        flat = torch.cat(parts)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
        self._s1 = flat[: C * d].reshape(C, d).clone()
        self._s2 = flat[C * d : C * d + C].clone()
        if self._cov is not None:
            self._cov = flat[C * d + C :].reshape(d, d).clone()
        self._n = n_g.clone()
        self._ref = mu
        self._reduce_skipped(dist, group)
        return self

    def _reduce_skipped(self, dist, group) -> None:
        sk = torch.tensor([float(self.skipped)], dtype=F64, device=self.device)
        dist.all_reduce(sk, op=dist.ReduceOp.SUM, group=group)
        self.skipped = int(sk.item())

    def _unpack(self, flat: torch.Tensor) -> None:
        C, d = self.n_classes, self.dim
        self._n = flat[:C].clone()
        self._s1 = flat[C : C + C * d].reshape(C, d).clone()
        self._s2 = flat[C + C * d : C + C * d + C].clone()
        if self._cov is not None:
            self._cov = flat[C + C * d + C :].reshape(d, d).clone()

    # ---- results --------------------------------------------------------------------------

    @property
    def counts(self) -> torch.Tensor:
        """n_c [C] int64."""
        return self._n.round().to(torch.int64)

    @property
    def n_samples(self) -> int:
        return int(self._n.sum().item())

    @property
    def means(self) -> torch.Tensor:
        """μ_c [C, d] (float64); zero for classes never seen."""
        n = self._n.clamp_min(1)[:, None]
        mu = self._ref + self._s1 / n
        mu[self._n == 0] = 0
        return mu

    @property
    def variances(self) -> torch.Tensor:
        """σ²_c = (1/n_c) Σ‖h − μ_c‖² [C] (population; zero for classes never seen)."""
        n = self._n.clamp_min(1)
        dm = self._s1 / n[:, None]
        v = self._s2 / n - torch.einsum("ij,ij->i", dm, dm)
        v = v.clamp_min(0)
        v[self._n == 0] = 0
        return v

    def within_scatter(self) -> torch.Tensor | None:
        """Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ [d, d] over the covered classes (None without covariance)."""
        if self._cov is None:
            return None
        n = self._n
        s1 = self._s1
        if self.cov_classes is not None:
            n, s1 = n[self.cov_classes], s1[self.cov_classes]
        a = s1 / n.clamp_min(1).sqrt()[:, None]
        S = self._cov - a.T @ a
        return 0.5 * (S + S.T)

    @property
    def covariance(self) -> torch.Tensor | None:
        """Within-class covariance Σ_W [d, d] = within_scatter / N_covered (None without covariance)."""
        S = self.within_scatter()
        if S is None:
            return None
        n = self._n if self.cov_classes is None else self._n[self.cov_classes]
        N = float(n.sum())
        return S / max(N, 1.0)

    # ---- persistence ----------------------------------------------------------------------

    def save(self, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> Path:
        """Write the state as safetensors (+ string metadata: `meta`, pass kind, tokens seen),
        atomically (temp file in the same folder, fsync, os.replace). `meta` is merged into
        `.meta` (fingerprints of the model / shard that produced the state). safetensors metadata is
        a dict of strings: non-string values are JSON-encoded and come back from `load` as strings.
        Layout: lcfast.stats.state_file."""
        if meta:
            self.meta.update(meta)
        return state_file.save_class_stats(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, expect: dict[str, Any] | None = None, device="cpu") -> ClassStats:
        """Read a state written by `save`; DataError naming the file when it is not one, is
        inconsistent, or its metadata does not match `expect` (e.g. {"model_fingerprint": ...})."""
        return state_file.load_class_stats(cls, path, expect, device)

    def __repr__(self) -> str:
        return (
            f"ClassStats(n_classes={self.n_classes}, dim={self.dim}, samples={self.n_samples}, "
            f"seen={int((self._n > 0).sum())}, covariance={self._cov is not None}, pass={self.pass_kind})"
        )
