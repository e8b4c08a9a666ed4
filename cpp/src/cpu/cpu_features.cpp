#include "rnnfast/cpu_features.h"

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

}  // namespace rnnfast
