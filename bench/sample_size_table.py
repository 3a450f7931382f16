"""The README's table of how the metrics move with the number of train positions (issue 21).

    python bench/sample_size_table.py lcfast-demo/work/quick/runs/L1_W96_E3_S0 \\
        --sizes 20000 80000 320000 all --out bench/results/sample_size_table.json

For each size: `lcfast collect --max-tokens N --folds K --seed S` (a uniform random sample of
windows; `all`: every position) over all classes and with `--classes top:256`, then `lcfast
measure`; prints a markdown table of n_positions, nc1_cdnv ± SE, nc1_cdnv_debiased, whether
nc1_cdnv is stable, the top-256 CDNV, gnc2_log_var ± SE and nc4_agreement ± SE."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path


def _pm(v, se, fmt=".3f") -> str:
    if v is None or v != v:
        return "—"
    return f"{v:{fmt}} ± {se:{fmt}}" if se is not None and se == se else f"{v:{fmt}}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--sizes", nargs="+", default=["20000", "80000", "320000", "all"])
    ap.add_argument("--folds", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--top", type=int, default=256)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()

    import torch

    from lcfast.pipeline.collect import CollectOptions, collect
    from lcfast.pipeline.measure import measure

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="sample_size_"))
    rows = []
    try:
        for size in a.sizes:
            mt = None if size == "all" else int(size)
            row = {"max_tokens": mt}
            for classes in ("all", f"top:{a.top}"):
                out = tmp / f"{size}_{classes.replace(':', '')}"
                collect(a.run, out=out, opts=CollectOptions(device="cpu", folds=a.folds, seed=a.seed, max_tokens=mt,
                                                            classes=None if classes == "all" else classes),
                        progress=False)
                r = measure([out], tmp / f"m_{out.name}", device="cpu", progress=False, context_orders=0).iloc[0]
                r = {k: (None if (isinstance(v, float) and v != v) else v) for k, v in r.items()}
                row[classes] = {k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()
                                if k.startswith(("nc1_cdnv", "gnc2_log_var", "nc4_agreement", "n_positions",
                                                 "n_classes", "n_folds"))}
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    top = f"top:{a.top}"
    lines = ["| positions | nc1_cdnv ± SE | nc1_cdnv_debiased ± SE | stable | nc1_cdnv (`--classes "
             f"{top}`) ± SE | gnc2_log_var ± SE | nc4_agreement ± SE |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        r, t = row["all"], row[top]
        lines.append(f"| {r['n_positions']:,}{' (all)' if row['max_tokens'] is None else ''} "
                     f"| {_pm(r.get('nc1_cdnv'), r.get('nc1_cdnv_se'))} "
                     f"| {_pm(r.get('nc1_cdnv_debiased'), r.get('nc1_cdnv_debiased_se'))} "
                     f"| {'yes' if r.get('nc1_cdnv_stable') else 'no'} "
                     f"| {_pm(t.get('nc1_cdnv'), t.get('nc1_cdnv_se'))} "
                     f"| {_pm(r.get('gnc2_log_var'), r.get('gnc2_log_var_se'))} "
                     f"| {_pm(r.get('nc4_agreement'), r.get('nc4_agreement_se'))} |")
    print("\n".join(lines))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"config": vars(a) | {"run": str(a.run), "out": str(a.out)}, "rows": rows,
                                     "markdown": lines}, indent=2, default=str))


if __name__ == "__main__":
    main()
