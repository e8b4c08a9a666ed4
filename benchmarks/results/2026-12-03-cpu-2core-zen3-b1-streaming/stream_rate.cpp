// How fast one core streams a packed panel through the recurrence's one-row tile: a panel
// [depth][32] floats (AVX2: four vectors a depth, as the LSTM's forward panels), each depth's
// four vectors multiplied by one broadcast value and added into accumulators, the depth split
// between three sets of accumulators (as tile_gemm does for a tile of one row). The panel is
// swept again and again; its size decides where it comes from (L1, L2, L3). Prints GB/s of
// panel read, and the same with software prefetches 512 or 2048 bytes ahead.
//
// Build and run (from this folder): g++ -O3 -mavx2 -mfma stream_rate.cpp -o stream_rate &&
// ./stream_rate
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

// One depth into accumulators A0..A3: four panel vectors times a[k + OFF]. (Named variables,
// not arrays: with arrays GCC 12 kept the accumulators on the stack.)
#define DEPTH(A0, A1, A2, A3, OFF)                                  \
  {                                                                 \
    const __m256 b = _mm256_broadcast_ss(a + k + OFF);              \
    A0 = _mm256_fmadd_ps(_mm256_load_ps(q + OFF * 32 + 0), b, A0);  \
    A1 = _mm256_fmadd_ps(_mm256_load_ps(q + OFF * 32 + 8), b, A1);  \
    A2 = _mm256_fmadd_ps(_mm256_load_ps(q + OFF * 32 + 16), b, A2); \
    A3 = _mm256_fmadd_ps(_mm256_load_ps(q + OFF * 32 + 24), b, A3); \
  }

template <int kAhead>
__attribute__((noinline)) float sweep(const float* panel, const float* a, long depth, int reps) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0,
         c0 = a0, c1 = a0, c2 = a0, c3 = a0;
  for (int r = 0; r < reps; ++r) {
    const float* q = panel;
    for (long k = 0; k + 3 <= depth; k += 3, q += 96) {
      if (kAhead > 0)
        for (int line = 0; line < 6; ++line)
          _mm_prefetch(reinterpret_cast<const char*>(q + kAhead / 4 + 16 * line), _MM_HINT_T0);
      DEPTH(a0, a1, a2, a3, 0)
      DEPTH(b0, b1, b2, b3, 1)
      DEPTH(c0, c1, c2, c3, 2)
    }
  }
  const __m256 t =
      _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                    _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(b0, b1), _mm256_add_ps(b2, b3)),
                                  _mm256_add_ps(_mm256_add_ps(c0, c1), _mm256_add_ps(c2, c3))));
  float out[8];
  _mm256_storeu_ps(out, t);
  return out[0];
}

int main() {
  for (long kb : {16L, 64L, 128L, 256L, 384L, 512L, 1024L, 2048L, 4096L}) {
    const long depth = kb * 1024 / 128 / 3 * 3;
    float* panel = static_cast<float*>(std::aligned_alloc(64, depth * 128 + 8192));
    std::vector<float> a(depth + 16, 0.5f);
    for (long i = 0; i < depth * 32 + 2048; ++i) panel[i] = 1e-3f * (i % 7);
    const int reps = static_cast<int>(std::max(1L, 400000000L / (depth * 128)));
    auto rate = [&](auto fn) {
      fn(panel, a.data(), depth, 2);
      const auto start = std::chrono::steady_clock::now();
      volatile float sink = fn(panel, a.data(), depth, reps);
      (void)sink;
      const double s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      return depth * 128.0 * reps / s / 1e9;
    };
    std::printf("panel %5ld KB: %6.1f GB/s, prefetched 512 B ahead %6.1f, 2048 B ahead %6.1f\n", kb,
                rate(sweep<0>), rate(sweep<512>), rate(sweep<2048>));
    std::free(panel);
  }
}
