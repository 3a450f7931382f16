"""Every canonical metric: brute-force float64 reference on imbalanced data, known geometries,
degenerate inputs, the saved-state path, the per-token table, float32 inputs."""

from __future__ import annotations

import math

import pytest
import torch

import lcfast
from lcfast.errors import DataError, UsageError
from lcfast.metrics.measure import CANONICAL_KEYS, measure_all, measure_stats, per_token_table
from lcfast.metrics.per_token import TABLE_COLUMNS
from lcfast.metrics.uncertainty import result_keys
from lcfast.stats.classstats import ClassStats
from lcfast.stats.naive import _pair_values, measure_embeddings_naive
from lcfast.stats.ncc import NCCStats
from lcfast.stats.pairwise import DEGENERATE_TOL

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def _imbalanced(seed=0, C=40, d=12, N=3000, Nv=600, sigma=1.0):
    g = torch.Generator().manual_seed(seed)
    p = torch.distributions.Dirichlet(torch.full((C,), 0.3)).sample((1,))[0]
    Y = torch.multinomial(p, N, replacement=True, generator=g)
    mu = torch.randn(C, d, generator=g, dtype=F64) * 3 + 2.0
    H = mu[Y] + sigma * torch.randn(N, d, generator=g, dtype=F64)
    W = (mu - mu.mean(0)) + 3 * torch.randn(C, d, generator=g, dtype=F64)  # partly aligned: 0 < NC4 < 1
    b = torch.randn(C, generator=g, dtype=F64)
    Yv = torch.multinomial(p, Nv, replacement=True, generator=g)
    Hv = mu[Yv] + sigma * torch.randn(Nv, d, generator=g, dtype=F64)
    return H, Y, W, b, Hv, Yv


def _compare(r, ref, rtol=1e-9, atol=1e-12):
    assert set(r) in (set(CANONICAL_KEYS), set(result_keys("canonical")))
    for k in CANONICAL_KEYS:
        if ref[k] is None:
            assert r[k] is None, k
        else:
            assert r[k] is not None, k
            assert r[k] == pytest.approx(ref[k], rel=rtol, abs=atol), k


@pytest.mark.parametrize("min_count,power", [(1, 1.0), (5, 1.0), (20, 2.0)])
def test_matches_brute_force_on_imbalanced_data(min_count, power):
    torch.manual_seed(min_count)
    H, Y, W, b, Hv, Yv = _imbalanced(min_count)
    r = lcfast.measure_embeddings(H, Y, W, b, Hv, Yv, min_count=min_count, backend="torch", cdnv_power=power)
    ref = measure_embeddings_naive(H, Y, W, b, Hv, Yv, min_count=min_count, cdnv_power=power)
    assert r["n_classes"] < 40 or min_count == 1
    _compare(r, ref)
    assert 0 < r["nc4_agreement"] < 1


def test_missing_inputs_give_none():
    H, Y, W, b, Hv, Yv = _imbalanced(1)
    r = lcfast.measure_embeddings(H, Y, backend="torch", covariance=False)
    assert set(r) in (set(CANONICAL_KEYS), set(result_keys("canonical")))
    for k in ("nc3_dual_cos_mean", "nc3_dual_cos_var", "unc3", "nc3_dual_error", "nc4_agreement", "nc1_pinv"):
        assert r[k] is None
    assert r["nc1_cdnv"] is not None and r["nc2_etf_error"] is not None
    r = lcfast.measure_embeddings(H, Y, W, backend="torch")  # W but no validation data
    assert r["nc4_agreement"] is None and r["nc3_dual_error"] is not None


def _etf_data(C, d, n_per, offset=5.0, seed=0):
    """Zero-noise simplex ETF class means (norm 2), plus a global offset orthogonal to them."""
    g = torch.Generator().manual_seed(seed)
    E = math.sqrt(C / (C - 1)) * (torch.eye(C, dtype=F64) - 1.0 / C)
    Q, _ = torch.linalg.qr(torch.randn(d, C + 1, generator=g, dtype=F64))
    M = 2.0 * E @ Q[:, :C].T
    off = offset * Q[:, C]
    Y = torch.arange(C).repeat_interleave(n_per)
    return M, off + M[Y], Y


