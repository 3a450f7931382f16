"""What the torch twins (lcfast.stats) and the Triton kernels (lcfast.kernels) share.

    BACKENDS, resolve_backend, load_launcher    which backend runs, and the Triton launcher it calls
    check_label_shape, check_label_range        the label checks of the class-statistics twins
    DEGENERATE_TOL                              the degenerate-pair tolerance of the pairwise sweep
    Moments, PairwiseSums                       what every backend of the pairwise sweep returns

It sits below both packages (it imports nothing from lcfast but errors) so that a kernel never
imports from stats/. The launchers are found by name at call time (`lcfast.kernels.<family>`), so
importing this module never imports triton.

Every backend of the pairwise sweep (torch blocks, Triton tiles) returns a `PairwiseSums`, so the
metric code downstream never knows which one ran. Means and variances over pairs are carried as
(count, mean, M2) moments and combined with Chan et al.'s parallel formula in float64, so a
variance never comes from the cancellation-prone Σx² − (Σx)²/n.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from dataclasses import dataclass, field

import torch

from lcfast.errors import DataError, UsageError

__all__ = ["BACKENDS", "resolve_backend", "load_launcher", "check_label_shape", "check_label_range", "DEGENERATE_TOL",
           "Moments", "PairwiseSums"]

BACKENDS = ("auto", "torch", "triton")

#: tolerance of the degenerate-pair rule of the pairwise sweep (both backends; the reasoning
#: behind the value is in lcfast.stats.pairwise's docstring)
DEGENERATE_TOL = 1e3 * torch.finfo(torch.float64).eps


def resolve_backend(backend: str, *tensors: torch.Tensor | None, family: str) -> str:
    """"auto" → "triton" when the tensors are on CUDA and `lcfast.kernels.<family>` imports, else
    "torch". "triton" is returned as is (the launcher itself checks the device / interpreter);
    "torch" likewise. Anything else is a UsageError."""
    if backend not in BACKENDS:
        raise UsageError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend != "auto":
        return backend
    on_cuda = any(t is not None and t.is_cuda for t in tensors)
    if not on_cuda or importlib.util.find_spec("triton") is None:
        return "torch"
    try:
        importlib.import_module(f"lcfast.kernels.{family}")
    except Exception:  # kernels not built / importable: the torch twin computes the same thing
        return "torch"
    return "triton"


def load_launcher(family: str, name: str):
    """The Triton launcher `lcfast.kernels.<family>.<name>`, imported lazily."""
    try:
        mod = importlib.import_module(f"lcfast.kernels.{family}")
    except Exception as exc:  # ImportError, or triton failing to initialise
        raise UsageError(
            f"backend='triton' needs lcfast.kernels.{family}, which does not import here ({exc}); "
            "use backend='torch'"
        ) from None
    try:
        return getattr(mod, name)
    except AttributeError:
        raise UsageError(f"backend='triton': lcfast.kernels.{family} has no {name}()") from None


def check_label_shape(Y: torch.Tensor, B: int, what: str) -> None:
    """UsageError unless Y is a 1-D integer tensor of B labels."""
    if Y.dim() != 1 or Y.numel() != B:
        raise UsageError(f"{what}: Y must be 1-D with {B} labels, got shape {tuple(Y.shape)}")
    if Y.dtype.is_floating_point or Y.dtype == torch.bool or Y.is_complex():
        raise UsageError(f"{what}: Y must be an integer tensor, got {Y.dtype}")


def check_label_range(Y: torch.Tensor, n_classes: int, what: str) -> None:
    """DataError naming the labels' range when one lies outside [0, n_classes)."""
    if Y.numel() == 0:
        return
    lo, hi = int(Y.min()), int(Y.max())
    if lo < 0 or hi >= n_classes:
        raise DataError(f"{what}: labels must lie in [0, {n_classes}), got range [{lo}, {hi}]")


