"""Result containers shared by the torch and Triton backends of the pairwise sweep.

Every backend of the pairwise sweep (torch blocks, Triton tiles) returns a `PairwiseSums`, so the
metric code downstream never knows which one ran. Means and variances over pairs are carried as
(count, mean, M2) moments and combined with Chan et al.'s parallel formula in float64, so a
variance never comes from the cancellation-prone Σx² − (Σx)²/n.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Moments:
    """Count, mean and sum of squared deviations (M2) of a stream of float64 values."""

    n: float = 0.0
    mean: float = 0.0
    m2: float = 0.0

    @staticmethod
    def of(x: torch.Tensor) -> "Moments":
        """Moments of a 1-D tensor (computed in float64)."""
        x = x.detach().to(torch.float64).reshape(-1)
        n = x.numel()
        if n == 0:
            return Moments()
        mean = x.mean()
        return Moments(float(n), float(mean), float(((x - mean) ** 2).sum()))

    @staticmethod
    def from_sums(n: float, s: float, m2_about_mean: float) -> "Moments":
        """Moments from a count, a sum and the M2 about that block's own mean."""
        if n == 0:
            return Moments()
        return Moments(float(n), float(s) / float(n), float(m2_about_mean))

    def merge(self, other: "Moments") -> "Moments":
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
    degenerate: int = 0
    gram_sum: float = 0.0
    gram_sq_sum: float = 0.0
    gram_trace: float = 0.0
    row_cdnv_sum: torch.Tensor | None = None
    row_cos_sum: torch.Tensor | None = None
    row_count: torch.Tensor | None = None
