#!/usr/bin/env bash
# Every figure of the README's performance table from one run, one date (the table used to mix runs
# of different days: 154× and 1,839× for the same row). Each command writes its JSON under
# bench/results/ with the same date tag; the load average before each goes to the log, because the
# dev machine is shared and a figure means little without it.
# Usage: bench/readme_table.sh PYTHON [TAG] [--long]
#   --long also runs the minutes-long rows (collect RSS over 100 M tokens, NCTracker overhead).
#   SKIP_E2E=1 leaves out `lcfast bench --sizes e2e` (run on its own beforehand).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=$1; TAG=${2:-cpu-2core}; LONG=${3:-}
DATE=$(date -u +%F)
OUT=bench/results
LOG=$OUT/${TAG}_readme-table_${DATE}.log
export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
: > "$LOG"
run() {  # run NAME CMD...: one row's command, its load and wall time logged
  local name=$1; shift
  echo "== $name  $(date -u +%T)  load $(cut -d' ' -f1-3 /proc/loadavg)  threads ${LCFAST_THREADS:-auto}" | tee -a "$LOG"
  local t0=$SECONDS
  "$@" >> "$LOG" 2>&1; local rc=$?
  echo "   rc=$rc  $((SECONDS - t0)) s  load after $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$LOG"
}
[ -n "${SKIP_E2E:-}" ] || run e2e "$PY" -m lcfast bench --sizes e2e --repeats 3 --json "$OUT/${TAG}_bench-e2e_${DATE}.json"
run bench-small "$PY" -m lcfast bench --device cpu --sizes small --json "$OUT/${TAG}_bench-small_${DATE}.json"
run stats "$PY" bench/bench_stats.py --json "$OUT/${TAG}_bench-stats_${DATE}.json"
run bandwidth "$PY" bench/bench_classstats_bandwidth.py --json "$OUT/${TAG}_classstats-bandwidth_${DATE}.json"
run tokenize "$PY" bench/bench_tokenize.py --mb 32 --repeat 2 --json "$OUT/${TAG}_bench-tokenize_${DATE}.json"
run engine "$PY" bench/bench_engine.py --tokens 100e6 --json "$OUT/${TAG}_bench-engine_${DATE}.json"
if [ "$LONG" = "--long" ]; then
  run collect-rss "$PY" bench/collect_rss.py --tokens 100000000 --json "$OUT/${TAG}_collect-rss_${DATE}.json"
  run nctracker "$PY" bench/bench_nctracker_overhead.py --json "$OUT/${TAG}_nctracker-overhead_${DATE}.json"
fi
echo "log: $LOG"
