// The layer's large matrix products (see rnnfast/gemm.h) on the recurrence's micro-kernel.
//
// B is packed once into panels of W columns ([panels][k][W], as the recurrence packs W_hh), the
// threads sharing the panels. Then each thread takes its share of the panels or of the rows
// (whichever divides more evenly; the rows whenever A must be copied, so that no two threads
// copy the same rows) and runs, per pass over the depth and per block of rows,
// every panel of its share over the block. A block of A's rows is sized to stay in L2 while
// the panels' slices stream past it (gemm_panel keeps each slice's depth blocks in L1); an A
// that is not row-major (a transposed A: the weight gradients' dz^T) is first copied into
// strips of a tile's rows (pack_a_strips).
#include <algorithm>
#include <cstring>

#include "microkernel.h"
#include "rnnfast/aligned_buffer.h"
#include "rnnfast/cpu_features.h"
#include "rnnfast/float16.h"
#include "rnnfast/gemm.h"
#include "rnnfast/recurrence.h"

namespace rnnfast {
namespace RNNFAST_ISA_NS {
namespace {

// A packed block's depth in pack_a_strips: k_len padded by kStripPad, so that strips whose
// depth is a power of two (1024, 2048) do not start in the same L1 sets, all written at once.
constexpr int64_t kStripPad = 16;
inline int64_t strip_depth(int64_t k_len) { return k_len + kStripPad; }

// Rows i0 .. i0 + rows - 1 and columns k0 .. k0 + k_len - 1 of A (not row-major: a transposed
// A, or other strides) as strips of kTileRows rows, each strip_depth(k_len) * kTileRows long:
// out[strip][k][r] = A(i0 + strip * kTileRows + r, k0 + k), zeros past the last row. A tile
// reads its rows' elements of one depth side by side (tile_gemm with KS = kTileRows). From a
// transposed A, whose rows are contiguous, a strip's depth is then a copy of kTileRows
// neighbours, and the copy waits only on reading A (a weight gradient's dz, read once, from
// memory: requested kPackAhead depths ahead). Measured (dW = dz^T x of an LSTM, Zen 3, 2
// threads, at five layer shapes; benchmarks/results/2026-12-02-cpu-2core-zen3-f32-bounds):
// against a row-major block made by 8 x 8 transposes in registers, 0.99-1.12x (medians by
// shape 1.02-1.10x); strips without the requests 0.95-1.05x, the transposes with them
// 0.97-1.03x.
constexpr int64_t kPackAhead = 16;
template <typename T>
void pack_a_strips(const GemmArgs<T>& g, int64_t i0, int64_t rows, int64_t k0, int64_t k_len,
                   T* out) {
  const int64_t strip = strip_depth(k_len) * kTileRows, full = rows / kTileRows;
  // Contiguous rows: a strip's values of one depth go as kCopy (a power of two) with one
  // vector load and store, the extra ones onto the next depth's place, which the next copy
  // overwrites (the last depth's onto the padding), wherever the read stays inside A's row.
  constexpr int kCopy = kTileRows <= 2 ? 2 : kTileRows <= 4 ? 4 : 8;
  const int64_t room = g.m - i0 - kCopy;  // where the last such read may start
  const int64_t fast = g.a_row == 1 && room >= 0 ? std::min(full, room / kTileRows + 1) : 0;
  for (int64_t k = 0; k < k_len; ++k) {
    const T* src = g.a + (k0 + k) * g.a_col + i0 * g.a_row;
    T* dst = out + k * kTileRows;
    if (g.a_row == 1 && k + kPackAhead < k_len) prefetch_span(src + kPackAhead * g.a_col, rows);
    for (int64_t s = 0; s < fast; ++s)
      std::memcpy(dst + s * strip, src + s * kTileRows, kCopy * sizeof(T));
    for (int64_t s = fast; s * kTileRows < rows; ++s)
      for (int r = 0; r < kTileRows; ++r) {
        const int64_t i = s * kTileRows + r;
        dst[s * strip + r] = i < rows ? src[i * g.a_row] : T(0);
      }
  }
}

// Depth per pass: at most kMaxPassDepth, cut evenly. Deeper products (the weight gradients sum
// over T*B, the input gradient over G*H) go in several passes that add into C. The pass depth
// sets how many rows A's L2 block holds (gemm_block_bytes / depth), and so how often each panel
// of B streams past from L3 (once per block of rows); each further pass reads and writes C once
// more. A fixed depth, not one from the cache sizes: it decides the order of the sums. Measured
// on Zen 3, 2 threads (benchmarks/results/2026-12-03-cpu-2core-zen3-gemm-pass-depth), against
// the earlier cap of 2048 (AVX2; AVX-512: 1024): the weight gradients dz^T x 1.00-1.04x, the
// input gradients 1.00-1.03x; LSTM layers on a quiet hour 0.96-1.06x, training at (1000,8,128)
// and (100,64,512) 1.04-1.06x. A cap of 256 lost up to 15% on the input gradient at
// 6400x256x1024, one of 1024 was 2% slower than 512 on the weight gradients.
constexpr int64_t kMaxPassDepth = 512;
inline int64_t pass_depth(int64_t k) {
  const int64_t passes = std::max<int64_t>(1, ceil_div(k, kMaxPassDepth));
  return std::max<int64_t>(1, ceil_div(k, passes));
}

template <typename T>
void gemm_impl(const GemmArgs<T>& g) {
  constexpr int W = kTileWidth<T>;
  const int64_t panels = ceil_div(g.n, W), depth = pass_depth(g.k);
  // Rows per block: A's block at most cpu_tuning().gemm_block_bytes, at least a chunk.
  const int64_t max_block_rows =
      std::max<int64_t>(kChunkRows, cpu_tuning().gemm_block_bytes / (depth * int64_t(sizeof(T))) /
                                        kTileRows * kTileRows);
  int64_t row_blocks = ceil_div(g.m, max_block_rows);
  const bool a_direct = g.a_col == 1;  // rows of A usable in place, with row stride a_row

  AlignedBuffer<T> packed(panels * g.k * W), bias(g.bias != nullptr ? panels * W : 0);
  if (g.bias != nullptr) pack_panels(1, g.n, 1, W, bias_rows(g.bias, g.n), bias.data());
  // Threads split the panels or the rows, whichever divides more evenly among them; the rows
  // whenever A has to be copied and each thread gets a tile of rows, so that no two threads
  // copy the same rows. Split by rows, the blocks are as many as a multiple of the threads, of
  // equal height in whole tiles: every thread gets the same work, also where all of A would
  // fit one block (a skinny product: a weight gradient of few columns, N = I). Which rows go
  // together does not change any sum.
  const int threads = choose_threads(std::max(panels, ceil_div(g.m, kTileRows)), g.m * g.n * g.k);
  auto idle_share = [&](int64_t items) {  // fraction of the threads' time left idle
    const int64_t slots = ceil_div(items, threads) * threads;
    return double(slots - items) / double(slots);
  };
  auto rows_per_block = [&](int64_t blocks) {
    return ceil_div(ceil_div(g.m, blocks), kTileRows) * kTileRows;
  };
  const int64_t split_block_rows = rows_per_block(ceil_div(row_blocks, threads) * threads);
  const bool split_rows = (!a_direct && g.m >= threads * int64_t{kTileRows}) ||
                          idle_share(ceil_div(g.m, split_block_rows)) < idle_share(panels);
  const int64_t block_rows = split_rows ? split_block_rows : rows_per_block(row_blocks);
  row_blocks = ceil_div(g.m, block_rows);
  AlignedBuffer<T> a_blocks(a_direct ? 0 : threads * block_rows * strip_depth(depth));
  record_split("gemm", threads, split_rows ? "rows" : "panels");
  SpinBarrier barrier(threads);
  ThreadPool::global().run(threads, g.m * g.n * g.k, [&](int index) {
    const BlockRange pack_share(panels, index, threads);
    for (int64_t p = pack_share.first; p < pack_share.last; ++p)
      pack_panel(p, 1, g.n, g.k, W, Strided<T>{g.b, 0, g.b_col, g.b_row},
                 packed.data() + p * g.k * W);
    barrier.wait(index);  // every panel packed

    const BlockRange my_panels =
        split_rows ? BlockRange(panels, 0, 1) : BlockRange(panels, index, threads);
    const BlockRange my_blocks =
        split_rows ? BlockRange(row_blocks, index, threads) : BlockRange(row_blocks, 0, 1);
    T* a_block = a_direct ? nullptr : a_blocks.data() + index * block_rows * strip_depth(depth);
    // Rows i0 .. of A, depths k0 .., times this thread's panels, a's layout KS: row-major
    // in place (1) or packed in strips (kTileRows).
    auto multiply = [&](auto layout, const T* a, int64_t lda, int64_t i0, int64_t rows, int64_t k0,
                        int64_t k_len) {
      const bool add = g.accumulate || k0 > 0;  // add into C, or overwrite it
      for (int64_t p = my_panels.first; p < my_panels.last; ++p) {
        const int64_t j0 = p * W, units = std::min<int64_t>(W, g.n - j0);
        T* c = g.c + i0 * g.ldc + j0;
        gemm_panel<T, W, T, decltype(layout)::value>(
            a, rows, k_len, lda, packed.data() + (p * g.k + k0) * W,
            g.bias != nullptr && k0 == 0 ? bias.data() + p * W : nullptr,
            [&](int64_t row0, auto& acc) {
              constexpr int MR = std::extent_v<std::remove_reference_t<decltype(acc)>>;
              for (int r = 0; r < MR; ++r) {
                T* c_row = c + (row0 + r) * g.ldc;
                if (add)
                  for (int64_t u = 0; u < units; ++u) c_row[u] += acc[r][u];
                else
                  copy_short(c_row, acc[r], units);
              }
            },
            [&](int64_t row0, int64_t tile_rows) {  // the tile's rows of C
              for (int64_t r = row0; r < row0 + tile_rows; ++r) prefetch_span(c + r * g.ldc, units);
            });
      }
    };
    for (int64_t k0 = 0; k0 < g.k || k0 == 0; k0 += depth) {
      const int64_t k_len = std::min(depth, g.k - k0);
      for (int64_t rb = my_blocks.first; rb < my_blocks.last; ++rb) {
        const int64_t i0 = rb * block_rows, rows = std::min(block_rows, g.m - i0);
        if (a_direct) {
          multiply(std::integral_constant<int, 1>{}, g.a + i0 * g.a_row + k0, g.a_row, i0, rows, k0,
                   k_len);
        } else {
          pack_a_strips(g, i0, rows, k0, k_len, a_block);
          multiply(std::integral_constant<int, kTileRows>{}, a_block, strip_depth(k_len), i0, rows,
                   k0, k_len);
        }
      }
    }
  });
}

}  // namespace

template <typename T>
void gemm(const GemmArgs<T>& args) {
  if (args.m == 0 || args.n == 0) return;
  gemm_impl(args);
}

template void gemm<float>(const GemmArgs<float>&);
template void gemm<double>(const GemmArgs<double>&);

template <typename T>
void column_sums(const T* a, int64_t rows, int64_t cols, T* out) {
  // A block of columns at a time, its sums kept in a stack buffer while the rows stream past.
  constexpr int64_t kBlock = 512;
  double sums[kBlock];
  for (int64_t j0 = 0; j0 < cols; j0 += kBlock) {
    const int64_t n = std::min(kBlock, cols - j0);
    std::fill(sums, sums + n, 0.0);
    for (int64_t i = 0; i < rows; ++i) {
      const T* row = a + i * cols + j0;
      for (int64_t j = 0; j < n; ++j) sums[j] += double(row[j]);
    }
    for (int64_t j = 0; j < n; ++j) out[j0 + j] = T(sums[j]);
  }
}

template void column_sums<float>(const float*, int64_t, int64_t, float*);
template void column_sums<double>(const double*, int64_t, int64_t, double*);

// A pass over memory, a thread for each 256 K values (1 MB read), as many as there are.
template <typename S>
void round_to(const float* in, int64_t n, S* out) {
  const int threads =
      static_cast<int>(std::clamp<int64_t>(n >> 18, 1, ThreadPool::global().num_threads()));
  ThreadPool::global().run(threads, n, [&](int index) {
    const BlockRange share(n, index, threads);
    for (int64_t i = share.first; i < share.last; ++i) {
      if constexpr (std::is_same_v<S, Bf16>)
        out[i] = to_bf16(in[i]);
      else
        out[i] = to_f16(in[i]);
    }
  });
}

template void round_to<Bf16>(const float*, int64_t, Bf16*);
template void round_to<F16>(const float*, int64_t, F16*);

}  // namespace RNNFAST_ISA_NS
}  // namespace rnnfast
