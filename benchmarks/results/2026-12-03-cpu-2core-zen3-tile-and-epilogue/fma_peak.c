// The core's float32 FMA rate: 12 independent chains of 8-float FMAs (AVX2), best of 5.
#include <immintrin.h>
#include <stdio.h>
#include <time.h>
static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}
int main(void) {
  __m256 a[12], x = _mm256_set1_ps(1.0000001f), y = _mm256_set1_ps(0.9999999f);
  for (int i = 0; i < 12; i++) a[i] = _mm256_set1_ps(i);
  const long n = 200000000;
  double best = 1e9;
  for (int rep = 0; rep < 5; rep++) {
    double t = now();
    for (long i = 0; i < n; i++) {
#pragma GCC unroll 12
      for (int j = 0; j < 12; j++) a[j] = _mm256_fmadd_ps(a[j], x, y);
    }
    t = now() - t;
    if (t < best) best = t;
  }
  float s = 0;
  for (int i = 0; i < 12; i++) s += a[i][0];
  printf("FMA peak, one core: %.1f GFLOP/s (%g)\n", n * 12.0 * 16 / best / 1e9, s);
}
