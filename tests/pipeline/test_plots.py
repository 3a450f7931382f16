"""Over-training plots: exact checkpoints and tracked curves that sit at different scales get a
panel each (on one axis a 4× gap reads as a jump); close ones share an axis; every model is named."""

from __future__ import annotations

import pandas as pd
import pytest

from lcfast.pipeline.analyze import plots


def _frames(gap: float):
    data = pd.DataFrame({"model": ["A", "A", "B", "B"], "n_params": [1e5, 1e5, 3e5, 3e5],
                         "y": [3.0, 2.0, 2.5, 1.5]})
    epochs = pd.Series([1, 3, 1, 3])
    tracked = {m: pd.DataFrame({"epoch": [0.5, 1, 2, 3], "n_samples": [20480] * 4,
                                "y": [v / gap for v in (4.0, y1, (y1 + y3) / 2, y3)]})
               for m, y1, y3 in (("A", 3.0, 2.0), ("B", 2.5, 1.5))}
    return data, epochs, tracked


@pytest.mark.parametrize("gap, panels", [(4.0, 2), (1.1, 1)])
def test_tracked_and_exact_get_a_panel_each_when_their_scales_differ(tmp_path, monkeypatch, gap, panels):
    seen = {}

    def keep(fig, path):
        seen["axes"] = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
        seen["legend"] = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
        seen["titles"] = [ax.get_title() for ax in fig.axes]

    monkeypatch.setattr(plots, "_save_fig", keep)
    data, epochs, tracked = _frames(gap)
    assert plots._epoch_plot(data, epochs, "y", "linear", None, tmp_path / "p.png", tracked)
    assert len(seen["axes"]) == panels
    assert any(t.startswith("A (100k parameters)") for t in seen["legend"])
    assert any(t.startswith("B (300k parameters)") for t in seen["legend"])
    assert any("tracked during training" in t for t in seen["legend"])
    assert any("exact" in t for t in seen["legend"])
    if panels == 2:
        assert "20.5k positions per row" in seen["titles"][1]
        assert seen["axes"][0].get_xlim() == seen["axes"][1].get_xlim()
