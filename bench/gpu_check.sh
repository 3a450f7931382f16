#!/usr/bin/env bash
# GPU check for lcfast's Triton kernels, run on a lent H100/H200 (Python 3.12, torch, triton, no
# network) from the repository root, with the abi3 wheel built on the dev machine carried in dist/:
#
#   OUT=/some/folder bash bench/gpu_check.sh            # the real run (needs CUDA)
#   OUT=/tmp/rehearsal bash bench/gpu_check.sh --dry-run # CPU rehearsal of the same steps
#
# Steps (each logged to $OUT, each with its own timeout; a failing step does not stop the rest):
#   1. environment: python/torch/triton versions, nvidia-smi           -> env.txt
#   2. pip install --no-deps every wheel in dist/ (lcfast's abi3 wheel, plus any dependency
#      wheels carried beside it); import check of lcfast, its kernels, typer, rich -> install.log
#   3. kernel tests on the device (LCFAST_TEST_DEVICE=cuda: compiled kernels, no interpreter)
#                                                                       -> kernel_tests.log
#   4. lcfast bench --device cuda --sizes small (quick agreement check) -> bench_small.{log,json}
#   5. lcfast bench --device cuda --sizes paper                         -> bench_paper.{log,json}
#   The summary (rc of each step) is appended to gpu_check.log. At most 8 files land in $OUT.
#
# --dry-run: no CUDA needed. Step 2 checks the wheel's contents (kernels included, abi3 tag)
# without installing and then uses the source tree (PYTHONPATH=python); step 3 runs the kernel
# tests under the Triton interpreter; step 4 runs `lcfast bench --device cpu --sizes small`, step 5
# `lcfast bench --sizes tiny --triton-on-cpu` (every CUDA-only row, through the interpreter), and
# `python -m lcfast.kernels.compile_check` compiles every kernel variant for sm_90 (no GPU needed).
# Timeouts (seconds) can be overridden: T_INSTALL, T_TESTS, T_SMALL, T_PAPER.
set -uo pipefail

DRY=0
SIZES_MAIN=paper
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --sizes) shift; SIZES_MAIN="${1:?--sizes needs a value}" ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu_check_out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
command -v "$PY" >/dev/null 2>&1 || PY=python
T_INSTALL=${T_INSTALL:-180}
T_TESTS=${T_TESTS:-300}
T_SMALL=${T_SMALL:-180}
T_PAPER=${T_PAPER:-420}
LOG="$OUT/gpu_check.log"
: >"$LOG"
declare -a SUMMARY=()
FAILED=0

log() { echo "[gpu_check $(date +%H:%M:%S)] $*" | tee -a "$LOG"; }

# step NAME TIMEOUT LOGFILE CMD...: run with a timeout, log rc and wall time, never abort
step() {
    local name=$1 limit=$2 logfile=$3
    shift 3
    log "step $name (timeout ${limit}s): $*"
    local t0=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >"$logfile" 2>&1
    local rc=$?
    local dt=$((SECONDS - t0))
    [ "$rc" -eq 124 ] && log "step $name TIMED OUT after ${limit}s"
    log "step $name: rc=$rc in ${dt}s (log: $(basename "$logfile"))"
    tail -n 25 "$logfile" | sed 's/^/    | /' | tee -a "$LOG" >/dev/null
    SUMMARY+=("$name rc=$rc ${dt}s")
    [ "$rc" -ne 0 ] && FAILED=1
    return 0
}

log "lcfast gpu_check: dry_run=$DRY sizes=$SIZES_MAIN root=$ROOT out=$OUT python=$PY"

# 1. environment ------------------------------------------------------------------------------
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -a)"
    "$PY" - <<'EOF'
import platform
print("python", platform.python_version())
for m in ("torch", "triton", "numpy", "typer", "rich", "pytest", "safetensors", "pandas"):
    try:
        mod = __import__(m)
        print(m, getattr(mod, "__version__", "present"))
    except Exception as exc:  # noqa: BLE001
        print(m, "MISSING", type(exc).__name__, exc)
try:
    import torch
    print("cuda available", torch.cuda.is_available())
    if torch.cuda.is_available():
        print("device", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
        free, total = torch.cuda.mem_get_info()
        print(f"memory free {free/2**30:.1f} GiB of {total/2**30:.1f} GiB")
except Exception as exc:  # noqa: BLE001
    print("torch cuda query failed:", exc)
EOF
    if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi; else echo "nvidia-smi: not found"; fi
} >"$OUT/env.txt" 2>&1
log "environment -> env.txt"
sed 's/^/    | /' "$OUT/env.txt" | head -n 20 | tee -a "$LOG" >/dev/null

