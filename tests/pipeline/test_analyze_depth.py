"""`lcfast analyze` on `measure` tables of `collect --layers` collections: correlations over the LM
head rows only, and each metric plotted against depth, one line per model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from lcfast.pipeline.analyze import run_analysis


def _table(models: int) -> pd.DataFrame:
    rows = []
    for m in range(models):
        for layer in range(4):
            rows.append({"model": f"m{m}", "checkpoint": "model", "layer": layer, "head": layer == 3,
                         "n_params": 1000 * (m + 1), "val_loss": 3.0 - 0.2 * m,
                         "nc1_cdnv": (2.0 - 0.3 * m) * (1 + 0.5 * (3 - layer)),
                         "nc3_dual_cos_mean": 0.1 * m if layer == 3 else np.nan})
    return pd.DataFrame(rows)


def test_correlations_use_head_rows_and_depth_plots(tmp_path):
    _table(4).to_csv(tmp_path / "m.csv", index=False)
    res = run_analysis([tmp_path / "m.csv"], out_dir=tmp_path / "a")
    corr = res.correlations.set_index("metric")
    assert corr.loc["nc1_cdnv", "n"] == 4  # one head row per model, not 16 rows
    assert corr.loc["nc1_cdnv", "spearman_rho"] == 1.0
    names = {p.name for p in res.plots}
    assert "depth_nc1_cdnv.png" in names and "depth_nc3_dual_cos_mean.png" not in names  # one point per model
    assert any("hidden-layer rows" in n for n in res.notes)


def test_one_model_gets_depth_plots_without_a_correlation(tmp_path):
    _table(1).to_csv(tmp_path / "m.csv", index=False)
    res = run_analysis([tmp_path / "m.csv"], out_dir=tmp_path / "a")
    assert len(res.correlations) == 0 and (tmp_path / "a" / "depth_nc1_cdnv.png").is_file()
    assert json.loads((tmp_path / "a" / "analysis.json").read_text())["plots"]
    assert any("no correlation" in n for n in res.notes)
