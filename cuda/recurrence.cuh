// CUDA recurrence, standard path: one fused kernel launch per step (recurrent matmul tile + the
// cell's gate math in registers), forward and backward through time. Framework-free.
//
// The arguments are the CPU kernel's (rnnfast/recurrence.h: same shapes, same training
// workspace layout, same meaning of every pointer), here device pointers. The launchers enqueue
// their kernels on `stream` and return at once: they allocate nothing and never synchronize.
// They return the first launch error (cudaSuccess otherwise); errors of the kernels' execution
// surface, as always in CUDA, at a later synchronizing call.
//
// Not yet here (later steps of the CUDA backend): launch overhead cut by CUDA graphs or several
// steps per launch, the persistent kernel that keeps W_hh on chip, tensor cores, float16 and
// bfloat16 storage.
#pragma once

#include <cuda_runtime.h>

#include "rnnfast/recurrence.h"

namespace rnnfast::cuda {

template <typename T>
cudaError_t recurrent_forward(const ForwardArgs<T>& args, cudaStream_t stream);

template <typename T>
cudaError_t recurrent_backward(const BackwardArgs<T>& args, cudaStream_t stream);

}  // namespace rnnfast::cuda
