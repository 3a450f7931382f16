"""CLI commands: collect (class statistics over the train shard, NC4 over val) and measure (NC metrics)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from lcfast.cli.options import FloatOption, IntOption, SeedOption
from lcfast.validate import CDNV_POWER_MAX, DIST_TIMEOUT_MAX, SAVE_EVERY_MAX


def collect(
    *,
    run: str = typer.Argument(..., metavar="MODEL",
                              help="A `lcfast train` run dir, a transformers causal-LM folder (config.json + "
                                   "safetensors), or hf:ORG/NAME[@REV] from the local Hugging Face cache."),
    checkpoint: str = typer.Option("last", "--checkpoint", "-c",
                                   help="Epoch K, 'last' or 'all' (every epoch: NC over training)."),
    revisions: str | None = typer.Option(None, "--revisions",
                                         help="hf:ORG/NAME only: 'all' or step1000,step2000 — each revision in the "
                                              "local Hugging Face cache in turn, into OUT/<revision>/ (a training "
                                              "history; done ones skipped on a rerun)."),
    data: Path | None = typer.Option(None, "--data",
                                     help="Tokenized data dir (train/val shards + tokenizer.json); "
                                          "default: the run's."),
    out: Path | None = typer.Option(None, "--out", help="Output dir (default RUN/collect/<checkpoint>)."),
    min_count: int = IntOption(1, "--min-count", help="Classes with fewer train samples are not kept (NC4 means)."),
    exact: bool = typer.Option(False, "--exact", help="Two train passes: means, then Σ‖h − μ_c‖² (the paper's way)."),
    covariance: bool = typer.Option(False, "--covariance",
                                    help="Also accumulate the d×d within-class covariance (for nc1_pinv)."),
    batch_size: int = IntOption(16, "--batch-size", "-b", help="Windows (of the model's context) per forward."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N."),
    max_tokens: int | None = IntOption(None, "--max-tokens",
                                       help="About N positions per pass: whole windows drawn uniformly at random over "
                                            "the shard (--seed)."),
    seed: int = SeedOption(0, "--seed", help="Seed of the --max-tokens sample of windows and of the folds."),
    folds: int | None = IntOption(None, "--folds",
                                  help="K disjoint folds of windows accumulated side by side, for standard errors and "
                                       "convergence (default 8, fewer if they do not fit; 1 with --covariance).",
                                  min=1, max=64),
    save_every: float = FloatOption(60.0, "--save-every", help="Seconds between state saves (resume points).",
                                    min=0, min_open=True, max=SAVE_EVERY_MAX),
    skip_nonfinite: bool = typer.Option(False, "--skip-nonfinite",
                                        help="Skip and count non-finite features instead of failing."),
    restart: bool = typer.Option(False, "--restart",
                                 help="Start over, ignoring the saved states of this output dir (each is replaced when "
                                      "its pass saves)."),
    shard: str | None = typer.Option(None, "--shard",
                                     help="i/n: collect only part i of n (array jobs without torchrun); then 'lcfast "
                                          "merge OUT'."),
    backend: str = typer.Option("auto", "--backend", help="Statistics backend: auto, torch, triton."),
    context: int | None = IntOption(None, "--context",
                                    help="Window length T (default: the model's max positions, at most 2048)."),
    dtype: str = typer.Option("float32", "--dtype",
                              help="Forward dtype: float32, bfloat16, float16 (statistics stay float64)."),
    layers: str | None = typer.Option(None, "--layers",
                                      help="Also the class statistics of these hidden states: all or 0,6,12 (0 = "
                                           "embeddings)."),
    classes: str | None = typer.Option(None, "--classes",
                                       help="all, or top:K: class statistics of the K most frequent classes only (less "
                                            "memory)."),
    max_memory: str | None = typer.Option(None, "--max-memory",
                                          help="Refuse to start when the statistics need more than this (e.g. 8GB; "
                                               "default: free memory)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    json_out: bool = typer.Option(False, "--json", help="Print the collect.json summaries as JSON."),
    dist_timeout: float | None = FloatOption(
        None, "--dist-timeout", min=0, min_open=True, max=DIST_TIMEOUT_MAX,
        help="Under torchrun: seconds a rank waits in one collective before it stops with an error naming the rank "
             "it waited for (default: $LCFAST_DIST_TIMEOUT, else 600)."),
) -> None:
    """One train pass (class means/variances) and one val pass (NC4) per checkpoint; resumable.

    Under torchrun each rank collects a disjoint block of the windows; the totals are summed."""
    from rich.console import Console

    from lcfast.errors import UsageError, one_line_warnings
    from lcfast.pipeline.collect import CollectOptions, print_collect_summary
    from lcfast.pipeline.collect import collect as do_collect
    from lcfast.pipeline.collect.layers import parse_size
    from lcfast.pipeline.collect.parts import parse_shard_spec

    if backend not in ("auto", "torch", "triton"):
        raise UsageError(f"--backend {backend}: expected auto, torch or triton")
    opts = CollectOptions(
        exact=exact, covariance=covariance, min_count=min_count, batch_size=batch_size, device=device,
        max_tokens=max_tokens, save_every_s=save_every, backend=backend, skip_nonfinite=skip_nonfinite,
        restart=restart, part=parse_shard_spec(shard), context=context, dtype=dtype, layers=layers, classes=classes,
        max_memory=parse_size(max_memory), dist_timeout=dist_timeout, seed=seed, folds=folds,
    )
    console = Console(stderr=True)
    with one_line_warnings():
        summaries = do_collect(run, checkpoint=checkpoint, data=data, out=out, opts=opts, console=console,
                               progress=progress, revisions=revisions)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports
        return
    if json_out:
        print(json.dumps(summaries, indent=2, default=str))
    elif any(s.get("status") == "part done" for s in summaries):
        for s in summaries:
            Console().print(f"{s['model']}/{s['checkpoint']}: shard {s['shard']} of the {s['pass']} pass done "
                            f"({s['tokens']:,} positions) -> {s['state']}; {s['next']}")
    else:
        print_collect_summary(summaries, Console())

def merge(
    out: Path = typer.Argument(...,
                               help="Collect output dir holding the parts of 'lcfast collect --shard i/n --out OUT'."),
    json_out: bool = typer.Option(False, "--json", help="Print what was merged as JSON."),
) -> None:
    """Merge the finished --shard parts of each pass into its state (fingerprints must agree)."""
    from rich.console import Console

    from lcfast.errors import interrupt_note
    from lcfast.pipeline.collect import merge as do_merge

    with interrupt_note(lambda: f"the part states in {out} are intact; rerun the same command to merge them"):
        res = do_merge(out)
    if json_out:
        print(json.dumps(res, indent=2))
    else:
        for r in res:
            Console().print(f"{r['file']}: {r['status']} ({r['parts']} parts)")

def measure(
    runs: list[Path] = typer.Argument(..., metavar="RUN",
                                      help="Run dirs (their collect/*), collect output dirs, or folders of runs."),
    out: Path = typer.Option(..., "--out",
                             help="Output dir: measurements.csv, per_token/*.parquet, per_class.parquet."),
    context_orders: int = IntOption(3, "--context-orders",
                                    help="per_class.parquet: each class's context entropy at orders 1..K "
                                         "(docs/metrics.md); 0: no per-class table.", min=0, max=16),
    min_count: int | None = IntOption(None, "--min-count",
                                      help="Keep classes with ≥ k train samples (default: collect's)."),
    profile: str = typer.Option(
        "canonical", "--profile",
        help="canonical: lcfast's metric keys; paper: the paper's own columns and definitions (cdnv, "
             "interfere_*, hits/misses, …) — see docs/metrics.md.",
    ),
    cdnv_power: float | None = FloatOption(
        None, "--cdnv-power",
        help="Exponent p on the squared mean distance in CDNV (default 1; --profile paper: 2, the only one it takes).",
        min=0, min_open=True, max=CDNV_POWER_MAX,
    ),
    backend: str = typer.Option("auto", "--backend", help="auto, torch, triton."),
    device: str = typer.Option("auto", "--device", help="Where the metrics run: auto, cpu, cuda."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    json_out: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
) -> None:
    """Every NC metric (docs/metrics.md): one CSV row per (model, checkpoint), plus a per-token parquet table."""
    from rich.console import Console

    from lcfast.cli.data import unchanged_note
    from lcfast.errors import UsageError, interrupt_note
    from lcfast.pipeline.measure import measure as do_measure
    from lcfast.pipeline.measure import print_measure_table

    if backend not in ("auto", "torch", "triton"):
        raise UsageError(f"--backend {backend}: expected auto, torch or triton")
    with interrupt_note(lambda: unchanged_note(out)):
        df = do_measure(runs, out, min_count=min_count, cdnv_power=cdnv_power, backend=backend, device=device,
                        console=Console(stderr=True), progress=progress, profile=profile,
                        context_orders=context_orders)
    if json_out:
        print(df.to_json(orient="records", indent=2))
    else:
        print_measure_table(df, Console())
        Console().print(f"wrote {Path(out) / 'measurements.csv'} ({len(df)} rows)")


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command("collect")(collect)
    app.command("merge")(merge)
    app.command("measure")(measure)
