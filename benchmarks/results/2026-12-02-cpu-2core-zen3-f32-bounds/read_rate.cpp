// Read bandwidth of one or two threads, each summing its own buffer of `bytes` (AVX2 loads,
// 8 independent sums), repeated: from L2 where the buffer fits, else L3 or memory.
// Build: g++ -O3 -mavx2 -mfma -pthread -o read_rate read_rate.cpp ; run: ./read_rate
#include <immintrin.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>
static double read_rate(size_t bytes, int threads, int passes) {
  std::vector<float*> bufs(threads);
  for (auto& b : bufs) {
    b = static_cast<float*>(aligned_alloc(64, bytes));
    for (size_t i = 0; i < bytes / 4; ++i) b[i] = 1.0f;
  }
  std::atomic<int> ready{0};
  std::vector<double> secs(threads);
  std::vector<float> sink(threads);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      const float* p = bufs[t];
      const size_t n = bytes / 4;
      __m256 s[8];
      for (auto& v : s) v = _mm256_setzero_ps();
      ready++;
      while (ready < threads) {}
      std::vector<double> each;
      for (int pass = 0; pass < passes; ++pass) {
        auto t0 = std::chrono::steady_clock::now();
        for (size_t i = 0; i < n; i += 64)
          for (int v = 0; v < 8; ++v) s[v] = _mm256_add_ps(s[v], _mm256_load_ps(p + i + 8 * v));
        each.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      std::sort(each.begin(), each.end());
      secs[t] = each[each.size() / 2];
      float out[8];
      _mm256_storeu_ps(out, _mm256_add_ps(s[0], s[7]));
      sink[t] = out[0];
    });
  for (auto& th : pool) th.join();
  double total = 0;
  for (int t = 0; t < threads; ++t) total += bytes / secs[t];
  for (auto b : bufs) free(b);
  return total / 1e9 + 0 * sink[0];
}
int main() {
  for (size_t kb : {256, 512, 1024, 2048, 8192})
    for (int threads : {1, 2})
      printf("%5zu KB per thread, %d thread(s): %6.1f GB/s in all (median pass)\n", kb, threads,
             read_rate(kb << 10, threads, kb <= 2048 ? 2000 : 200));
}
