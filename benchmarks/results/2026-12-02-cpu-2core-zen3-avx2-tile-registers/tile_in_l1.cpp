// One thread: tile_gemm<float, 3, 32> (AVX2) alone, its operands in L1, at a few depths and row counts.
// Build: g++ -std=c++17 -O3 -fno-trapping-math -mavx2 -mfma -Icpp/src/cpu -Icpp/include -o tile_in_l1 tile_in_l1.cpp
// (against microkernel.h of 9e6e278, where tile_gemm was a function of its own)
#define RNNFAST_ISA_NS isa_avx2
#include "microkernel.h"
#include <chrono>
#include <cstdio>
#include <vector>
using namespace rnnfast::isa_avx2;
template <int MR, int NV>
void run(int64_t depth, int64_t lda_rows) {
  constexpr int W = NV * 8;
  std::vector<float> a(lda_rows * depth + 64, 0.5f);
  float* panel = (float*)aligned_alloc(64, depth * W * 4 + 64);
  for (int64_t i = 0; i < depth * W; ++i) panel[i] = 0.001f * (i % 7);
  alignas(64) float acc[MR][W];
  const int reps = 200000000 / (depth * MR * W);
  // tiles walk down the rows (like gemm_panel over a chunk), panel reused
  int64_t tiles = lda_rows / MR;
  auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < reps; ++r)
    tile_gemm<float, MR, W>(a.data() + (r % tiles) * MR * depth, depth, depth, panel, nullptr, false, acc);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  printf("MR=%d NV=%d depth=%ld rows=%ld: %.1f GFLOP/s (acc %g)\n", MR, NV, depth, lda_rows, 2.0 * reps * depth * MR * W / s / 1e9, acc[0][0]);
}
namespace rnnfast { ThreadPool& ThreadPool::global() { static ThreadPool* p; return *p; } }
int main() {
  run<3, 4>(256, 3); run<3, 4>(256, 24); run<3, 4>(128, 24); run<3,4>(64, 24);
  run<2, 4>(256, 24); run<1, 4>(256, 24);
}
