// CUDA recurrence, standard path (see recurrence.cuh): one kernel launch per step.
//
// Forward, launch t:   acc[b, g, j] = b_hh[g*H + j] + sum_k h_{t-1}[b, k] W_hh[g*H + j, k]
//                      then, in registers, the cell's forward for unit j of row b.
// Backward, launch s:  acc[b, j] = sum_k dzh_{s+1}[b, k] W_hh[k, j]   (k over G*H)
//                      dh_s = acc + dh_direct_{s+1} + dy[s], then the cell's backward of step
//                      s for unit j of row b; a last launch (s = -1) writes dh0 = acc + dh_direct.
// The same structure as the CPU kernel (cpp/src/cpu/recurrence.cpp): the epilogue of one step's
// matmul is the gate math, and the running gradients dh_direct and dc live in dh0 and dc0.
//
// Tiles: a block of kUnits x kRowThreads threads owns kUnits consecutive hidden units (one per
// lane of a warp) of kRows batch rows; each thread accumulates all G gates of its unit for
// kRowsPerThread rows, so the cell's math (cells/*.h) runs on the accumulators where they are.
// The matmul streams the depth through shared memory kDepth at a time. Launches on
// different steps are ordered by the stream: that is the only synchronization between steps.
//
// Types: T is the storage type, Acc the accumulation and math type (T itself for float and
// double; float for 16-bit storage once it is added).
#include <algorithm>
#include <cstdint>

#include "recurrence.cuh"
#include "rnnfast/cells/cells.h"

