"""CLI command: demo (the whole experiment on the embedded synthetic corpus)."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(Path("lcfast-demo"), "--out", help="Output dir (report.md, measurements.csv, plots)."),
    quick: bool = typer.Option(False, "--quick", help="A smaller sweep: under 3 minutes on 2 CPU cores."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Synthetic stories → BPE → shards → a sweep of models → collect → measure → analyze → report.md.

    Rerunning reuses every finished step."""
    from lcfast.pipeline.demo import run_demo

    run_demo(out, quick=quick, device=device, progress=progress)


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command()(demo)
