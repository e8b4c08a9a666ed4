// The register-tiled matmul that every CPU recurrence kernel is built on, and the helpers
// around it: weight packing, row tiling, threads' shares of a step, scratch memory.
//
// Included by the kernel sources that are compiled once per instruction set (see
// CMakeLists.txt), inside their namespace, so each copy is built with its own vector width:
// 64-byte vectors under AVX-512, 32 under AVX2, 16 in the baseline build.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <type_traits>
#include <utility>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "rnnfast/aligned_buffer.h"
#include "rnnfast/bfloat16.h"
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
// dst[0 .. n) = src[0 .. n), a vector at a time: GCC turns a short memcpy of variable size into
// `rep movs`, whose start-up costs more than copying a panel row.
template <typename T>
inline void copy_short(T* dst, const T* src, int64_t n) {
  using S = Simd<T>;
  int64_t i = 0;
  for (; i + S::kLanes <= n; i += S::kLanes) S::store(dst + i, S::load(src + i));
  for (; i < n; ++i) dst[i] = src[i];
}

#if defined(__SSE2__)
// *p = v with a non-temporal store (p vector-aligned): the line goes to memory without being
// read first or displacing cached data.
template <typename T>
inline void stream_vector(T* p, typename Simd<T>::Vec v) {
#if defined(__AVX512F__)
  if constexpr (sizeof(T) == 4)
    _mm512_stream_ps(p, v);
  else
    _mm512_stream_pd(p, v);
#elif defined(__AVX__)
  if constexpr (sizeof(T) == 4)
    _mm256_stream_ps(p, v);
  else
    _mm256_stream_pd(p, v);
#else
  if constexpr (sizeof(T) == 4)
    _mm_stream_ps(p, v);
  else
    _mm_stream_pd(p, v);
#endif
}
#endif

// dst[0 .. n) = src[0 .. n), stored around the caches where dst is vector-aligned: for data
// that nothing reads again soon (the training workspace, read back by the backward pass), so
// that writing it neither reads its lines from memory first nor evicts the step's working set.
// A thread calls store_fence() after its last such store, before other threads may read them.
template <typename T>
inline void stream_short(T* dst, const T* src, int64_t n) {
#if defined(__SSE2__)
  using S = Simd<T>;
  if (reinterpret_cast<uintptr_t>(dst) % kVectorBytes == 0) {
    int64_t i = 0;
    for (; i + S::kLanes <= n; i += S::kLanes) stream_vector(dst + i, S::load(src + i));
    for (; i < n; ++i) dst[i] = src[i];
    return;
  }
#endif
  copy_short(dst, src, n);
}

inline void store_fence() {
#if defined(__SSE2__)
  _mm_sfence();  // non-temporal stores are not ordered with the stores that follow
#endif
}

// transpose_square's shuffle masks for step h (lanes 0 .. L-1 pick from the first row, L ..
// 2L-1 from the second), compile-time constants, and its loops unrolled: written as loops over
// run-time masks, GCC 12 rebuilt the masks on every call (integer divisions included), and the
// transposing packs ran at 3.4-5 GB/s instead of 10-25.
template <typename Index, int L, int h>
struct TransposeMasks {
  static constexpr std::array<Index, L> make(bool low) {
    std::array<Index, L> mask{};
    for (int e = 0; e < L; ++e) {
      const bool left = e % (2 * h) < h;
      mask[e] = low ? (left ? e : L + e - h) : (left ? e + h : L + e);
    }
    return mask;
  }
  static constexpr std::array<Index, L> low = make(true), high = make(false);
};

// Step h of transpose_square, then the steps below it.
template <typename T, int h>
inline void transpose_step(typename Simd<T>::Vec (&rows)[Simd<T>::kLanes]) {
  constexpr int L = Simd<T>::kLanes;
  typedef std::conditional_t<sizeof(T) == 4, int32_t, int64_t> Index;
  typedef Index Mask __attribute__((vector_size(kVectorBytes)));
  using Masks = TransposeMasks<Index, L, h>;
  Mask low, high;
  std::memcpy(&low, Masks::low.data(), sizeof(Mask));
  std::memcpy(&high, Masks::high.data(), sizeof(Mask));
#pragma GCC unroll 16
  for (int first = 0; first < L; first += 2 * h)
#pragma GCC unroll 16
    for (int r = first; r < first + h; ++r) {
      const auto a = rows[r], b = rows[r + h];
      rows[r] = __builtin_shuffle(a, b, low);
      rows[r + h] = __builtin_shuffle(a, b, high);
    }
  if constexpr (h > 1) transpose_step<T, h / 2>(rows);
}

