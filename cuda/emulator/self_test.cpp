// The emulator's own test kernels (see self_test.h), written as CUDA code.
#include "self_test.h"

#include <vector>

#include "../launch.cuh"

namespace rnnfast::cuda::emulator::self_test {
namespace {

__global__ void divergent_barrier_kernel(int waiting) {
  if (static_cast<int>(threadIdx.x) < waiting) __syncthreads();
}

__global__ void grid_sync_exchange_kernel(int64_t* written, int64_t* seen) {
  RNNFAST_SHARED(int64_t, block_index);
  const int64_t b = blockIdx.x, t = threadIdx.x, threads = blockDim.x;
  written[b * threads + t] = b * threads + t;
  if (t == 0) block_index = b;
  __syncthreads();
  grid_sync();
  const int64_t next = (b + 1) % gridDim.x;
  seen[b * threads + t] = block_index == b ? written[next * threads + t] : -1;
}

}  // namespace

cudaError_t divergent_barrier(int threads, int waiting) {
  return launch<divergent_barrier_kernel>(dim3(1), dim3(threads), 0, nullptr, waiting);
}

cudaError_t grid_sync_exchange(int blocks, int threads, int64_t* seen) {
  std::vector<int64_t> written(static_cast<size_t>(blocks) * threads, -1);
  return launch_cooperative<grid_sync_exchange_kernel>(dim3(blocks), dim3(threads), 0, nullptr,
                                                       written.data(), seen);
}

}  // namespace rnnfast::cuda::emulator::self_test
