"""The `lcfast bench` harness on CPU at rehearsal size: every family, the Triton rows through the
interpreter, the "naive does not fit" path, JSON output and the CLI's usage errors."""

from __future__ import annotations

import json

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
