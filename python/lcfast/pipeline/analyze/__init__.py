"""Correlate neural-collapse metrics with a target (default: validation loss) across models.

`analyze(csv_paths, target="val_loss", out_dir=...)` reads one or more tables — lcfast's own
`lcfast measure` CSVs (one row per (model, checkpoint): the canonical metric keys, or with
`--profile paper` the paper's columns) and the paper's artifact tables (lc-2024_10_24 and the older
lc-2024_05_18, packaged in lcfast/reference, their own column names) — and, for every metric column, fits
`target ~ slope · x + intercept` where x is ln(metric) when the metric is positive on every row used
(`scale = "log"`) and the metric itself otherwise (`scale = "linear"`). It reports R², slope,
intercept, Pearson r, Spearman ρ with its p-value and n, writes `out_dir/correlations.csv`,
`out_dir/data.csv` (the normalised table that was analysed), `out_dir/analysis.json`, and PNG plots
in `out_dir`: `scatter_<metric>_vs_<target>.png` (each metric vs the target, coloured by parameter
count on a log scale) and `epochs_<metric>.png` (each metric vs epoch, one line per model, when
some model has several checkpoints). When a row's collection lies in a run trained with
`lcfast train --track-nc` (its `collect_dir` is RUN/collect/<checkpoint> and RUN/nc_track.csv
exists), the epoch plots draw that run's tracked curve (x = epoch as a fraction) with the exact
points of its collected checkpoints on it (then one exact checkpoint is enough). Tables of
`collect --layers` collections (a `layer` column) give `depth_<metric>.png`: each metric against
the layer, one line per model; their correlations use the LM-head rows only (`head` True). Rows
of a training history (`collect hf:ORG/NAME --revisions`: a `step` column) give `steps_<metric>.png`,
each metric against the step on a log axis (symlog when step 0 is there: linear up to the first
positive step, said in a note), and their depth lines are coloured by step.

Like with like (docs/metrics.md): a column pools rows of several tables only where its definition
is the same in each. Paper columns are renamed to canonical keys where they are the same quantity
(`PAPER_TO_CANONICAL`, `PAPER_05_18_TO_SHARED`); the paper's cdnv (‖Δμ‖⁴) stays `cdnv`, and a
canonical row's nc1_cdnv joins it only when its `cdnv_power` is 2; older-table columns that share a
name but not a definition get a `[05_18]` tag. `AnalysisResult.pooled` lists the columns that
pooled several files, `.kept_apart` the related quantities that were not merged.

The parts, in the order the data flows: `load` (reading and pooling tables, the column vocabulary),
`fit` (one metric's fit and correlation), `plots` (scatter, over-training and depth plots), `run`
(the entry points, writing the outputs); `result` holds what they share (`AnalysisResult`, file
names). This package exposes the public names of the parts that callers use.
"""

from lcfast.pipeline.analyze.fit import EXACT_P_NOTE, correlate, format_p, has_exact_p
from lcfast.pipeline.analyze.load import (
    BOOKKEEPING_COLUMNS,
    KEPT_APART,
    META_COLUMNS,
    OTHER_RENAMES,
    OUTCOME_COLUMNS,
    PAPER_05_18_TO_SHARED,
    PAPER_TO_CANONICAL,
    depth_data,
    head_rows,
    load_tables,
    metric_columns,
    pooling,
    pooling_line,
)
from lcfast.pipeline.analyze.plots import (
    epoch_axis,
    epoch_lines,
    make_depth_plots,
    make_plots,
    remove_stale_plots,
    tracked_tables,
)
from lcfast.pipeline.analyze.result import (
    CORRELATION_COLUMNS,
    DEFAULT_TARGET,
    AnalysisResult,
)
from lcfast.pipeline.analyze.run import analyze, run_analysis

__all__ = [
    "BOOKKEEPING_COLUMNS",
    "CORRELATION_COLUMNS",
    "DEFAULT_TARGET",
    "EXACT_P_NOTE",
    "KEPT_APART",
    "META_COLUMNS",
    "OTHER_RENAMES",
    "OUTCOME_COLUMNS",
    "PAPER_05_18_TO_SHARED",
    "PAPER_TO_CANONICAL",
    "AnalysisResult",
    "analyze",
    "correlate",
    "depth_data",
    "epoch_axis",
    "epoch_lines",
    "format_p",
    "has_exact_p",
    "head_rows",
    "load_tables",
    "make_depth_plots",
    "make_plots",
    "metric_columns",
    "pooling",
    "pooling_line",
    "remove_stale_plots",
    "run_analysis",
    "tracked_tables",
]
