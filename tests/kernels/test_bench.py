"""The `lcfast bench` harness on CPU at rehearsal size: every family, the Triton rows through the
interpreter, the "naive does not fit" path, JSON output and the CLI's usage errors."""

from __future__ import annotations

import json
import os

import pytest
import torch

from lcfast.benchmarks import SIZES, device_peaks, render_table, run_bench


def test_device_peaks_lookup():
    assert device_peaks("NVIDIA H100 80GB HBM3")["hbm"] == 3.35e12
    assert device_peaks("NVIDIA H200")["hbm"] == 4.8e12
    assert device_peaks("NVIDIA H100 PCIe")["hbm"] == 2.0e12
    assert device_peaks("NVIDIA H100 80GB HBM3")["tf32"] == pytest.approx(494.7e12)
    assert device_peaks("NVIDIA A10G") is None and device_peaks(None) is None


def test_bench_tiny_on_cpu_with_triton_rows(device, monkeypatch, tmp_path):
    if device.type != "cpu":
        pytest.skip("the CPU rehearsal of the harness")
    # too little "free memory" for the one-hot twin at B=512 (C=300: ~2.5 MB) but enough for the
    # others: the class-statistics family must say so and re-run at a reduced batch
    monkeypatch.setenv("LCFAST_BENCH_FREE_BYTES", "3e6")
    rep = run_bench(device="cpu", sizes="tiny", repeats=1, budget_s=0.0, triton_on_cpu=True, progress=False)
    json.dumps(rep)  # JSON-able as is
    rows = rep["rows"]
    assert rep["sizes"] == SIZES["tiny"] and rep["versions"]["torch"] == torch.__version__
    fams = {r["family"] for r in rows}
    assert fams == {"class_stats", "pairwise", "ncc"}
    failed = [r for r in rows if r["note"].startswith("FAILED")]
    assert not failed, failed
    skipped = [r for r in rows if r["kind"] == "naive" and r["note"].startswith("not run")]
    assert skipped and all(r["family"] == "class_stats" and r["time_s"] is None for r in skipped)
    reduced = [r for r in rows if "reduced" in r["case"]]
    assert any(r["kind"] == "naive" and r["time_s"] for r in reduced)
    impls = {(r["family"], r["impl"]) for r in rows}
    for want in [("class_stats", "triton: segmented"), ("class_stats", "triton: atomic"),
                 ("pairwise", "triton: ieee"), ("pairwise", "triton: bf16"), ("ncc", "triton: ieee")]:
        assert want in impls
    for r in rows:
        if r["kind"] == "fast":
            assert r["time_s"] and r["time_s"] > 0, r
        if r["err"] is not None:
            tol = {"class_stats": 1e-12, "pairwise": 1e-3 if "bf16" in r["impl"] else 1e-6, "ncc": 0.05}[r["family"]]
            assert r["err"] <= tol, r
    seg = next(r for r in rows if r["impl"] == "triton: segmented" and r["case"] == "zipf labels")
    atom = next(r for r in rows if r["impl"] == "triton: atomic" and r["case"] == "zipf labels")
    assert seg["extra"]["atomic_profile"]["max_per_address"] < atom["extra"]["atomic_profile"]["max_per_address"]
    assert render_table(rep).row_count == len(rows)


def test_cli_usage_errors(capsys):
    from lcfast.cli.app import main

    for argv in (["bench", "--sizes", "huge"], ["bench", "--device", "tpu"], ["bench", "--only", "nope"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2, argv
        assert "usage error" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit) as e:
            main(["bench", "--device", "cuda"])
        assert e.value.code == 2


def test_time_call_returns_the_warm_up_result_and_honours_repeats_and_budget():
    """time_call: the warm-up call's result, then torch.utils.benchmark blocks covering at least
    `repeats` warm-up durations (0.2 s floor) within the budget; a zero budget still times one block."""
    import time

    from lcfast.benchmarks import time_call

    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.01)
        return len(calls)

    res, med, times = time_call(fn, repeats=3, budget_s=0.0)
    assert res == 1 and len(times) >= 1 and med >= 0.009
    calls.clear()
    res, med, times = time_call(fn, repeats=3, budget_s=60.0)
    # warm-up + the block-size estimate + ≥ 0.2 s of calls (a loaded machine oversleeps: count the
    # time the timed calls covered, not a fixed number of 10 ms calls)
    assert res == 1 and 0.009 <= med < 1.0 and (len(calls) - 2) * med >= 0.9 * 0.2
    assert len(times) >= 2 and all(t >= 0.009 for t in times)


def test_stopwatch_wall_cpu_and_children():
    import subprocess
    import sys
    import time

    from lcfast.benchmarks import Stopwatch

    with Stopwatch() as sw:
        time.sleep(0.05)
        subprocess.run([sys.executable, "-c", "sum(range(3_000_000))"], check=True)
    assert sw.wall_s >= 0.05 and sw.cpu_s < sw.wall_s and sw.children_cpu_s > 0
    assert len(sw.loadavg_start) == 3 and len(sw.loadavg_end) == 3


def test_benchmarks_package_loads_by_path_without_lcfast(tmp_path):
    """bench/bench_track_overhead.py loads lcfast.benchmarks under another name in a child whose
    lcfast is an older checkout: the package must import nothing of lcfast at import time."""
    import subprocess
    import sys
    from pathlib import Path

    import lcfast.benchmarks as b

    pkg = Path(b.__file__).parent
    child = ("import importlib.util, sys\n"
             "spec = importlib.util.spec_from_file_location('lcfast_bench_timing', sys.argv[1] + '/__init__.py',"
             " submodule_search_locations=[sys.argv[1]])\n"
             "m = importlib.util.module_from_spec(spec); sys.modules[spec.name] = m; spec.loader.exec_module(m)\n"
             "assert callable(m.train_throughput) and callable(m.overhead_summary)\n"
             "print(sorted(k for k in sys.modules if k == 'lcfast' or k.startswith('lcfast.')))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", child, str(pkg)], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"
