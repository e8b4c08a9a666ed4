// CUDA recurrence, standard path (see recurrence.cuh): one kernel launch per step, two with the
// LSTM projection.
//
// Forward, launch t:   acc[b, g, j] = b_hh[g*H + j] + sum_k h_{t-1}[b, k] W_hh[g*H + j, k]
//                      then, in registers, the cell's forward for unit j of row b
//                      (forward_step); with the projection, the cell's output m_t [B, H] goes
//                      to the workspace and a second launch computes h_t = m_t W_hr^T
//                      (projection_step).
// Backward, launch t (T down to 0): the gradient reaching h_{t-1},
//                      dh[b, j] = sum_k dzh_t[b, k] W_hh[k, j]   (k over G*H; none at t = T)
//                      + dh_direct_t + dy[t-1] (+ dh_n at the row's last step), then the
//                      cell's backward of step t-1 for unit j of row b (backward_step); with the
//                      projection, dh goes to dh_proj and a second launch computes the
//                      gradient reaching m_{t-1}, dh_proj[t-1] W_hr, with the cell's backward in
//                      its epilogue (backward_projected_cell).
// The same structure as the CPU kernel (cpp/src/cpu/recurrence.cpp): the epilogue of one step's
// matmul is the gate math, the running gradients (dh_direct, dc) live in the workspace between
// launches, and dh0/dc0 accumulate what reaches the initial state: at step 0 and at resets.
// Lengths and resets act per row in the epilogues: a padding row writes zeros and keeps its
// state; a reset row's matmul reads h0 instead of h_{t-1}, and in the backward its gradient
// goes to dh0/dc0.
//
// Tiles: a block of kUnits x kRowThreads threads owns kUnits consecutive output units (one per
// lane of a warp) of kRows batch rows; each thread accumulates all G gates of its unit for
// kRowsPerThread rows, so the cell's math (cells/*.h) runs on the accumulators where they are.
// The matmul streams the depth through shared memory kDepth at a time. Launches on
// different steps are ordered by the stream: that is the only synchronization between steps.
// Where the recurrent matmul rounds its operands (float32 with a Rounding), its launches
// (forward_step, backward_step) multiply on the tensor cores instead, as the persistent path
// does and through the same code (block_products, TensorCores): the same grid and epilogues,
// blocks of as many threads in one dimension, whose warps compute 16 x 8 tiles of the block's
// [16 rows, G * 32 units] product with W_hh read from global memory, rounded as it is loaded.
// The projection's launches stay SIMT in float32 (its product is not rounded:
// reference.forward's `operand`).
//
// Types: T is the storage type, Acc the accumulation and math type (T itself for float and
// double; float for 16-bit storage once it is added).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#include "launch.cuh"
#include "mma.cuh"
#include "recurrence.cuh"
#include "rnnfast/cells/cells.h"

namespace rnnfast::cuda {
namespace {

constexpr int kUnits = 32;                           // output units per block: the lanes of a warp
constexpr int kRowThreads = 4;                       // threads along the batch (blockDim.y)
constexpr int kRowsPerThread = 4;                    // batch rows per thread (register tile)
constexpr int kRows = kRowThreads * kRowsPerThread;  // batch rows per block
constexpr int kDepth = 32;  // depth of one shared-memory tile of the matmul
// Threads of every block of both paths: the persistent path's blocks and block_products
// (which serves both paths) have as many, as one dimension.
constexpr int kThreads = kUnits * kRowThreads;
constexpr int kWarps = kThreads / 32;
// Blocks per SM that every kernel's registers must allow (__launch_bounds__): at most 128
// registers a thread. Without it ptxas chose fewer for some kernels and spilled (12-24 bytes in
// backward_step<double, Gru> and forward_step<float, RnnRelu>); with it none spills
// (tests/test_cuda_build.py checks). Its effect on speed is not measured yet.
constexpr int kMinBlocksPerSm = 4;
constexpr int64_t kMaxGridY = 65535;

template <typename T>
struct AccumulatorOf {
  using type = T;
};

__host__ __device__ constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Steps of sequence b: lengths[b], or all of them.
template <class Args>
__device__ int64_t length_of(const Args& a, int64_t b) {
  return a.lengths != nullptr ? a.lengths[b] : a.steps;
}

// Whether step t of row b starts from the initial state (h0, c0).
template <class Args>
__device__ bool starts_fresh(const Args& a, int64_t t, int64_t b) {
  return t == 0 || (a.resets != nullptr && a.resets[t * a.batch + b] != 0);
}

// Size of h: proj with the LSTM projection, else hidden.
template <class Args>
__host__ __device__ int64_t state_size(const Args& a) {
  return a.proj > 0 ? a.proj : a.hidden;
}

// The left operand of a matmul, [B, depth] with rows `ld` apart: row b at rows + b * ld, or,
// where fresh[b] is nonzero, at fresh_rows + b * ld (a reset row reads h0 instead of h_{t-1}).
template <typename T>
struct Rows {
  using Element = T;
  const T* rows;
  int64_t ld;
  const T* fresh_rows = nullptr;
  const uint8_t* fresh = nullptr;  // [B], or nullptr

