// rnnfast's micro-kernel (tile_gemm of cpp/src/cpu/microkernel.h, AVX2: 3 rows x 32 columns)
// alone, on a panel and rows that stay in L1: the tile loop's own rate, best of 5.
// Args: depth, A's row stride (elements).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "microkernel.h"
using namespace rnnfast::RNNFAST_ISA_NS;

template <int KS>
__attribute__((noinline)) void run(const float* a, int64_t lda, int64_t depth, const float* panel,
                                   float (&acc)[3][32]) {
  tile_gemm<float, 3, 32, KS>(a, lda, depth, panel, nullptr, true, acc);
}

int main(int argc, char** argv) {
  const int64_t depth = argc > 1 ? atol(argv[1]) : 256, lda = argc > 2 ? atol(argv[2]) : depth;
  std::vector<float> panel(depth * 32 + 16, 1e-3f), a(3 * (lda + depth) + 16, 1e-3f);
  alignas(64) float acc[3][32] = {};
  float* p = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(panel.data()) + 63) & ~63ul);
  for (int ks : {1, 3}) {  // rows of A in place (row stride lda), or a strip of 3 rows
    double best = 1e9;
    const long reps = 200000000 / depth;
    for (int round = 0; round < 5; ++round) {
      auto t0 = std::chrono::steady_clock::now();
      for (long r = 0; r < reps; ++r)
        ks == 1 ? run<1>(a.data(), lda, depth, p, acc) : run<3>(a.data(), lda, depth, p, acc);
      best = std::min(best,
                      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    printf("tile alone, KS=%d, depth %ld, row stride %ld: %.1f GFLOP/s (%g)\n", ks, depth, lda,
           reps * depth * 3 * 32 * 2.0 / best / 1e9, acc[0][0]);
  }
}