// Transposes the kLanes x kLanes square rows[r][e] in registers (rows[r] becomes column r):
// for h = kLanes/2 .. 1, within every 2h x 2h sub-square, the top-right and bottom-left h x h
// blocks are swapped, one two-vector shuffle per row.
template <typename T>
inline void transpose_square(typename Simd<T>::Vec (&rows)[Simd<T>::kLanes]) {
  transpose_step<T, Simd<T>::kLanes / 2>(rows);
}

// A matrix to pack, element (g, j, k) (gate g, hidden unit j, depth k) at
// data[g * gate_stride + j * unit_stride + k * depth_stride]; data nullptr: all zeros.
template <typename T>
struct Strided {
  const T* data;
  int64_t gate_stride, unit_stride, depth_stride;
};

// Packs block `block` of a [gates, hidden, depth] matrix into a panel: out[k][g][u] =
// src(g, block*units + u, k), zero past the last unit. A panel is then a [depth, gates*units]
// row-major matrix that a tile streams row by row. Units contiguous in the source: row copies.
// Depth contiguous (PyTorch's weights, a transposed GEMM operand): squares of a vector's width
// transposed in registers. What remains (and any other layout) goes 16 deep at a time, so
// that the source and the panel are each touched a cache line at a time.
template <typename T>
void pack_panel(int64_t block, int64_t gates, int64_t hidden, int64_t depth, int64_t units,
                const Strided<T>& src, T* out) {
  const int64_t j0 = block * units, valid = std::clamp<int64_t>(hidden - j0, 0, units);
  const int64_t row = gates * units;  // a panel row: every gate's units at one depth
  for (int64_t g = 0; g < gates; ++g) {
    T* dst = out + g * units;
    for (int64_t k = 0; k < depth; ++k)
      std::fill(dst + k * row + valid, dst + k * row + units, T(0));
    if (src.data == nullptr) {
      for (int64_t k = 0; k < depth; ++k) std::fill(dst + k * row, dst + k * row + valid, T(0));
      continue;
    }
    const T* base = src.data + g * src.gate_stride + j0 * src.unit_stride;
    if (src.unit_stride == 1) {
      for (int64_t k = 0; k < depth; ++k)
        copy_short(dst + k * row, base + k * src.depth_stride, valid);
      continue;
    }
    // Contiguous in depth (PyTorch's weights): whole squares transposed in registers.
    using S = Simd<T>;
    constexpr int L = S::kLanes;
    int64_t u0 = 0;
    for (; src.depth_stride == 1 && u0 + L <= valid; u0 += L) {
      int64_t k0 = 0;
      for (; k0 + L <= depth; k0 += L) {
        typename S::Vec square[L];
        for (int u = 0; u < L; ++u) square[u] = S::load(base + (u0 + u) * src.unit_stride + k0);
        transpose_square<T>(square);
        for (int k = 0; k < L; ++k) S::store(dst + (k0 + k) * row + u0, square[k]);
      }
      for (int64_t u = u0; u < u0 + L; ++u)
        for (int64_t k = k0; k < depth; ++k) dst[k * row + u] = base[u * src.unit_stride + k];
    }
    constexpr int64_t kDepthStep = 16;  // the rest, a cache line of depth at a time
    for (int64_t k0 = 0; k0 < depth; k0 += kDepthStep) {
      const int64_t k1 = std::min(depth, k0 + kDepthStep);
      for (int64_t u = u0; u < valid; ++u) {
        const T* from = base + u * src.unit_stride;
        for (int64_t k = k0; k < k1; ++k) dst[k * row + u] = from[k * src.depth_stride];
      }
    }
  }
}

// All blocks: out[block][k][g][u], one panel after the other.
template <typename T>
void pack_panels(int64_t gates, int64_t hidden, int64_t depth, int64_t units, const Strided<T>& src,
                 T* out) {
  for (int64_t block = 0; block < ceil_div(hidden, units); ++block)
    pack_panel(block, gates, hidden, depth, units, src, out + block * depth * gates * units);
}

