// Nanoseconds per hidden unit of the LSTM's forward gate math (cells/lstm.h, as the CPU kernels
// compile it), for 16, 32 and 64 units a call, with AVX-512. Built twice, with and without
// -fno-trapping-math, from the repository root:
//
//   F="-O3 -mavx2 -mfma -mavx512f -mavx512bw -mavx512dq -mavx512vl -mprefer-vector-width=512"
//   g++ $F -std=c++17 -I cpp/include gate_math_rate.cpp -o trapping
//   g++ $F -fno-trapping-math -std=c++17 -I cpp/include gate_math_rate.cpp -o no_trapping
//   objdump -d trapping | grep -c vdivps; objdump -d no_trapping | grep -c vdivps
#include <chrono>
#include <cstdio>

#include "rnnfast/cells/lstm.h"

using rnnfast::cells::Lstm;

// The forward of N units: zx, zh [4][N] (gates i, f, g, o), c [N] updated, h [N] written.
template <int N>
__attribute__((noinline)) void units(const float* zx, const float* zh, float* c, float* h) {
  for (int u = 0; u < N; ++u) {
    float zx_u[4], zh_u[4], saved[Lstm::kSaved];
    for (int g = 0; g < 4; ++g) {
      zx_u[g] = zx[g * N + u];
      zh_u[g] = zh[g * N + u];
    }
    Lstm::forward(zx_u, zh_u, 0.0f, c[u], h[u], saved);
  }
}

alignas(64) float zx[4 * 64], zh[4 * 64], c[64], h[64];

template <int N>
double ns_per_unit(long calls) {
  const auto start = std::chrono::steady_clock::now();
  for (long i = 0; i < calls; ++i) {
    for (float& v : c) v = 0.1f;
    units<N>(zx, zh, c, h);
    asm volatile("" ::: "memory");
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return seconds / (static_cast<double>(calls) * N) * 1e9;
}

int main() {
  for (int i = 0; i < 4 * 64; ++i) {
    zx[i] = 0.01f * ((i % 64) % 17) - 0.08f;
    zh[i] = 0.02f * ((i % 64) % 5);
  }
  for (int round = 0; round < 3; ++round)
    std::printf("ns per unit: 16 a call %.3f, 32 a call %.3f, 64 a call %.3f\n",
                ns_per_unit<16>(4000000), ns_per_unit<32>(2000000), ns_per_unit<64>(1000000));
}
