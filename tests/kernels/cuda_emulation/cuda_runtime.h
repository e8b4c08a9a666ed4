// Host emulation of the few CUDA features that cuda/recurrence.cu uses, so that its kernels'
// indexing, tiling and step structure are tested against the CPU kernels on machines without a
// GPU (tests/test_cuda_emulation.py). Blocks run one after another; the threads of a block are
// std::threads that meet at a std::barrier in __syncthreads; __shared__ arrays become static
// locals, shared by the threads of the (one) running block.
//
// What this does not test: the CUDA compiler's code, the GPU's memory model and races between
// blocks, launch errors, speed. tests/test_cuda.py does that on a GPU.
#pragma once

#include <barrier>
#include <cstddef>
#include <thread>
#include <vector>

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
inline std::barrier<>* block_barrier;
inline void __syncthreads() { block_barrier->arrive_and_wait(); }

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(threads)

using cudaError_t = int;
constexpr cudaError_t cudaSuccess = 0;
using cudaStream_t = void*;
inline cudaError_t cudaGetLastError() { return cudaSuccess; }

// kernel<<<grid, block, shared_bytes, stream>>>(args...) is rewritten to this call.
template <class Kernel, class... Args>
void emulate_launch(Kernel kernel, dim3 grid, dim3 block, size_t, cudaStream_t, Args... args) {
  gridDim = grid;
  blockDim = block;
  for (unsigned by = 0; by < grid.y; ++by)
    for (unsigned bx = 0; bx < grid.x; ++bx) {
      std::barrier<> barrier(block.x * block.y);
      block_barrier = &barrier;
      std::vector<std::thread> threads;
      for (unsigned ty = 0; ty < block.y; ++ty)
        for (unsigned tx = 0; tx < block.x; ++tx)
          threads.emplace_back([&, tx, ty] {
            threadIdx = dim3(tx, ty);
            blockIdx = dim3(bx, by);
            kernel(args...);
          });
      for (std::thread& thread : threads) thread.join();
    }
}
