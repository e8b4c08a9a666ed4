// The emulator's own test kernels, run by tests/test_cuda_kernels_emulated.py through
// rnnfast._cuda_emulated.
#pragma once

#include <cstdint>

#include "emulator.h"

namespace rnnfast::cuda::emulator::self_test {

// One block of `threads` threads whose first `waiting` ones wait at a __syncthreads that the
// others never reach: with waiting < threads, cudaErrorLaunchTimeout after the timeout.
cudaError_t divergent_barrier(int threads, int waiting);

// A cooperative launch of `blocks` x `threads`: thread t of block b writes b * threads + t to
// global memory and its block index to the block's shared memory, meets every other thread at
// grid_sync(), then stores in seen[b * threads + t] what thread t of block (b + 1) % blocks
// wrote, or -1 where its block's shared memory no longer holds b (blocks sharing it).
cudaError_t grid_sync_exchange(int blocks, int threads, int64_t* seen);

}  // namespace rnnfast::cuda::emulator::self_test
