#!/usr/bin/env bash
# Every test that runs torch.distributed (torchrun, or spawned gloo ranks), N rounds in a row: the
# proof loop of issues 28/29 (a hang or an abort at teardown shows as a failed or timed-out round).
# Usage: bench/torchrun_loop.sh PYTHON N [LOG] [TEST_ID ...]   (default: every such test)
#   bench/torchrun_loop.sh /tmp/floor/bin/python 20 /tmp/floor-loop.log    # at the floor (.ci/floor's venv)
#   bench/torchrun_loop.sh .venv/bin/python 20 /tmp/today-loop.log         # today's torch
# Each round is one pytest process with a 15-minute cap; the log gets one line per round and a total.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=$1; N=$2; LOG=${3:-/dev/stdout}; shift $(( $# < 3 ? $# : 3 ))
TESTS=("$@")
if [ ${#TESTS[@]} -eq 0 ]; then
  TESTS=(
    tests/pipeline/test_distributed.py::test_ddp_train_and_collect_equal_single_process
    tests/pipeline/test_distributed.py::test_a_failing_rank_stops_every_rank
    tests/pipeline/test_distributed.py::test_torchrun_sums_parts_finished_before_an_interrupted_sum
    tests/pipeline/test_distributed.py::test_a_rank_that_never_arrives_stops_the_other_with_one_line
    tests/pipeline/test_torchrun_resume.py
    tests/pipeline/test_track_nc.py::test_two_process_gloo_run_equals_single_process
    tests/pipeline/test_hf_distributed.py
    tests/pipeline/test_nonfinite_loss.py::test_ddp_ranks_agree_to_stop
    tests/stats/test_classstats.py::test_all_reduce_two_processes_equals_single
  )
fi
export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c 'import torch; print("torch", torch.__version__)' >> "$LOG"
ok=0
for i in $(seq 1 "$N"); do
  t0=$(date +%s)
  out=$(timeout 900 "$PY" -m pytest -q -p no:cacheprovider "${TESTS[@]}" 2>&1); rc=$?
  summary=$(printf '%s\n' "$out" | tail -1)
  aborts=$(printf '%s\n' "$out" | grep -c -e "terminate called" -e "exitcode *: -6" -e "Fatal Python error")
  [ "$rc" -eq 0 ] && [ "$aborts" -eq 0 ] && ok=$((ok + 1))
  echo "round $i: rc $rc, $(( $(date +%s) - t0 )) s, aborts $aborts: $summary" >> "$LOG"
  [ "$rc" -ne 0 ] && printf '%s\n' "$out" | tail -60 >> "$LOG.failures"
done
echo "passed $ok of $N rounds" >> "$LOG"
[ "$ok" -eq "$N" ]
