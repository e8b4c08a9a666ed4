#!/usr/bin/env bash
# The CUDA backend's checks on a machine with a GPU, in one command from the repository root:
#
#   bash benchmarks/gpu_check.sh
#
# 1. builds and installs rnnfast (default RNNFAST_CUDA_ARCHITECTURES) into the current Python
#    with `pip install --no-build-isolation` (the build tools must be installed: pybind11,
#    scikit-build-core, cmake, ninja, CuPy, pytest; nothing is downloaded),
# 2. runs tests/kernels/test_cuda.py and tests/kernels/test_cuda_kernels_emulated.py, the layers
#    and cells on the GPU (tests/frontends/test_devices.py, over CuPy itself there) and the
#    PyTorch adapter's CUDA tensors, then the whole test suite,
# 3. runs compute-sanitizer (memcheck, racecheck, synccheck; initcheck for information) on a
#    small forward and backward of each cell on both recurrence paths
#    (benchmarks/gpu_sanitize_case.py), and on the kernels with lengths, resets and the
#    projection (benchmarks/gpu_sanitize_options.py).
# Eight logs go to $OUT (or ./gpu_check_logs; the device tool returns at most eight files); a
# summary is printed last. It times nothing: the benchmark table is `rnnfast-bench --device cuda`
# (benchmarks/README.md, On a GPU), run after this script has installed rnnfast. Exit status 0 only if the build, the tests and the memcheck,
# racecheck and synccheck runs all passed.
set -u -o pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$REPO/gpu_check_logs}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
declare -a SUMMARY
result() { SUMMARY+=("$1: $2"); }

{ nvidia-smi; nvcc --version; which compute-sanitizer; "$PY" --version
  "$PY" -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__)"
} >"$OUT/environment.log" 2>&1

cd "$REPO"
if "$PY" -m pip install --no-build-isolation --no-deps -v . >"$OUT/build.log" 2>&1; then
  result build ok
else
  tail -40 "$OUT/build.log"
  echo "build failed: see $OUT/build.log"
  exit 1
fi

cd /tmp  # import the installed package, not the source tree
"$PY" -c "import rnnfast; print(rnnfast.cuda_info())" 2>&1 | tee -a "$OUT/environment.log"

run_tests() {  # name, pytest arguments...
  local name=$1; shift
  if PYTHONUNBUFFERED=1 "$PY" -m pytest -q -rs "$@" >"$OUT/$name.log" 2>&1; then
    result "$name" "passed ($(tail -1 "$OUT/$name.log"))"
  else
    result "$name" "FAILED ($(tail -1 "$OUT/$name.log"))"
  fi
}
run_tests pytest_cuda "$REPO/tests/kernels/test_cuda.py" "$REPO/tests/kernels/test_cuda_kernels_emulated.py" \
  "$REPO/tests/frontends/test_devices.py" \
  "$REPO/tests/adapters/test_torch_adapter.py::test_cuda_tensors_match_torch_nn_on_the_gpu"
run_tests pytest_all "$REPO/tests"

rm -f "$OUT"/sanitizer_*.log
for tool in memcheck racecheck synccheck initcheck; do
  # synccheck's output goes into racecheck's log: both check the kernels' barriers and shared
  # memory, and the device tool returns at most eight files.
  log="$OUT/sanitizer_${tool/synccheck/racecheck}.log"
  if compute-sanitizer --tool "$tool" --error-exitcode 99 \
       "$PY" "$REPO/benchmarks/gpu_sanitize_case.py" >>"$log" 2>&1 &&
     compute-sanitizer --tool "$tool" --error-exitcode 99 \
       "$PY" "$REPO/benchmarks/gpu_sanitize_options.py" >>"$log" 2>&1; then
    result "$tool" "clean ($(grep -h 'ERROR SUMMARY' "$log" | tail -1))"
  else
    result "$tool" "ERRORS (see $log: $(grep -h 'ERROR SUMMARY' "$log" | tail -1))"
  fi
done

status=0
printf '%s\n' "${SUMMARY[@]}" | tee "$OUT/summary.log"
grep -q -E '^(pytest_cuda|pytest_all|memcheck|racecheck|synccheck): (FAILED|ERRORS)' \
  "$OUT/summary.log" \
  && status=1
echo "logs: $OUT"
exit $status
