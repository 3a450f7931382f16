"""What an analysis produces: `AnalysisResult`, the output files' names and the correlation table's columns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

DEFAULT_TARGET = "val_loss"
CORRELATIONS_FILE = "correlations.csv"
DATA_FILE = "data.csv"
SUMMARY_FILE = "analysis.json"

CORRELATION_COLUMNS = [
    "metric", "scale", "r2", "slope", "intercept", "pearson_r", "spearman_rho", "p_value", "n",
    "slope_stderr", "fit_p_value", "source_column", "note",
]


@dataclass
class AnalysisResult:
    """Everything `run_analysis` produced; `analyze` returns `.correlations`."""

    correlations: pd.DataFrame
    data: pd.DataFrame
    target: str
    inputs: list[str]
    metrics: list[str]
    renamed: dict[str, dict[str, str]] = field(default_factory=dict)
    derived: list[str] = field(default_factory=list)
    pooled: dict[str, list[str]] = field(default_factory=dict)
    kept_apart: list[str] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    #: the per-class view (lcfast.pipeline.analyze.per_class.view_summary) when a per_class.parquet
    #: lies beside the inputs, else None
    per_class: dict | None = None
    #: the full view (frames included: lcfast.pipeline.analyze.per_class.per_class_view), for plots
    per_class_view: dict | None = field(default=None, repr=False)
    #: per metric, stable at the size used and roughly how many positions it needs
    #: (lcfast.pipeline.analyze.convergence.convergence_summary), when convergence.csv lies beside the inputs
    convergence: list | None = None
