// Activations shared by every cell, on the host and on the device.
//
// exp, tanh and sigmoid are written as branch-free arithmetic (range reduction, a polynomial,
// the exponent built from integer bits), with no library call, so that the compiler vectorizes
// the loops over hidden units that call them: this is how the CPU kernels get their vector
// activations on every instruction set from one source. Measured maximum errors against
// float64, relative to |f(x)| (tests/test_activations.py checks them on a dense grid):
//   float32: exp <= 2 ulp (2.4e-7); tanh, sigmoid <= 3e-7 (sigmoid for z >= -80; below, where
//            sigmoid(z) < 2e-35, it returns a value in [0, 1e-37), and 0 below -88)
//   float64: exp <= 2 ulp (4.4e-16); tanh, sigmoid <= 3 ulp (6.7e-16)
// NaN in gives NaN out; +-inf and huge arguments saturate (tanh -> +-1, sigmoid -> 0 or 1).
// exp_ clamps its argument to [-87, 88] (float) or [-708, 708] (double), where 2^n stays a
// normal number: its bound holds inside that range (tested on [-80, 80]), which is all that
// sigmoid and tanh need.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "rnnfast/common.h"

namespace rnnfast::cells {

namespace detail {

template <typename T>
struct ExpConstants;

template <>
struct ExpConstants<float> {
  using Bits = uint32_t;
  static constexpr int kMantissaBits = 23, kExponentBias = 127;
  static constexpr float kShifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  static constexpr float kLog2e = 1.44269504088896341f;
  static constexpr float kLn2Hi = 0.693145751953125f;  // ln 2 split for exact n * ln2_hi
  static constexpr float kLn2Lo = 1.42860682030941723212e-6f;
  static constexpr float kMax = 88.0f;   // keeps 2^n normal: n <= 127
  static constexpr float kMin = -87.0f;  // n >= -126
  static constexpr int kTerms = 7;       // e^r - 1 = r (1 + r/2! + ... + r^6/7!), |r| <= ln2/2
};

template <>
struct ExpConstants<double> {
  using Bits = uint64_t;
  static constexpr int kMantissaBits = 52, kExponentBias = 1023;
  static constexpr double kShifter = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr double kLog2e = 1.4426950408889634074;
  static constexpr double kLn2Hi = 6.93147180369123816490e-01;
  static constexpr double kLn2Lo = 1.90821492927058770002e-10;
  static constexpr double kMax = 708.0;
  static constexpr double kMin = -708.0;
  static constexpr int kTerms = 14;  // truncation error below 1e-17 for |r| <= ln2/2
};

template <typename To, typename From>
RNNFAST_HD To bit_cast(From from) {
  To to;
  std::memcpy(&to, &from, sizeof(To));
  return to;
}

template <typename T>
RNNFAST_HD constexpr T factorial(int k) {
  T f = T(1);
  for (int i = 2; i <= k; ++i) f *= T(i);
  return f;
}

// 1/k! + r/(k+1)! + ... + r^(n-k)/n! by Horner, one multiply-add per term; the coefficients
// are compile-time constants (written as a loop with the division inside, GCC 12 did not fold
// them and left the activations scalar).
template <typename T, int k, int n>
RNNFAST_HD T taylor_tail(T r) {
  constexpr T coefficient = T(1) / factorial<T>(k);
  if constexpr (k == n)
    return coefficient;
  else
    return coefficient + r * taylor_tail<T, k + 1, n>(r);
}

// e^x = scale * (1 + em1) with scale = 2^n and em1 = e^r - 1, |r| <= ln2/2, computed without
// cancellation (em1 is accurate relative to itself even for tiny x). x is clamped to the range
// where 2^n is a normal number; NaN stays NaN.
template <typename T>
RNNFAST_HD void exp_parts(T x, T& scale, T& em1) {
  using K = ExpConstants<T>;
  using Bits = typename K::Bits;
  x = x > K::kMax ? K::kMax : x;
  x = x < K::kMin ? K::kMin : x;
  const T shifted = x * K::kLog2e + K::kShifter;  // n in the low bits of the mantissa
  const T n = shifted - K::kShifter;
  const T r = (x - n * K::kLn2Hi) - n * K::kLn2Lo;
  em1 = r * taylor_tail<T, 1, K::kTerms>(r);  // e^r - 1 = r * (1 + r/2! + ... + r^(n-1)/n!)
  // Unsigned arithmetic: wraps harmlessly for NaN (whose result is NaN anyway).
  const Bits n_bits = bit_cast<Bits>(shifted) - bit_cast<Bits>(K::kShifter);
  scale = bit_cast<T>(static_cast<Bits>((n_bits + Bits(K::kExponentBias)) << K::kMantissaBits));
}

}  // namespace detail

template <class V>
RNNFAST_HD V exp_(V z) {
  V scale, em1;
  detail::exp_parts(z, scale, em1);
  return scale + scale * em1;
}

// tanh(z) = sign(z) * expm1(2|z|) / (expm1(2|z|) + 2): accurate near 0, 1 for large |z|.
template <class V>
RNNFAST_HD V tanh_(V z) {
  using std::copysign;
  using std::fabs;
  V scale, em1;
  const V a = fabs(z);
  detail::exp_parts(a > V(40) ? V(40) : V(2) * a, scale, em1);
  const V expm1 = scale * em1 + (scale - V(1));
  return copysign(expm1 / (expm1 + V(2)), z);
}

// 1 / (1 + e^-z): e^-z saturates instead of overflowing, so this is tiny for very negative z,
// never NaN; and exactly 0 below -kMax (true value < 1e-38 in float32), so that sigmoid(-inf)
// is 0 as in IEEE arithmetic: a GRU's r = 0 times an infinite W_hn h is then NaN, as in
// PyTorch and the reference, not a finite, wrong, value.
template <class V>
RNNFAST_HD V sigmoid(V z) {
  const V s = V(1) / (V(1) + exp_(-z));
  return z < -detail::ExpConstants<V>::kMax ? V(0) : s;
}

// max(z, 0) that propagates NaN (as PyTorch's relu does): NaN < 0 is false.
template <class V>
RNNFAST_HD V relu(V z) {
  return z < V(0) ? V(0) : z;
}

}  // namespace rnnfast::cells