  __device__ const T* row(int64_t b) const {
    return (fresh != nullptr && fresh[b] != 0 ? fresh_rows : rows) + b * ld;
  }
};

// W(g, j, k), the right operand of a step's matmul for gate g, unit j < n, k < depth.
// kTransposed: w is [G*n, depth] and W(g, j, k) = w[(g*n + j) * depth + k], a matmul by w^T;
// else w is [depth, n], W(0, j, k) = w[k * n + j] and G = 1.
template <bool kTransposed, typename T>
__device__ T w_element(const T* w, int64_t n, int64_t depth, int g, int64_t j, int64_t k) {
  return kTransposed ? w[(g * n + j) * depth + k] : w[k * n + j];
}

// acc[r][g] += sum_{k < depth} a[b, k] W(g, j, k) for this thread's rows b = tile * kRows +
// threadIdx.y * kRowsPerThread + r and unit j = j0 + threadIdx.x (rows >= batch and units >= n
// read zeros; W: w_element). Every thread of the block must call it (it meets at
// __syncthreads).
template <int G, bool kTransposed, typename Acc, typename T>
__device__ void tile_matmul(Acc (&acc)[kRowsPerThread][G], const Rows<T>& a, int64_t batch,
                            int64_t tile, const T* w, int64_t n, int64_t depth, int64_t j0) {
  static_assert(kTransposed || G == 1, "a matmul by w (not w^T) has one gate");
  using ATile = Acc[kRows][kDepth];  // a[tile * kRows + r, k0 + kk] at [r][kk]
  // W(g, j0 + u, k0 + kk) at [kk][g*kUnits + u]. The row is padded by one: the transposed
  // loads write a column (consecutive kk) per warp, which would otherwise hit a single bank.
  using WTile = Acc[kDepth][G * kUnits + 1];
  RNNFAST_SHARED(ATile, a_tile);
  RNNFAST_SHARED(WTile, w_tile);
  const int u = threadIdx.x, thread = threadIdx.y * kUnits + u;
  for (int64_t k0 = 0; k0 < depth; k0 += kDepth) {
    // Consecutive threads read consecutive columns of a row of a.
    for (int i = thread; i < kRows * kDepth; i += kThreads) {
      const int r = i / kDepth, kk = i % kDepth;
      const int64_t b = tile * kRows + r, k = k0 + kk;
      a_tile[r][kk] = b < batch && k < depth ? static_cast<Acc>(a.row(b)[k]) : Acc(0);
    }
    // Consecutive threads read consecutive elements of a row of w: along k (transposed) or
    // along the units.
    for (int i = thread; i < kDepth * G * kUnits; i += kThreads) {
      const int kk = kTransposed ? i % kDepth : i / kUnits;
      const int gu = kTransposed ? i / kDepth : i % kUnits;
      const int g = gu / kUnits;
      const int64_t unit = j0 + gu % kUnits, k = k0 + kk;
      w_tile[kk][gu] = unit < n && k < depth
                           ? static_cast<Acc>(w_element<kTransposed>(w, n, depth, g, unit, k))
                           : Acc(0);
    }
    __syncthreads();
    for (int kk = 0; kk < kDepth; ++kk) {
      Acc wv[G];
      for (int g = 0; g < G; ++g) wv[g] = w_tile[kk][g * kUnits + u];
      for (int r = 0; r < kRowsPerThread; ++r) {
        const Acc h = a_tile[threadIdx.y * kRowsPerThread + r][kk];  // broadcast in the warp
        for (int g = 0; g < G; ++g) acc[r][g] += h * wv[g];
      }
    }
    __syncthreads();  // the tiles are refilled next
  }
}

// ------------------------------------------------------------------ a block's products
// The product of a step's matmul for a block's units, as both paths compute it: the block owns
// `owned` units u (its first, j0, set by the caller) and computes, for batch rows b,
// p[b, g, u] = start(g, u) + sum_{k < depth} a[b, k] W[g * owned + u, k] (G gates; a: h_{t-1}
// [B, R] forward, dzh_t [B, G*H] backward, G = 1), then hands each (row, unit) item's G
// products to the path's epilogue. Two kinds:
//   Simt               a thread computes whole items, all G gates of one unit of one row, in
//                      Acc, each sum over k in the order of the standard path's tile_matmul
//                      from the same start (the persistent path's SIMT kind; the standard
//                      path's is step_tiles over tile_matmul): both paths compute the same
//                      values, bit for bit.
//   TensorCores<Op>    (float32 with a rounding) the block's warps compute 16-row tiles of the
//                      product on the tensor cores (mma.cuh; operands rounded to Op, float32
//                      sums in the hardware's order) into shared memory, from where each thread
//                      takes its items' G products to the same epilogue. Both paths.
// W comes as weight(row, k), a callable: the persistent path's from its slice in shared memory
// (Shared), the standard path's from W_hh in global memory (step_tiles); for the tensor cores
// it returns B's operand register of elements k (and k + 1) of the row (WeightOf).
struct Simt {};
template <class Op>
struct TensorCores {};

// W as the kind multiplies it, rows of `depth` elements as words(depth) words of `type`: for
// Simt an element a word, in Acc; for the tensor cores B's operand registers (mma::pack),
// rounded as they are made: two consecutive elements of a row a word for bfloat16 and float16,
// one for TF32. word(at, k, depth): the word of elements k (and k + 1) of a row whose element
// k is at(k).
template <class Product, typename Acc>
struct WeightOf {
  using type = Acc;
  static constexpr int kPer = 1;  // elements a word
  template <class At>
  __device__ static Acc word(At&& at, int64_t k, int64_t /*depth*/) {
    return at(k);
  }
  __host__ __device__ static constexpr int64_t words(int64_t depth) { return depth; }
};
template <class Op, typename Acc>
struct WeightOf<TensorCores<Op>, Acc> {
  using type = uint32_t;
  static constexpr int kPer = mma::kPerRegister<Op>;
  template <class At>
  __device__ static uint32_t word(At&& at, int64_t k, int64_t depth) {
    return mma::pack<Op>(at(k), kPer == 2 && k + 1 < depth ? at(k + 1) : 0.0f);
  }
  __host__ __device__ static constexpr int64_t words(int64_t depth) {
    return ceil_div(depth, kPer);
  }
};

// Units of n that a block whose first is j0 owns: [j0, j0 + owned) (`units`, fewer in the
// last block). owned <= kThreads always (persistent_plan refuses more; the standard path's
// blocks own kUnits).
__device__ int owned_units(int64_t n, int units, int64_t j0) {
  return j0 + units <= n ? units : static_cast<int>(n - j0);
}

// Columns of a tensor-core product tile row in shared memory: n rounded up to whole tiles.
__host__ __device__ constexpr int64_t stage_columns(int64_t n) {
  return ceil_div(n, mma::kN) * mma::kN;
}

// This thread's items (b, u): u = threadIdx.x % owned for rows b = threadIdx.x / owned, then
// every (kThreads / owned)-th (no division in the loops: 64-bit divisions are calls on the
// GPU). The last kThreads % owned threads, less than a row, have none (they would repeat the
// first threads' items: an epilogue that accumulates, or reads what it writes, must run once).
// (Other ways to write this, a thread's rank from a 2-D block or an early return, made ptxas
// spill in the persistent kernels.)
template <class Item>
__device__ void for_each_item(int64_t batch, int owned, Item&& item) {
  const int u = threadIdx.x % owned, row_stride = kThreads / owned;
  if (threadIdx.x < unsigned(row_stride * owned))
    for (int64_t b = threadIdx.x / owned; b < batch; b += row_stride) item(b, u);
}

// Calls item(b, u, p) for each row b < batch and unit u < owned of this block, where p[g] =
// start(g, u) + sum_{k < depth} a[b, k] weight(g * owned + u, k) for g < G (only the start
// where !multiply, which must be the same for the whole block). Every thread of the block must
// call it. stage: the tensor-core kind's (unused here).
template <int G, typename Acc, typename T, class Weight, class Start, class Item>
__device__ void block_products(Simt, const Rows<T>& a, int64_t batch, bool multiply,
                               Weight&& weight, int owned, int64_t depth, float* /*stage*/,
                               Start&& start, Item&& item) {
  for_each_item(batch, owned, [&](int64_t b, int u) {
    Acc p[G];
    for (int g = 0; g < G; ++g) p[g] = start(g, u);
    if (multiply) {
      const T* row = a.row(b);
#pragma unroll 2  // ptxas spilled 4 bytes here left to itself (float RNN backward, sm_90),
                  // and with unroll 4 (double RNN backward, sm_80)
      for (int64_t k = 0; k < depth; ++k) {
        const Acc x = static_cast<Acc>(row[k]);
        for (int g = 0; g < G; ++g) p[g] += x * weight(g * owned + u, k);
      }
    }
    item(b, u, p);
  });
}

// The same on the tensor cores: for each 16-row tile of the batch (tiles blockIdx.y, then every
// gridDim.y-th: the persistent path's grid has one row of blocks), warp i computes the 8-column
// tiles i, i + kWarps, ... of the product [16, G * owned] (column g * owned + u), starting from
// start(g, u), into stage [16, stage_columns(G * owned)]; then the items of the tile read
// theirs from there. Rows >= batch and k >= depth enter as zeros. weight(col, k): B's register
// of elements k (and k + 1) of column col (WeightOf), for k < depth a multiple of its kPer.
template <int G, typename Acc, typename T, class Op, class Weight, class Start, class Item>
__device__ void block_products(TensorCores<Op>, const Rows<T>& a, int64_t batch, bool multiply,
                               Weight&& weight, int owned, int64_t depth, float* stage,
                               Start&& start, Item&& item) {
  static_assert(std::is_same_v<Acc, float>, "the tensor cores accumulate in float32");
  const int n = G * owned, ld = static_cast<int>(stage_columns(n));
  const int warp = threadIdx.x / 32;
  for (int64_t b0 = blockIdx.y * int64_t(mma::kM); b0 < batch; b0 += gridDim.y * int64_t(mma::kM)) {
    for (int col0 = warp * mma::kN; col0 < n; col0 += kWarps * mma::kN) {
      mma::Accumulator d;
      mma::for_each(d, [&](int, int c, float& v) {
        const int col = col0 + c;
        v = col < n ? start(col / owned, col % owned) : 0.0f;
      });
      for (int64_t k0 = 0; multiply && k0 < depth; k0 += Op::kK) {
        mma::FragmentA<Op> fa;
        mma::FragmentB<Op> fb;
        mma::load_a(fa, [&](int r, int k) {
          const int64_t b = b0 + r, kk = k0 + k;
          return b < batch && kk < depth ? static_cast<float>(a.row(b)[kk]) : 0.0f;
        });
        mma::load_b_registers(fb, [&](int k, int c) {
          const int col = col0 + c;
          const int64_t kk = k0 + k;
          return col < n && kk < depth ? weight(col, kk) : 0u;
        });
        mma::mma(d, fa, fb);
      }
      mma::for_each(d, [&](int r, int c, float& v) { stage[r * ld + col0 + c] = v; });
    }
    __syncthreads();
    const int64_t rows = batch - b0 < mma::kM ? batch - b0 : mma::kM;
    for_each_item(rows, owned, [&](int64_t r, int u) {
      Acc p[G];
      for (int g = 0; g < G; ++g) p[g] = stage[r * ld + g * owned + u];
      item(b0 + r, u, p);
    });
    __syncthreads();  // the stage is refilled next
  }
}

// The frame of every kernel of the standard path: for each row tile of this block (blockIdx.y,
// then every gridDim.y-th), this thread's accumulators acc[r][g] = bias[g*n + j] (0 without a
// bias) + (a W)[b_r, g, j] (tile_matmul, skipped where !multiply, which must be the same for
// the whole block), then epilogue(b, j, acc[r]) for each of its rows b < batch, where its unit
// j < n.
template <int G, bool kTransposed, typename Acc, typename T, class Epilogue>
__device__ void step_tiles(Simt, const Rows<T>& a, int64_t batch, bool multiply, const T* w,
                           int64_t n, int64_t depth, const typename Rows<T>::Element* bias,
                           Epilogue&& epilogue) {
  const int64_t j0 = blockIdx.x * int64_t(kUnits), j = j0 + threadIdx.x;
  for (int64_t tile = blockIdx.y; tile < ceil_div(batch, kRows); tile += gridDim.y) {
    Acc acc[kRowsPerThread][G];
    for (int g = 0; g < G; ++g) {
      const Acc b = bias != nullptr && j < n ? static_cast<Acc>(bias[g * n + j]) : Acc(0);
      for (int r = 0; r < kRowsPerThread; ++r) acc[r][g] = b;
    }
    if (multiply) tile_matmul<G, kTransposed>(acc, a, batch, tile, w, n, depth, j0);
    if (j >= n) continue;
#pragma unroll  // keeps acc[r] in registers
    for (int r = 0; r < kRowsPerThread; ++r) {
      const int64_t b = tile * kRows + threadIdx.y * int64_t(kRowsPerThread) + r;
      if (b >= batch) break;
      epilogue(b, j, acc[r]);
    }
  }
}

// The same on the tensor cores (float32 with a rounding), in blocks of kThreads threads along x
// (step_block): the block's units j = j0 + u (kUnits, fewer in the last block) of its row tiles
// (kRows = 16 rows, one tile of mma's), their
// products from block_products with W's elements read from global memory (w_element) and
// rounded to the operand type as they are loaded, then epilogue(b, j, p) for each row b < batch.
// The product tile is the block's static shared memory (8 KiB for the LSTM).
template <int G, bool kTransposed, typename Acc, typename T, class Op, class Epilogue>
__device__ void step_tiles(TensorCores<Op> product, const Rows<T>& a, int64_t batch, bool multiply,
                           const T* w, int64_t n, int64_t depth,
                           const typename Rows<T>::Element* bias, Epilogue&& epilogue) {
  static_assert(kRows == mma::kM, "a row tile of the step grid is one of the tensor cores");
  using Weight = WeightOf<TensorCores<Op>, Acc>;
  static_assert(kUnits % mma::kN == 0, "the product tile's columns are whole tiles");
  using Stage = float[mma::kM * G * kUnits];  // [16, stage_columns(G * kUnits)]
  RNNFAST_SHARED(Stage, stage);
  const int64_t j0 = blockIdx.x * int64_t(kUnits);
  const int owned = owned_units(n, kUnits, j0);
  block_products<G, Acc>(
      product, a, batch, multiply,
      [&](int col, int64_t k) {
        const int g = col / owned;
        const int64_t j = j0 + col % owned;
        return Weight::word(
            [&](int64_t kk) {
              return static_cast<Acc>(w_element<kTransposed>(w, n, depth, g, j, kk));
            },
            k, depth);
      },
      owned, depth, stage,
      [&](int g, int u) {
        return bias != nullptr ? static_cast<Acc>(bias[g * n + j0 + u]) : Acc(0);
      },
      [&](int64_t b, int u, const Acc* p) { epilogue(b, j0 + u, p); });
}

// The h that step t starts from, as the left operand of its recurrent matmul: h0 at t = 0,
// else y[t-1] with reset rows reading h0.
template <typename T>
__device__ Rows<T> previous_h(const ForwardArgs<T>& a, int64_t t) {
  const int64_t R = state_size(a);
  return t == 0 ? Rows<T>{a.h0, R}
                : Rows<T>{a.y + (t - 1) * a.batch * R, R, a.h0,
                          a.resets != nullptr ? a.resets + t * a.batch : nullptr};
}

// The cell's forward of step t for row b, unit j, given zh = b_hh + h_{t-1} W_hh^T of its G
// gates: writes the cell's output (y[t], or m [B, H] with the projection), c_n (the LSTM's
// running cell state), the training workspace and, without the projection, h_n at the row's
// last step.
template <typename T, class C, typename Acc>
__device__ void forward_cell(const ForwardArgs<T>& a, int64_t t, T* m, int64_t b, int64_t j,
                             const Acc* zh) {
  constexpr int G = C::kGates, S = C::kSaved > 0 ? C::kSaved : 1;
  const int64_t B = a.batch, H = a.hidden, GH = G * H, R = state_size(a);
  const bool projected = a.proj > 0;
  T* cell_h = projected ? m : a.y + t * B * R;  // [B, H]
  const int64_t bj = b * H + j, tb = t * B + b;
  T* saved_bt = C::kSaved > 0 && a.saved != nullptr ? a.saved + tb * C::kSaved * H : nullptr;
  const int64_t length = length_of(a, b);
  if (t >= length) {  // padding: output 0 (also after the projection), state kept
    cell_h[bj] = T(0);
    if (saved_bt != nullptr)
      for (int s = 0; s < C::kSaved; ++s) saved_bt[s * H + j] = T(0);
    if (t == 0) {  // a sequence of length 0 ends where it starts
      if (!projected) a.h_n[bj] = a.h0[bj];
      if constexpr (C::kHasCellState) a.c_n[bj] = a.c0[bj];
    }
    return;
  }
  const bool fresh = starts_fresh(a, t, b);
  Acc zx[G], saved[S], h;
  for (int g = 0; g < G; ++g) zx[g] = static_cast<Acc>(a.zx[tb * GH + g * H + j]);
  Acc c = Acc(0), h_prev_j = Acc(0);
  if constexpr (C::kHasCellState) c = static_cast<Acc>(fresh ? a.c0[bj] : a.c_n[bj]);
  if constexpr (C::kReadsHPrev)
    h_prev_j = static_cast<Acc>(fresh ? a.h0[b * R + j] : a.y[(tb - B) * R + j]);
  C::forward(zx, zh, h_prev_j, c, h, saved);
  cell_h[bj] = static_cast<T>(h);
  if (!projected && t == length - 1) a.h_n[bj] = static_cast<T>(h);
  if constexpr (C::kHasCellState) a.c_n[bj] = static_cast<T>(c);
  if (saved_bt != nullptr)
    for (int s = 0; s < C::kSaved; ++s) saved_bt[s * H + j] = static_cast<T>(saved[s]);
}

// One forward step t for every batch row and the units j of block x (forward_cell), its
// product of the kind Product (Simt, or TensorCores with a rounding).
template <typename T, class C, class Product>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm)
    forward_step(ForwardArgs<T> a, int64_t t, T* m) {
  using Acc = typename AccumulatorOf<T>::type;
  step_tiles<C::kGates, true, Acc>(
      Product{}, previous_h(a, t), a.batch, true, a.w_hh, a.hidden, state_size(a), a.b_hh,
      [&](int64_t b, int64_t j, const Acc* zh) { forward_cell<T, C>(a, t, m, b, j, zh); });
}

// The projection of step t: y[t] = m W_hr^T [B, P] for every row (m is 0 on padding, so y is),
// and h_n at each row's last step (h0 where the sequence is empty).
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm)
    projection_step(ForwardArgs<T> a, int64_t t, const T* m) {
  using Acc = typename AccumulatorOf<T>::type;
  const int64_t B = a.batch, P = a.proj;
  step_tiles<1, true, Acc>(Simt{}, Rows<T>{m, a.hidden}, B, true, a.w_hr, P, a.hidden, nullptr,
                           [&](int64_t b, int64_t j, const Acc* acc) {
                             const int64_t bj = b * P + j, length = length_of(a, b);
                             const T h = static_cast<T>(acc[0]);
                             a.y[t * B * P + bj] = h;
                             if (t == length - 1) a.h_n[bj] = h;
                             if (t == 0 && length == 0) a.h_n[bj] = a.h0[bj];
                           });
}

