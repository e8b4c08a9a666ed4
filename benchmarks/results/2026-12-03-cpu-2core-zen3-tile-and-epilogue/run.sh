# Builds and runs this folder's programs (GCC, -O3 -mavx2 -mfma as CMakeLists.txt builds the
# avx2 kernels) from the repository's sources; logs to run.log. Run from this folder.
set -e
src=../../../cpp
flags="-O3 -fno-trapping-math -mavx2 -mfma"
gcc $flags fma_peak.c -o /tmp/fma_peak
for p in tile_alone tile_chunk lstm_math; do
  g++ -std=c++17 $flags -DRNNFAST_ISA_NS=avx2 -I$src/include -I$src/src/cpu $p.cpp -o /tmp/$p
done
{
  lscpu | grep -E "Model name|^CPU\(s\)"; grep -m2 -E "cpu family|^model\s" /proc/cpuinfo
  /tmp/fma_peak
  for args in "256 256" "256 1024" "512 4096" "64 64"; do /tmp/tile_alone $args; done
  for round in 1 2; do
    for args in "1024 256 1024" "1024 192 1024" "1024 128 1024" "1024 192 1040"; do
      /tmp/tile_chunk $args
    done
  done
  for round in 1 2 3; do /tmp/lstm_math; done
} 2>&1 | tee run.log
