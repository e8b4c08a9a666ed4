// Scalar activations shared by every cell, on the host and on the device.
// They are templates over the value type V so that a SIMD vector type with the same operators
// and overloads can reuse the cell math unchanged.
#pragma once

#include <cmath>

#include "rnnfast/common.h"

namespace rnnfast::cells {

template <class V>
RNNFAST_HD V exp_(V z) {
  using std::exp;
  return exp(z);
}

template <class V>
RNNFAST_HD V tanh_(V z) {
  using std::tanh;
  return tanh(z);
}

// 1 / (1 + e^-z): e^-z overflows to inf for very negative z, giving exactly 0, never NaN.
template <class V>
RNNFAST_HD V sigmoid(V z) {
  return V(1) / (V(1) + exp_(-z));
}

// max(z, 0) that propagates NaN (as PyTorch's relu does): NaN < 0 is false.
template <class V>
RNNFAST_HD V relu(V z) {
  return z < V(0) ? V(0) : z;
}

}  // namespace rnnfast::cells