// The gradient d (one unit of row b) reaching the state that step t-1 left, routed: where step
// t started from the initial state it goes to *d0 instead; *d_n is added where step t-1 is the
// row's last; at t = 0 what remains goes to *d0. *d0 accumulates over the launches (zeroed at
// t = T, the first). Returns the gradient that reaches step t-1's output.
template <class Args, typename Acc, typename T>
__device__ Acc route(const Args& a, int64_t t, int64_t b, Acc d, T* d0, const T* d_n) {
  Acc to_d0 = t == a.steps ? Acc(0) : static_cast<Acc>(*d0);
  if (t < a.steps && starts_fresh(a, t, b)) {
    to_d0 += d;
    d = Acc(0);
  }
  if (t == length_of(a, b) && d_n != nullptr) d += static_cast<Acc>(*d_n);
  if (t == 0) to_d0 += d;
  *d0 = static_cast<T>(to_d0);
  return d;
}

// The gradient reaching c_{t-1} (row b, unit j): what the cell's backward of step t left in
// dc_run [B, H] (nothing at t = T), routed. 0 for cells without a cell state.
template <class C, typename Acc, typename T>
__device__ Acc grad_c(const BackwardArgs<T>& a, int64_t t, int64_t b, int64_t j, const T* dc_run) {
  if constexpr (!C::kHasCellState) {
    return Acc(0);
  } else {
    const int64_t bj = b * a.hidden + j;
    const Acc dc = t == a.steps ? Acc(0) : static_cast<Acc>(dc_run[bj]);
    return route(a, t, b, dc, a.dc0 + bj, a.dc_n != nullptr ? a.dc_n + bj : nullptr);
  }
}

