"""The fit of a target against one metric (linear on ln(metric) or on the metric; Spearman ρ) and
how its p-value is shown."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd


def correlate(x, y) -> dict:
    """Fit y ~ slope·t(x) + intercept with t = ln if x > 0 everywhere else identity; Spearman ρ."""
    from scipy import stats

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    m = np.isfinite(x) & np.isfinite(y)
    x, y = x[m], y[m]
    n = int(x.size)
    row = {
        "scale": "log" if n and np.all(x > 0) else "linear",
        "r2": math.nan, "slope": math.nan, "intercept": math.nan, "pearson_r": math.nan,
        "spearman_rho": math.nan, "p_value": math.nan, "n": n, "slope_stderr": math.nan,
        "fit_p_value": math.nan, "note": "",
    }
    if n < 3:
        row["note"] = f"only {n} rows with a finite value"
        return row
    t = np.log(x) if row["scale"] == "log" else x
    if np.ptp(t) == 0:
        row["note"] = "constant"
        return row
    if np.ptp(y) == 0:
        row["note"] = "target constant"
        return row
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lr = stats.linregress(t, y)
        sp = stats.spearmanr(x, y)
    row.update(
        r2=float(lr.rvalue**2), slope=float(lr.slope), intercept=float(lr.intercept),
        pearson_r=float(lr.rvalue), slope_stderr=float(lr.stderr), fit_p_value=float(lr.pvalue),
        spearman_rho=float(sp.statistic if hasattr(sp, "statistic") else sp[0]),
        p_value=float(sp.pvalue if hasattr(sp, "pvalue") else sp[1]),
    )
    return row


#: what a shown p-value of a perfect rank correlation is (tables that show one print this under them)
EXACT_P_NOTE = ("the p-value shown for a perfect rank correlation (|ρ| = 1, where scipy's asymptotic "
                "formula gives 0) is the exact permutation p-value 2/n!")


def format_p(p, spec: str = ".2g", rho=None, n=None) -> str:
    """A Spearman p-value for people; "—" when undefined. scipy gives exactly 0 in two cases: a
    perfect rank correlation (|ρ| = 1: its t statistic is infinite), shown as the exact permutation
    p-value 2/n! when `rho` and `n` are given (only the two monotone orders of n distinct values
    reach |ρ| = 1); else an underflow, shown as `< 1e-300`."""
    try:
        p = float(p)
    except (TypeError, ValueError):
        return "—"
    if not math.isfinite(p):
        return "—"
    if p != 0:
        return format(p, spec)
    try:
        perfect = abs(float(rho)) >= 1 - 1e-12 and 2 <= int(n) <= 170
    except (TypeError, ValueError):
        perfect = False
    return format(2 / math.factorial(int(n)), spec) if perfect else "< 1e-300"


def has_exact_p(corr: pd.DataFrame) -> bool:
    """Whether a correlation table has a p-value that `format_p` shows as the exact 2/n!."""
    rho = pd.to_numeric(corr.get("spearman_rho"), errors="coerce")
    p = pd.to_numeric(corr.get("p_value"), errors="coerce")
    return bool(((p == 0) & (rho.abs() >= 1 - 1e-12)).any()) if rho is not None and p is not None else False