def test_simplex_etf_zero_noise():
    C, d = 12, 20
    M, H, Y = _etf_data(C, d, 3)
    r = lcfast.measure_embeddings(H, Y, W=M, H_val=H, Y_val=Y, backend="torch")
    assert r["n_classes"] == C and r["n_samples"] == 3 * C
    assert r["nc2_interference_mean"] == pytest.approx(-1 / (C - 1), abs=1e-13)
    assert r["nc2_interference_var"] == pytest.approx(0, abs=1e-26)
    assert r["nc2_etf_error"] < 1e-7
    assert r["nc1_cdnv"] == 0 and r["nc1_trace_ratio"] == 0 and r["nc1_pinv"] == pytest.approx(0, abs=1e-20)
    assert r["nc4_agreement"] == 1.0
    assert r["nc3_dual_cos_mean"] == pytest.approx(1.0, abs=1e-13)
    assert r["nc3_dual_cos_var"] == pytest.approx(0, abs=1e-26)
    assert r["unc3"] == pytest.approx(0, abs=1e-12)
    assert r["nc3_dual_error"] < 1e-7
    assert r["nc2_norm_mean"] == pytest.approx(2.0) and r["nc2_norm_cov"] == pytest.approx(0, abs=1e-13)
    assert r["nc2_lognorm_var"] == pytest.approx(0, abs=1e-26)
    assert r["gnc2_log_var"] == pytest.approx(0, abs=1e-26)
    assert r["degenerate_pairs"] == 0


def test_random_orthogonal_frame_centres_to_an_etf():
    """Orthonormal class means q_c: after removing μ_G = mean q_c, m_c·m_c' = −1/C and
    ‖m_c‖² = 1 − 1/C, i.e. a simplex ETF — the unweighted global mean is what makes it one."""
    C, d = 9, 15
    g = torch.Generator().manual_seed(3)
    Q, _ = torch.linalg.qr(torch.randn(d, C, generator=g, dtype=F64))
    Y = torch.arange(C).repeat_interleave(torch.arange(1, C + 1))  # very unequal counts
    H = Q.T[Y]
    r = lcfast.measure_embeddings(H, Y, backend="torch", covariance=False)
    assert r["nc2_interference_mean"] == pytest.approx(-1 / (C - 1), abs=1e-13)
    assert r["nc2_etf_error"] < 1e-7
    assert r["nc2_norm_mean"] == pytest.approx(math.sqrt(1 - 1 / C), abs=1e-13)


def test_duplicate_class_means_are_degenerate_not_nan():
    H, Y, W, b, Hv, Yv = _imbalanced(2, C=10, N=800)
    # classes 3 and 7 get exactly the same samples → identical means and variances
    x3 = H[Y == 3]
    H = torch.cat([H[(Y != 3) & (Y != 7)], x3, x3])
    Y = torch.cat([Y[(Y != 3) & (Y != 7)], torch.full((len(x3),), 3), torch.full((len(x3),), 7)])
    r = lcfast.measure_embeddings(H, Y, W, b, Hv, Yv, backend="torch")
    ref = measure_embeddings_naive(H, Y, W, b, Hv, Yv)
    assert r["degenerate_pairs"] == 1
    _compare(r, ref)
    for k, v in r.items():
        assert v is None or math.isfinite(v), k
    _, tab = measure_all(ClassStats(10, H.shape[1]).update(H, Y, backend="torch"), W)
    assert int(tab.loc[tab.id == 3, "partners"].iloc[0]) == r["n_classes"] - 2


def test_single_sample_class_and_min_count():
    H, Y, W, b, Hv, Yv = _imbalanced(3, C=15, N=400)
    H = torch.cat([H, torch.randn(1, H.shape[1], dtype=F64) * 3])
    Y = torch.cat([Y, torch.tensor([14])])
    Y[Y == 14] = 13
    Y[-1] = 14  # class 14 has exactly one sample
    r1 = lcfast.measure_embeddings(H, Y, W, b, Hv, Yv, backend="torch")
    _compare(r1, measure_embeddings_naive(H, Y, W, b, Hv, Yv))
    _, tab = lcfast.measure_embeddings(H, Y, W, b, Hv, Yv, backend="torch", return_table=True)
    assert float(tab.loc[tab.id == 14, "var"].iloc[0]) == 0.0
    counts = torch.bincount(Y, minlength=15)
    assert int(counts[14]) == 1
    r2 = lcfast.measure_embeddings(H, Y, W, b, Hv, Yv, min_count=2, backend="torch")
    assert r2["n_classes"] == r1["n_classes"] - int((counts == 1).sum())
    _compare(r2, measure_embeddings_naive(H, Y, W, b, Hv, Yv, min_count=2))