// A weight matrix as PyTorch stores it, w [gates*hidden, depth] row-major (the gates' rows
// stacked), so that a tile computes x w^T.
template <typename T>
Strided<T> weight_rows(const T* w, int64_t hidden, int64_t depth) {
  return {w, hidden * depth, depth, 1};
}

// A bias b [gates*hidden] (nullptr: zeros), packed as panels of depth 1: tiles' init.
template <typename T>
Strided<T> bias_rows(const T* b, int64_t hidden) {
  return {b, hidden, 1, 0};
}

// ------------------------------------------------------------------ the micro-kernel
// acc[r][w] = start[r][w] + sum_k a(r, k) * panel[k*W + w] for the MR rows of a and one panel
// ([depth, W], W a multiple of the vector width, 64-byte aligned), where start is acc itself
// when resume (a later depth block), else init[w] (nullptr: zero). a(r, k) is a[r*lda + k]
// for row-major rows (KS = 1), a[k*KS + r] for a strip of KS rows (see pack_a_strips in
// gemm.cpp: a tile's elements of one depth side by side).
// Short tiles (few rows, as at batch 1) split the depth between up to four sets of
// accumulators, as registers allow, so that enough independent multiply-adds are in flight to
// hide the FMA latency (about 16 with two 4-cycle FMA pipes); the split is fixed by MR and W,
// so results never depend on the thread count.
template <typename T, int MR, int W, int KS = 1>
inline void tile_gemm(const T* __restrict a, int64_t lda, int64_t depth, const T* __restrict panel,
                      const T* __restrict init, bool resume, T (&acc)[MR][W]) {
  using S = Simd<T>;
  using V = typename S::Vec;
  constexpr int NV = W / S::kLanes;
  static_assert(NV * S::kLanes == W, "tile width must be a whole number of vectors");
  static_assert(KS == 1 || MR <= KS, "a strip holds at most KS rows");
  auto a_at = [&](int r, int64_t k) { return KS == 1 ? a[r * lda + k] : a[k * KS + r]; };
  constexpr int kSplit =
      std::max(1, std::min({4, (16 + MR * NV - 1) / (MR * NV), kAccumulators / (MR * NV)}));
  V sum[kSplit][MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) {
      sum[0][r][v] = resume            ? S::load(&acc[r][v * S::kLanes])
                     : init != nullptr ? S::load(init + v * S::kLanes)
                                       : V{};
      for (int s = 1; s < kSplit; ++s) sum[s][r][v] = V{};
    }
  int64_t k = 0;
  for (; k + kSplit <= depth; k += kSplit) {
    for (int s = 0; s < kSplit; ++s) {
      V p[NV];
      for (int v = 0; v < NV; ++v) p[v] = S::load(panel + (k + s) * W + v * S::kLanes);
      for (int r = 0; r < MR; ++r) {
        const T a_rk = a_at(r, k + s);
        for (int v = 0; v < NV; ++v) sum[s][r][v] += p[v] * a_rk;
      }
    }
  }
  for (; k < depth; ++k) {  // the odd last k of a split tile
    for (int r = 0; r < MR; ++r) {
      const T a_rk = a_at(r, k);
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

// The AMX tile registers, configured on the calling thread for its lifetime: 8 tiles of 16
// rows x 64 bytes. gemm_bf16's block_product: tiles 0-3 the four 16 x 16 float32 quarters of
// C's block, 4 and 5 A's two 16-row halves (16 rows x 32 depth), 6 and 7 the two column tiles
// of B (16 depth pairs x 16 columns x 2); tile_product16: 0-3 C, 4 A, 6 B.
#if defined(__AMX_BF16__)
class TileScope {
 public:
  TileScope() {
    struct {
      uint8_t palette, start_row, reserved[14];
      uint16_t colsb[16];
      uint8_t rows[16];
    } config{};
    config.palette = 1;
    for (int t = 0; t < 8; ++t) {
      config.colsb[t] = 64;
      config.rows[t] = 16;
    }
    _tile_loadconfig(&config);
  }
  ~TileScope() { _tile_release(); }
  TileScope(const TileScope&) = delete;
  TileScope& operator=(const TileScope&) = delete;
};

#else
struct TileScope {};  // no tile registers to configure
#endif
// What a thread of a kernel whose matmul operands are M holds: the tiles for bfloat16.
struct NoTiles {};
template <typename M, typename T>
using TilesFor = std::conditional_t<std::is_same_v<M, T>, NoTiles, TileScope>;

// The bfloat16 operands' depth is padded with zeros to a multiple of kBf16DepthAlign (an AMX
// A tile's row of 32, or a vdpbf16ps pair), and, under AMX, a step's A operand to a multiple
// of kBf16RowAlign rows (a tile's 16).
#if defined(__AMX_BF16__)
constexpr int64_t kBf16DepthAlign = 32, kBf16RowAlign = 16;
#else
constexpr int64_t kBf16DepthAlign = 2, kBf16RowAlign = 1;
#endif
inline int64_t bf16_depth(int64_t depth) {
  return ceil_div(depth, kBf16DepthAlign) * kBf16DepthAlign;
}

#if defined(__AMX_BF16__)
// acc [16][W] = a [16 rows][depth] (row stride lda, depth a multiple of 32) times a panel
// [depth / 2][W][2] (see interleave_pairs), W = 16, 32, 48 or 64, on the tiles of TileScope:
// C's column tiles of 16 in tiles 0 .. W/16 - 1, per 32 of depth A in tile 4 and each column
// tile of B in tile 6. (Tile numbers are immediates: hence one line per tile.)
template <int W>
inline void tile_product16(const Bf16* a, int64_t lda, int64_t depth, const Bf16* panel,
                           float (&acc)[16][W]) {
  constexpr int NC = W / 16;
  static_assert(NC * 16 == W && NC >= 1 && NC <= 4, "W: 1 to 4 column tiles of 16");
  constexpr int64_t kPanelRowBytes = W * 2 * sizeof(Bf16), kRowBytes = W * sizeof(float);
  _tile_zero(0);
  if constexpr (NC > 1) _tile_zero(1);
  if constexpr (NC > 2) _tile_zero(2);
  if constexpr (NC > 3) _tile_zero(3);
  for (int64_t k = 0; k < depth; k += 32) {
    const Bf16* b = panel + k * W;  // pair k / 2, column 0; column tile c at b + 32 c
    _tile_loadd(4, a + k, lda * static_cast<int64_t>(sizeof(Bf16)));
    _tile_loadd(6, b, kPanelRowBytes);
    _tile_dpbf16ps(0, 4, 6);
    if constexpr (NC > 1) {
      _tile_loadd(6, b + 32, kPanelRowBytes);
      _tile_dpbf16ps(1, 4, 6);
    }
    if constexpr (NC > 2) {
      _tile_loadd(6, b + 64, kPanelRowBytes);
      _tile_dpbf16ps(2, 4, 6);
    }
    if constexpr (NC > 3) {
      _tile_loadd(6, b + 96, kPanelRowBytes);
      _tile_dpbf16ps(3, 4, 6);
    }
  }
  _tile_stored(0, &acc[0][0], kRowBytes);
  if constexpr (NC > 1) _tile_stored(1, &acc[0][16], kRowBytes);
  if constexpr (NC > 2) _tile_stored(2, &acc[0][32], kRowBytes);
  if constexpr (NC > 3) _tile_stored(3, &acc[0][48], kRowBytes);
}

// f(std::integral_constant<int, n>{}) for a run-time n in [1, MR].
template <int MR = 16, class F>
inline void with_rows(int64_t n, F&& f) {
  if constexpr (MR > 0) {
    if (n == MR)
      f(std::integral_constant<int, MR>{});
    else
      with_rows<MR - 1>(n, f);
  }
}
#endif

#if defined(__AVX512BF16__)
// tile_gemm with bfloat16 operands and float32 sums (vdpbf16ps): a [MR rows][depth] bfloat16
// (row stride lda) and a panel of two depths side by side, [depth / 2][W][2] (see
// interleave_pairs); depth even. Short tiles split the depth pairs between sets of
// accumulators as tile_gemm does, fixed by MR and W.
template <int MR, int W>
inline void tile_gemm(const Bf16* __restrict a, int64_t lda, int64_t depth,
                      const Bf16* __restrict panel, const float* __restrict init, bool resume,
                      float (&acc)[MR][W]) {
  constexpr int NV = W / 16;
  constexpr int kSplit =
      std::max(1, std::min({4, (16 + MR * NV - 1) / (MR * NV), kAccumulators / (MR * NV)}));
  __m512 sum[kSplit][MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) {
      sum[0][r][v] = resume            ? _mm512_loadu_ps(&acc[r][v * 16])
                     : init != nullptr ? _mm512_loadu_ps(init + v * 16)
                                       : _mm512_setzero_ps();
      for (int s = 1; s < kSplit; ++s) sum[s][r][v] = _mm512_setzero_ps();
    }
  // Adds the products of depth pair k (k, k + 1) into accumulator set s.
  auto pair_products = [&](int64_t k, int s) {
    __m512bh p[NV];
    for (int v = 0; v < NV; ++v) p[v] = (__m512bh)_mm512_loadu_si512(panel + k * W + v * 32);
    for (int r = 0; r < MR; ++r) {
      int32_t pair;
      std::memcpy(&pair, a + r * lda + k, sizeof pair);
      const __m512bh x = (__m512bh)_mm512_set1_epi32(pair);
      for (int v = 0; v < NV; ++v) sum[s][r][v] = _mm512_dpbf16_ps(sum[s][r][v], x, p[v]);
    }
  };
  int64_t k = 0;
  for (; k + 2 * kSplit <= depth; k += 2 * kSplit)
    for (int s = 0; s < kSplit; ++s) pair_products(k + 2 * s, s);
  for (; k < depth; k += 2) pair_products(k, 0);  // the pairs left over
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) {
      __m512 total = sum[0][r][v];
      for (int s = 1; s < kSplit; ++s) total = _mm512_add_ps(total, sum[s][r][v]);
      _mm512_storeu_ps(&acc[r][v * 16], total);
    }
}
#endif

// A packed panel [depth][W] of float32 as bfloat16 with two depths side by side, out
// [depth_pairs][W][2]: the layout vdpbf16ps reads; zeros past depth.
inline void interleave_pairs(const float* panel, int64_t depth, int64_t depth_pairs, int64_t w,
                             Bf16* out) {
  for (int64_t q = 0; q < depth_pairs; ++q)
    for (int64_t u = 0; u < w; ++u)
      for (int e = 0; e < 2; ++e) {
        const int64_t k = 2 * q + e;
        out[(q * w + u) * 2 + e] = k < depth ? to_bf16(panel[k * w + u]) : Bf16{0};
      }
}

// pack_panel into the layout of interleave_pairs (depth padded to bf16_depth).
template <typename T>
void pack_panel_pairs(int64_t block, int64_t gates, int64_t hidden, int64_t depth, int64_t units,
                      const Strided<T>& src, Bf16* out) {
  AlignedBuffer<T> panel(depth * gates * units);
  pack_panel(block, gates, hidden, depth, units, src, panel.data());
  interleave_pairs(panel.data(), depth, bf16_depth(depth) / 2, gates * units, out);
}

// rows [rows][n] of float32 (row stride ld) as bfloat16 rows of bf16_depth(n), zeros past n:
// the A operand of the bfloat16 products.
inline void round_rows(const float* rows_in, int64_t rows, int64_t n, int64_t ld, Bf16* out) {
  const int64_t n_even = bf16_depth(n);
  for (int64_t r = 0; r < rows; ++r) {
    const float* in = rows_in + r * ld;
    Bf16* o = out + r * n_even;
    int64_t j = 0;
#if defined(__AVX512BF16__)
    for (; j + 32 <= n; j += 32)  // 32 at a time, rounded to nearest even as to_bf16
      _mm512_storeu_si512(o + j, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(in + j + 16),
                                                              _mm512_loadu_ps(in + j)));
#endif
    for (; j < n; ++j) o[j] = to_bf16(in[j]);
    std::fill(o + n, o + n_even, Bf16{0});
  }
}

// Calls tile(row0, std::integral_constant<int, MR>{}) for row tiles that cover [0, rows):
// full tiles of kTileRows, then one shorter tile for the rest.
template <int MR = kTileRows, class Tile>
inline void for_each_row_tile(int64_t rows, Tile&& tile) {
  if constexpr (MR == kTileRows) {
    int64_t row0 = 0;
    for (; row0 + MR <= rows; row0 += MR) tile(row0, std::integral_constant<int, MR>{});
    if (rows - row0 > 0)
      for_each_row_tile<MR - 1>(rows - row0, [&](int64_t r, auto mr) { tile(row0 + r, mr); });
  } else if constexpr (MR > 0) {
    if (rows == MR)
      tile(int64_t{0}, std::integral_constant<int, MR>{});
    else
      for_each_row_tile<MR - 1>(rows, tile);
  }
}

// Asks for the cache lines of p[0 .. n) into L2. The epilogues' rows (a few dozen bytes of
// each gate's row, rows and gates kilobytes apart) are too scattered for the hardware
// prefetchers, and at large sizes each step's rows come from memory. Written in assembly:
// GCC 12 emitted nothing for __builtin_prefetch here (seen with objdump).
template <typename T>
inline void prefetch_span(const T* p, int64_t n) {
  const uintptr_t end = reinterpret_cast<uintptr_t>(p + n);
  for (uintptr_t line = reinterpret_cast<uintptr_t>(p) & ~uintptr_t{63}; line < end; line += 64) {
#if defined(__x86_64__) || defined(__i386__)
    asm volatile("prefetcht1 %0" : : "m"(*reinterpret_cast<const char*>(line)));
#else
    __builtin_prefetch(reinterpret_cast<const void*>(line), 0, 2);
#endif
  }
}

// Cache blocking of gemm_panel. A panel is read once per row tile; streamed from L2 its
// vectors would cost more than the multiply-adds they feed (4 vectors for 24 FMAs under
// AVX-512). So when a panel is deeper than a block, the rows go in chunks of kChunkRows (8 tiles),
// and each chunk runs the depth block by block: a block's slice of the panel (32 KB) stays in
// L1 while every tile of the chunk reads it, and the chunk's accumulators wait in a stack
// buffer between blocks.
// (M: the operands' element type, T or, for the bfloat16 tile_gemm, Bf16: depth blocks even.)
template <typename M, int W>
constexpr int64_t kDepthBlock = 32768 / (W * static_cast<int64_t>(sizeof(M)));
constexpr int64_t kChunkRows = 8 * kTileRows;

// One depth block of every row tile of a chunk: chunk_acc[r] (+)= rows r of a [chunk_rows,
// k_len] (in tile_gemm's layout KS; row r's tile starts at a + r * lda) times the panel's
// block [k_len, W]; resume: add to chunk_acc (a later block), else start from init as
// tile_gemm does. Before a tile, requests its share of the panel's next block (its first
// next_len elements, right after this block) into L2, and, unless resume, calls
// prefetch(r0, MR) for the operands of that tile's epilogue (see gemm_panel).
//
// Not inlined: compiled alone, each tile keeps all its accumulators in registers through the
// depth loop, reading panel vectors as the multiply-adds' memory operands where registers run
// out (AVX2's 3 x 4 tile needs 17). With the tile loop inlined into gemm_panel, beside the
// values the callers' loops keep live, GCC 12 kept 5 of those 12 accumulators on the stack,
// loaded and stored again at every k, and the AVX2 recurrence ran at two thirds of the speed.
template <typename T, int W, typename M, int KS, class Prefetch>
__attribute__((noinline)) void chunk_block(const M* a, int64_t lda, int64_t chunk_rows,
                                           int64_t k_len, const M* panel, const T* init,
                                           bool resume, int64_t next_len, Prefetch& prefetch,
                                           T (&chunk_acc)[kChunkRows][W]) {
  const M* next = panel + k_len * W;
  const int64_t share = ceil_div(next_len, ceil_div(chunk_rows, kTileRows));
  int64_t requested = 0;
  for_each_row_tile(chunk_rows, [&](int64_t r0, auto mr) {
    constexpr int MR = decltype(mr)::value;
    if (!resume) prefetch(r0, MR);
    if (requested < next_len) {
      prefetch_span(next + requested, std::min(share, next_len - requested));
      requested += share;
    }
    auto& acc = *reinterpret_cast<T(*)[MR][W]>(&chunk_acc[r0][0]);
    if constexpr (std::is_same_v<M, T>)
      tile_gemm<T, MR, W, KS>(a + r0 * lda, lda, k_len, panel, init, resume, acc);
    else
      tile_gemm<MR, W>(a + r0 * lda, lda, k_len, panel, init, resume, acc);  // KS = 1
  });
}

// Multiplies all `rows` rows of a [rows, depth] (row stride lda; or, KS > 1, in strips of KS
// rows, KS * lda elements each, as tile_gemm reads them) by one panel [depth, W] (M = Bf16:
// the bfloat16 operands of that tile_gemm, depth even, KS = 1), tile by tile, and hands each tile
// to epilogue(row0, acc) where acc is T[MR][W] for rows row0 .. row0 + MR - 1, once its whole depth
// is summed (a chunk's epilogues run after its last depth block, so they must not write the rows
// of a that the chunk's tiles read). init: as in tile_gemm. The depth blocks depend only on depth
// and W, so results do not depend on the thread count. prefetch(row0, rows) is called before a
// tile's first depth block, to request the operands its epilogue will read and write (see
// prefetch_span): spread tile by tile, the requests do not queue up, and with a deep panel they
// have the rest of the chunk's blocks to arrive.
template <typename T, int W, typename M = T, int KS = 1, class Epilogue, class Prefetch>
void gemm_panel(const M* a, int64_t rows, int64_t depth, int64_t lda, const M* panel, const T* init,
                Epilogue&& epilogue, Prefetch&& prefetch) {
  static_assert(KS == 1 || (std::is_same_v<M, T> && kChunkRows % KS == 0 && kTileRows == KS),
                "strips: of T operands, one a row tile");
#if defined(__AMX_BF16__)
  if constexpr (!std::is_same_v<M, T>) {  // AMX: 16 rows a tile, the whole depth at once
    alignas(64) float acc[16][W];
    for (int64_t row0 = 0; row0 < rows; row0 += 16) {
      const int64_t n = std::min<int64_t>(16, rows - row0);
      prefetch(row0, n);
      tile_product16(a + row0 * lda, lda, depth, panel, acc);
      for (int64_t r = 0; r < n && init != nullptr; ++r)
        for (int w = 0; w < W; ++w) acc[r][w] += init[w];
      with_rows(n, [&](auto mr) {
        epilogue(row0, *reinterpret_cast<float (*)[decltype(mr)::value][W]>(&acc[0][0]));
      });
    }
    return;
  }
#endif
  const int64_t block = depth > kDepthBlock<M, W> ? kDepthBlock<M, W> : std::max<int64_t>(depth, 1);
  alignas(64) T chunk_acc[kChunkRows][W];
  for (int64_t chunk0 = 0; chunk0 < rows; chunk0 += kChunkRows) {
    const int64_t chunk_rows = std::min(kChunkRows, rows - chunk0);
    auto chunk_prefetch = [&](int64_t r0, int64_t n) { prefetch(chunk0 + r0, n); };
    for (int64_t k0 = 0; k0 < depth || k0 == 0; k0 += block) {
      const int64_t k_len = std::min(block, depth - k0);
      // The panel's next depth block, requested into L2 a share per tile while this block's
      // tiles run: a panel too large for L2 beside the rows comes from L3 for each chunk. Not
      // for a chunk of one tile: there a prefetch per cache line would cost as much as the
      // tile's multiply-adds on that line (measured: the recurrence at B = 1, H = 256 took
      // 1.3-3 us more per step with it, its W_hh in L2 anyway).
      const int64_t next_len = chunk_rows > kTileRows ? std::min(block, depth - k0 - k_len) * W : 0;
      chunk_block<T, W, M, KS>(a + chunk0 * lda + k0 * KS, lda, chunk_rows, k_len, panel + k0 * W,
                               init, k0 > 0, next_len, chunk_prefetch, chunk_acc);
      if (k0 + k_len >= depth)
        for_each_row_tile(chunk_rows, [&](int64_t r0, auto mr) {
          epilogue(chunk0 + r0, *reinterpret_cast<T(*)[decltype(mr)::value][W]>(&chunk_acc[r0][0]));
        });
    }
  }
}

// The same without prefetching, for a [rows, depth] with row stride depth.
template <typename T, int W, class Epilogue>
void gemm_panel(const T* a, int64_t rows, int64_t depth, const T* panel, const T* init,
                Epilogue&& epilogue) {
  gemm_panel<T, W>(a, rows, depth, depth, panel, init, epilogue, [](int64_t, int64_t) {});
}

// ------------------------------------------------------------------ threads and memory
// Threads for a run of `blocks` column blocks with `macs` multiply-adds per step: each thread
// takes whole blocks, and a thread's share of a step should outweigh the barrier (~1 us).
inline int choose_threads(int64_t blocks, int64_t macs) {
  constexpr int64_t kMinMacsPerThread = 16384;
  const int64_t useful = std::max<int64_t>(1, macs / kMinMacsPerThread);
  return static_cast<int>(std::min<int64_t>({ThreadPool::global().num_threads(), blocks, useful}));
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
