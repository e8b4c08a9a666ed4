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

// The bits of the nearest bfloat16 (in the low half) to the float32 of bits u, ties to even,
// subnormals kept, as ml_dtypes rounds, bit for bit: a NaN becomes the quiet NaN of its sign
// (0x7fc0 or 0xffc0), as ml_dtypes makes it. U: uint32_t, or a GCC vector of them (lane by
// lane). One expression, no branch: the compiler vectorises loops over it.
template <typename U>
inline U bf16_bits(U u) {
  const U rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const U nan = ((u >> 16) & 0x8000u) | 0x7fc0u;
  return (u & 0x7fffffffu) > 0x7f800000u ? nan : rounded;
}

inline Bf16 to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return Bf16{static_cast<uint16_t>(bf16_bits(u))};
}

}  // namespace rnnfast