// The cell's backward of step s for row b, unit j < H, given dh and dc, the gradients reaching
// the cell's h_s and c_s. Writes dzx and dzh at s, and the running gradients for step s-1:
// dh_run [B, H] (dh_direct; nullptr with the projection) and dc_run [B, H] (the gradient reaching
// c_{s-1}, LSTM). Zeros where s is padding.
template <typename T, class C, typename Acc>
__device__ void cell_backward(const BackwardArgs<T>& a, int64_t s, int64_t b, int64_t j, Acc dh,
                              Acc dc, T* dh_run, T* dc_run) {
  constexpr int G = C::kGates, S = C::kSaved > 0 ? C::kSaved : 1;
  const int64_t B = a.batch, H = a.hidden, GH = G * H, R = state_size(a);
  const int64_t sb = s * B + b, bj = b * H + j;
  T* dzx_sb = a.dzx + sb * GH + j;
  T* dzh_sb = a.dzh + sb * GH + j;
  if (s >= length_of(a, b)) {
    for (int g = 0; g < G; ++g) {
      dzx_sb[g * H] = T(0);
      dzh_sb[g * H] = T(0);
    }
    if (dh_run != nullptr) dh_run[bj] = T(0);
    if constexpr (C::kHasCellState) dc_run[bj] = T(0);
    return;
  }
  const bool fresh = starts_fresh(a, s, b);
  Acc saved[S] = {}, h = Acc(0), h_prev = Acc(0), c_prev = Acc(0);
  if constexpr (C::kSaved > 0)
    for (int q = 0; q < C::kSaved; ++q)
      saved[q] = static_cast<Acc>(a.saved[sb * C::kSaved * H + q * H + j]);
  if constexpr (C::kHasCellState)  // c0, or the c that step s-1 saved
    c_prev =
        static_cast<Acc>(fresh ? a.c0[bj] : a.saved[(sb - B) * C::kSaved * H + C::kSavedC * H + j]);
  if constexpr (C::kBackwardReadsH) h = static_cast<Acc>(a.y[sb * R + j]);
  if constexpr (C::kReadsHPrev)
    h_prev = static_cast<Acc>(fresh ? a.h0[b * R + j] : a.y[(sb - B) * R + j]);
  Acc dzx[G], dzh[G], dh_direct;
  C::backward(saved, h, h_prev, c_prev, dh, dc, dzx, dzh, dh_direct);
  for (int g = 0; g < G; ++g) {
    dzx_sb[g * H] = static_cast<T>(dzx[g]);
    if (a.dzh != a.dzx) dzh_sb[g * H] = static_cast<T>(dzh[g]);
  }
  if (dh_run != nullptr) dh_run[bj] = static_cast<T>(dh_direct);
  if constexpr (C::kHasCellState) dc_run[bj] = static_cast<T>(dc);
}

