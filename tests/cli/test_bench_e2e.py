"""`lcfast bench --sizes e2e-tiny` through the console script, and the thread choice
(lcfast.threads): LCFAST_THREADS, the load rule, a bad value."""

from __future__ import annotations

import json

import pytest

from lcfast.errors import UsageError
from lcfast.threads import choose_threads
from tests.helpers import child_env, console


def test_bench_e2e_tiny_writes_stages_floor_and_agreement(tmp_path):
    out = tmp_path / "e2e.json"
    env = child_env(LCFAST_THREADS="1")
    r = console(["bench", "--sizes", "e2e-tiny", "--repeats", "1", "--json", out], env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    rep = json.loads(out.read_text())
    assert rep["torch_threads"] == 1 and "LCFAST_THREADS" in rep["threads_choice"]
    assert "OMP_WAIT_POLICY=PASSIVE" in rep["threads_choice"]  # OpenMP threads do not spin
    assert rep["paper_twin"]["agrees"] is True
    for prof in ("paper", "canonical"):
        pr = rep["profiles"][prof]
        assert set(pr["stages_s"]) == {"class_stats", "nc4", "pairwise", "rest"}
        assert pr["floor_s"]["total"] > 0 and pr["over_floor"] > 0
        # the float32 NC4 search decides exactly as the float64 one did
        assert rep["before_after_max_rel_diff"][prof] <= 1e-12
    assert rep["profiles"]["paper"]["values"]["hits"] == rep["paper_twin"]["values"]["hits"]
    assert rep["rates"]["gemm_f64_flops"] > 0 and rep["rates"]["gemm_f32_flops"] > 0
    assert "paper pipeline twin" in r.stdout and "the floor" in r.stdout


def test_bad_lcfast_threads_is_a_usage_error(tmp_path):
    r = console(["bench", "--sizes", "e2e-tiny"], env=child_env(LCFAST_THREADS="lots"))
    assert r.returncode == 2
    assert "LCFAST_THREADS" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_thread_choice():
    assert choose_threads({"LCFAST_THREADS": "3"}, load1=9.0, cpus=2) == (3, "LCFAST_THREADS")
    assert choose_threads({"OMP_NUM_THREADS": "4"}, load1=0.0, cpus=8)[0] is None
    assert choose_threads({}, load1=0.2, cpus=2)[0] == 2  # quiet: every CPU
    assert choose_threads({}, load1=1.0, cpus=2)[0] == 1  # one CPU busy elsewhere
    assert choose_threads({}, load1=7.5, cpus=2)[0] == 1  # busy: never oversubscribe, never 0
    assert choose_threads({"LCFAST_THREADS": "auto", "OMP_NUM_THREADS": "4"}, load1=0.0, cpus=6)[0] == 6
    with pytest.raises(UsageError, match="LCFAST_THREADS"):
        choose_threads({"LCFAST_THREADS": "0"})
