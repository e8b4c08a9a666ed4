// The register-tiled matmul that every CPU recurrence kernel is built on, and the helpers
// around it: weight packing, row tiling, threads' shares of a step, scratch memory.
//
// Included by the kernel sources that are compiled once per instruction set (see
// CMakeLists.txt), inside their namespace, so each copy is built with its own vector width:
// 64-byte vectors under AVX-512, 32 under AVX2, 16 in the baseline build.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <type_traits>
#include <utility>

#include "thread_pool.h"

#ifndef RNNFAST_ISA_NS
#error "compile with -DRNNFAST_ISA_NS=<namespace of this instruction set>"
#endif

namespace rnnfast {
namespace RNNFAST_ISA_NS {
namespace {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ------------------------------------------------------------------ tile geometry
// A tile is kTileRows rows (batch entries) by up to kTileVectors vectors (columns). Its
// accumulators stay in registers for the whole depth loop: 6 x 4 of AVX-512's 32 registers,
// 3 x 4 of AVX2's 16, 2 x 4 of SSE's 16; the rest hold the panel's row and a broadcast.
// kAccumulators: how many vector accumulators fit beside the panel's row and a broadcast.
#if defined(__AVX512F__)
constexpr int kVectorBytes = 64, kTileRows = 6, kAccumulators = 24;
#elif defined(__AVX__)
constexpr int kVectorBytes = 32, kTileRows = 3, kAccumulators = 12;
#else
constexpr int kVectorBytes = 16, kTileRows = 2, kAccumulators = 12;
#endif
constexpr int kTileVectors = 4;

template <typename T>
struct Simd {
  typedef T Vec __attribute__((vector_size(kVectorBytes)));
  static constexpr int kLanes = kVectorBytes / static_cast<int>(sizeof(T));
  static Vec load(const T* p) {
    Vec v;
    std::memcpy(&v, p, sizeof(Vec));
    return v;
  }
  static void store(T* p, const Vec& v) { std::memcpy(p, &v, sizeof(Vec)); }
};

// Widest tile, in elements: 64 floats under AVX-512.
template <typename T>
constexpr int kTileWidth = kTileVectors * Simd<T>::kLanes;

// ------------------------------------------------------------------ packing
// Packs a matrix given by elem(g, j, k) (gate g, hidden unit j < hidden, depth k < depth) into
// panels: out[block][k][g][u] = elem(g, block*units + u, k), zero past the last unit. A panel
// (one block) is then a [depth, gates*units] row-major matrix that a tile streams row by row.
template <typename T, class Elem>
void pack_panels(int64_t gates, int64_t hidden, int64_t depth, int64_t units, Elem elem, T* out) {
  const int64_t blocks = ceil_div(hidden, units);
  for (int64_t block = 0; block < blocks; ++block) {
    for (int64_t k = 0; k < depth; ++k) {
      for (int64_t g = 0; g < gates; ++g) {
        T* dst = out + ((block * depth + k) * gates + g) * units;
        for (int64_t u = 0; u < units; ++u) {
          const int64_t j = block * units + u;
          dst[u] = j < hidden ? elem(g, j, k) : T(0);
        }
      }
    }
  }
}

// Packs a weight matrix as PyTorch stores it, w [gates*hidden, depth] row-major (the gates'
// rows stacked), so that a tile computes x w^T: the usual case of pack_panels.
template <typename T>
void pack_weight_rows(const T* w, int64_t gates, int64_t hidden, int64_t depth, int64_t units,
                      T* out) {
  pack_panels(gates, hidden, depth, units, [&](int64_t g, int64_t j, int64_t k) {
    return w[(g * hidden + j) * depth + k];
  }, out);
}

// Packs a bias b [gates*hidden] (nullptr: zeros) as a panel of depth 1: a tile's init.
template <typename T>
void pack_bias(const T* b, int64_t gates, int64_t hidden, int64_t units, T* out) {
  pack_panels(gates, hidden, 1, units, [&](int64_t g, int64_t j, int64_t) {
    return b != nullptr ? b[g * hidden + j] : T(0);
  }, out);
}

// ------------------------------------------------------------------ the micro-kernel
// acc[r][w] = init[w] + sum_k a[r*depth + k] * panel[k*W + w] for the MR rows of a ([MR, depth]
// row-major) and one panel ([depth, W], W a multiple of the vector width, 64-byte aligned).
// init may be nullptr (zero). Short tiles (few rows, as at batch 1) split the depth between
// up to four sets of accumulators, as registers allow, so that enough independent multiply-adds
// are in flight to hide the FMA latency (about 16 with two 4-cycle FMA pipes); the split is
// fixed by MR and W, so results never depend on the thread count.
template <typename T, int MR, int W>
inline void tile_gemm(const T* __restrict a, int64_t depth, const T* __restrict panel,
                      const T* __restrict init, T (&acc)[MR][W]) {
  using S = Simd<T>;
  using V = typename S::Vec;
  constexpr int NV = W / S::kLanes;
  static_assert(NV * S::kLanes == W, "tile width must be a whole number of vectors");
  constexpr int kSplit =
      std::max(1, std::min({4, (16 + MR * NV - 1) / (MR * NV), kAccumulators / (MR * NV)}));
  V sum[kSplit][MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) {
      sum[0][r][v] = init != nullptr ? S::load(init + v * S::kLanes) : V{};
      for (int s = 1; s < kSplit; ++s) sum[s][r][v] = V{};
    }
  int64_t k = 0;
  for (; k + kSplit <= depth; k += kSplit) {
    for (int s = 0; s < kSplit; ++s) {
      V p[NV];
      for (int v = 0; v < NV; ++v) p[v] = S::load(panel + (k + s) * W + v * S::kLanes);
      for (int r = 0; r < MR; ++r) {
        const T a_rk = a[r * depth + k + s];
        for (int v = 0; v < NV; ++v) sum[s][r][v] += p[v] * a_rk;
      }
    }
  }
  for (; k < depth; ++k) {  // the odd last k of a split tile
    for (int r = 0; r < MR; ++r) {
      const T a_rk = a[r * depth + k];
      for (int v = 0; v < NV; ++v) sum[0][r][v] += S::load(panel + k * W + v * S::kLanes) * a_rk;
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) {
      V total = sum[0][r][v];
      for (int s = 1; s < kSplit; ++s) total += sum[s][r][v];
      S::store(&acc[r][v * S::kLanes], total);
    }
}

// Calls tile(row0, std::integral_constant<int, MR>{}) for row tiles that cover [0, rows):
// full tiles of kTileRows, then one shorter tile for the rest.
template <int MR = kTileRows, class Tile>
inline void for_each_row_tile(int64_t rows, Tile&& tile) {
  if constexpr (MR == kTileRows) {
    int64_t row0 = 0;
    for (; row0 + MR <= rows; row0 += MR) tile(row0, std::integral_constant<int, MR>{});
    if (rows - row0 > 0) for_each_row_tile<MR - 1>(rows - row0, [&](int64_t r, auto mr) {
      tile(row0 + r, mr);
    });
  } else if constexpr (MR > 0) {
    if (rows == MR)
      tile(int64_t{0}, std::integral_constant<int, MR>{});
    else
      for_each_row_tile<MR - 1>(rows, tile);
  }
}

// Multiplies all `rows` rows of a [rows, depth] by one panel [depth, W], tile by tile, and hands
// each tile to epilogue(row0, acc) where acc is T[MR][W] for rows row0 .. row0 + MR - 1.
template <typename T, int W, class Epilogue>
void gemm_panel(const T* a, int64_t rows, int64_t depth, const T* panel, const T* init,
                Epilogue&& epilogue) {
  for_each_row_tile(rows, [&](int64_t row0, auto mr) {
    constexpr int MR = decltype(mr)::value;
    alignas(64) T acc[MR][W];
    tile_gemm<T, MR, W>(a + row0 * depth, depth, panel, init, acc);
    epilogue(row0, acc);
  });
}

// ------------------------------------------------------------------ threads and memory
// Threads for a run of `blocks` column blocks with `macs` multiply-adds per step: each thread
// takes whole blocks, and a thread's share of a step should outweigh the barrier (~1 us).
inline int choose_threads(int64_t blocks, int64_t macs) {
  constexpr int64_t kMinMacsPerThread = 16384;
  const int64_t useful = std::max<int64_t>(1, macs / kMinMacsPerThread);
  return static_cast<int>(
      std::min<int64_t>({ThreadPool::global().num_threads(), blocks, useful}));
}

// The range [first, last) of blocks that thread `index` of `threads` owns, for every step.
struct BlockRange {
  int64_t first, last;
  BlockRange(int64_t blocks, int index, int threads)
      : first(blocks * index / threads), last(blocks * (index + 1) / threads) {}
};

}  // namespace
}  // namespace RNNFAST_ISA_NS
}  // namespace rnnfast
