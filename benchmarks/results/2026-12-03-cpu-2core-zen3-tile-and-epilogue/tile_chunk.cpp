// gemm_panel's tile loop as it runs a chunk (cpp/src/cpu/microkernel.h): 8 tiles of 3 rows, the
// depth in blocks of `block`, each block's panel slice read by every tile of the chunk; A's 24
// rows in place with row stride lda. Panel and rows stay in L2. Best of 5.
// Args: depth, block, lda.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "microkernel.h"
using namespace rnnfast::RNNFAST_ISA_NS;
constexpr int W = 32, MR = kTileRows;

__attribute__((noinline)) void chunk(const float* a, int64_t lda, int64_t depth, int64_t block,
                                     const float* panel, float (*acc)[W]) {
  for (int64_t k0 = 0; k0 < depth; k0 += block) {
    const int64_t k_len = std::min(block, depth - k0);
    for (int t = 0; t < 8; ++t)
      tile_gemm<float, MR, W, 1>(a + t * MR * lda + k0, lda, k_len, panel + k0 * W, nullptr, k0 > 0,
                                 *reinterpret_cast<float (*)[MR][W]>(&acc[t * MR][0]));
  }
}

int main(int argc, char** argv) {
  const int64_t depth = atol(argv[1]), block = atol(argv[2]), lda = atol(argv[3]);
  std::vector<float> panel(depth * W + 16, 1e-3f), a(8 * MR * lda + 16, 1e-3f);
  alignas(64) static float acc[8 * MR][W] = {};
  float* p = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(panel.data()) + 63) & ~63ul);
  double best = 1e9;
  const long reps = 400000000 / (depth * 8 * MR);
  for (int round = 0; round < 5; ++round) {
    auto t0 = std::chrono::steady_clock::now();
    for (long r = 0; r < reps; ++r) chunk(a.data(), lda, depth, block, p, acc);
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  printf("chunk, depth %ld, block %ld (%ld KB of panel), row stride %ld: %.1f GFLOP/s\n", depth,
         block, block * W * 4 / 1024, lda, reps * depth * 8 * MR * W * 2.0 / best / 1e9);
}
