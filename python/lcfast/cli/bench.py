"""`lcfast bench`: time every fast path against its naive PyTorch twin (see lcfast.benchmarks)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from lcfast.cli.options import IntOption
from lcfast.validate import BENCH_REPEATS_MAX


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""

    @app.command()
    def bench(
        device: str = typer.Option("auto", "--device", help="cpu, cuda, or auto (cuda when available)."),
        sizes: str = typer.Option("small", "--sizes",
                                  help="small (CPU, < 1 min), paper (C=50,257, d=1,024, B=65,536), large (C=128,256, "
                                       "d=4,096) or tiny (rehearsal)."),
        json_path: Path = typer.Option(None, "--json", help="Write the full report (every timing) as JSON here."),
        only: str = typer.Option(None, "--only", help="Comma-separated families: class_stats,pairwise,ncc."),
        repeats: int = IntOption(None, "--repeats",
                                 help="Time each implementation for at least this many calls' worth "
                                      "(torch.utils.benchmark; default 3 on CPU, 10 on CUDA).",
                                 max=BENCH_REPEATS_MAX),
        triton_on_cpu: bool = typer.Option(False, "--triton-on-cpu",
                                           help="Also run the Triton kernels on CPU (needs TRITON_INTERPRET=1; a "
                                                "rehearsal, not a measurement)."),
    ) -> None:
        """Time each fast path and its naive twin side by side; print a table, optionally write JSON."""
        from rich.console import Console

        from lcfast.benchmarks import print_bench_table, run_bench
        from lcfast.errors import UsageError

        if json_path is not None and json_path.parent and not json_path.parent.exists():
            raise UsageError(f"--json: folder {json_path.parent} does not exist")
        fams = [f.strip() for f in only.split(",") if f.strip()] if only else None
        report = run_bench(device=device, sizes=sizes, families=fams, repeats=repeats, triton_on_cpu=triton_on_cpu)
        console = Console()
        print_bench_table(report, console)
        failed = [r for r in report["rows"] if r["note"].startswith("FAILED")]
        if json_path is not None:
            from lcfast.io import atomic_write_text

            atomic_write_text(json_path, json.dumps(report, indent=2, default=str) + "\n")
            console.print(f"wrote {json_path}")
        console.print(f"{len(report['rows'])} rows in {report['wall_s']:.1f} s"
                      + (f"; [red]{len(failed)} implementation(s) FAILED[/]" if failed else ""))
        if failed:
            raise typer.Exit(1)