# 2. install ------------------------------------------------------------------------------------
shopt -s nullglob
WHEELS=(dist/*.whl)
shopt -u nullglob
if [ "$DRY" -eq 1 ]; then
    export PYTHONPATH="$ROOT/python${PYTHONPATH:+:$PYTHONPATH}"
    step wheel-check "$T_INSTALL" "$OUT/install.log" "$PY" - "${WHEELS[@]}" <<'EOF'
import sys, zipfile
wheels = [w for w in sys.argv[1:] if "lcfast" in w.split("/")[-1]]
if not wheels:
    print("dry run: no lcfast wheel in dist/ (the real run installs dist/*.whl; build it with "
          "`maturin build --release --out dist`); checking the source tree instead")
    import lcfast.kernels.class_stats, lcfast.kernels.pairwise, lcfast.kernels.ncc  # noqa: F401
    print("source tree imports lcfast.kernels.{class_stats,pairwise,ncc}: ok")
    sys.exit(0)
bad = 0
for w in wheels:
    names = zipfile.ZipFile(w).namelist()
    need = ["lcfast/kernels/__init__.py", "lcfast/kernels/class_stats.py", "lcfast/kernels/pairwise.py",
            "lcfast/kernels/ncc.py", "lcfast/benchmarks/__init__.py", "lcfast/benchmarks/harness.py",
            "lcfast/benchmarks/stats.py", "lcfast/benchmarks/timing.py", "lcfast/cli/bench.py"]
    missing = [n for n in need if n not in names]
    abi3 = "abi3" in w
    print(w, "files", len(names), "abi3" if abi3 else "NOT abi3", "missing:", missing or "none")
    bad += bool(missing) or not abi3
sys.exit(1 if bad else 0)
EOF
else
    if [ ${#WHEELS[@]} -eq 0 ]; then
        log "no wheel in dist/: nothing to install (carry dist/ with the abi3 wheel)"
        SUMMARY+=("install rc=missing-wheel")
        FAILED=1
    else
        step install "$T_INSTALL" "$OUT/install.log" "$PY" -m pip install --no-deps --force-reinstall --no-index "${WHEELS[@]}"
    fi
    # import from site-packages, not from the source tree
    step import-check 60 "$OUT/import_check.tmp" "$PY" -c "
import lcfast, lcfast.kernels.class_stats, lcfast.kernels.pairwise, lcfast.kernels.ncc, typer, rich
print('lcfast', lcfast.__version__, 'from', lcfast.__file__)"
    cat "$OUT/import_check.tmp" >>"$OUT/install.log" 2>/dev/null
    rm -f "$OUT/import_check.tmp"
fi

# 3. kernel tests -------------------------------------------------------------------------------
if "$PY" -c "import pytest" >/dev/null 2>&1; then
    if [ "$DRY" -eq 1 ]; then
        step kernel-tests "$T_TESTS" "$OUT/kernel_tests.log" env LCFAST_TEST_DEVICE=cpu TRITON_INTERPRET=1 \
            "$PY" -m pytest tests/kernels -q -p no:cacheprovider -rfE --durations=10
    else
        step kernel-tests "$T_TESTS" "$OUT/kernel_tests.log" env -u TRITON_INTERPRET LCFAST_TEST_DEVICE=cuda \
            "$PY" -m pytest tests/kernels -q -p no:cacheprovider -rfE --durations=10
    fi
else
    log "pytest is not installed: kernel tests skipped (the bench below still checks agreement)"
    SUMMARY+=("kernel-tests rc=no-pytest")
    FAILED=1
fi

# 4./5. benchmarks ------------------------------------------------------------------------------
LCFAST=("$PY" -m lcfast)
if [ "$DRY" -eq 1 ]; then
    step bench-small "$T_SMALL" "$OUT/bench_small.log" env COLUMNS=200 "${LCFAST[@]}" bench --device cpu --sizes small --json "$OUT/bench_small.json"
    # the CUDA-only rows (every Triton kernel and precision) through the interpreter, at tiny size,
    # with the naive twins' "does not fit" path forced for the class statistics
    step bench-rehearsal "$T_SMALL" "$OUT/bench_rehearsal.log" env TRITON_INTERPRET=1 LCFAST_BENCH_FREE_BYTES=3e6 COLUMNS=200 \
        "${LCFAST[@]}" bench --device cpu --sizes tiny --triton-on-cpu --repeats 1 --json "$OUT/bench_rehearsal.json"
    # every kernel variant compiled for sm_90 with the local triton (no GPU needed): catches what
    # the interpreter cannot (compiled-path errors, register spills)
    step compile-sm90 "$T_PAPER" "$OUT/compile_check.log" env -u TRITON_INTERPRET "$PY" -m lcfast.kernels.compile_check --arch 90
    log "dry run: the real run follows with: lcfast bench --device cuda --sizes $SIZES_MAIN --json $OUT/bench_$SIZES_MAIN.json"
else
    step bench-small "$T_SMALL" "$OUT/bench_small.log" env -u TRITON_INTERPRET COLUMNS=200 "${LCFAST[@]}" bench --device cuda --sizes small --json "$OUT/bench_small.json"
    step "bench-$SIZES_MAIN" "$T_PAPER" "$OUT/bench_$SIZES_MAIN.log" env -u TRITON_INTERPRET COLUMNS=200 "${LCFAST[@]}" bench --device cuda --sizes "$SIZES_MAIN" --json "$OUT/bench_$SIZES_MAIN.json"
fi

log "summary:"
for s in "${SUMMARY[@]}"; do log "  $s"; done
if [ "$FAILED" -ne 0 ]; then
    log "RESULT: some steps failed (see the logs above)"
    exit 1
fi
log "RESULT: all steps passed"
exit 0
