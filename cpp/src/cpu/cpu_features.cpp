#include "rnnfast/cpu_features.h"

#include <cerrno>
#include <cstdlib>
#include <fstream>

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

// The positive integer that `text` starts with, else 0; *rest gets what follows it.
int64_t leading_positive(const char* text, const char** rest) {
  char* end = nullptr;
  errno = 0;
  const long long value = std::strtoll(text, &end, 10);
  *rest = end;
  return errno == 0 && end != text && value > 0 ? value : 0;
}

#if defined(__linux__)
// The size of CPU 0's data or unified cache at `level` as the kernel describes it
// (/sys/devices/system/cpu/cpu0/cache/index*/: one instance of the cache, the one that CPU
// shares with those in its shared_cpu_list); 0 where the kernel does not say. Preferred to
// glibc's sysconf, which on AMD EPYC answers the L3 of the whole package (256 MB on a Zen 3
// EPYC, whose cores each reach the 32 MB of their own complex).
int64_t sysfs_cache_bytes(int level) {
  for (int index = 0; index < 16; ++index) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index);
    std::ifstream level_file(dir + "/level"), type_file(dir + "/type"), size_file(dir + "/size");
    int found_level = 0;
    std::string type, size;
    if (!(level_file >> found_level)) break;  // no such index: the last one was read
    if (found_level != level || !(type_file >> type) || type == "Instruction") continue;
    if (!(size_file >> size)) return 0;
    const char* unit = nullptr;
    const int64_t value = leading_positive(size.c_str(), &unit);
    return value * (*unit == 'K' ? 1 << 10 : *unit == 'M' ? 1 << 20 : *unit == '\0' ? 1 : 0);
  }
  return 0;
}
#endif

// The size of this machine's data or unified cache at `level` (1 to 3), in bytes: sysfs's where
// Linux gives it, else sysconf's (glibc: from cpuid); 0 where neither can tell.
int64_t cache_bytes(int level) {
  int64_t bytes = 0;
#if defined(__linux__)
  bytes = sysfs_cache_bytes(level);
#if defined(_SC_LEVEL1_DCACHE_SIZE)
  if (bytes == 0) {
    const long conf = sysconf(level == 1   ? _SC_LEVEL1_DCACHE_SIZE
                              : level == 2 ? _SC_LEVEL2_CACHE_SIZE
                                           : _SC_LEVEL3_CACHE_SIZE);
    bytes = conf > 0 ? conf : 0;  // sysconf answers 0 or -1 where unknown
  }
#endif
#else
  (void)level;
#endif
  return bytes;
}

// RNNFAST_L2_CACHE_BYTES as a positive integer, else 0.
int64_t l2_override() {
  const char* text = std::getenv("RNNFAST_L2_CACHE_BYTES");
  if (text == nullptr) return 0;
  const char* rest = nullptr;
  const int64_t bytes = leading_positive(text, &rest);
  return *rest == '\0' ? bytes : 0;
}

CpuCaches read_caches() {
  CpuCaches c{cache_bytes(1), cache_bytes(2), cache_bytes(3)};
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
