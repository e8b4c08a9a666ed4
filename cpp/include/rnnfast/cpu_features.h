// What the CPU running rnnfast supports, read once at run time.
#pragma once

#include <string>
#include <vector>

namespace rnnfast {

// Names of the instruction-set extensions rnnfast cares about that this CPU has
// ("sse2", "avx", "avx2", "fma", "avx512f", ...); empty on non-x86 machines.
std::vector<std::string> cpu_features();

}  // namespace rnnfast
