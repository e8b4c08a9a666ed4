// The emulator's own test kernels, run by tests/test_cuda_kernels_emulated.py through
// rnnfast._cuda_emulated.
#pragma once

#include <cstdint>

#include "emulator.h"

namespace rnnfast::cuda::emulator::self_test {

// One block of `threads` threads whose first `waiting` ones wait at a __syncthreads that the
// others never reach: with waiting < threads, cudaErrorLaunchTimeout (the deadlock, found at once).
cudaError_t divergent_barrier(int threads, int waiting);

// A cooperative launch of `blocks` x `threads`: thread t of block b writes b * threads + t to
// global memory and its block index to the block's shared memory, meets every other thread at
// grid_sync(), then stores in seen[b * threads + t] what thread t of block (b + 1) % blocks
// wrote, or -1 where its block's shared memory no longer holds b (blocks sharing it).
cudaError_t grid_sync_exchange(int blocks, int threads, int64_t* seen);

// mma.cuh on one warp: d [16, 8] = c + a b with a [16, K] and b [K, 8] row-major (float32,
// rounded by load_a and load_b; K = 16 for "bfloat16" and "float16", 8 for "tf32").
cudaError_t mma_tile(const char* rounding, const float* a, const float* b, const float* c,
                     float* d);

// mma.cuh's layout table: for each lane and element of its A, B and C fragments, (row, column)
// in [lane][element][2] (A: 8 elements for 16-bit operands, 4 for TF32; B: 4 or 2; C: 4).
void mma_positions(const char* rounding, int* a, int* b, int* c);

}  // namespace rnnfast::cuda::emulator::self_test
