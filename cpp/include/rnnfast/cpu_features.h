// What the CPU running rnnfast supports, read once at run time.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace rnnfast {

// Names of the instruction-set extensions rnnfast cares about that this CPU has
// ("sse2", "avx", "avx2", "fma", "avx512f", ...); empty on non-x86 machines.
std::vector<std::string> cpu_features();

// The data caches of one core (L3: the instance that core shares with its neighbours), in
// bytes: on Linux as the kernel describes them (sysfs), else as the C library reads them from
// the CPU (cpuid on x86); 0 where neither can tell. RNNFAST_L2_CACHE_BYTES (a positive integer)
// replaces the L2 size read: for tests of the choices made from it, and for machines (virtual
// ones) that report it wrong.
struct CpuCaches {
  int64_t l1d, l2, l3;
};
const CpuCaches& cpu_caches();

// The kernels' parameters derived from the caches, chosen once per process. Each changes only
// speed, never a result (tests/kernels/test_cpu_dispatch.py).
struct CpuTuning {
  // The recurrence splits a step's batch rows between the threads, instead of W_hh's columns,
  // when W_hh's packed panels take at most this: half of the L2 (where each thread keeps all of
  // them), the other half for the rows and the step's other operands. An L2 of unknown size
  // counts as 1 MB.
  int64_t row_split_panel_bytes;
  // The GEMM multiplies A a block of rows at a time, each block at most this (at least one
  // chunk of rows): half of the L2, so that the block stays there while the panels of B stream
  // past it. Which rows go together changes no sum.
  int64_t gemm_block_bytes;
};
const CpuTuning& cpu_tuning();

}  // namespace rnnfast
