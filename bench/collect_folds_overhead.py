"""What `collect --folds K` costs on top of `--folds 1`, and what the standard errors and the
convergence table cost `measure` (issue 21: at most 20% more collection time at the demo sizes).

    python bench/collect_folds_overhead.py lcfast-demo/work/quick/runs/L1_W96_E3_S0 --folds 8 --repeats 3 \\
        --out bench/results/collect_folds_overhead.json

Alternates --folds 1 and --folds K collections of the same checkpoint (every train and val
position, one thread, fresh output folders), so a load change on a shared machine hits both alike;
reports per configuration the median wall time of the whole collection, of its train pass, the
statistics' time (CPU time too: fairer under load), and the time `lcfast measure` takes on it
(with K folds: K + 1 measurements for the SEs, plus the nested subsamples of convergence.csv)."""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--folds", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()

    import torch

    from lcfast.pipeline.collect import CollectOptions, collect
    from lcfast.pipeline.measure import measure

    torch.set_num_threads(a.threads)
    res: dict[int, list[dict]] = {1: [], a.folds: []}
    tmp = Path(tempfile.mkdtemp(prefix="folds_bench_"))
    try:
        for rep in range(a.repeats):
            for k in (1, a.folds):
                out = tmp / f"k{k}_{rep}"
                t0 = time.perf_counter()
                (s,) = collect(a.run, out=out, opts=CollectOptions(device="cpu", folds=k, max_tokens=a.max_tokens),
                               progress=False)
                wall = time.perf_counter() - t0
                t1 = time.perf_counter()
                measure([out], tmp / f"m{k}_{rep}", device="cpu", progress=False, context_orders=0)
                mwall = time.perf_counter() - t1
                tr = s["passes"]["train"]
                res[k].append({"collect_wall_s": wall, "train_wall_s": tr["wall_s"], "train_stats_s": tr["stats_s"],
                               "train_stats_cpu_s": tr["stats_cpu_s"], "train_forward_cpu_s": tr["forward_cpu_s"],
                               "val_wall_s": s["passes"]["val"]["wall_s"], "measure_wall_s": mwall,
                               "train_positions": tr["tokens"], "stats_bytes": s["stats_bytes"]})
                print(f"folds {k:2d} rep {rep}: collect {wall:.2f} s (train {tr['wall_s']:.2f} s, stats "
                      f"{tr['stats_s']:.2f} s), measure {mwall:.2f} s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = {str(k): {key: statistics.median(r[key] for r in rows) for key in rows[0]} for k, rows in res.items()}
    base, folded = summary["1"], summary[str(a.folds)]
    summary["overhead"] = {key: folded[key] / base[key] - 1 for key in ("collect_wall_s", "train_wall_s",
                                                                         "val_wall_s", "measure_wall_s")}
    summary["config"] = {"run": str(a.run), "folds": a.folds, "repeats": a.repeats, "threads": a.threads,
                         "max_tokens": a.max_tokens}
    print(json.dumps(summary, indent=2))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"summary": summary, "runs": {str(k): v for k, v in res.items()}}, indent=2))


if __name__ == "__main__":
    main()
