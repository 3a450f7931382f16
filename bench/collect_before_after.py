"""Collection time before and after `collect --folds` (issue 21): the same `lcfast collect` of one
checkpoint with another checkout's lcfast (before) and this one's with --folds 1 and --folds K.

    python bench/collect_before_after.py RUN --before /path/to/old/checkout/python --folds 8 --repeats 3 \\
        --out bench/results/collect_before_after.json

Each configuration runs as its own `python -m lcfast collect` process (one thread, fresh output
folder), interleaved, `--repeats` times; the medians of the collection's wall time, its train
pass and the statistics' wall and CPU time (from collect.json) are reported. On a shared machine
the CPU times (`*_cpu_s`) are the fairer comparison: wall times swing with the load."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--before", type=Path, required=True, help="the python/ folder of the checkout to compare with")
    ap.add_argument("--folds", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    after = HERE.parent / "python"
    cfgs = {"before": (a.before, []), "after --folds 1": (after, ["--folds", "1"]),
            f"after --folds {a.folds}": (after, ["--folds", str(a.folds)])}
    res: dict[str, list[dict]] = {k: [] for k in cfgs}
    tmp = Path(tempfile.mkdtemp(prefix="collect_ba_"))
    try:
        for rep in range(a.repeats):
            for name, (pp, extra) in cfgs.items():
                out = tmp / f"{rep}_{len(res[name])}_{name.replace(' ', '_')}"
                env = dict(os.environ, PYTHONPATH=str(pp), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
                t = time.perf_counter()
                cmd = [sys.executable, "-m", "lcfast", "collect", str(a.run), "--out", str(out), "--device", "cpu",
                       "--no-progress", "--json", *extra]
                r = subprocess.run(cmd, capture_output=True, text=True, env=env)
                wall = time.perf_counter() - t
                if r.returncode:
                    raise SystemExit(f"{name}: exit {r.returncode}: {r.stderr[-2000:]}")
                s = json.loads(r.stdout)[0]
                tr = s["passes"]["train"]
                res[name].append({"process_wall_s": wall, "collect_wall_s": s["timing"]["wall_s"],
                                  "train_wall_s": tr["wall_s"], "train_stats_s": tr["stats_s"],
                                  "train_stats_cpu_s": tr["stats_cpu_s"], "train_forward_cpu_s": tr["forward_cpu_s"],
                                  "val_wall_s": s["passes"]["val"]["wall_s"]})
                print(name, rep, {k: round(v, 2) for k, v in res[name][-1].items()}, flush=True)
                shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = {n: {k: statistics.median(r[k] for r in rows) for k in rows[0]} for n, rows in res.items()}
    print(json.dumps(summary, indent=1))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"summary": summary, "runs": res, "load_average": os.getloadavg(),
                                     "config": {"run": str(a.run), "before": str(a.before), "folds": a.folds,
                                                "repeats": a.repeats}}, indent=1))


if __name__ == "__main__":
    main()
