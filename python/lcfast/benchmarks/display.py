"""`lcfast bench`'s report on a terminal: the rows as table cells, one rich Table of everything, or
the terminal print that never cuts (one small table per family and case)."""

from __future__ import annotations


def _fmt_time(t: float | None) -> str:
    if t is None:
        return "—"
    if t >= 1:
        return f"{t:.2f} s"
    if t >= 1e-3:
        return f"{t * 1e3:.2f} ms"
    return f"{t * 1e6:.0f} µs"


_BENCH_HEADERS = ["family", "case", "implementation", "time (median)", "speed-up vs naive", "agreement", "throughput",
                  "% of peak", "note"]


def table_rows(report: dict) -> list[list[str]]:
    """One row of cells (`_BENCH_HEADERS`) per timed implementation of the report."""
    out = []
    for r in report["rows"]:
        if r["err"] is None:
            agree = "reference" if r["extra"].get("is_reference") else "—"
        elif r["err_kind"] == "mismatch":
            agree = f"{100 * (1 - r['err']):.3f}% same"
        else:
            agree = f"rel {r['err']:.1e}"
        thr = f"{r['throughput']:.1f} {r['unit']}" if r["throughput"] is not None else "—"
        frac = (f"{100 * r['frac_peak']:.0f}% {r['extra'].get('peak', 'HBM') if r['unit'] == 'TFLOP/s' else 'HBM'}"
                if r["frac_peak"] is not None else "—")
        note = r["note"]
        prof = r["extra"].get("atomic_profile")
        if prof:
            note = (note + " " if note else "") + f"atomics/col {prof['atomics']}, max/addr {prof['max_per_address']}"
        launch = r["extra"].get("launch")
        if launch and launch.get("refined_tiles"):
            note = (note + " " if note else "") + f"{launch['refined_tiles']} tiles re-evaluated exactly"
        out.append([r["family"], r["case"], r["impl"], _fmt_time(r["time_s"]),
                    f"{r['speedup']:.1f}×" if r["speedup"] else "—", agree, thr, frac, note])
    return out


def _title(report: dict) -> str:
    return f"lcfast bench — {report['device']} ({report['device_kind']}, sizes={report['sizes_preset']})"


def render_table(report: dict):
    """A rich Table of the report's rows (all columns; see `print_bench_table` for a terminal)."""
    from rich.table import Table

    t = Table(title=_title(report))
    for h in _BENCH_HEADERS:
        t.add_column(h, justify="right" if h in _BENCH_HEADERS[3:8] else "left")
    for row in table_rows(report):
        t.add_row(*row)
    return t


def print_bench_table(report: dict, console) -> None:
    """The report on `console`, never cut: one small table per (family, case) whose rows are the
    implementations by short name (naive, torch, rust, triton…), their descriptions listed below;
    columns without a value anywhere (% of peak on CPU, an empty note) are left out."""
    from lcfast.tables import print_table

    console.print(f"[bold]{_title(report)}[/] (speed-up: against the naive twin; median of the timed calls)",
                  highlight=False)
    heads = ["impl", "median", "speed-up", "agreement", "throughput", "% of peak", "note"]
    groups: dict = {}
    for row in table_rows(report):
        groups.setdefault((row[0], row[1]), []).append(row)
    described: dict[str, dict[str, str]] = {}
    for (family, case), rows in groups.items():
        cells = []
        prefixes = [r[2].partition(": ")[0] for r in rows]
        for r, short in zip(rows, prefixes):
            if prefixes.count(short) > 1:  # several variants (triton: segmented / atomic): their full names
                short = r[2]
            else:
                described.setdefault(family, {})[short] = r[2].partition(": ")[2]
            cells.append([short] + r[3:])
        keep = [i for i, h in enumerate(heads) if i == 0 or any(c[i] not in ("", "—") for c in cells)]
        print_table(console, f"{family}: {case}", [heads[i] for i in keep], [[c[i] for i in keep] for c in cells],
                    keys=1, fold=["note"], justify={h: "right" for h in heads[1:6]})
    for family, d in described.items():
        console.print(f"{family}: " + "; ".join(f"{k} = {v}" for k, v in d.items() if v), highlight=False)
