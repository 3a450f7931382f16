"""Which metrics a measurement reports: `MetricProfile` (docs/metrics.md). The public API and the
CLI take the strings "canonical" and "paper"; `MetricProfile.parse` turns them into the enum once,
at the edge, and everything below compares members. (Not the demo's quick/full `DemoProfile`.)"""

from __future__ import annotations

from enum import Enum

from lcfast.errors import UsageError

#: the paper's CDNV exponent on the squared distance (its analyze.py: dist_exp=2)
PAPER_CDNV_POWER = 2.0


class MetricProfile(str, Enum):
    """A str Enum, so a member equals its string ("paper" == MetricProfile.PAPER)."""

    CANONICAL = "canonical"  # lcfast's metric keys (CANONICAL_KEYS), cdnv with power 1 by default
    PAPER = "paper"  # the paper's own columns and definitions (PAPER_KEYS), cdnv with power 2 only

    @classmethod
    def parse(cls, value: str | MetricProfile, flag: str | None = None) -> MetricProfile:
        """The member named by `value`; UsageError naming `flag` (or the API's `profile`) otherwise."""
        try:
            return cls(value)
        except ValueError:
            names = ", ".join(p.value for p in cls)
            if flag is not None:
                raise UsageError(f"{flag} {value}: expected one of {names}") from None
            raise UsageError(f"measure: profile must be one of {names}, got {value!r}") from None

    def cdnv_power(self, cdnv_power: float | None) -> float:
        """The CDNV exponent this profile uses: `cdnv_power`, or its default (canonical 1, paper 2 —
        the only one it accepts; UsageError for another)."""
        if self is MetricProfile.PAPER:
            if cdnv_power is not None and float(cdnv_power) != PAPER_CDNV_POWER:
                raise UsageError(
                    f"measure: profile 'paper' defines cdnv with power {PAPER_CDNV_POWER:g} (‖μ_c − μ_c'‖⁴); "
                    f"got cdnv_power={cdnv_power}"
                )
            return PAPER_CDNV_POWER
        return 1.0 if cdnv_power is None else float(cdnv_power)
