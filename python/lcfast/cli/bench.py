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
                                       "d=4,096) or tiny (rehearsal); e2e (the whole measurement, both profiles, "
                                       "vs the paper's pipeline, C=4,096, d=256, 164k/16k positions; CPU, minutes), "
                                       "e2e-large (C=32,768, 655k/33k; no paper pipeline) or e2e-tiny."),
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
        if sizes.startswith("e2e"):
            _e2e(sizes, json_path, repeats)
            return
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


def _e2e(sizes: str, json_path: Path | None, repeats: int | None) -> None:
    """`lcfast bench --sizes e2e*`: lcfast.benchmarks.e2e, printed, optionally written as JSON."""
    from rich.console import Console

    from lcfast.benchmarks.e2e import E2E_SIZES, print_e2e, run_e2e
    from lcfast.errors import DataError, UsageError

    if sizes not in E2E_SIZES:
        raise UsageError(f"--sizes must be one of small, paper, large, tiny, {', '.join(E2E_SIZES)}; got {sizes!r}")
    console = Console()
    report = run_e2e(sizes, repeats=repeats or 3, naive=sizes != "e2e-large",
                     log=lambda s: console.print(s, style="dim"))
    print_e2e(report, console)
    if json_path is not None:
        from lcfast.io import atomic_write_text

        atomic_write_text(json_path, json.dumps(report, indent=1, default=str) + "\n")
        console.print(f"wrote {json_path}")
    if "paper_twin" in report and not report["paper_twin"]["agrees"]:
        raise DataError(f"bench e2e: lcfast's paper profile and the paper pipeline twin disagree "
                        f"(max rel diff {report['paper_twin']['max_rel_diff']:.1e})")