// Backward launch t's work for row b and h's unit j, given dh_next = sum_k dzh_t[b, k] W_hh[k, j]
// (0 at t = T): the gradient reaching h_{t-1} (see the top of the file), then, without the
// projection, the cell's backward of step t-1; with it, that gradient goes to dh_proj[t-1].
// dh_run and dc_run [B, H]: the running gradients (see cell_backward).
template <typename T, class C, typename Acc>
__device__ void backward_unit(const BackwardArgs<T>& a, int64_t t, int64_t b, int64_t j,
                              Acc dh_next, T* dh_run, T* dc_run) {
  const int64_t B = a.batch, R = state_size(a), s = t - 1, bj = b * R + j;
  const bool projected = a.proj > 0, first = t == a.steps;
  Acc dh = dh_next + (!first && !projected ? static_cast<Acc>(dh_run[bj]) : Acc(0));
  dh = route(a, t, b, dh, a.dh0 + bj, a.dh_n != nullptr ? a.dh_n + bj : nullptr);
  if (s < 0) {
    if (!projected) grad_c<C, Acc>(a, t, b, j, dc_run);  // routes the rest to dc0
    return;
  }
  if (s < length_of(a, b)) dh += static_cast<Acc>(a.dy[s * B * R + bj]);
  if (projected) {
    a.dh_proj[s * B * R + bj] = static_cast<T>(dh);
    return;
  }
  const Acc dc = grad_c<C, Acc>(a, t, b, j, dc_run);
  cell_backward<T, C>(a, s, b, j, dh, dc, dh_run, dc_run);
}

// Backward launch t (T down to 0) for every row and h's units j of block x (backward_unit),
// its product of the kind Product.
template <typename T, class C, class Product>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm)
    backward_step(BackwardArgs<T> a, int64_t t, T* dh_run, T* dc_run) {
  using Acc = typename AccumulatorOf<T>::type;
  const int64_t GH = C::kGates * a.hidden;
  // Nothing flows from step T.
  step_tiles<1, false, Acc>(Product{}, Rows<T>{a.dzh + t * a.batch * GH, GH}, a.batch, t != a.steps,
                            a.w_hh, state_size(a), GH, nullptr,
                            [&](int64_t b, int64_t j, const Acc* acc) {
                              backward_unit<T, C>(a, t, b, j, acc[0], dh_run, dc_run);
                            });
}

