"""`lcfast analyze CSV…`: correlation of each metric with a target across models (metrics: docs/metrics.md)."""

from __future__ import annotations

from pathlib import Path

import typer


def _fmt(v, spec: str) -> str:
    try:
        if v != v:  # NaN
            return "—"
    except TypeError:
        return str(v)
    return format(v, spec)


def _print_correlations(res, csvs: list[Path], target: str, out: Path) -> None:
    """The correlation table on stdout (with the paper columns when they fit), then the files
    written."""
    from rich.console import Console

    from lcfast.pipeline.analyze import EXACT_P_NOTE, format_p, has_exact_p
    from lcfast.tables import fits, print_table

    console, corr = Console(), res.correlations
    renamed = any(corr["source_column"] != corr["metric"])
    rows, srcs = [], []
    for _, r in corr.iterrows():
        srcs.append(str(r["source_column"]) if r["source_column"] != r["metric"] else "")
        rows.append([str(r["metric"]), r["scale"], _fmt(r["r2"], ".3f"), _fmt(r["slope"], ".4g"),
                     _fmt(r["spearman_rho"], "+.3f"), format_p(r["p_value"], rho=r["spearman_rho"], n=r["n"]),
                     str(r["n"])])
    heads = ["metric", "scale", "R²", "slope", "ρ", "p", "n"]
    show_src = renamed and fits(console, heads + ["paper column"], [r + [s] for r, s in zip(rows, srcs)])
    if show_src:
        heads, rows = heads + ["paper column"], [r + [s] for r, s in zip(rows, srcs)]
    from lcfast.pipeline.analyze.load import input_labels

    names = ", ".join(input_labels([Path(c) for c in csvs]))
    print_table(console, f"metric vs {target}  ({len(res.data)} rows from {names})",
                heads, rows, keys=1, fold=["paper column"],
                justify={h: "right" for h in ("R²", "slope", "ρ", "p", "n")})
    if has_exact_p(corr):
        console.print(EXACT_P_NOTE)
    if renamed and not show_src:
        console.print("paper columns renamed to canonical keys: see source_column in correlations.csv")
    console.print(
        f"wrote {Path(out) / 'correlations.csv'}, {Path(out) / 'data.csv'}, {Path(out) / 'analysis.json'}"
        + (f" and {len(res.plots)} PNG plots" if res.plots else "")
    )


def analyze_cmd(
    csvs: list[Path] = typer.Argument(
        ..., metavar="CSV",
        help="Tables with one row per model/checkpoint: `lcfast measure` CSVs, the paper's lc-2024_*.csv, or "
             "paper:lc-2024_10_24 (the packaged copy)."
    ),
    target: str = typer.Option("val_loss", "--target", help="Column to correlate every metric with."),
    out: Path = typer.Option(..., "--out",
                             help="Output folder: correlations.csv, data.csv, analysis.json and PNG plots "
                                  "(and per_class_*.csv when a per_class.parquet lies beside the table)."),
    metric: list[str] | None = typer.Option(
        None, "--metric", help="Only these metric columns (repeatable); default: every numeric metric column."
    ),
    no_plots: bool = typer.Option(False, "--no-plots", help="Skip the PNG plots."),
    json_out: bool = typer.Option(False, "--json", help="Print the correlation table as JSON."),
) -> None:
    """R², slope (on ln(metric) where positive), Spearman ρ and p-value of each metric vs TARGET; PNG plots.

    Several tables pool a column only where its definition agrees (docs/metrics.md): the paper's
    columns join the canonical keys they equal, its cdnv (‖Δμ‖⁴) stays apart from nc1_cdnv
    unless a row's cdnv_power is 2. One line says which columns were pooled."""
    import json

    from rich.console import Console
    from rich.markup import escape

    from lcfast.cli.data import unchanged_note
    from lcfast.errors import interrupt_note
    from lcfast.pipeline.analyze import run_analysis
    from lcfast.reference import resolve_table

    csvs = [resolve_table(c) for c in csvs]
    err = Console(stderr=True)
    from lcfast.progress import status

    with interrupt_note(lambda: unchanged_note(out)), status(None if json_out else err, "analyzing…"):
        res = run_analysis(csvs, target=target, out_dir=out, metrics=metric or None, plots=not no_plots)
    corr = res.correlations
    if json_out:
        print(json.dumps(json.loads(corr.to_json(orient="records")), indent=2))
    elif len(corr) == 0:  # fewer than 3 models, measured through depth: plots only (see the notes)
        Console().print(f"wrote {Path(out) / 'data.csv'}, {Path(out) / 'analysis.json'}"
                        + (f" and {len(res.plots)} depth plots" if res.plots else ""))
    else:
        _print_correlations(res, csvs, target, out)
    if res.per_class is not None and not json_out:
        Console().print(f"per class ({Path(out) / 'per_class_correlations.csv'}):", highlight=False)
        for line in res.per_class["lines"]:
            Console().print(f"  {line}", highlight=False, markup=False)
    if len(csvs) > 1:
        from lcfast.pipeline.analyze import pooling_line

        err.print(pooling_line(res.pooled, res.kept_apart), markup=False, soft_wrap=True)  # one line
    for n in res.derived:
        err.print(f"[dim]derived: {escape(n)}[/dim]")
    for n in res.notes:
        err.print(f"[yellow]note:[/yellow] {escape(n)}")


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command("analyze")(analyze_cmd)
