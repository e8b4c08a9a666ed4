// The cells' activations applied to an array, compiled per instruction set like the kernels
// (same vectorized code as in the kernels' loops), so that tests can measure their error.
#include "rnnfast/cells/activations.h"
#include "rnnfast/activations_cpu.h"

#ifndef RNNFAST_ISA_NS
#error "compile with -DRNNFAST_ISA_NS=<namespace of this instruction set>"
#endif

namespace rnnfast {
namespace RNNFAST_ISA_NS {

template <typename T>
void apply_activation(Activation f, const T* in, T* out, int64_t n) {
  switch (f) {
    case Activation::Exp:
      for (int64_t i = 0; i < n; ++i) out[i] = cells::exp_(in[i]);
      break;
    case Activation::Tanh:
      for (int64_t i = 0; i < n; ++i) out[i] = cells::tanh_(in[i]);
      break;
    case Activation::Sigmoid:
      for (int64_t i = 0; i < n; ++i) out[i] = cells::sigmoid(in[i]);
      break;
  }
}

template void apply_activation<float>(Activation, const float*, float*, int64_t);
template void apply_activation<double>(Activation, const double*, double*, int64_t);

}  // namespace RNNFAST_ISA_NS
}  // namespace rnnfast
