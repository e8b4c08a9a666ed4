// The LSTM cell's forward math (rnnfast::cells::Lstm::forward, vectorized by GCC as in
// tile_forward of cpp/src/cpu/tile_cell.h) on N units per call: 8 is one AVX2 row of a tile,
// as the kernels call it; 16-48 would be several rows per call. ns per unit, best of 15.
#include <algorithm>
#include <chrono>
#include <cstdio>

#include "rnnfast/cells/cells.h"
using C = rnnfast::cells::Lstm;

template <int N>
__attribute__((noinline)) void math(const float* zx, const float* zh, float* c, float* h,
                                    float* saved) {
  alignas(64) float c_l[N], h_l[N], s_l[5][N];
  for (int u = 0; u < N; ++u) c_l[u] = c[u];
  for (int u = 0; u < N; ++u) {
    float zx_u[4], zh_u[4], sv[5];
    for (int g = 0; g < 4; ++g) {
      zx_u[g] = zx[g * N + u];
      zh_u[g] = zh[g * N + u];
    }
    C::forward(zx_u, zh_u, 0.f, c_l[u], h_l[u], sv);
    for (int s = 0; s < 5; ++s) s_l[s][u] = sv[s];
  }
  for (int u = 0; u < N; ++u) c[u] = c_l[u], h[u] = h_l[u];
  for (int s = 0; s < 5; ++s)
    for (int u = 0; u < N; ++u) saved[s * 256 + u] = s_l[s][u];
}

template <int N>
double ns_per_unit() {
  alignas(64) static float zx[4 * 48], zh[4 * 48], c[48], h[48], saved[5 * 256];
  for (int i = 0; i < 4 * 48; ++i) zx[i] = 0.01f * (i % 17) - 0.1f, zh[i] = 0.02f * (i % 5);
  double best = 1e9;
  const long calls = 4000000 / N;
  for (int r = 0; r < 15; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    for (long i = 0; i < calls; ++i) math<N>(zx, zh, c, h, saved);
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best / (calls * N) * 1e9;
}

int main() {
  printf("LSTM forward math, ns per unit: 8 units a call %.3f, 16: %.3f, 24: %.3f, 48: %.3f\n",
         ns_per_unit<8>(), ns_per_unit<16>(), ns_per_unit<24>(), ns_per_unit<48>());
}