// With the projection, after backward_step's launch t: the gradient reaching m_{t-1} [B, H],
// dh_proj[t-1] W_hr, and the cell's backward of step t-1 on it, for every row and the cell's
// units j of block x (at t = 0, only dc0's routing).
template <typename T, class C>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm)
    backward_projected_cell(BackwardArgs<T> a, int64_t t, T* dc_run) {
  using Acc = typename AccumulatorOf<T>::type;
  const int64_t B = a.batch, H = a.hidden, P = a.proj, s = t - 1;
  step_tiles<1, false, Acc>(Simt{}, Rows<T>{s >= 0 ? a.dh_proj + s * B * P : nullptr, P}, B, s >= 0,
                            a.w_hr, H, P, nullptr, [&](int64_t b, int64_t j, const Acc* dm) {
                              const Acc dc = grad_c<C, Acc>(a, t, b, j, dc_run);
                              if (s >= 0)
                                cell_backward<T, C>(a, s, b, j, dm[0], dc, nullptr, dc_run);
                            });
}

// The persistent path (recurrence.cuh): one cooperative launch for all T steps (T + 1
// backward). Block x owns `units` consecutive hidden units and keeps their slice of W_hh in
// shared memory for the whole call (load_slice: in Acc, or for the tensor cores in the operand
// type, packed as mma's B registers: WeightOf), then the tensor cores' product tile; each
// step's h (forward) or dzh (backward) goes through global memory (L2) to every block, with one
// grid-wide barrier per step. The epilogues are the standard path's (forward_cell,
// backward_unit), the products block_products of either kind. The slice, as rows of elements
// (in memory, of WeightOf's words):
//   forward slice:  w[(g * owned + u) * H + k] = W_hh[g*H + j0 + u, k]   [G * owned, H]
//   backward slice: w[u * G*H + k] = W_hh[k, j0 + u]                    [owned, G * H]
// (j0 = the block's first unit, owned = its units). The tuning of this layout needs a GPU to
// be measured on.

// Bytes of a W_hh slice of `rows` rows of `depth` elements, up to a multiple of 16: where the
// product tile starts in the block's shared memory.
template <class Weight>
__host__ __device__ constexpr int64_t slice_bytes(int64_t rows, int64_t depth) {
  return ceil_div(rows * Weight::words(depth) * int64_t(sizeof(typename Weight::type)), 16) * 16;
}

// The block's shared memory (persistent_plan sizes it): W_hh's slice w, rows of `depth`
// elements as `words` words each, then the tensor cores' product tile, stage. As
// block_products' weight, (*this)(row, k) is the word of the row's element k.
template <class Weight>
struct Shared {
  typename Weight::type* w;
  int64_t words;
  float* stage;

  __device__ typename Weight::type operator()(int row, int64_t k) const {
    return w[row * words + k / Weight::kPer];
  }
};

// The slice of `rows` rows, row r's element k = element(r, k), loaded (every thread of the
// block calls it).
template <class Weight, class Element>
__device__ Shared<Weight> load_slice(int rows, int64_t depth, Element&& element) {
  auto* w = dynamic_shared<typename Weight::type>();
  const int64_t words = Weight::words(depth);
  for (int r = 0; r < rows; ++r) {
    const auto at = [&](int64_t k) { return element(r, k); };
    for (int64_t i = threadIdx.x; i < words; i += kThreads)
      w[r * words + i] = Weight::word(at, i * Weight::kPer, depth);
  }
  __syncthreads();
  auto* bytes = reinterpret_cast<unsigned char*>(w);
  return {w, words, reinterpret_cast<float*>(bytes + slice_bytes<Weight>(rows, depth))};
}

// One direction of a persistent launch: its arguments and, backward, its running gradients
// (the workspace, see running_gradients).
template <class Args, typename T>
struct OneDirection {
  Args args;
  T* dh_run = nullptr;
  T* dc_run = nullptr;
};

// The directions of a persistent launch: of[d] on blocks [d * blocks, (d + 1) * blocks) for
// d < kDirections (a kernel's template argument): one direction, or both directions of a
// bidirectional layer in one launch, each block with the slice of its own direction's W_hh, all
// meeting at one grid-wide barrier a step (both directions have the same steps).
template <class Args, typename T>
struct Directions {
  OneDirection<Args, T> of[2];
  int blocks;
};

// body(direction, block) for this block's direction and its block within the direction: for
// one direction the kernel's parameter; for two a copy of the block's direction in shared
// memory, read from there as the parameter would be (indexing the parameters with a run-time
// direction, selecting between the two into registers, or a branch a direction, each made
// ptxas spill, to local memory).
template <int kDirections, class Args, typename T, class Body>
__device__ void for_direction(const Directions<Args, T>& directions, Body&& body) {
  if constexpr (kDirections == 1) {
    body(directions.of[0], int64_t(blockIdx.x));
  } else {
    using One = OneDirection<Args, T>;
    using Copy = uint64_t[(sizeof(One) + 7) / 8];  // a Direction's bytes, 8-byte aligned
    RNNFAST_SHARED(Copy, copy);
    const int d = blockIdx.x >= unsigned(directions.blocks) ? 1 : 0;
    if (threadIdx.x == 0) {
      const One one = d == 0 ? directions.of[0] : directions.of[1];
      memcpy(copy, &one, sizeof(One));
    }
    __syncthreads();
    body(*reinterpret_cast<const One*>(copy), int64_t(blockIdx.x) - d * directions.blocks);
  }
}

template <typename T, class C, class Product, int kDirections>
__global__ void __launch_bounds__(kThreads)
    forward_persistent(Directions<ForwardArgs<T>, T> directions, int units) {
  using Acc = typename AccumulatorOf<T>::type;
  using Weight = WeightOf<Product, Acc>;
  constexpr int G = C::kGates;
  for_direction<kDirections>(directions, [&](const auto& direction, int64_t block) {
    const ForwardArgs<T>& a = direction.args;
    const int64_t H = a.hidden, j0 = block * units;
    const int owned = owned_units(H, units, j0);
    const Shared<Weight> slice = load_slice<Weight>(G * owned, H, [&](int gu, int64_t k) {
      return static_cast<Acc>(a.w_hh[((gu / owned) * H + j0 + gu % owned) * H + k]);
    });
    const auto bias = [&](int g, int u) {
      return a.b_hh != nullptr ? static_cast<Acc>(a.b_hh[g * H + j0 + u]) : Acc(0);
    };
    for (int64_t t = 0; t < a.steps; ++t) {
      block_products<G, Acc>(Product{}, previous_h(a, t), a.batch, true, slice, owned, H,
                             slice.stage, bias, [&](int64_t b, int u, const Acc* zh) {
                               forward_cell<T, C>(a, t, static_cast<T*>(nullptr), b, j0 + u, zh);
                             });
      grid_sync();  // y[t] complete before any block reads it
    }
  });
}

