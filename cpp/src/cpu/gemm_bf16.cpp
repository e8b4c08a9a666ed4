// The layer's large matrix products with bfloat16 multiplications (see rnnfast/gemm.h,
// gemm_bf16), compiled once per instruction set like the other kernels.
//
// Under AMX and AVX512-BF16 both operands are packed as bfloat16 into the layout their
// dot-product instructions read, two consecutive k side by side:
//   B: [column tiles of 16][k / 2][16 columns][2]   all of B, once per call, threads sharing it
//   A: [32 rows][depth]                             blocks of rows, per thread and pass
// zeros past k, n and m. block_product sums a block of 32 rows x 32 columns of C (two column
// tiles) over a pass's depth, and the epilogue adds it into C. Passes over the depth (at most
// kMaxDepth each) add into C. A thread packs kGroupBlocks blocks of A's rows at a time, then
// runs them past B's slice, a chunk of columns at a time (kChunkBytes, kept in L2): each
// value of A is packed once per pass, and AMX multiplies so fast that packing A once per
// chunk would take longer than the products. Below AVX512-BF16 the operands are rounded to bfloat16
// values held in float32 and the float32 gemm multiplies them.
#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "microkernel.h"
#include "rnnfast/aligned_buffer.h"
#include "rnnfast/bfloat16.h"
#include "rnnfast/gemm.h"

