// The emulator's own test kernels (see self_test.h), written as CUDA code.
#include "self_test.h"

#include <cstring>
#include <vector>

#include "../launch.cuh"
#include "../mma.cuh"

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

template <class Op>
__global__ void mma_tile_kernel(const float* a, const float* b, const float* c, float* d) {
  mma::FragmentA<Op> fa;
  mma::FragmentB<Op> fb;
  mma::Accumulator acc;
  mma::load_a(fa, [&](int row, int k) { return a[row * Op::kK + k]; });
  mma::load_b(fb, [&](int k, int col) { return b[k * mma::kN + col]; });
  mma::for_each(acc, [&](int row, int col, float& v) { v = c[row * mma::kN + col]; });
  mma::mma(acc, fa, fb);
  mma::for_each(acc, [&](int row, int col, float& v) { d[row * mma::kN + col] = v; });
}

// f(Op{}) for the Op of a rounding's name.
template <class F>
auto with_op(const char* rounding, F&& f) {
  if (std::strcmp(rounding, "bfloat16") == 0) return f(mma::Bf16{});
  if (std::strcmp(rounding, "float16") == 0) return f(mma::F16{});
  return f(mma::Tf32{});
}

}  // namespace

cudaError_t mma_tile(const char* rounding, const float* a, const float* b, const float* c,
                     float* d) {
  return with_op(rounding, [&](auto op) {
    return launch<mma_tile_kernel<decltype(op)>>(dim3(1), dim3(32), 0, nullptr, a, b, c, d);
  });
}

void mma_positions(const char* rounding, int* a, int* b, int* c) {
  with_op(rounding, [&](auto op) {
    using Op = decltype(op);
    constexpr int P = mma::kPerRegister<Op>;
    for (int lane = 0; lane < 32; ++lane) {
      for (int e = 0; e < 4 * P; ++e, a += 2) {
        const mma::Position p = mma::a_position<Op>(lane, e);
        a[0] = p.row, a[1] = p.col;
      }
      for (int e = 0; e < 2 * P; ++e, b += 2) {
        const mma::Position p = mma::b_position<Op>(lane, e);
        b[0] = p.row, b[1] = p.col;
      }
      for (int e = 0; e < 4; ++e, c += 2) {
        const mma::Position p = mma::c_position(lane, e);
        c[0] = p.row, c[1] = p.col;
      }
    }
  });
}

cudaError_t divergent_barrier(int threads, int waiting) {
  return launch<divergent_barrier_kernel>(dim3(1), dim3(threads), 0, nullptr, waiting);
}

cudaError_t grid_sync_exchange(int blocks, int threads, int64_t* seen) {
  std::vector<int64_t> written(static_cast<size_t>(blocks) * threads, -1);
  return launch_cooperative<grid_sync_exchange_kernel>(dim3(blocks), dim3(threads), 0, nullptr,
                                                       written.data(), seen);
}

}  // namespace rnnfast::cuda::emulator::self_test
