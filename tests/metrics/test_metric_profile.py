"""MetricProfile (lcfast.metrics.profiles): the profile parsed once from the public strings."""

from __future__ import annotations

import pytest
import torch

from lcfast.errors import UsageError
from lcfast.metrics.embeddings import measure_embeddings
from lcfast.metrics.measure import PROFILES, profile_cdnv_power
from lcfast.metrics.profiles import MetricProfile


def test_parse_takes_the_public_strings_and_the_members():
    assert MetricProfile.parse("paper") is MetricProfile.PAPER
    assert MetricProfile.parse(MetricProfile.CANONICAL) is MetricProfile.CANONICAL
    assert MetricProfile.PAPER == "paper" and PROFILES == ("canonical", "paper")
    with pytest.raises(UsageError, match=r"^measure: profile must be one of canonical, paper, got 'Paper'$"):
        MetricProfile.parse("Paper")
    with pytest.raises(UsageError, match=r"^--profile x: expected one of canonical, paper$"):
        MetricProfile.parse("x", "--profile")


def test_cdnv_power_of_each_profile():
    assert MetricProfile.CANONICAL.cdnv_power(None) == 1.0
    assert MetricProfile.CANONICAL.cdnv_power(1.5) == 1.5
    assert MetricProfile.PAPER.cdnv_power(None) == 2.0 == profile_cdnv_power("paper", 2)
    with pytest.raises(UsageError, match="profile 'paper' defines cdnv with power 2"):
        MetricProfile.PAPER.cdnv_power(1.0)


def test_a_string_and_a_member_measure_the_same():
    g = torch.Generator().manual_seed(0)
    H = torch.randn(200, 6, generator=g, dtype=torch.float64)
    Y = torch.randint(0, 5, (200,), generator=g)
    W = torch.randn(5, 6, generator=g, dtype=torch.float64)
    for name in ("canonical", "paper"):
        a = measure_embeddings(H, Y, W, H_val=H[:50], Y_val=Y[:50], backend="torch", profile=name)
        b = measure_embeddings(H, Y, W, H_val=H[:50], Y_val=Y[:50], backend="torch", profile=MetricProfile(name))
        assert a.keys() == b.keys() and len(a) > 5
        assert all(a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]) for k in a), name