namespace rnnfast {
namespace RNNFAST_ISA_NS {

#if !defined(__AVX512BF16__)
template <typename T>
void gemm(const GemmArgs<T>& args);  // gemm.cpp, in this instruction set's namespace
#endif

namespace {

// An operand [rows, cols]: element (i, j) at data[i * row + j * col].
template <typename S>
struct View {
  const S* data;
  int64_t row, col;
  Bf16 at(int64_t i, int64_t j) const {
    const S v = data[i * row + j * col];
    if constexpr (std::is_same_v<S, Bf16>)
      return v;
    else
      return to_bf16(v);
  }
};

// f(View<float or Bf16>) for an operand of gemm_bf16.
template <class F>
void with_operand(const void* data, Operand type, int64_t row, int64_t col, F&& f) {
  if (type == Operand::Bfloat16)
    f(View<Bf16>{static_cast<const Bf16*>(data), row, col});
  else
    f(View<float>{static_cast<const float*>(data), row, col});
}

// Calls put(i, j) for i < rows, j < cols, the inner loop along the contiguous one of the source
// operand's two strides (j when col_contiguous).
template <class Put>
void for_each_element(int64_t rows, int64_t cols, bool col_contiguous, Put&& put) {
  if (col_contiguous) {
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) put(i, j);
  } else {
    for (int64_t j = 0; j < cols; ++j)
      for (int64_t i = 0; i < rows; ++i) put(i, j);
  }
}

#if defined(__AVX512BF16__)

constexpr int64_t kBlockRows = 32, kTileCols = 16, kBlockCols = 2 * kTileCols;
constexpr int64_t kDepthAlign = 32;         // an AMX A tile's row: 32 bfloat16 of depth
constexpr int64_t kMaxDepth = 2048;         // per pass: B's slice of a block column 128 KB
constexpr int64_t kChunkBytes = 512 << 10;  // B's slice of a pass that a row group sweeps
constexpr int64_t kGroupBlocks = 8;         // A's row blocks packed together (256 rows)

// ---- Packing, 16 values a vector, in GCC's vector types (GCC 12's intrinsics for shifts and
// conversions warn of their own undefined inputs). Lanes: 16 lanes of 32 bits, each holding one
// bfloat16 in its low half or a pair of consecutive ones, the first in the low half.
using Lanes = Simd<uint32_t>::Vec;
typedef uint16_t Halves __attribute__((vector_size(32)));  // 16 bfloat16

inline __mmask16 first16(int64_t count) {
  return count >= 16 ? __mmask16(0xffff) : __mmask16((1u << std::max<int64_t>(count, 0)) - 1);
}

// The first `count` (clamped to 0 .. 16) of 16 consecutive values at p as bfloat16, one per
// lane, zeros past count.
inline Lanes load_lanes(const float* p, int64_t count) {
  // to_bf16's rounding, bit for bit (the hardware's conversions flush subnormals)
  return bf16_bits(reinterpret_cast<Lanes>(_mm512_maskz_loadu_ps(first16(count), p)));
}
inline Lanes load_lanes(const Bf16* p, int64_t count) {
  return __builtin_convertvector(
      reinterpret_cast<Halves>(_mm256_maskz_loadu_epi16(first16(count), p)), Lanes);
}

// The first `count` (clamped to 0 .. 32) of 32 consecutive values at p as bfloat16, in order:
// 16 pairs, one per lane.
inline Lanes load_pairs(const float* p, int64_t count) {
  const Halves halves[2] = {__builtin_convertvector(load_lanes(p, count), Halves),
                            __builtin_convertvector(load_lanes(p + 16, count - 16), Halves)};
  Lanes pairs;
  std::memcpy(&pairs, halves, sizeof pairs);
  return pairs;
}
inline Lanes load_pairs(const Bf16* p, int64_t count) {
  const __mmask32 mask =
      count >= 32 ? ~__mmask32(0) : __mmask32((uint64_t{1} << std::max<int64_t>(count, 0)) - 1);
  return reinterpret_cast<Lanes>(_mm512_maskz_loadu_epi16(mask, p));
}

inline void store_lanes(Bf16* p, const Lanes& v) { std::memcpy(p, &v, sizeof v); }

// Column tile `tile` of B [k, n] (columns tile * 16 ..), all of k, into out [kp / 2][16][2].
// Rows of B contiguous (b.col == 1): per depth pair, the two rows' 16 values. Depth contiguous
// (b.row == 1, a transposed operand: PyTorch's weights): per 16 depth pairs, the 16 columns'
// pairs, transposed.
template <typename S>
void pack_b_tile(const View<S>& b, int64_t k, int64_t n, int64_t kp, int64_t tile, Bf16* out) {
  const int64_t j0 = tile * kTileCols, cols = std::clamp<int64_t>(n - j0, 0, kTileCols);
  if (b.col == 1) {
    for (int64_t q = 0; q < kp / 2; ++q) {
      auto lanes = [&](int64_t p) {
        return p < k ? load_lanes(b.data + p * b.row + j0, cols) : Lanes{};
      };
      store_lanes(out + q * 2 * kTileCols, lanes(2 * q) | lanes(2 * q + 1) << 16);
    }
    return;
  }
  for (int64_t q0 = 0; q0 < kp / 2; q0 += 16) {  // depth contiguous: b.row == 1
    Lanes v[16];
    for (int64_t c = 0; c < 16; ++c)
      v[c] = c < cols ? load_pairs(b.data + (j0 + c) * b.col + 2 * q0, k - 2 * q0) : Lanes{};
    transpose_square<uint32_t>(v);
    for (int64_t q = 0; q < 16; ++q) store_lanes(out + (q0 + q) * 2 * kTileCols, v[q]);
  }
}

// Rows i0 .. i0 + rows - 1 and depth k0 .. k0 + k_len - 1 of A [m, k] into out [32][dp], zeros
// past them. Depth contiguous (a.col == 1): each row 32 values a vector. Rows contiguous
// (a.row == 1, a transposed operand: the weight gradients' dz^T): per 16 rows and 32 of depth,
// 16 vectors of depth pairs over the rows, transposed.
template <typename S>
void pack_a_block(const View<S>& a, int64_t i0, int64_t rows, int64_t k0, int64_t k_len, int64_t dp,
                  Bf16* out) {
  if (a.col == 1) {
    for (int64_t r = 0; r < kBlockRows; ++r)
      for (int64_t p0 = 0; p0 < dp; p0 += 32)
        store_lanes(
            out + r * dp + p0,
            r < rows ? load_pairs(a.data + (i0 + r) * a.row + k0 + p0, k_len - p0) : Lanes{});
    return;
  }
  for (int64_t r0 = 0; r0 < kBlockRows; r0 += 16)  // rows contiguous: a.row == 1
    for (int64_t p0 = 0; p0 < dp; p0 += 32) {
      Lanes v[16];
      for (int64_t q = 0; q < 16; ++q) {
        auto lanes = [&](int64_t p) {
          return p < k_len ? load_lanes(a.data + (k0 + p) * a.col + i0 + r0, rows - r0) : Lanes{};
        };
        v[q] = lanes(p0 + 2 * q) | lanes(p0 + 2 * q + 1) << 16;
      }
      transpose_square<uint32_t>(v);
      for (int64_t r = 0; r < 16; ++r) store_lanes(out + (r0 + r) * dp + p0, v[r]);
    }
}

#if defined(__AMX_BF16__)
// c [32][32] = a [32][dp] times B's column tiles b0, b1 (each [dp / 2][16][2]).
inline void block_product(const Bf16* a, int64_t dp, const Bf16* b0, const Bf16* b1,
                          float (&c)[kBlockRows][kBlockCols]) {
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  const int64_t stride = dp * static_cast<int64_t>(sizeof(Bf16));
  for (int64_t k = 0; k < dp; k += kDepthAlign) {
    _tile_loadd(4, a + k, stride);
    _tile_loadd(5, a + 16 * dp + k, stride);
    _tile_loadd(6, b0 + k * kTileCols, 64);
    _tile_loadd(7, b1 + k * kTileCols, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  constexpr int kRowBytes = kBlockCols * sizeof(float);
  _tile_stored(0, &c[0][0], kRowBytes);
  _tile_stored(1, &c[0][16], kRowBytes);
  _tile_stored(2, &c[16][0], kRowBytes);
  _tile_stored(3, &c[16][16], kRowBytes);
}
#else

// c [32][32] = a [32][dp] times B's column tiles b0, b1, 8 rows at a time: 16 accumulators,
// each vdpbf16ps adding a depth pair of one row (broadcast) times 16 columns.
inline void block_product(const Bf16* a, int64_t dp, const Bf16* b0, const Bf16* b1,
                          float (&c)[kBlockRows][kBlockCols]) {
  constexpr int R = 8;
  for (int r0 = 0; r0 < kBlockRows; r0 += R) {
    __m512 acc[R][2];
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int64_t k = 0; k < dp; k += 2) {
      const __m512bh v0 = (__m512bh)_mm512_loadu_si512(b0 + k * kTileCols);
      const __m512bh v1 = (__m512bh)_mm512_loadu_si512(b1 + k * kTileCols);
      for (int r = 0; r < R; ++r) {
        int32_t pair;
        std::memcpy(&pair, a + (r0 + r) * dp + k, sizeof pair);
        const __m512bh x = (__m512bh)_mm512_set1_epi32(pair);
        acc[r][0] = _mm512_dpbf16_ps(acc[r][0], x, v0);
        acc[r][1] = _mm512_dpbf16_ps(acc[r][1], x, v1);
      }
    }
    for (int r = 0; r < R; ++r) {
      _mm512_storeu_ps(&c[r0 + r][0], acc[r][0]);
      _mm512_storeu_ps(&c[r0 + r][16], acc[r][1]);
    }
  }
}
#endif

void gemm_bf16_impl(const Bf16GemmArgs& g) {
  const int64_t kp = std::max<int64_t>(1, ceil_div(g.k, kDepthAlign)) * kDepthAlign;
  const int64_t passes = ceil_div(kp, kMaxDepth);
  const int64_t depth = ceil_div(ceil_div(kp, passes), kDepthAlign) * kDepthAlign;
  const int64_t col_blocks = ceil_div(g.n, kBlockCols), col_tiles = 2 * col_blocks;
  const int64_t row_blocks = ceil_div(g.m, kBlockRows);
  const int64_t chunk =
      std::max<int64_t>(1, kChunkBytes / (depth * kBlockCols * int64_t(sizeof(Bf16))));

  AlignedBuffer<Bf16> packed(col_tiles * kp * kTileCols);
  // Threads split the row blocks or the column blocks, whichever are more.
  const bool split_rows = row_blocks >= col_blocks;
  const int threads = choose_threads(std::max(row_blocks, col_blocks), g.m * g.n * g.k);
  const int64_t group_size = kGroupBlocks * kBlockRows * depth;
  AlignedBuffer<Bf16> a_groups(threads * group_size);
  SpinBarrier barrier(threads);
  ThreadPool::global().run(threads, g.m * g.n * g.k, [&](int index) {
    const BlockRange packs(col_tiles, index, threads);
    with_operand(g.b, g.b_type, g.b_row, g.b_col, [&](const auto& b) {
      for (int64_t tile = packs.first; tile < packs.last; ++tile)
        pack_b_tile(b, g.k, g.n, kp, tile, packed.data() + tile * kp * kTileCols);
    });
    barrier.wait(index);  // all of B packed

    [[maybe_unused]] const TileScope tiles;  // AMX: this thread's tile configuration
    const BlockRange my_cols =
        split_rows ? BlockRange(col_blocks, 0, 1) : BlockRange(col_blocks, index, threads);
    const BlockRange my_rows =
        split_rows ? BlockRange(row_blocks, index, threads) : BlockRange(row_blocks, 0, 1);
    Bf16* a_group = a_groups.data() + index * group_size;
    alignas(64) float acc[kBlockRows][kBlockCols];
    for (int64_t k0 = 0; k0 < kp; k0 += depth) {
      const int64_t dp = std::min(depth, kp - k0);
      const int64_t k_len = std::clamp<int64_t>(g.k - k0, 0, dp);
      const bool add = g.accumulate || k0 > 0;
      const float* bias = k0 == 0 ? g.bias : nullptr;
      for (int64_t rg0 = my_rows.first; rg0 < my_rows.last; rg0 += kGroupBlocks) {
        const int64_t rg1 = std::min(rg0 + kGroupBlocks, my_rows.last);
        with_operand(g.a, g.a_type, g.a_row, g.a_col, [&](const auto& a) {
          for (int64_t rb = rg0; rb < rg1; ++rb) {
            const int64_t i0 = rb * kBlockRows;
            pack_a_block(a, i0, std::min(kBlockRows, g.m - i0), k0, k_len, dp,
                         a_group + (rb - rg0) * kBlockRows * dp);
          }
        });
        for (int64_t cb0 = my_cols.first; cb0 < my_cols.last; cb0 += chunk) {
          const int64_t cb1 = std::min(cb0 + chunk, my_cols.last);
          for (int64_t rb = rg0; rb < rg1; ++rb) {
            const int64_t i0 = rb * kBlockRows, rows = std::min(kBlockRows, g.m - i0);
            for (int64_t cb = cb0; cb < cb1; ++cb) {
              const Bf16* b0 = packed.data() + (2 * cb * kp + k0) * kTileCols;
              block_product(a_group + (rb - rg0) * kBlockRows * dp, dp, b0, b0 + kp * kTileCols,
                            acc);
              const int64_t j0 = cb * kBlockCols, cols = std::min(kBlockCols, g.n - j0);
              for (int64_t r = 0; r < rows; ++r) {
                float* c = g.c + (i0 + r) * g.ldc + j0;
                for (int64_t u = 0; u < cols; ++u) {
                  const float v = bias != nullptr ? acc[r][u] + bias[j0 + u] : acc[r][u];
                  c[u] = add ? c[u] + v : v;
                }
              }
            }
          }
        }
      }
    }
  });
}

#else  // below AVX512-BF16: round, widen, and multiply in float32

// out [rows, cols] row-major = the operand's values rounded to bfloat16, as float32.
template <typename S>
void widen(const View<S>& v, int64_t rows, int64_t cols, float* out) {
  if (rows == 0 || cols == 0) return;
  const int threads = choose_threads(rows, rows * cols);
  ThreadPool::global().run(threads, rows * cols, [&](int index) {
    const BlockRange mine(rows, index, threads);
    for_each_element(mine.last - mine.first, cols, v.col == 1, [&](int64_t i, int64_t j) {
      out[(mine.first + i) * cols + j] = to_float(v.at(mine.first + i, j));
    });
  });
}

void gemm_bf16_impl(const Bf16GemmArgs& g) {
  AlignedBuffer<float> a(g.m * g.k), b(g.k * g.n);
  with_operand(g.a, g.a_type, g.a_row, g.a_col,
               [&](const auto& v) { widen(v, g.m, g.k, a.data()); });
  with_operand(g.b, g.b_type, g.b_row, g.b_col,
               [&](const auto& v) { widen(v, g.k, g.n, b.data()); });
  RNNFAST_ISA_NS::gemm(GemmArgs<float>{g.m, g.n, g.k, a.data(), g.k, 1, b.data(), g.n, 1, g.bias,
                                       g.c, g.ldc, g.accumulate});
}

#endif

}  // namespace

void gemm_bf16(const Bf16GemmArgs& args) {
  if ((args.a_row != 1 && args.a_col != 1) || (args.b_row != 1 && args.b_col != 1))
    throw std::invalid_argument("gemm_bf16: each operand needs a stride of 1 (rows or columns)");
  if (args.m == 0 || args.n == 0) return;
  gemm_bf16_impl(args);
}

}  // namespace RNNFAST_ISA_NS
}  // namespace rnnfast
