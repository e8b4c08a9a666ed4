#include "rnnfast/cpu_features.h"

#include <cerrno>
#include <cstdlib>

#if defined(__linux__)
#include <unistd.h>
#endif

namespace rnnfast {

std::vector<std::string> cpu_features() {
  std::vector<std::string> found;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  // __builtin_cpu_supports needs literal names, hence one line per feature.
  if (__builtin_cpu_supports("sse2")) found.push_back("sse2");
  if (__builtin_cpu_supports("avx")) found.push_back("avx");
  if (__builtin_cpu_supports("avx2")) found.push_back("avx2");
  if (__builtin_cpu_supports("fma")) found.push_back("fma");
  if (__builtin_cpu_supports("avx512f")) found.push_back("avx512f");
  if (__builtin_cpu_supports("avx512bw")) found.push_back("avx512bw");
  if (__builtin_cpu_supports("avx512vl")) found.push_back("avx512vl");
  if (__builtin_cpu_supports("avx512dq")) found.push_back("avx512dq");
  if (__builtin_cpu_supports("avx512bf16")) found.push_back("avx512bf16");
  if (__builtin_cpu_supports("amx-tile")) found.push_back("amx-tile");
  if (__builtin_cpu_supports("amx-bf16")) found.push_back("amx-bf16");
#endif
  return found;
}

namespace {

#if defined(__linux__) && defined(_SC_LEVEL1_DCACHE_SIZE)
// sysconf's cache size `name` (glibc: from cpuid, leaf 4 on Intel, 0x8000001D on AMD); 0 where
// unknown (sysconf answers 0 or -1 then).
int64_t cache_bytes(int name) {
  const long bytes = sysconf(name);
  return bytes > 0 ? bytes : 0;
}
#endif

// RNNFAST_L2_CACHE_BYTES as a positive integer, else 0.
int64_t l2_override() {
  const char* text = std::getenv("RNNFAST_L2_CACHE_BYTES");
  if (text == nullptr) return 0;
  char* end = nullptr;
  errno = 0;
  const long long bytes = std::strtoll(text, &end, 10);
  return errno == 0 && end != text && *end == '\0' && bytes > 0 ? bytes : 0;
}

CpuCaches read_caches() {
#if defined(__linux__) && defined(_SC_LEVEL1_DCACHE_SIZE)
  CpuCaches c{cache_bytes(_SC_LEVEL1_DCACHE_SIZE), cache_bytes(_SC_LEVEL2_CACHE_SIZE),
              cache_bytes(_SC_LEVEL3_CACHE_SIZE)};
#else
  CpuCaches c{0, 0, 0};
#endif
  if (const int64_t l2 = l2_override()) c.l2 = l2;
  return c;
}

// Both read when the library is loaded (the module's import), never lazily: a fork while
// another thread ran a lazy initialisation would leave the child waiting on its guard (see
// ThreadPool::global_). The tuning from the caches (defined after them: initialised after).
const CpuCaches caches_at_load = read_caches();
const int64_t l2_at_load = caches_at_load.l2 > 0 ? caches_at_load.l2 : int64_t{1} << 20;
const CpuTuning tuning_at_load{l2_at_load / 2, l2_at_load / 2};

}  // namespace

const CpuCaches& cpu_caches() { return caches_at_load; }

const CpuTuning& cpu_tuning() { return tuning_at_load; }

}  // namespace rnnfast
