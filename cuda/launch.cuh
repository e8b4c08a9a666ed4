// How rnnfast's kernels are launched and what they share, on a GPU and in the emulator
// (emulator/emulator.h, built with RNNFAST_CUDA_EMULATED defined): the one place where the two
// builds differ. Kernel sources include this instead of <cuda_runtime.h>.
//
//   launch<kernel>(grid, block, shared_bytes, stream, args...)       kernel<<<...>>>(args...)
//   launch_cooperative<kernel>(grid, block, shared_bytes, stream, args...)
//       cudaLaunchCooperativeKernel: every block resident at once, so that the kernel may call
//       grid_sync(), the barrier over the whole grid (cooperative_groups' grid.sync())
//   RNNFAST_SHARED(Type, name);     a __shared__ variable (Type: an alias, e.g. of an array)
//   dynamic_shared<T>()             the launch's dynamic shared memory (shared_bytes long)
//
// The launchers exist where nvcc compiles (and in the emulator); the host compiler of the
// binding sees only the runtime's types. Both return the launch's status (on the GPU, errors of
// the kernel's execution surface later, as always in CUDA; in the emulator the launch has run
// when they return).
#pragma once

#include <cstddef>
#include <string>
#include <tuple>

#if defined(RNNFAST_CUDA_EMULATED)
#include "emulator/emulator.h"
#else
#include <cuda_runtime.h>
#if defined(__CUDACC__)
#include <cooperative_groups.h>
#endif
#endif

namespace rnnfast::cuda {

#if defined(RNNFAST_CUDA_EMULATED)

// One copy per block, wherever the block runs (never a plain __shared__: see emulator.h). The
// static's address identifies the declaration (one per instantiation of a template).
#define RNNFAST_SHARED(Type, name)  \
  static char name##_site;          \
  Type& name = *static_cast<Type*>( \
      ::rnnfast::cuda::emulator::block_shared(&name##_site, sizeof(Type), alignof(Type)))

namespace detail {
// "rnnfast::cuda::{anonymous}::forward_step<float, rnnfast::cells::Lstm>": the kernel's name as
// the compiler spells the template argument.
template <auto kernel>
const char* kernel_name() {
  static const std::string name = [](const std::string& text) {
    // "const char* ...::kernel_name() [with auto kernel = NAME]"
    const size_t begin = text.find("kernel = "), end = text.rfind(']');
    if (begin == std::string::npos || end < begin) return text;
    return text.substr(begin + 9, end - begin - 9);
  }(__PRETTY_FUNCTION__);
  return name.c_str();
}
}  // namespace detail

template <auto kernel, class... Args>
cudaError_t launch(dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t /*stream*/,
                   const Args&... args) {
  return emulator::run(detail::kernel_name<kernel>(), grid, block, shared_bytes, false,
                       [&] { kernel(args...); });
}

template <auto kernel, class... Args>
cudaError_t launch_cooperative(dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t /*stream*/,
                               const Args&... args) {
  return emulator::run(detail::kernel_name<kernel>(), grid, block, shared_bytes, true,
                       [&] { kernel(args...); });
}

inline void grid_sync() { emulator::grid_sync(); }

template <typename T>
T* dynamic_shared() {
  return static_cast<T*>(emulator::dynamic_shared());
}

#elif defined(__CUDACC__)  // the GPU, in code that nvcc compiles

#define RNNFAST_SHARED(Type, name) __shared__ Type name

template <auto kernel, class... Args>
cudaError_t launch(dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
                   const Args&... args) {
  kernel<<<grid, block, shared_bytes, stream>>>(args...);
  return cudaGetLastError();
}

namespace detail {
template <class... Params, class... Args>
cudaError_t launch_cooperative(void (*kernel)(Params...), dim3 grid, dim3 block,
                               size_t shared_bytes, cudaStream_t stream, const Args&... args) {
  // Dynamic shared memory beyond the default 48 KiB a block must be asked for.
  if (shared_bytes > 48 * 1024) {
    const cudaError_t status = cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                                                    cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                    static_cast<int>(shared_bytes));
    if (status != cudaSuccess) return status;
  }
  // The arguments converted to the kernel's parameter types, and their addresses.
  auto params = std::tuple<Params...>(args...);
  return std::apply(
      [&](auto&... p) {
        void* addresses[] = {static_cast<void*>(&p)...};
        return cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), grid, block,
                                           addresses, shared_bytes, stream);
      },
      params);
}
}  // namespace detail

template <auto kernel, class... Args>
cudaError_t launch_cooperative(dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
                               const Args&... args) {
  return detail::launch_cooperative(kernel, grid, block, shared_bytes, stream, args...);
}

__device__ __forceinline__ void grid_sync() { cooperative_groups::this_grid().sync(); }

template <typename T>
__device__ __forceinline__ T* dynamic_shared() {
  extern __shared__ __align__(16) unsigned char rnnfast_dynamic_shared[];
  return reinterpret_cast<T*>(rnnfast_dynamic_shared);
}

#endif

}  // namespace rnnfast::cuda
