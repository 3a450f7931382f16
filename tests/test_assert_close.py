"""helpers.assert_close, the one comparator of numbers the tests share (tolerances by dtype)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers import TOLERANCE, assert_close


def test_within_and_beyond_the_tolerance():
    want = torch.tensor([1.0, -2.0, 1e6], dtype=torch.float64)
    assert_close(want * (1 + 5e-13), want)  # float64 default: rtol 1e-12
    with pytest.raises(AssertionError, match=r"1 of 3 not close .* worst at flat index 2"):
        assert_close(want + torch.tensor([0.0, 0.0, 1e-3], dtype=torch.float64), want)
    assert_close(want + 1e-3, want, rtol=0, atol=2e-3)
    with pytest.raises(AssertionError, match="values: 3 of 3"):
        assert_close(want + 1e-3, want, rtol=0, atol=5e-4)


def test_the_dtype_picks_the_default_tolerance():
    want = torch.tensor([1.0, 3.0], dtype=torch.float32)
    got = want * (1 + 5e-6)
    assert_close(got, want)  # float32: rtol 1e-5
    with pytest.raises(AssertionError):
        assert_close(got.double(), want.double())  # the same numbers, judged as float64
    assert_close(got.double(), want.double(), dtype=torch.float32)
    assert set(TOLERANCE) >= {torch.float64, torch.float32, torch.float16, torch.bfloat16}


def test_numbers_arrays_integers_and_nan():
    assert_close(0.1 + 0.2, 0.3)
    assert_close(np.array([1.0, 2.0]), torch.tensor([1.0, 2.0], dtype=torch.float64))
    assert_close(torch.tensor([3, 4]), torch.tensor([3, 4], dtype=torch.int32))
    with pytest.raises(AssertionError, match="counts: 1 of 2 differ"):
        assert_close(torch.tensor([3, 5]), torch.tensor([3, 4]), what="counts")
    with pytest.raises(AssertionError):
        assert_close(math.nan, math.nan)
    with pytest.raises(AssertionError, match="shape"):
        assert_close(torch.zeros(2), torch.zeros(3))
