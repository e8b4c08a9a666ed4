// rnnfast: bfloat16, the upper half of an IEEE float32 (8 exponent bits, 7 mantissa bits), as
// NumPy holds it (ml_dtypes.bfloat16) and as AMX and AVX512-BF16 multiply it. Framework-free.
#pragma once

#include <cstdint>
#include <cstring>

namespace rnnfast {

struct Bf16 {
  uint16_t bits;
};

inline float to_float(Bf16 v) {
  const uint32_t u = uint32_t{v.bits} << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Rounds to the nearest bfloat16, ties to even, as ml_dtypes and the hardware's conversions do;
// a NaN stays a (quiet) NaN.
inline Bf16 to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return Bf16{static_cast<uint16_t>((u >> 16) | 0x40)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return Bf16{static_cast<uint16_t>(u >> 16)};
}

}  // namespace rnnfast
