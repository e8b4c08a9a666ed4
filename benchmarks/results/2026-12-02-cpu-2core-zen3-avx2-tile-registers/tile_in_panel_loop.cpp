// One thread: the AVX2 tile in a loop shaped like gemm_panel (144 rows, depth 512, 64 panels), at
// several depth blocks and chunk heights, and with every tile reading the same rows of A.
// Build as tile_in_l1.cpp; with -DPF=n against a microkernel.h whose tile loop prefetches the panel
// n depths ahead (the prefetch variant named in the README; not in the repository).
#define RNNFAST_ISA_NS isa_avx2
#include "microkernel.h"
#include <chrono>
#include <cstdio>
#include <vector>
using namespace rnnfast::isa_avx2;
namespace rnnfast { ThreadPool& ThreadPool::global() { static ThreadPool* p; return *p; } }
// One thread: rows x depth A (row stride depth) times `panels` panels [depth][32], chunked like gemm_panel
template <int64_t kBlockBytes>
double run(int64_t rows, int64_t depth, int64_t panels, int64_t chunk_rows_n, bool same_a = false) {
  constexpr int W = 32;
  std::vector<float> a(rows * depth, 0.5f);
  float* pan = (float*)aligned_alloc(64, panels * depth * W * 4);
  for (int64_t i = 0; i < panels * depth * W; ++i) pan[i] = 0.001f * (i % 7);
  std::vector<float> c(rows * panels * W);
  constexpr int64_t block = kBlockBytes / (W * 4);
  alignas(64) float chunk_acc[64][W];
  auto once = [&] {
    for (int64_t p = 0; p < panels; ++p) {
      const float* panel = pan + p * depth * W;
      for (int64_t c0 = 0; c0 < rows; c0 += chunk_rows_n)
        for (int64_t k0 = 0; k0 < depth; k0 += block) {
          const int64_t kl = std::min(block, depth - k0);
          for (int64_t r0 = 0; r0 + 3 <= chunk_rows_n; r0 += 3) {
            auto& acc = *reinterpret_cast<float(*)[3][W]>(&chunk_acc[r0][0]);
            tile_gemm<float, 3, W>(a.data() + (same_a ? 0 : (c0 + r0) * depth) + k0, depth, kl, panel + k0 * W, nullptr, k0 > 0, acc);
            if (k0 + kl >= depth) for (int r = 0; r < 3; ++r) std::memcpy(&c[(c0 + r0 + r) * panels * W + p * W], acc[r], W * 4);
          }
        }
    }
  };
  once();
  double best = 1e9;
  for (int rep = 0; rep < 5; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    once();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return 2.0 * rows * depth * panels * W / best / 1e9;
}
int main() {
  for (int i = 0; i < 2; ++i) {
    printf("same A rows: %.1f  ", run<32768>(144, 512, 64, 24, true));
    printf("block 32K chunk 24: %.1f  ", run<32768>(144, 512, 64, 24));
    printf("block 16K chunk 24: %.1f  ", run<16384>(144, 512, 64, 24));
    printf("block 8K chunk 24: %.1f  ", run<8192>(144, 512, 64, 24));
    printf("block 16K chunk 48: %.1f  ", run<16384>(144, 512, 64, 48));
    printf("block 32K chunk 48: %.1f\n", run<32768>(144, 512, 64, 48));
  }
}