// One direction only: with both directions (kDirections 2), ptxas spilled 4-48 bytes in about
// a third of the backward kernels, in every form tried (see for_direction), so the backward
// runs its directions one launch after the other.
template <typename T, class C, class Product, int kDirections>
__global__ void __launch_bounds__(kThreads)
    backward_persistent(Directions<BackwardArgs<T>, T> directions, int units) {
  static_assert(kDirections == 1, "the backward runs one direction a launch");
  using Acc = typename AccumulatorOf<T>::type;
  using Weight = WeightOf<Product, Acc>;
  for_direction<kDirections>(directions, [&](const auto& direction, int64_t block) {
    const BackwardArgs<T>& a = direction.args;
    const int64_t H = a.hidden, GH = C::kGates * H, j0 = block * units;
    const int owned = owned_units(H, units, j0);
    const Shared<Weight> slice = load_slice<Weight>(
        owned, GH, [&](int u, int64_t k) { return static_cast<Acc>(a.w_hh[k * H + j0 + u]); });
    for (int64_t t = a.steps; t >= 0; --t) {
      // Nothing flows from step T.
      const Rows<T> dzh{t < a.steps ? a.dzh + t * a.batch * GH : nullptr, GH};
      block_products<1, Acc>(
          Product{}, dzh, a.batch, t < a.steps, slice, owned, GH, slice.stage,
          [](int, int) { return Acc(0); },
          [&](int64_t b, int u, const Acc* dh_next) {
            // (the running gradients read here: kept in registers, ptxas spilled)
            backward_unit<T, C>(a, t, b, j0 + u, dh_next[0], direction.dh_run, direction.dc_run);
          });
      grid_sync();  // dzh[t-1] complete before any block reads it
    }
  });
}

// The step kernels' blocks: for Simt kUnits units along x, kRowThreads threads over rows along
// y (tile_matmul); for the tensor cores kThreads along x (block_products).
template <class Product>
dim3 step_block() {
  return std::is_same_v<Product, Simt> ? dim3(kUnits, kRowThreads) : dim3(kThreads);
}

// `units` output units along x, batch row tiles along y (more tiles than gridDim.y loop
// inside the kernel).
dim3 step_grid(int64_t batch, int64_t units) {
  return dim3(static_cast<unsigned>(ceil_div(units, kUnits)),
              static_cast<unsigned>(std::min(ceil_div(batch, kRows), kMaxGridY)));
}

}  // namespace

namespace {

// The launches of one call, step by step: for t = first, first + stride, ... (count steps),
// step(t) and then, with the projection, projected(t); the first failed launch ends the call.
template <class Step, class Projected>
cudaError_t launch_steps(int64_t first, int64_t count, int64_t stride, bool projection, Step&& step,
                         Projected&& projected) {
  for (int64_t i = 0, t = first; i < count; ++i, t += stride) {
    cudaError_t status = step(t);
    if (status == cudaSuccess && projection) status = projected(t);
    if (status != cudaSuccess) return status;
  }
  return cudaSuccess;
}

}  // namespace

// f(Simt{}), or for float32 with a rounding f(TensorCores<Op>{}) of its Op (a rounding with
// another T: the binding and persistent_plan refuse it).
template <typename T, class F>
auto with_product(Rounding rounding, F&& f) {
  if constexpr (std::is_same_v<T, float>) {
    switch (rounding) {
      case Rounding::Bfloat16:
        return f(TensorCores<mma::Bf16>{});
      case Rounding::Float16:
        return f(TensorCores<mma::F16>{});
      case Rounding::Tf32:
        return f(TensorCores<mma::Tf32>{});
      case Rounding::None:
        break;
    }
  }
  return f(Simt{});
}

// The persistent path's launch for `hidden` units of each of `directions` directions on the
// current device: units per block so that one block per SM covers them all (with both
// directions, half the SMs a direction; a block per SM is always resident: 128 threads, and
// shared memory within the per-block limit), and the bytes of its W_hh slice (WeightOf: 2 an
// element for bfloat16 and float16), with a rounding also of the tensor cores' product tile
// (the forward's, the larger), as load_slice lays them out.
struct PersistentPlan {
  int blocks = 0, units = 0;
  size_t shared_bytes = 0;
  std::string refusal;  // why the path cannot run the call ("" where it can)
};