namespace rnnfast::cuda {
namespace {

constexpr int kUnits = 32;          // hidden units per block: the lanes of a warp
constexpr int kRowThreads = 4;      // threads along the batch (blockDim.y)
constexpr int kRowsPerThread = 4;   // batch rows per thread (register tile)
constexpr int kRows = kRowThreads * kRowsPerThread;  // batch rows per block
constexpr int kDepth = 32;          // depth of one shared-memory tile of the matmul
constexpr int kThreads = kUnits * kRowThreads;
constexpr int64_t kMaxGridY = 65535;

template <typename T>
struct AccumulatorOf {
  using type = T;
};

__host__ __device__ constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// tile[r][kk] = a[(row0 + r) * ld + k0 + kk] for a row-major matrix of `rows` rows whose
// columns 0 .. depth - 1 are used, zero outside. Consecutive threads read consecutive columns.
template <typename Acc, typename T>
__device__ void load_rows(Acc (&tile)[kRows][kDepth], const T* a, int64_t ld, int64_t row0,
                          int64_t rows, int64_t k0, int64_t depth) {
  const int thread = threadIdx.y * kUnits + threadIdx.x;
  for (int i = thread; i < kRows * kDepth; i += kThreads) {
    const int r = i / kDepth, kk = i % kDepth;
    const int64_t row = row0 + r, k = k0 + kk;
    tile[r][kk] = row < rows && k < depth ? static_cast<Acc>(a[row * ld + k]) : Acc(0);
  }
}

// One forward step t for every batch row and the units of block x.
template <typename T, class C>
__global__ void __launch_bounds__(kThreads) forward_step(ForwardArgs<T> a, int64_t t) {
  using Acc = typename AccumulatorOf<T>::type;
  constexpr int G = C::kGates, S = C::kSaved > 0 ? C::kSaved : 1;
  __shared__ Acc h_tile[kRows][kDepth];        // h_{t-1}[b0 + r, k0 + kk]
  // W_hh[g*H + j0 + u, k0 + kk] at [kk][g*kUnits + u]. The row is padded by one: the loads
  // below write a column (consecutive kk) per warp, which would otherwise hit a single bank.
  __shared__ Acc w_tile[kDepth][G * kUnits + 1];

  const int64_t B = a.batch, H = a.hidden, GH = G * H;
  const int u = threadIdx.x;
  const int64_t j0 = blockIdx.x * int64_t(kUnits), j = j0 + u;
  const T* h_prev = t == 0 ? a.h0 : a.y + (t - 1) * B * H;
  const T* c_prev = t == 0 ? a.c0 : a.c_n;  // the LSTM's c_n is its running state
  const int thread = threadIdx.y * kUnits + u;

  for (int64_t tile = blockIdx.y; tile < ceil_div(B, kRows); tile += gridDim.y) {
    const int64_t b0 = tile * kRows + threadIdx.y * kRowsPerThread;  // this thread's first row
    Acc acc[kRowsPerThread][G];
    for (int g = 0; g < G; ++g) {
      const Acc bias = a.b_hh != nullptr && j < H ? static_cast<Acc>(a.b_hh[g * H + j]) : Acc(0);
      for (int r = 0; r < kRowsPerThread; ++r) acc[r][g] = bias;
    }
    for (int64_t k0 = 0; k0 < H; k0 += kDepth) {
      load_rows(h_tile, h_prev, H, tile * kRows, B, k0, H);
      // Consecutive threads read consecutive k of one row of W_hh.
      for (int i = thread; i < kDepth * G * kUnits; i += kThreads) {
        const int kk = i % kDepth, gu = i / kDepth, g = gu / kUnits, uu = gu % kUnits;
        const int64_t k = k0 + kk, unit = j0 + uu;
        w_tile[kk][gu] = unit < H && k < H ? static_cast<Acc>(a.w_hh[(g * H + unit) * H + k])
                                           : Acc(0);
      }
      __syncthreads();
      for (int kk = 0; kk < kDepth; ++kk) {
        Acc w[G];
        for (int g = 0; g < G; ++g) w[g] = w_tile[kk][g * kUnits + u];
        for (int r = 0; r < kRowsPerThread; ++r) {
          const Acc h = h_tile[threadIdx.y * kRowsPerThread + r][kk];  // broadcast in the warp
          for (int g = 0; g < G; ++g) acc[r][g] += h * w[g];
        }
      }
      __syncthreads();  // the tiles are refilled next
    }
    if (j >= H) continue;
#pragma unroll  // keeps acc[r] in registers
    for (int r = 0; r < kRowsPerThread; ++r) {
      const int64_t b = b0 + r, bj = b * H + j, tb = t * B + b;
      if (b >= B) break;
      Acc zx[G], saved[S], h;
      for (int g = 0; g < G; ++g) zx[g] = static_cast<Acc>(a.zx[tb * GH + g * H + j]);
      Acc c = C::kHasCellState ? static_cast<Acc>(c_prev[bj]) : Acc(0);
      C::forward(zx, acc[r], static_cast<Acc>(h_prev[bj]), c, h, saved);
      a.y[tb * H + j] = static_cast<T>(h);
      if (t == a.steps - 1) a.h_n[bj] = static_cast<T>(h);
      if constexpr (C::kHasCellState) a.c_n[bj] = static_cast<T>(c);
      if constexpr (C::kSaved > 0) {
        if (a.saved != nullptr)
          for (int s = 0; s < C::kSaved; ++s)
            a.saved[tb * C::kSaved * H + s * H + j] = static_cast<T>(saved[s]);
      }
    }
  }
}

// Backward launch s (T-1 down to 0, then -1 for dh0 alone) for every row and the units of
// block x. dh0 holds dh_direct between launches (the part of the gradient reaching h_s that
// bypasses W_hh) and dc0 the gradient reaching c_s; at s = T-1 they come from dh_n and dc_n.
template <typename T, class C>
__global__ void __launch_bounds__(kThreads) backward_step(BackwardArgs<T> a, int64_t s) {
  using Acc = typename AccumulatorOf<T>::type;
  constexpr int G = C::kGates, S = C::kSaved > 0 ? C::kSaved : 1;
  __shared__ Acc d_tile[kRows][kDepth];   // dzh_{s+1}[b0 + r, k0 + kk]
  __shared__ Acc w_tile[kDepth][kUnits];  // W_hh[k0 + kk, j0 + u]

  const int64_t B = a.batch, H = a.hidden, GH = G * H;
  const int u = threadIdx.x;
  const int64_t j0 = blockIdx.x * int64_t(kUnits), j = j0 + u;
  const bool last = s == a.steps - 1;
  const T* dz_next = last ? nullptr : a.dzh + (s + 1) * B * GH;  // nothing flows from step T
  const T* dh_in = last ? a.dh_n : a.dh0;  // nullptr: zero
  const T* dc_in = last ? a.dc_n : a.dc0;
  const int thread = threadIdx.y * kUnits + u;

  for (int64_t tile = blockIdx.y; tile < ceil_div(B, kRows); tile += gridDim.y) {
    const int64_t b0 = tile * kRows + threadIdx.y * kRowsPerThread;
    Acc acc[kRowsPerThread] = {};
    if (dz_next != nullptr) {  // the same for the whole block: the barriers stay uniform
      for (int64_t k0 = 0; k0 < GH; k0 += kDepth) {
        load_rows(d_tile, dz_next, GH, tile * kRows, B, k0, GH);
        // Consecutive threads read consecutive units of one row of W_hh.
        for (int i = thread; i < kDepth * kUnits; i += kThreads) {
          const int kk = i / kUnits, uu = i % kUnits;
          const int64_t k = k0 + kk, unit = j0 + uu;
          w_tile[kk][uu] = unit < H && k < GH ? static_cast<Acc>(a.w_hh[k * H + unit]) : Acc(0);
        }
        __syncthreads();
        for (int kk = 0; kk < kDepth; ++kk) {
          const Acc w = w_tile[kk][u];
          for (int r = 0; r < kRowsPerThread; ++r)
            acc[r] += d_tile[threadIdx.y * kRowsPerThread + r][kk] * w;
        }
        __syncthreads();
      }
    }
    if (j >= H) continue;
#pragma unroll
    for (int r = 0; r < kRowsPerThread; ++r) {
      const int64_t b = b0 + r, bj = b * H + j;
      if (b >= B) break;
      Acc dh = acc[r] + (dh_in != nullptr ? static_cast<Acc>(dh_in[bj]) : Acc(0));
      if (s < 0) {
        a.dh0[bj] = static_cast<T>(dh);
        continue;
      }
      const int64_t sb = s * B + b;
      dh += static_cast<Acc>(a.dy[sb * H + j]);
      Acc saved[S] = {}, c_prev = Acc(0), dc = Acc(0);
      if constexpr (C::kSaved > 0)
        for (int q = 0; q < C::kSaved; ++q)
          saved[q] = static_cast<Acc>(a.saved[sb * C::kSaved * H + q * H + j]);
      if constexpr (C::kHasCellState) {
        // c_{s-1}: c0, or the c that step s-1 saved (the LSTM saves c last).
        c_prev = static_cast<Acc>(
            s == 0 ? a.c0[bj] : a.saved[(sb - B) * C::kSaved * H + (C::kSaved - 1) * H + j]);
        dc = dc_in != nullptr ? static_cast<Acc>(dc_in[bj]) : Acc(0);
      }
      const Acc h = static_cast<Acc>(a.y[sb * H + j]);
      const Acc h_prev = static_cast<Acc>(s == 0 ? a.h0[bj] : a.y[(sb - B) * H + j]);
      Acc dzx[G], dzh[G], dh_direct;
      C::backward(saved, h, h_prev, c_prev, dh, dc, dzx, dzh, dh_direct);
      for (int g = 0; g < G; ++g) {
        a.dzx[sb * GH + g * H + j] = static_cast<T>(dzx[g]);
        if (a.dzh != a.dzx) a.dzh[sb * GH + g * H + j] = static_cast<T>(dzh[g]);
      }
      a.dh0[bj] = static_cast<T>(dh_direct);
      if constexpr (C::kHasCellState) a.dc0[bj] = static_cast<T>(dc);
    }
  }
}

// Units along x, batch row tiles along y (more tiles than gridDim.y loop inside the kernel).
dim3 step_grid(int64_t batch, int64_t hidden) {
  return dim3(static_cast<unsigned>(ceil_div(hidden, kUnits)),
              static_cast<unsigned>(std::min(ceil_div(batch, kRows), kMaxGridY)));
}

}  // namespace

// TODO(launch overhead): T (forward) and T + 1 (backward) launches per call; capture them in a
// CUDA graph or run several steps per launch (grid-wide barrier) and measure the difference.
template <typename T>
cudaError_t recurrent_forward(const ForwardArgs<T>& a, cudaStream_t stream) {
  if (a.batch == 0) return cudaSuccess;
  return cells::visit_cell(a.cell, [&](auto cell) {
    const dim3 grid = step_grid(a.batch, a.hidden), block(kUnits, kRowThreads);
    for (int64_t t = 0; t < a.steps; ++t) {
      forward_step<T, decltype(cell)><<<grid, block, 0, stream>>>(a, t);
      const cudaError_t status = cudaGetLastError();
      if (status != cudaSuccess) return status;
    }
    return cudaSuccess;
  });
}

template <typename T>
cudaError_t recurrent_backward(const BackwardArgs<T>& a, cudaStream_t stream) {
  if (a.batch == 0) return cudaSuccess;
  return cells::visit_cell(a.cell, [&](auto cell) {
    const dim3 grid = step_grid(a.batch, a.hidden), block(kUnits, kRowThreads);
    for (int64_t s = a.steps - 1; s >= -1; --s) {
      backward_step<T, decltype(cell)><<<grid, block, 0, stream>>>(a, s);
      const cudaError_t status = cudaGetLastError();
      if (status != cudaSuccess) return status;
    }
    return cudaSuccess;
  });
}

template cudaError_t recurrent_forward<float>(const ForwardArgs<float>&, cudaStream_t);
template cudaError_t recurrent_forward<double>(const ForwardArgs<double>&, cudaStream_t);
template cudaError_t recurrent_backward<float>(const BackwardArgs<float>&, cudaStream_t);
template cudaError_t recurrent_backward<double>(const BackwardArgs<double>&, cudaStream_t);

}  // namespace rnnfast::cuda