@dataclass
class Moments:
    """Count, mean and sum of squared deviations (M2) of a stream of float64 values."""

    n: float = 0.0
    mean: float = 0.0
    m2: float = 0.0

    @staticmethod
    def of(x: torch.Tensor) -> Moments:
        """Moments of a 1-D tensor (computed in float64)."""
        x = x.detach().to(torch.float64).reshape(-1)
        n = x.numel()
        if n == 0:
            return Moments()
        mean = x.mean()
        return Moments(float(n), float(mean), float(((x - mean) ** 2).sum()))

    def merge(self, other: Moments) -> Moments:
        """Chan's parallel combination; exact in exact arithmetic, stable in float64."""
        if other.n == 0:
            return Moments(self.n, self.mean, self.m2)
        if self.n == 0:
            return Moments(other.n, other.mean, other.m2)
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * other.n / n
        m2 = self.m2 + other.m2 + delta * delta * self.n * other.n / n
        return Moments(n, mean, m2)

    @property
    def var(self) -> float:
        """Population variance (ddof = 0); NaN when empty."""
        return self.m2 / self.n if self.n > 0 else float("nan")


def debias_terms(var: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(s², a) float64 [C] for the debiased CDNV from population variances σ̂²_c (ddof 0) and
    counts n_c: s²_c = σ̂²_c·n_c/(n_c − 1) (ddof 1), a_c = s²_c/n_c = σ̂²_c/(n_c − 1). A class with
    n_c < 2 has no variance estimate: s² = 0 and a = +∞, so every pair touching it has a
    non-positive corrected distance (counted, excluded)."""
    var = var.to(torch.float64)
    n = counts.to(torch.float64).to(var.device)
    one = n >= 2
    nm1 = torch.where(one, n - 1, torch.ones_like(n))
    s2 = torch.where(one, var * n / nm1, torch.zeros_like(var))
    a = torch.where(one, var / nm1, torch.full_like(var, math.inf))
    return s2, a


@dataclass
class PairwiseSums:
    """What one sweep over the unordered kept-class pairs c < c' produces.

    Inputs of the sweep: M (C×d) centred means m_c = μ_c − μ_G of the kept classes, var (C,) the
    within-class variances σ²_c. Pairs with ‖m_c − m_c'‖ = 0 (within rounding) or with a zero
    ‖m_c‖ are *degenerate*: counted in `degenerate` and excluded from every pairwise moment.

    cdnv:   moments of (σ²_c + σ²_c') / (2 (‖m_c − m_c'‖²)^p) over non-degenerate pairs
    cos:    moments of cos(m_c, m_c') (interference)
    logk:   moments of log(1 / ‖m̂_c − m̂_c'‖) (GNC2 log kernel)
    dot:    moments of the raw dot product ⟨m_c, m_c'⟩ over *all* pairs c < c' (degenerate ones
        included: the dot product is defined for every pair) — the paper's interference
        (docs/metrics.md); None unless the sweep was asked for it (`raw_dot=True`)
    cdnv_debiased: count and mean (m2 not accumulated: 0) of the debiased CDNV
        (s²_c + s²_c') / (2 (‖m_c − m_c'‖² − a_c − a_c')^p) over the non-degenerate pairs whose
        corrected distance is positive (lcfast.stats.pairwise); None unless the sweep got counts
    nonpositive: non-degenerate pairs whose corrected distance is ≤ 0 (excluded from cdnv_debiased)
    gram_sum, gram_sq_sum, gram_trace: ΣG_ij, ΣG_ij², tr G over the full C×C Gram G = M Mᵀ
        (both triangles and the diagonal: what the ETF error needs), never materialised.
    row_cdnv_sum, row_cos_sum, row_count: per class c, the sums of its pair values against every
        other kept class and the number of non-degenerate partners (for the per-token table).
    """

    n_classes: int
    cdnv: Moments = field(default_factory=Moments)
    cos: Moments = field(default_factory=Moments)
    logk: Moments = field(default_factory=Moments)
    dot: Moments | None = None
    cdnv_debiased: Moments | None = None
    nonpositive: int = 0
    degenerate: int = 0
    gram_sum: float = 0.0
    gram_sq_sum: float = 0.0
    gram_trace: float = 0.0
    row_cdnv_sum: torch.Tensor | None = None
    row_cos_sum: torch.Tensor | None = None
    row_count: torch.Tensor | None = None
