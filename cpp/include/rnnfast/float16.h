// rnnfast: float16 (IEEE binary16) values as NumPy stores them (numpy.float16). Framework-free.
#pragma once

#include <cstdint>
#include <cstring>

namespace rnnfast {

struct F16 {
  uint16_t bits;
};

// Rounds to the nearest float16, ties to even, as NumPy's cast does, bit for bit: subnormal
// results kept, 65520 and beyond to inf, and a NaN to NumPy's NaN of its sign (0x7c00 plus the
// top 10 bits of its payload, at least 1). (Selects, no branches: loops over it vectorise.)
inline F16 to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  const uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
  // |f| >= 2^-14: the exponent rebiased (127 -> 15) and the 13 bits dropped rounded to nearest
  // even; a carry out of the mantissa moves into the exponent (up to inf).
  const uint32_t normal = (a - (112u << 23) + 0xfffu + ((a >> 13) & 1u)) >> 13;
  // |f| < 2^-14: |f| + 0.5 has the 10 bits of the subnormal result at the bottom of its
  // mantissa (its unit in the last place is 2^-24, the smallest float16), rounded to nearest
  // even by the addition itself; 0.5's bits taken off leave them.
  float magnitude, shifted;
  std::memcpy(&magnitude, &a, sizeof a);
  shifted = magnitude + 0.5f;
  uint32_t shifted_bits;
  std::memcpy(&shifted_bits, &shifted, sizeof shifted);
  const uint32_t subnormal = shifted_bits - (126u << 23);
  const uint32_t nan = 0x7c00u | ((a & 0x7fffffu) >> 13);
  const uint32_t bits = a > 0x7f800000u    ? nan + (nan == 0x7c00u)
                        : a >= 0x47800000u ? 0x7c00u  // 65536 and beyond, inf
                        : a < (113u << 23) ? subnormal
                                           : normal;
  return F16{static_cast<uint16_t>(sign | bits)};
}

}  // namespace rnnfast