def test_many_more_classes_than_samples():
    """A 5000-token vocabulary, 60 samples over 25 classes: kept classes only enter the geometry,
    while the LM argmax of NC4 still runs over the full vocabulary."""
    g = torch.Generator().manual_seed(4)
    V, d = 5000, 16
    seen = torch.randperm(V, generator=g)[:25]
    Y = seen[torch.randint(0, 25, (60,), generator=g)]
    H = torch.randn(60, d, generator=g, dtype=F64)
    W = torch.randn(V, d, generator=g, dtype=F64)
    Yv = seen[torch.randint(0, 25, (40,), generator=g)]
    Hv = torch.randn(40, d, generator=g, dtype=F64)
    r = lcfast.measure_embeddings(H, Y, W, None, Hv, Yv, backend="torch")
    _compare(r, measure_embeddings_naive(H, Y, W, None, Hv, Yv))
    assert r["n_classes"] == int(torch.unique(Y).numel())
    assert r["nc1_pinv"] is not None and math.isfinite(r["nc1_pinv"])


def test_measure_stats_from_saved_state_equals_embeddings(tmp_path):
    H, Y, W, b, Hv, Yv = _imbalanced(5)
    direct = lcfast.measure_embeddings(H, Y, W, b, Hv, Yv, min_count=3, backend="torch")
    counts = torch.bincount(Y, minlength=40)
    kept = counts >= 3
    st = ClassStats(40, H.shape[1], covariance=True, cov_classes=kept)
    for i in range(0, len(Y), 700):
        st.update(H[i : i + 700], Y[i : i + 700], backend="torch")
    st.save(tmp_path / "train.safetensors", meta={"model_fingerprint": "m"})
    ncc = NCCStats(40, st.means, kept, W, b).update(Hv, Yv, backend="torch")
    ncc.save(tmp_path / "val.safetensors")
    r = lcfast.measure_stats(tmp_path / "train.safetensors", W, b, tmp_path / "val.safetensors", min_count=3,
                             backend="torch")
    _compare(r, direct, rtol=1e-10)
    # a different min_count than the NC4 decisions were made with is refused
    with pytest.raises(UsageError, match="min_count"):
        measure_stats(st, W, b, ncc, min_count=4)


def test_covariance_over_dropped_classes_warns():
    H, Y, W, b, Hv, Yv = _imbalanced(6)
    st = ClassStats(40, H.shape[1], covariance=True).update(H, Y, backend="torch")
    with pytest.warns(UserWarning, match="nc1_pinv"):
        r = measure_stats(st, min_count=30)
    assert r["nc1_pinv"] is not None


def test_per_token_table_matches_full_grid(tmp_path):
    H, Y, W, b, Hv, Yv = _imbalanced(7, C=20, N=1500)
    r, tab = lcfast.measure_embeddings(H, Y, W, b, Hv, Yv, min_count=4, backend="torch", return_table=True,
                                       decode=lambda i: f"tok{i}")
    assert list(tab.columns) == list(TABLE_COLUMNS)
    assert len(tab) == r["n_classes"]
    counts = torch.bincount(Y, minlength=20)
    ids = (counts >= 4).nonzero().squeeze(1)
    mu = torch.stack([H[Y == c].mean(0) for c in ids.tolist()])
    var = torch.stack([((H[Y == c] - H[Y == c].mean(0)) ** 2).sum(1).mean() for c in ids.tolist()])
    M = mu - mu.mean(0)
    _, cos, _, cdnv, deg, _ = _pair_values(M, var, 1.0, DEGENERATE_TOL)
    off = ~torch.eye(len(ids), dtype=torch.bool) & ~deg
    zero = torch.zeros((), dtype=F64)
    row_mean = lambda x: torch.where(off, x, zero).sum(1) / off.sum(1)  # noqa: E731
    torch.testing.assert_close(torch.tensor(tab.cdnv_mean.values), row_mean(cdnv), rtol=1e-10, atol=0)
    torch.testing.assert_close(torch.tensor(tab.interference_mean.values), row_mean(cos), rtol=1e-9, atol=1e-13)
    torch.testing.assert_close(torch.tensor(tab.norm.values), M.norm(dim=1), rtol=1e-12, atol=0)
    torch.testing.assert_close(torch.tensor(tab["var"].values), var, rtol=1e-11, atol=1e-14)
    wk = W[ids]
    dual = (wk * M).sum(1) / (wk.norm(dim=1) * M.norm(dim=1))
    torch.testing.assert_close(torch.tensor(tab.dual_cos.values), dual, rtol=1e-11, atol=1e-14)
    assert tab.token.tolist()[:2] == [f"tok{int(i)}" for i in ids[:2]]
    assert int(tab.nc4_total.sum()) == int((counts[Yv] >= 4).sum())
    assert float(tab.nc4_hits.sum() / tab.nc4_total.sum()) == pytest.approx(r["nc4_agreement"])
    p = tmp_path / "tokens.parquet"
    tab.to_parquet(p)
    import pandas as pd

    back = pd.read_parquet(p)
    assert back.shape == tab.shape and back.id.tolist() == tab.id.tolist()
    # without decode/W/NC4 it still writes
    t2 = per_token_table(ClassStats(20, H.shape[1]).update(H, Y, backend="torch"))
    t2.to_parquet(tmp_path / "t2.parquet")
    assert t2.token.isna().all() and t2.dual_cos.isna().all()


