"""`lcfast demo`: the whole experiment of the paper, in miniature, on the embedded synthetic corpus.

    synthetic stories → byte-level BPE tokenizer (train:VOCAB) → train/val shards
      → a sweep of GPT-Neo-style models (widths × epochs) → collect → measure → analyze → report.md

Work files live under DIR/work/<profile>/ (corpus/, data/, runs/ with each run's collect/); the
results of the last demo directly in DIR: report.md, measurements.csv (final checkpoints),
measurements_over_training.csv, measure/ (every row + per_token/*.parquet), analysis/ (correlations,
plots; analysis_over_training/: each metric against the epoch, the curves tracked during training —
every model trains with `--track-nc` — with the exact points of the collected checkpoints on them),
demo.json (timings, speeds, findings). Every stage is reused when its output is there (the
corpus and shards by their stamp, runs and collections by their own resume logic, the analysis by
the hash of the measurements), so a rerun or an interrupted run continues where it stopped.

On CPU, training and collection run in one worker process per core with one intra-op thread each:
the models are tiny, and on a busy 2-core machine two OpenMP threads per process were measured
5-20× slower than one.

The parts: `profiles` (the sweeps), `run` (the seven steps in order), `reuse` (stamps and the tests
of finished runs and collections), `workers` (jobs in worker processes with one progress bar),
`notes` (the findings and the report's words).
"""

from lcfast.pipeline.demo.notes import findings, plotted_metrics
from lcfast.pipeline.demo.profiles import FULL, QUICK, DemoProfile
from lcfast.pipeline.demo.run import run_demo

__all__ = ["FULL", "QUICK", "DemoProfile", "findings", "plotted_metrics", "run_demo"]
