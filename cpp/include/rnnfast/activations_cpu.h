// The cells' activations over arrays, on the instruction set in use (for tests and checks).
#pragma once

#include <cstdint>

namespace rnnfast {

enum class Activation : int { Exp, Tanh, Sigmoid };

template <typename T>
void apply_activation(Activation f, const T* in, T* out, int64_t n);

}  // namespace rnnfast
