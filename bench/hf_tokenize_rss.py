"""Memory of `lcfast tokenize hf:PATH` against the dataset's size: the peak anonymous memory (RssAnon,
sampled every 20 ms; the memory-mapped Arrow pages are file-backed and reclaimable, so they are not
counted) stays flat while the dataset grows — a dataset larger than memory tokenizes in bounded memory.

    python bench/hf_tokenize_rss.py --mb 20 200 --out bench/results/hf_tokenize_rss.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import sys, threading, time
peak = [0]
def rss_anon():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0
stop = False
def sample():
    while not stop:
        peak[0] = max(peak[0], rss_anon())
        time.sleep(0.02)
from lcfast.data.tokenize import tokenize_files
import datasets  # imported before the baseline: its own footprint is not the dataset's
base = rss_anon()
t = threading.Thread(target=sample, daemon=True); t.start()
# wall time by hand, not lcfast.benchmarks.Stopwatch: that would import torch into the measured process
t0 = time.perf_counter()
meta = tokenize_files([f"hf:{sys.argv[1]}"], sys.argv[2], sys.argv[3], val_fraction=0.01)
dt = time.perf_counter() - t0
stop = True; t.join()
print(base, peak[0], meta["tokens"]["total"], dt)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, nargs="+", default=[20, 200], help="dataset text sizes (MB)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import datasets

    from lcfast.benchmarks import write_json
    from lcfast.data.synth import write_corpus
    from lcfast.data.tokenize import tokenize_files

    work = Path(tempfile.mkdtemp(prefix="lcfast-hf-rss-"))
    try:
        write_corpus(work / "corpus", n_stories=2000, seed=0)
        tokenize_files([work / "corpus" / "stories.txt"], "train:4096", work / "tok", val_fraction=0.01)
        stories = (work / "corpus" / "stories.txt").read_text(encoding="utf-8").split("\n\n")
        per = sum(len(s.encode()) for s in stories)
        rows = []
        for mb in args.mb:
            reps = max(1, int(mb * 1e6 / per))

            def gen(reps=reps):
                for r in range(reps):
                    for i, s in enumerate(stories):
                        yield {"text": f"{r} {i} {s}"}

            ds = datasets.Dataset.from_generator(gen, cache_dir=str(work / "gen"))
            ds.save_to_disk(str(work / f"ds{mb}"))
            del ds
            shutil.rmtree(work / "gen", ignore_errors=True)
            size = sum(f.stat().st_size for f in (work / f"ds{mb}").rglob("*.arrow"))
            r = subprocess.run([sys.executable, "-c", CHILD, str(work / f"ds{mb}"),
                                str(work / "tok" / "tokenizer.json"), str(work / f"out{mb}")],
                               capture_output=True, text=True, check=True)
            base, peak, tokens, dt = r.stdout.split()
            rows.append({"arrow_mb": round(size / 1e6, 1), "tokens": int(tokens), "seconds": round(float(dt), 2),
                         "rss_anon_base_mb": round(int(base) / 1e6, 1),
                         "rss_anon_peak_growth_mb": round((int(peak) - int(base)) / 1e6, 1)})
            print(json.dumps(rows[-1]))
            shutil.rmtree(work / f"ds{mb}", ignore_errors=True)
            shutil.rmtree(work / f"out{mb}", ignore_errors=True)
        res = {"date": time.strftime("%Y-%m-%d"), "datasets": datasets.__version__, "rows": rows}
        write_json(args.out, res, indent=2)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