def test_float32_features_vs_float64():
    """The same data as float32 vs float64 features: the metrics move by the input rounding.
    Observed here (σ = 1, ‖h‖ ≈ 14, 3000 samples, 34 classes): relative differences of 4e-11 to
    8e-9 (largest nc2_lognorm_var 8e-9, nc3_dual_cos_var 4e-9, nc1_pinv 2e-9, nc1_cdnv 1.4e-9):
    well below eps32 = 6e-8 because per-sample rounding averages out in class means; NC4 decisions
    identical. The check allows 1e-6.
    Against float64 references computed on the float32 values themselves the agreement is ~1e-12
    (the float32 → float64 conversion is exact and all accumulation is float64)."""
    H, Y, W, b, Hv, Yv = _imbalanced(8)
    r32 = lcfast.measure_embeddings(H.float(), Y, W.float(), b.float(), Hv.float(), Yv, backend="torch")
    r64 = lcfast.measure_embeddings(H, Y, W, b, Hv, Yv, backend="torch")
    same = measure_embeddings_naive(H.float().double(), Y, W.float().double(), b.float().double(),
                                    Hv.float().double(), Yv)
    _compare(r32, same, rtol=1e-9)
    worst = 0.0
    for k in CANONICAL_KEYS:
        if r64[k] is not None and k not in ("nc4_agreement", "degenerate_pairs"):
            worst = max(worst, abs(r32[k] - r64[k]) / max(abs(r64[k]), 1e-12))
    assert worst < 1e-6


def test_errors_are_one_line():
    H, Y, W, b, Hv, Yv = _imbalanced(9)
    with pytest.raises(DataError, match="min_count"):
        lcfast.measure_embeddings(H, Y, min_count=10**6, backend="torch")
    with pytest.raises(UsageError):
        lcfast.measure_embeddings(H, Y, W[:, :3], backend="torch")
    with pytest.raises(UsageError):
        lcfast.measure_embeddings(H, Y, min_count=0, backend="torch")
    with pytest.raises(DataError, match="labels"):
        lcfast.measure_embeddings(H, Y, W[:10], backend="torch")
    Hbad = H.clone()
    Hbad[0, 0] = float("inf")
    with pytest.raises(DataError, match="non-finite"):
        lcfast.measure_embeddings(Hbad, Y, backend="torch")
    with pytest.raises(UsageError, match="backend"):
        lcfast.measure_embeddings(H, Y, backend="gpu")


_TRITON_CHILD = r"""
import json, torch, lcfast
from lcfast.stats.classstats import ClassStats
g = torch.Generator().manual_seed(0)
C, d, N = 12, 16, 200
Y = torch.randint(0, C, (N,), generator=g); mu = torch.randn(C, d, generator=g) * 3
H = mu[Y] + torch.randn(N, d, generator=g)
W = torch.randn(C, d, generator=g); Yv = torch.randint(0, C, (50,), generator=g)
Hv = mu[Yv] + torch.randn(50, d, generator=g)
a = ClassStats(C, d, covariance=True).update(H, Y, backend="triton")
b = ClassStats(C, d, covariance=True).update(H, Y, backend="torch")
out = {"stats": max(float((a.means - b.means).abs().max()), float((a.variances - b.variances).abs().max()),
                    float((a.covariance - b.covariance).abs().max()))}
out["tri"] = lcfast.measure_embeddings(H, Y, W, None, Hv, Yv, backend="triton")
out["torch"] = lcfast.measure_embeddings(H, Y, W, None, Hv, Yv, backend="torch")
print(json.dumps(out))
"""


def test_triton_backend_call_sites_under_interpreter():
    """The backend="triton" call sites (ClassStats.update, the pairwise sweep, NCC) against the
    torch backend, through the Triton interpreter in a fresh process (TRITON_INTERPRET=1 must be
    set before triton is imported). The kernels' fp32 Gram work gives ~1e-8 relative differences."""
    import importlib.util
    import json
    import os
    import subprocess
    import sys

    for mod in ("triton", "lcfast.kernels.class_stats", "lcfast.kernels.pairwise", "lcfast.kernels.ncc"):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"{mod} not available")
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-c", _TRITON_CHILD], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["stats"] < 1e-12
    for k in CANONICAL_KEYS:
        a, b = out["tri"][k], out["torch"][k]
        assert (a is None) == (b is None), k
        if a is not None:
            assert a == pytest.approx(b, rel=1e-6, abs=1e-9), k