template <typename T>
PersistentPlan persistent_plan(Cell cell, int64_t hidden, int64_t proj, Rounding rounding,
                               int directions) {
  PersistentPlan plan;
  if (proj > 0) {
    plan.refusal = "the persistent path has no LSTM projection (proj_size > 0)";
    return plan;
  }
  if (rounding != Rounding::None && !std::is_same_v<T, float>) {
    plan.refusal = "a rounding of the matmul's operands needs float32";
    return plan;
  }
  int device = 0, sms = 0, max_shared = 0;
  cudaError_t status = cudaGetDevice(&device);
  if (status == cudaSuccess)
    status = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (status == cudaSuccess)
    status = cudaDeviceGetAttribute(&max_shared, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (status != cudaSuccess) {
    cudaGetLastError();  // clear the error state where it is not sticky
    plan.refusal =
        std::string("the device's properties cannot be read: ") + cudaGetErrorString(status);
    return plan;
  }
  using Acc = typename AccumulatorOf<T>::type;
  const int sms_per_direction = sms / directions;
  if (sms_per_direction < 1) {
    plan.refusal = "the device has fewer SMs than directions";
    return plan;
  }
  const int64_t units = ceil_div(hidden, sms_per_direction);
  const int64_t columns = gate_count(cell) * units;  // of the forward's product
  const int64_t slice = with_product<T>(rounding, [&](auto product) {
    return slice_bytes<WeightOf<decltype(product), Acc>>(columns, hidden);
  });
  const int64_t stage = rounding != Rounding::None ? mma::kM * stage_columns(columns) : 0;
  const int64_t bytes = slice + stage * int64_t(sizeof(float));
  if (bytes > max_shared || units > kThreads) {
    plan.refusal =
        "hidden_size " + std::to_string(hidden) + " does not fit on this device's " +
        std::to_string(sms) + " SMs" + (directions > 1 ? " with both directions at once" : "") +
        ": each block's slice of W_hh (" + std::to_string(units) + " units, at most " +
        std::to_string(kThreads) + ") " + (stage > 0 ? "and its product tile take " : "takes ") +
        std::to_string(bytes) + " bytes of shared memory, at most " + std::to_string(max_shared);
    return plan;
  }
  plan.units = static_cast<int>(units);
  plan.blocks = static_cast<int>(ceil_div(hidden, units));
  plan.shared_bytes = static_cast<size_t>(bytes);
  return plan;
}

template <typename T>
std::string persistent_refusal(Cell cell, int64_t hidden, int64_t proj, Rounding rounding,
                               int directions) {
  return persistent_plan<T>(cell, hidden, proj, rounding, directions).refusal;
}

// The persistent kernel of Args (ForwardArgs: forward_persistent, BackwardArgs:
// backward_persistent).
template <class Args, typename T, class C, class Product, int kDirections>
constexpr auto persistent_kernel() {
  if constexpr (std::is_same_v<Args, ForwardArgs<T>>)
    return &forward_persistent<T, C, Product, kDirections>;
  else
    return &backward_persistent<T, C, Product, kDirections>;
}

// The persistent path's launch of kDirections directions (directions.of[0], and of[1] where
// 2; their blocks set here) for the call's sizes: cudaErrorInvalidValue where
// persistent_refusal refuses it.
template <int kDirections, class Args, typename T>
cudaError_t launch_persistent(Directions<Args, T> directions, Rounding rounding,
                              cudaStream_t stream) {
  const Args& a = directions.of[0].args;
  const PersistentPlan plan = persistent_plan<T>(a.cell, a.hidden, a.proj, rounding, kDirections);
  if (!plan.refusal.empty()) return cudaErrorInvalidValue;
  directions.blocks = plan.blocks;
  return cells::visit_cell(a.cell, [&](auto cell) {
    return with_product<T>(rounding, [&](auto product) {
      constexpr auto kernel =
          persistent_kernel<Args, T, decltype(cell), decltype(product), kDirections>();
      return launch_cooperative<kernel>(dim3(kDirections * plan.blocks), dim3(kThreads),
                                        plan.shared_bytes, stream, directions, plan.units);
    });
  });
}

// The backward's direction with its running gradients in the workspace (workspace_size):
// dh_run [B, H] (nullptr with the projection), then dc_run [B, H].
template <typename T>
OneDirection<BackwardArgs<T>, T> running_gradients(const BackwardArgs<T>& a, T* workspace) {
  if (a.proj > 0) return {a, nullptr, workspace};
  return {a, workspace, workspace + a.batch * a.hidden};
}

// Whether the two directions of a pair have the same cell and sizes.
template <class Args>
bool same_sizes(const Args& a, const Args& b) {
  return a.cell == b.cell && a.steps == b.steps && a.batch == b.batch && a.hidden == b.hidden &&
         a.proj == b.proj;
}

// TODO(launch overhead): on the standard path, T (forward) and T + 1 (backward) launches per
// call, twice that with the projection; capture them in a CUDA graph and measure the difference
// (the persistent path makes one launch).
template <typename T>
cudaError_t recurrent_forward(const ForwardArgs<T>& a, T* workspace, cudaStream_t stream, Path path,
                              Rounding rounding) {
  if (a.batch == 0) return cudaSuccess;
  if (path == Path::Persistent)
    return launch_persistent<1>(Directions<ForwardArgs<T>, T>{{{a}, {a}}, 0}, rounding, stream);
  return cells::visit_cell(a.cell, [&](auto cell) {
    using C = decltype(cell);
    return with_product<T>(rounding, [&](auto product) {
      using Product = decltype(product);
      return launch_steps(
          0, a.steps, 1, a.proj > 0,
          [&](int64_t t) {
            return launch<forward_step<T, C, Product>>(
                step_grid(a.batch, a.hidden), step_block<Product>(), 0, stream, a, t, workspace);
          },
          [&](int64_t t) {
            return launch<projection_step<T>>(step_grid(a.batch, a.proj), step_block<Simt>(), 0,
                                              stream, a, t, static_cast<const T*>(workspace));
          });
    });
  });
}

template <typename T>
cudaError_t recurrent_backward(const BackwardArgs<T>& a, T* workspace, cudaStream_t stream,
                               Path path, Rounding rounding) {
  if (a.batch == 0) return cudaSuccess;
  const OneDirection<BackwardArgs<T>, T> direction = running_gradients(a, workspace);
  if (path == Path::Persistent)
    return launch_persistent<1>(Directions<BackwardArgs<T>, T>{{direction, direction}, 0}, rounding,
                                stream);
  T* const dh_run = direction.dh_run;
  T* const dc_run = direction.dc_run;
  return cells::visit_cell(a.cell, [&](auto cell) {
    using C = decltype(cell);
    return with_product<T>(rounding, [&](auto product) {
      using Product = decltype(product);
      return launch_steps(
          a.steps, a.steps + 1, -1, a.proj > 0,
          [&](int64_t t) {
            return launch<backward_step<T, C, Product>>(step_grid(a.batch, state_size(a)),
                                                        step_block<Product>(), 0, stream, a, t,
                                                        dh_run, dc_run);
          },
          [&](int64_t t) {
            return launch<backward_projected_cell<T, C>>(
                step_grid(a.batch, a.hidden), step_block<Simt>(), 0, stream, a, t, dc_run);
          });
    });
  });
}

template <typename T>
cudaError_t recurrent_forward_pair(const ForwardArgs<T>& forward, const ForwardArgs<T>& reverse,
                                   cudaStream_t stream, Rounding rounding) {
  if (!same_sizes(forward, reverse)) return cudaErrorInvalidValue;
  if (forward.batch == 0) return cudaSuccess;
  return launch_persistent<2>(Directions<ForwardArgs<T>, T>{{{forward}, {reverse}}, 0}, rounding,
                              stream);
}

#define RNNFAST_INSTANTIATE(T)                                                                 \
  template std::string persistent_refusal<T>(Cell, int64_t, int64_t, Rounding, int);           \
  template cudaError_t recurrent_forward_pair<T>(const ForwardArgs<T>&, const ForwardArgs<T>&, \
                                                 cudaStream_t, Rounding);                      \
  template cudaError_t recurrent_forward<T>(const ForwardArgs<T>&, T*, cudaStream_t, Path,     \
                                            Rounding);                                         \
  template cudaError_t recurrent_backward<T>(const BackwardArgs<T>&, T*, cudaStream_t, Path,   \
                                             Rounding);
RNNFAST_INSTANTIATE(float)
RNNFAST_INSTANTIATE(double)
#undef RNNFAST_INSTANTIATE

}  // namespace rnnfast::cuda
