# perf profiles (cpu-clock samples: this KVM guest has no hardware counters) of the LSTM
# recurrence and of one GEMM, on a build with symbols: PKG holds an rnnfast package built with
# CMAKE_BUILD_TYPE=RelWithDebInfo (the kernels keep their -O3; Release strips the module).
# Run from this folder: PKG=/path/to/dir bash profile.sh; writes profile-*.txt.
set -e
here=$(pwd)
report() { perf report -i /tmp/profile.data --no-children --sort sym 2>/dev/null |
           grep -v '^#' | grep -v '^$' | head -12 | cut -c1-160; }
cd ../../  # benchmarks/, for time_recurrence.py
for spec in "lstm 100 64 256 --threads 1" "lstm 100 64 256 --threads 1 --backward" \
            "lstm 1000 8 128 --training" "lstm 1000 8 128 --backward"; do
  name=$(echo "$spec" | tr ' ' '_' | tr -d '-')
  { echo "# python benchmarks/time_recurrence.py $spec --repeats 30, under perf record"
    PYTHONPATH=$PKG perf record -q -e cpu-clock -F 4000 -o /tmp/profile.data \
      python time_recurrence.py $spec --repeats 30 2>&1 | { grep -v '^\[' || true; }
    report; } > "$here/profile-$name.txt"
done
{ echo "# RNNFAST_NUM_THREADS=1 python gemm_once.py 6400 256 1024 n 60 (dx = dz W_ih at (100, 64, 256)), under perf record"
  RNNFAST_NUM_THREADS=1 PYTHONPATH=$PKG perf record -q -e cpu-clock -F 4000 -o /tmp/profile.data \
    python "$here/gemm_once.py" 6400 256 1024 n 60 2>&1 | { grep -v '^\[' || true; }
  report; } > "$here/profile-gemm_6400x256x1024.txt"
