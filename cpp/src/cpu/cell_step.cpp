// One step of a cell on packed weights (see rnnfast/cell_step.h): per tile, the input and the
// recurrent matmul on the micro-kernel, then the cell's forward on the tile.
#include "rnnfast/cell_step.h"

#include <algorithm>

#include "microkernel.h"
#include "rnnfast/cells/cells.h"
#include "rnnfast/recurrence.h"
#include "tile_cell.h"

namespace rnnfast {
namespace RNNFAST_ISA_NS {
namespace {

template <typename T, class C>
void step_impl(const PackedCell<T>& p, int64_t B, const T* x, const T* h, const T* c, T* h_out,
               T* c_out) {
  constexpr int G = C::kGates, kUnits = kForwardUnits<T, C>, kWidth = G * kUnits;
  const int64_t I = p.input, H = p.hidden, blocks = ceil_div(H, kUnits);
  const int threads = choose_threads(blocks, B * G * H * (I + H));
  record_split("cell_step", threads, "units");
  ThreadPool::global().run(threads, [&](int index) {
    const BlockRange mine(blocks, index, threads);
    for (int64_t block = mine.first; block < mine.last; ++block) {
      const int64_t j0 = block * kUnits;
      const int64_t units = std::min<int64_t>(kUnits, H - j0);
      for_each_row_tile(B, [&](int64_t row0, auto mr) {
        constexpr int MR = decltype(mr)::value;
        alignas(64) T zx[MR][kWidth], zh[MR][kWidth];
        tile_gemm<T, MR, kWidth>(x + row0 * I, I, I, p.w_ih.data() + block * I * kWidth,
                                 p.b_ih.data() + block * kWidth, false, zx);
        tile_gemm<T, MR, kWidth>(h + row0 * H, H, H, p.w_hh.data() + block * H * kWidth,
                                 p.b_hh.data() + block * kWidth, false, zh);
        for (int r = 0; r < MR; ++r) {
          const int64_t at = (row0 + r) * H + j0;  // unit j0 of this row in [B, H]
          tile_forward<T, C, kUnits>(zx[r], zh[r], C::kReadsHPrev ? h + at : nullptr,
                                     c != nullptr ? c + at : nullptr, h_out + at,
                                     c_out != nullptr ? c_out + at : nullptr, nullptr, 0, units);
        }
      });
    }
  });
}

}  // namespace

template <typename T>
void pack_cell(PackedCell<T>& p, const T* w_ih, const T* w_hh, const T* b_ih, const T* b_hh) {
  cells::visit_cell(p.cell, [&](auto c) {
    using C = decltype(c);
    constexpr int G = C::kGates, kUnits = kForwardUnits<T, C>, kWidth = G * kUnits;
    const int64_t I = p.input, H = p.hidden, blocks = ceil_div(H, kUnits);
    p.w_ih = AlignedBuffer<T>(blocks * I * kWidth);
    p.w_hh = AlignedBuffer<T>(blocks * H * kWidth);
    p.b_ih = AlignedBuffer<T>(blocks * kWidth);
    p.b_hh = AlignedBuffer<T>(blocks * kWidth);
    pack_panels(G, H, I, kUnits, weight_rows(w_ih, H, I), p.w_ih.data());
    pack_panels(G, H, H, kUnits, weight_rows(w_hh, H, H), p.w_hh.data());
    pack_panels(G, H, 1, kUnits, bias_rows(b_ih, H), p.b_ih.data());
    pack_panels(G, H, 1, kUnits, bias_rows(b_hh, H), p.b_hh.data());
  });
}

template <typename T>
void cell_step(const PackedCell<T>& p, int64_t batch, const T* x, const T* h, const T* c, T* h_out,
               T* c_out) {
  if (batch == 0) return;
  cells::visit_cell(
      p.cell, [&](auto cell) { step_impl<T, decltype(cell)>(p, batch, x, h, c, h_out, c_out); });
}

template void pack_cell<float>(PackedCell<float>&, const float*, const float*, const float*,
                               const float*);
template void pack_cell<double>(PackedCell<double>&, const double*, const double*, const double*,
                                const double*);
template void cell_step<float>(const PackedCell<float>&, int64_t, const float*, const float*,
                               const float*, float*, float*);
template void cell_step<double>(const PackedCell<double>&, int64_t, const double*, const double*,
                                const double*, double*, double*);

}  // namespace RNNFAST_ISA_NS
}  // namespace rnnfast
