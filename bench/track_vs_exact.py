#!/usr/bin/env python
"""Tracked (`lcfast train --track-nc`) vs exact (`lcfast collect` + measure) NC metrics at each epoch
end of the `lcfast demo --quick` models, with the gap split into its two causes.

    python bench/track_vs_exact.py [--work DIR] [--every 10,60] [--models 1x32x1,1x32x3,1x96x1,1x96x3]
                                   [--json OUT] [--markdown OUT.md]

For every model (LAYERSxWIDTHxEPOCHS, the --quick demo's settings: context 64, batch 32, lr 3e-3,
60 steps per epoch, quick shards of vocabulary 2048) and tracking interval N, the run is trained
with `--track-nc --track-every N`; every epoch's checkpoint is collected exactly (all 347k train
positions, the whole val shard) and measured. At each epoch end three numbers per metric:

  tracked   the nc_track.csv row: the epoch's last interval (N steps × 2,048 random training
            positions), features from weights that moved during the interval, W after its last step
  frozen    the same interval's batches through the epoch's checkpoint (the weights at the row's
            step), the same W and the same evaluation: the tracked row without the drift
  exact     `lcfast collect --folds 8` of the checkpoint (every train position once) + `lcfast
            measure`: the value, its jackknife SE (`exact_se`) and, for nc1_cdnv, nc1_cdnv_debiased
  same size `lcfast collect --max-tokens N·2,048 --folds 8` (a uniform random sample of windows of
            the interval's size) + measure: the exact measurement at the tracked row's sample size

drift = tracked vs frozen (the weights moving inside the interval); sampling = frozen vs exact
(N·2,048 random positions instead of the whole train shard: fewer samples per class, classes not
seen at all); gap_same_size = tracked vs the same-size exact measurement (what is left once both
sides saw as many positions). Relative gaps are (a − b) / |b|. Runs with one torch thread.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lcfast.benchmarks import demo_data, git_commit, machine_info, write_json

HERE = Path(__file__).resolve().parent
FOLDS = 8
METRICS = ["nc1_cdnv", "nc1_trace_ratio", "nc2_norm_cov", "nc2_interference_mean", "nc2_interference_var",
           "nc2_etf_error", "gnc2_log_var", "nc3_dual_cos_mean", "nc3_dual_error", "nc4_agreement"]


@torch.no_grad()
def frozen_row(run: Path, data: Path, epoch: int, step: int, n_steps: int, cfg: dict) -> dict:
    """The tracked row's statistics recomputed from the epoch's checkpoint: the same batches
    (global steps step − n_steps … step − 1), W of the checkpoint, NC4 over the same evaluation windows."""
    from lcfast.metrics.measure import measure_stats
    from lcfast.model.checkpoint import load_run
    from lcfast.pipeline.train import open_data
    from lcfast.stats.classstats import ClassStats
    from lcfast.stats.ncc import NCCStats

    model, _ = load_run(run, epoch)
    train, val = open_data(data)
    B, T, seed = cfg["batch_size"], cfg["context"], cfg["seed"]
    C, d = int(train.vocab_size), model.config.width
    st = ClassStats(C, d)
    for s in range(step - n_steps, step):
        w = torch.from_numpy(np.ascontiguousarray(train.random_windows(B, T, seed, s), dtype=np.int64))
        st.update(model.features(w[:, :-1]).reshape(-1, d), w[:, 1:].reshape(-1))
    W = model.lm_head_weight.detach()
    kept = (st.counts >= 1).cpu()
    ncc = NCCStats(C, st.means[kept], kept, W)
    n_win = min(int(val.n_seq_windows(T)), max(1, math.ceil(cfg["eval_tokens"] / T)))
    for start in range(0, n_win, B):
        cnt = min(B, n_win - start)
        w, lengths = val.seq_windows(T, start, cnt)
        w = torch.from_numpy(np.ascontiguousarray(w, dtype=np.int64))
        mask = torch.arange(T)[None, :] < torch.as_tensor(np.asarray(lengths, dtype=np.int64) - 1)[:, None]
        ncc.update(model.features(w[:, :-1])[mask], w[:, 1:][mask])
    return measure_stats(st, W, None, ncc)


def rel(a, b) -> float | None:
    if a is None or b is None or not all(map(math.isfinite, (a, b))) or b == 0:
        return None
    return (a - b) / abs(b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="/tmp/lcfast-track-vs-exact")
    ap.add_argument("--every", default="10,60")
    ap.add_argument("--models", default="1x32x1,1x32x3,1x96x1,1x96x3")
    ap.add_argument("--json")
    ap.add_argument("--markdown")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from lcfast.pipeline.collect import CollectOptions, collect
    from lcfast.pipeline.demo import QUICK
    from lcfast.pipeline.measure import measure_collection
    from lcfast.pipeline.train import train_run

    work = Path(args.work)
    data = demo_data(work)
    cfg = dict(context=QUICK.context, batch_size=QUICK.batch_size, lr=QUICK.lr, seed=QUICK.seed,
               eval_tokens=QUICK.eval_tokens)
    res = {"benchmark": "track-vs-exact", "commit": git_commit(HERE), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
           "machine": {"cpus": os.cpu_count(), "platform": machine_info()["platform"]},
           "settings": {**cfg, "steps_per_epoch": QUICK.steps_per_epoch, "threads": 1}, "rows": []}
    for spec in args.models.split(","):
        layers, width, epochs = (int(v) for v in spec.split("x"))
        exact = {}
        for every in (int(v) for v in args.every.split(",")):
            run = work / "runs" / f"L{layers}_W{width}_E{epochs}_every{every}"
            train_run(data, run, layers=layers, width=width, epochs=epochs, steps_per_epoch=QUICK.steps_per_epoch,
                      device="cpu", progress=False, track_nc=True, track_every=every, **cfg)
            if not exact:  # the same weights whatever the interval (tracking does not change training)
                for s in collect(run, checkpoint="all",
                                 opts=CollectOptions(batch_size=QUICK.collect_batch, device="cpu", folds=FOLDS),
                                 progress=False):
                    row, _, _ = measure_collection(s["out_dir"], per_token=False, device="cpu")
                    exact[int(s["epoch"])] = {**row, "train_positions": s["passes"]["train"]["tokens"]}
            n_pos = every * cfg["batch_size"] * cfg["context"]
            same = {}  # the exact measurement of a random sample of the interval's size
            for s in collect(run, checkpoint="all", out=work / "same_size" / run.name,
                             opts=CollectOptions(batch_size=QUICK.collect_batch, device="cpu", folds=FOLDS,
                                                 max_tokens=n_pos), progress=False):
                row, _, _ = measure_collection(s["out_dir"], per_token=False, device="cpu")
                same[int(s["epoch"])] = row
            track = pd.read_csv(run / "nc_track.csv")
            for epoch in range(1, epochs + 1):
                r = track[track["epoch"] == epoch].iloc[-1]
                step, n = int(r["step"]), int(r["interval_steps"])
                frozen = frozen_row(run, data, epoch, step, n, cfg)
                tracked = {k: (None if pd.isna(r[k]) else float(r[k])) for k in METRICS}
                out = {"model": f"L{layers}_W{width}_E{epochs}", "epoch": epoch, "every": every, "interval_steps": n,
                       "interval_positions": int(n * cfg["batch_size"] * cfg["context"]),
                       "exact_positions": exact[epoch]["train_positions"],
                       "tracked_classes": int(r["n_classes"]), "exact_classes": int(exact[epoch]["n_classes"]),
                       "same_size_positions": same[epoch].get("n_positions"),
                       "exact_nc1_cdnv_debiased": exact[epoch].get("nc1_cdnv_debiased"),
                       "exact_nc1_cdnv_debiased_se": exact[epoch].get("nc1_cdnv_debiased_se"),
                       "metrics": {k: {"tracked": tracked[k], "frozen": frozen.get(k), "exact": exact[epoch].get(k),
                                       "exact_se": exact[epoch].get(f"{k}_se"),
                                       "exact_stable": exact[epoch].get(f"{k}_stable"),
                                       "same_size": same[epoch].get(k), "same_size_se": same[epoch].get(f"{k}_se"),
                                       "gap_same_size": rel(tracked[k], same[epoch].get(k)),
                                       "gap": rel(tracked[k], exact[epoch].get(k)),
                                       "drift": rel(tracked[k], frozen.get(k)),
                                       "sampling": rel(frozen.get(k), exact[epoch].get(k))} for k in METRICS}}
                res["rows"].append(out)
                print(f"{out['model']} epoch {epoch} every {every}: " + ", ".join(
                    f"{k} {m['tracked']:.3g}/{m['frozen']:.3g}/{m['exact']:.3g}" for k, m in out["metrics"].items()
                    if m["tracked"] is not None and m["exact"] is not None and m["frozen"] is not None), flush=True)
    # per interval length: median |relative gap| over every (model, epoch end), and its two parts
    res["summary"] = {}
    for every in sorted({r["every"] for r in res["rows"]}):
        rows = [r for r in res["rows"] if r["every"] == every]
        res["summary"][str(every)] = {
            k: {part: statistics.median(abs(r["metrics"][k][part]) for r in rows if r["metrics"][k][part] is not None)
                for part in ("gap", "drift", "sampling", "gap_same_size")} for k in METRICS}
    res["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    write_json(args.json, res)
    if args.markdown:
        Path(args.markdown).write_text(markdown(res))
    print(markdown(res))


def markdown(res: dict) -> str:
    def f(v):
        return "—" if v is None else f"{v:.4g}"

    def pct(v):
        return "—" if v is None else f"{100 * v:+.0f}%"

    lines = []
    last = [r for r in res["rows"] if r["model"].endswith("E3") and r["epoch"] == 3]
    for r in sorted(last, key=lambda r: (r["model"], r["every"])):
        lines += [f"\n{r['model']}, end of epoch 3, interval {r['every']} steps "
                  f"({r['interval_positions']:,} positions; "
                  f"exact: {r['exact_positions']:,}):\n",
                  "| metric | tracked | exact | relative gap | drift part | sampling part |",
                  "|---|---|---|---|---|---|"]
        for k, m in r["metrics"].items():
            lines.append(f"| {k} | {f(m['tracked'])} | {f(m['exact'])} | {pct(m['gap'])} | {pct(m['drift'])} | "
                         f"{pct(m['sampling'])} |")
    lines += ["\nMedian |relative gap| over every epoch end of every model:\n",
              "| metric | " + " | ".join(f"every {e}: gap (drift, sampling); vs exact at the same size"
                                      for e in res["summary"]) + " |",
              "|---|" + "---|" * len(res["summary"])]
    for k in METRICS:
        cells = [f"{100 * s[k]['gap']:.0f}% ({100 * s[k]['drift']:.0f}%, {100 * s[k]['sampling']:.0f}%); "
                 f"{100 * s[k]['gap_same_size']:.0f}%" for s in res["summary"].values()]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
