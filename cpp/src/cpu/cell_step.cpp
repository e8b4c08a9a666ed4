// One step of a cell on packed weights (see rnnfast/cell_step.h): per tile, the input and the
// recurrent matmul on the micro-kernel, then the cell's forward on the tile.
#include "rnnfast/cell_step.h"

#include <algorithm>
#include <stdexcept>
#include <type_traits>

#include "microkernel.h"
#include "rnnfast/cells/cells.h"
#include "rnnfast/recurrence.h"
#include "tile_cell.h"

namespace rnnfast {
namespace RNNFAST_ISA_NS {
namespace {

// acc = a [MR rows][depth] (row stride lda) times a panel, plus init: the micro-kernel for the
// operand type M (T, or Bf16 for the bfloat16 pairs of vdpbf16ps).
template <typename T, int MR, int W, typename M>
inline void tile_product(const M* a, int64_t lda, int64_t depth, const M* panel, const T* init,
                         T (&acc)[MR][W]) {
#if defined(__AVX512BF16__)
  if constexpr (!std::is_same_v<M, T>) {
    tile_gemm<MR, W>(a, lda, depth, panel, init, false, acc);
    return;
  }
#endif
  if constexpr (std::is_same_v<M, T>) tile_gemm<T, MR, W>(a, lda, depth, panel, init, false, acc);
}

// The step for storage type S (T, or Bf16 for bfloat16 cells computed in T = float) and matmul
// operands M [B, depth] (x and h as given, or staged: rounded to M and zero-padded to the
// panels' depth). A bfloat16 row's state goes through float32 locals around tile_forward.
template <typename T, class C, typename S, typename M>
void step_impl(const PackedCell<T>& p, int64_t B, const M* x, int64_t x_depth, const M* h,
               int64_t h_depth, const M* w_ih, const M* w_hh, const S* h_state, const S* c,
               S* h_out, S* c_out) {
  constexpr int G = C::kGates, kUnits = kForwardUnits<T, C>, kWidth = G * kUnits;
  const int64_t I = p.input, H = p.hidden, blocks = ceil_div(H, kUnits);
  const int64_t macs = B * G * H * (I + H);
  const int threads = choose_threads(blocks, macs);
  record_split("cell_step", threads, "units");
  ThreadPool::global().run(threads, macs, [&](int index) {
    const BlockRange mine(blocks, index, threads);
    for (int64_t block = mine.first; block < mine.last; ++block) {
      const int64_t j0 = block * kUnits;
      const int64_t units = std::min<int64_t>(kUnits, H - j0);
      for_each_row_tile(B, [&](int64_t row0, auto mr) {
        constexpr int MR = decltype(mr)::value;
        alignas(64) T zx[MR][kWidth], zh[MR][kWidth];
        tile_product<T, MR, kWidth>(x + row0 * x_depth, x_depth, x_depth,
                                    w_ih + block * x_depth * kWidth, p.b_ih.data() + block * kWidth,
                                    zx);
        tile_product<T, MR, kWidth>(h + row0 * h_depth, h_depth, h_depth,
                                    w_hh + block * h_depth * kWidth, p.b_hh.data() + block * kWidth,
                                    zh);
        for (int r = 0; r < MR; ++r) {
          const int64_t at = (row0 + r) * H + j0;  // unit j0 of this row in [B, H]
          const S* h_prev = C::kReadsHPrev ? h_state + at : nullptr;
          const S* c_prev = c != nullptr ? c + at : nullptr;
          S* c_new = c_out != nullptr ? c_out + at : nullptr;
          if constexpr (std::is_same_v<S, T>) {
            tile_forward<T, C, kUnits>(zx[r], zh[r], h_prev, c_prev, h_out + at, c_new, nullptr, 0,
                                       units);
          } else {
            alignas(64) T h_prev_l[kUnits], c_l[kUnits], h_l[kUnits];
            for (int64_t u = 0; u < units; ++u) {
              if (h_prev != nullptr) h_prev_l[u] = to_float(h_prev[u]);
              if (c_prev != nullptr) c_l[u] = to_float(c_prev[u]);
            }
            tile_forward<T, C, kUnits>(zx[r], zh[r], h_prev != nullptr ? h_prev_l : nullptr,
                                       c_prev != nullptr ? c_l : nullptr, h_l,
                                       c_new != nullptr ? c_l : nullptr, nullptr, 0, units);
            for (int64_t u = 0; u < units; ++u) {
              h_out[at + u] = to_bf16(h_l[u]);
              if (c_new != nullptr) c_new[u] = to_bf16(c_l[u]);
            }
          }
        }
      });
    }
  });
}

// rows [B, n] of bfloat16 as operands of type M [B, depth]: widened to float, or bfloat16 as
// they are; zeros past n.
template <typename M>
void stage_rows(const Bf16* rows, int64_t B, int64_t n, int64_t depth, M* out) {
  for (int64_t b = 0; b < B; ++b) {
    M* o = out + b * depth;
    for (int64_t k = 0; k < n; ++k) {
      if constexpr (std::is_same_v<M, Bf16>)
        o[k] = rows[b * n + k];
      else
        o[k] = to_float(rows[b * n + k]);
    }
    std::fill(o + n, o + depth, M{});
  }
}

// The bfloat16 step with operands M: the staged x and h, the panels of that type.
template <class C, typename M>
void step_bf16(const PackedCell<float>& p, int64_t B, const Bf16* x, const Bf16* h, const Bf16* c,
               Bf16* h_out, Bf16* c_out) {
  const bool pairs = std::is_same_v<M, Bf16>;
  const int64_t x_depth = pairs ? bf16_depth(p.input) : p.input;
  const int64_t h_depth = pairs ? bf16_depth(p.hidden) : p.hidden;
  AlignedBuffer<M> operands(B * (x_depth + h_depth));  // x, then h
  stage_rows(x, B, p.input, x_depth, operands.data());
  stage_rows(h, B, p.hidden, h_depth, operands.data() + B * x_depth);
  const M *w_ih, *w_hh;
  if constexpr (std::is_same_v<M, Bf16>) {
    w_ih = p.w_ih_pairs.data();
    w_hh = p.w_hh_pairs.data();
  } else {
    w_ih = p.w_ih.data();
    w_hh = p.w_hh.data();
  }
  step_impl<float, C, Bf16, M>(p, B, operands.data(), x_depth, operands.data() + B * x_depth,
                               h_depth, w_ih, w_hh, h, c, h_out, c_out);
}

}  // namespace

template <typename T>
void pack_cell(PackedCell<T>& p, const T* w_ih, const T* w_hh, const T* b_ih, const T* b_hh,
               bool pairs) {
  cells::visit_cell(p.cell, [&](auto c) {
    using C = decltype(c);
    constexpr int G = C::kGates, kUnits = kForwardUnits<T, C>, kWidth = G * kUnits;
    const int64_t I = p.input, H = p.hidden, blocks = ceil_div(H, kUnits);
    p.b_ih = AlignedBuffer<T>(blocks * kWidth);
    p.b_hh = AlignedBuffer<T>(blocks * kWidth);
    pack_panels(G, H, 1, kUnits, bias_rows(b_ih, H), p.b_ih.data());
    pack_panels(G, H, 1, kUnits, bias_rows(b_hh, H), p.b_hh.data());
    if constexpr (std::is_same_v<T, float>) {
      if (pairs) {  // bfloat16 pairs, depth padded to bf16_depth
        const int64_t xd = bf16_depth(I), hd = bf16_depth(H);
        p.w_ih_pairs = AlignedBuffer<Bf16>(blocks * xd * kWidth);
        p.w_hh_pairs = AlignedBuffer<Bf16>(blocks * hd * kWidth);
        for (int64_t block = 0; block < blocks; ++block) {
          pack_panel_pairs(block, G, H, I, kUnits, weight_rows(w_ih, H, I),
                           p.w_ih_pairs.data() + block * xd * kWidth);
          pack_panel_pairs(block, G, H, H, kUnits, weight_rows(w_hh, H, H),
                           p.w_hh_pairs.data() + block * hd * kWidth);
        }
        return;
      }
    }
    (void)pairs;
    p.w_ih = AlignedBuffer<T>(blocks * I * kWidth);
    p.w_hh = AlignedBuffer<T>(blocks * H * kWidth);
    pack_panels(G, H, I, kUnits, weight_rows(w_ih, H, I), p.w_ih.data());
    pack_panels(G, H, H, kUnits, weight_rows(w_hh, H, H), p.w_hh.data());
  });
}

template <typename T>
void cell_step(const PackedCell<T>& p, int64_t batch, const T* x, const T* h, const T* c, T* h_out,
               T* c_out) {
  if (batch == 0) return;
  cells::visit_cell(p.cell, [&](auto cell) {
    step_impl<T, decltype(cell), T, T>(p, batch, x, p.input, h, p.hidden, p.w_ih.data(),
                                       p.w_hh.data(), h, c, h_out, c_out);
  });
}

void cell_step_bf16(const PackedCell<float>& p, int64_t batch, const Bf16* x, const Bf16* h,
                    const Bf16* c, Bf16* h_out, Bf16* c_out) {
  if (batch == 0) return;
  cells::visit_cell(p.cell, [&](auto cell) {
    using C = decltype(cell);
#if defined(__AVX512BF16__)
    if (p.w_ih_pairs.data() == nullptr)
      throw std::logic_error("the bfloat16 step called on weights not packed in pairs");
    step_bf16<C, Bf16>(p, batch, x, h, c, h_out, c_out);
#else
    step_bf16<C, float>(p, batch, x, h, c, h_out, c_out);
#endif
  });
}

// The copy for avx512_bf16 is called only to pack float32 weights in pairs and to step bfloat16
// cells on them (dispatch.cpp); it compiles nothing else.
template void pack_cell<float>(PackedCell<float>&, const float*, const float*, const float*,
                               const float*, bool);
#if !defined(__AVX512BF16__)
template void pack_cell<double>(PackedCell<double>&, const double*, const double*, const double*,
                                const double*, bool);
template void cell_step<float>(const PackedCell<float>&, int64_t, const float*, const float*,
                               const float*, float*, float*);
template void cell_step<double>(const PackedCell<double>&, int64_t, const double*, const double*,
                                const double*, double*, double*);
#endif

}  // namespace RNNFAST_ISA_NS
}  // namespace rnnfast
