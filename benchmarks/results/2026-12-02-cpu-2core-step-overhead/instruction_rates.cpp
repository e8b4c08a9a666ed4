// Instructions a second on one core, each of 12 independent chains: vdpbf16ps on zmm and ymm
// registers (32 and 16 bfloat16 pair products into float32 sums), vfmadd on zmm (16 float32),
// vdivps on zmm. Shows whether a kernel that issues them is bound by them.
//
//   g++ -O2 -mavx512f -mavx512bf16 -mavx512vl -std=c++17 instruction_rates.cpp -o rates
#include <immintrin.h>

#include <chrono>
#include <cstdio>

#define REP12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)

static double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Times n rounds of STEP(i) over the 12 accumulators a0 .. a11 of type V, set up by INIT(i);
// prints G instructions a second and a checksum (so that nothing is optimised away).
#define TIME(label, V, INIT, STEP, SUM)                                          \
  {                                                                              \
    REP12(INIT)                                                                  \
    const double start = now();                                                  \
    for (long k = 0; k < n; ++k) {                                               \
      REP12(STEP)                                                                \
    }                                                                            \
    const double seconds = now() - start;                                        \
    float check = 0;                                                             \
    REP12(SUM)                                                                   \
    std::printf("%-16s %5.2f G/s (%g)\n", label, n * 12 / seconds / 1e9, check); \
  }

int main(int argc, char**) {
  const long n = 20000000;
  const __m512bh pairs = (__m512bh)_mm512_set1_epi32(0x3f803f80 * argc);
  const __m256bh pairs8 = (__m256bh)_mm256_set1_epi32(0x3f803f80 * argc);
  const __m512 one = _mm512_set1_ps(1.0f * argc), near_one = _mm512_set1_ps(1.0001f * argc);
#define Z(i) __m512 a##i = _mm512_setzero_ps();
#define Z8(i) __m256 a##i = _mm256_setzero_ps();
#define ONES(i) __m512 a##i = _mm512_set1_ps(1.0f + i);
#define SUM(i) check += _mm512_reduce_add_ps(a##i);
#define SUM8(i) check += a##i[0];
#define DP(i) a##i = _mm512_dpbf16_ps(a##i, pairs, pairs);
#define DP8(i) a##i = _mm256_dpbf16_ps(a##i, pairs8, pairs8);
#define FMA(i) a##i = _mm512_fmadd_ps(one, one, a##i);
#define DIV(i) a##i = _mm512_div_ps(near_one, a##i);  // stays near 1: no subnormals
  for (int round = 0; round < 3; ++round) {
    TIME("vdpbf16ps zmm", __m512, Z, DP, SUM)
    TIME("vdpbf16ps ymm", __m256, Z8, DP8, SUM8)
    TIME("vfmadd231ps zmm", __m512, Z, FMA, SUM)
    TIME("vdivps zmm", __m512, ONES, DIV, SUM)
  }
}
