// CPU recurrence: for each step, the recurrent matmul on packed weights with the cell's gate
// math fused into the epilogue of each output tile (DESIGN.md section 4).
//
// Forward, step t:   acc[b, g, j] = b_hh[g*H + j] + sum_k h_{t-1}[b, k] W_hh[g*H + j, k]
//                    then, on the tile while it is in registers, the cell's forward per unit.
// Backward, step t:  acc[b, j] = sum_k dzh_t[b, k] W_hh[k, j]    (= dh_{t-1} through W_hh)
//                    then, on the tile, the cell's backward of step t-1 per unit: the epilogue
//                    of one step's matmul is the gate math of the next, and dzh never waits.
//
// The weights are packed once per call into panels of `units` consecutive hidden units, all
// G gates of a unit side by side, so that one tile holds every gate of its units.
#include <algorithm>
#include <cstring>
#include <type_traits>

#include "microkernel.h"
#include "rnnfast/aligned_buffer.h"
#include "rnnfast/cells/cells.h"
#include "rnnfast/recurrence.h"
#include "tile_cell.h"

namespace rnnfast {
namespace RNNFAST_ISA_NS {
namespace {

// The cell's forward on one row of a tile: units j0 .. j0 + units - 1 of batch row b, whose
// recurrent pre-activations acc[g * kUnits + u] the tile has just computed. The row's pointers
// (zx_row [G*H], h_prev_row, c_prev_row, h_row, c_row [H], saved_row [S*H]) start at b.
// Inputs are staged into local arrays first, so that the loop that does the math touches no
// pointer the compiler must assume aliased and vectorizes over u.
template <typename T, class C, int kUnits>
inline void forward_epilogue(const T* acc, const T* zx_row, const T* h_prev_row,
                             const T* c_prev_row, T* h_row, T* c_row, T* saved_row, int64_t H,
                             int64_t j0, int64_t units) {
  constexpr int G = C::kGates, S = C::kSaved > 0 ? C::kSaved : 1;
  alignas(64) T zx_l[G][kUnits], h_prev_l[kUnits], c_l[kUnits], h_l[kUnits], saved_l[S][kUnits];
  for (int u = 0; u < kUnits; ++u) {
    const bool valid = u < units;
    for (int g = 0; g < G; ++g) zx_l[g][u] = valid ? zx_row[g * H + j0 + u] : T(0);
    h_prev_l[u] = valid ? h_prev_row[j0 + u] : T(0);
    c_l[u] = valid && C::kHasCellState ? c_prev_row[j0 + u] : T(0);
  }
  for (int u = 0; u < kUnits; ++u) {
    T zx[G], zh[G], saved[S];
    for (int g = 0; g < G; ++g) {
      zx[g] = zx_l[g][u];
      zh[g] = acc[g * kUnits + u];
    }
    C::forward(zx, zh, h_prev_l[u], c_l[u], h_l[u], saved);
    for (int s = 0; s < S; ++s) saved_l[s][u] = saved[s];
  }
  for (int64_t u = 0; u < units; ++u) {
    h_row[j0 + u] = h_l[u];
    if constexpr (C::kHasCellState) c_row[j0 + u] = c_l[u];
    if (saved_row != nullptr)
      for (int s = 0; s < C::kSaved; ++s) saved_row[s * H + j0 + u] = saved_l[s][u];
  }
}

template <typename T, class C, bool kTraining>
void forward_impl(const ForwardArgs<T>& a) {
  constexpr int G = C::kGates, S = C::kSaved;
  constexpr int kUnits = kForwardUnits<T, C>, kWidth = G * kUnits;
  const int64_t B = a.batch, H = a.hidden, GH = G * H;
  const int64_t blocks = ceil_div(H, kUnits);

  AlignedBuffer<T> panels(blocks * H * kWidth), bias(blocks * kWidth);
  pack_panels(G, H, H, kUnits, [&](int64_t g, int64_t j, int64_t k) {
    return a.w_hh[(g * H + j) * H + k];
  }, panels.data());
  pack_panels(G, H, 1, kUnits, [&](int64_t g, int64_t j, int64_t) {
    return a.b_hh != nullptr ? a.b_hh[g * H + j] : T(0);
  }, bias.data());

  const int threads = choose_threads(blocks, B * GH * H);
  SpinBarrier barrier(threads);
  ThreadPool::global().run(threads, [&](int index) {
    const BlockRange mine(blocks, index, threads);
    for (int64_t t = 0; t < a.steps; ++t) {
      const T* h_prev = t == 0 ? a.h0 : a.y + (t - 1) * B * H;
      const T* c_prev = t == 0 ? a.c0 : a.c_n;  // the LSTM's c_n is its running state
      const T* zx_t = a.zx + t * B * GH;
      T* h_t = a.y + t * B * H;
      for (int64_t block = mine.first; block < mine.last; ++block) {
        const int64_t j0 = block * kUnits;
        const int64_t units = std::min<int64_t>(kUnits, H - j0);
        gemm_panel<T, kWidth>(h_prev, B, H, panels.data() + block * H * kWidth,
                              bias.data() + block * kWidth, [&](int64_t row0, auto& acc) {
          constexpr int MR = std::extent_v<std::remove_reference_t<decltype(acc)>>;
          for (int r = 0; r < MR; ++r) {
            const int64_t b = row0 + r;
            T* saved_bt = kTraining && S > 0 ? a.saved + (t * B + b) * S * H : nullptr;
            forward_epilogue<T, C, kUnits>(acc[r], zx_t + b * GH, h_prev + b * H,
                                           C::kHasCellState ? c_prev + b * H : nullptr,
                                           h_t + b * H, a.c_n ? a.c_n + b * H : nullptr,
                                           saved_bt, H, j0, units);
          }
        });
      }
      barrier.wait();  // h_t complete before any thread reads it
    }
  });
  std::memcpy(a.h_n, a.y + (a.steps - 1) * B * H, sizeof(T) * B * H);
}

// The cell's backward at step t for batch row b, units j0 .. j0 + units - 1, given dh_t, the
// full gradient reaching h_t for those units. Writes dzx, dzh (GRU) at step t, and the running
// gradients a.dh0 (dh_direct, for step t-1) and a.dc0 (gradient reaching c_{t-1}). Staged
// through local arrays like forward_epilogue, so that the math vectorizes.
template <typename T, class C, int kUnits>
inline void backward_epilogue(const BackwardArgs<T>& a, int64_t t, int64_t b, int64_t j0,
                              int64_t units, const T* dh_t) {
  constexpr int G = C::kGates, S = C::kSaved > 0 ? C::kSaved : 1;
  const int64_t B = a.batch, H = a.hidden, GH = G * H;
  const int64_t row = b * H + j0;  // offset of unit j0 of row b in [B, H] arrays
  const T* h_prev = t == 0 ? a.h0 : a.y + (t - 1) * B * H;
  alignas(64) T saved_l[S][kUnits], h_l[kUnits], h_prev_l[kUnits], c_prev_l[kUnits],
      dc_l[kUnits], dzx_l[G][kUnits], dzh_l[G][kUnits], dh_direct_l[kUnits];
  for (int u = 0; u < kUnits; ++u) {
    const bool valid = u < units;
    if constexpr (C::kSaved > 0) {
      const T* saved_bt = a.saved + (t * B + b) * C::kSaved * H;
      for (int s = 0; s < S; ++s) saved_l[s][u] = valid ? saved_bt[s * H + j0 + u] : T(0);
    } else {
      saved_l[0][u] = T(0);
    }
    h_l[u] = valid ? a.y[t * B * H + row + u] : T(0);
    h_prev_l[u] = valid ? h_prev[row + u] : T(0);
    c_prev_l[u] = T(0);
    dc_l[u] = T(0);
    if constexpr (C::kHasCellState) {
      // c_{t-1}: c0, or the c that step t-1 saved (the LSTM saves c last).
      if (valid) {
        c_prev_l[u] = t == 0 ? a.c0[row + u]
                             : a.saved[((t - 1) * B + b) * S * H + (S - 1) * H + j0 + u];
        dc_l[u] = a.dc0[row + u];
      }
    }
  }
  for (int u = 0; u < kUnits; ++u) {
    T saved[S], dzx[G], dzh[G];
    for (int s = 0; s < S; ++s) saved[s] = saved_l[s][u];
    C::backward(saved, h_l[u], h_prev_l[u], c_prev_l[u], dh_t[u], dc_l[u], dzx, dzh,
                dh_direct_l[u]);
    for (int g = 0; g < G; ++g) {
      dzx_l[g][u] = dzx[g];
      dzh_l[g][u] = dzh[g];
    }
  }
  T* dzx_bt = a.dzx + (t * B + b) * GH;
  T* dzh_bt = a.dzh + (t * B + b) * GH;
  for (int64_t u = 0; u < units; ++u) {
    for (int g = 0; g < G; ++g) dzx_bt[g * H + j0 + u] = dzx_l[g][u];
    if (a.dzh != a.dzx)
      for (int g = 0; g < G; ++g) dzh_bt[g * H + j0 + u] = dzh_l[g][u];
    a.dh0[row + u] = dh_direct_l[u];
    if constexpr (C::kHasCellState) a.dc0[row + u] = dc_l[u];
  }
}

template <typename T, class C>
void backward_impl(const BackwardArgs<T>& a) {
  constexpr int G = C::kGates, S = C::kSaved;
  constexpr int kUnits = kTileWidth<T>;
  const int64_t B = a.batch, H = a.hidden, GH = G * H, T_ = a.steps;
  const int64_t blocks = ceil_div(H, kUnits);

  // dh_{t-1}[b, j] = sum_k dzh_t[b, k] W_hh[k, j]: panels of W_hh's columns, depth G*H.
  AlignedBuffer<T> panels(blocks * GH * kUnits);
  pack_panels(1, H, GH, kUnits, [&](int64_t, int64_t j, int64_t k) {
    return a.w_hh[k * H + j];
  }, panels.data());

  // dh0 and dc0 hold the running gradients: dh the part of dh_{t-1} that bypasses W_hh
  // (dh_direct) between steps, dc the gradient reaching c_{t-1}.
  T* dh = a.dh0;
  T* dc = a.dc0;

  // Each thread owns the hidden units of its blocks: their dh, dc, and columns of dzx, dzh.
  const int threads = choose_threads(blocks, B * GH * H);
  SpinBarrier barrier(threads);
  ThreadPool::global().run(threads, [&](int index) {
    const BlockRange mine(blocks, index, threads);
    alignas(64) T dh_t[kUnits] = {};  // full gradient reaching h_t for the units at hand
    // Step T-1: the gradient reaching h_{T-1} is dh_n + dy[T-1].
    for (int64_t block = mine.first; block < mine.last; ++block) {
      const int64_t j0 = block * kUnits;
      const int64_t units = std::min<int64_t>(kUnits, H - j0);
      for (int64_t b = 0; b < B; ++b) {
        for (int64_t u = 0; u < units; ++u) {
          const int64_t bj = b * H + j0 + u;
          if constexpr (C::kHasCellState) dc[bj] = a.dc_n != nullptr ? a.dc_n[bj] : T(0);
          dh_t[u] = (a.dh_n != nullptr ? a.dh_n[bj] : T(0)) + a.dy[(T_ - 1) * B * H + bj];
        }
        backward_epilogue<T, C, kUnits>(a, T_ - 1, b, j0, units, dh_t);
      }
    }
    barrier.wait();  // dzh_{T-1} complete

    for (int64_t t = T_ - 1; t >= 0; --t) {
      const T* dzh_t = a.dzh + t * B * GH;
      for (int64_t block = mine.first; block < mine.last; ++block) {
        const int64_t j0 = block * kUnits;
        const int64_t units = std::min<int64_t>(kUnits, H - j0);
        gemm_panel<T, kUnits>(dzh_t, B, GH, panels.data() + block * GH * kUnits, nullptr,
                              [&](int64_t row0, auto& acc) {
          constexpr int MR = std::extent_v<std::remove_reference_t<decltype(acc)>>;
          for (int r = 0; r < MR; ++r) {
            const int64_t b = row0 + r;
            // Gradient reaching h_{t-1} from step t: the direct part plus the matmul's.
            for (int64_t u = 0; u < units; ++u) dh_t[u] = dh[b * H + j0 + u] + acc[r][u];
            if (t == 0) {
              for (int64_t u = 0; u < units; ++u) dh[b * H + j0 + u] = dh_t[u];  // dh0
              continue;
            }
            for (int64_t u = 0; u < units; ++u) dh_t[u] += a.dy[((t - 1) * B + b) * H + j0 + u];
            backward_epilogue<T, C, kUnits>(a, t - 1, b, j0, units, dh_t);
          }
        });
      }
      if (t > 0) barrier.wait();  // dzh_{t-1} complete
    }
  });
}

}  // namespace

template <typename T>
void recurrent_forward(const ForwardArgs<T>& args) {
  if (args.batch == 0) return;
  cells::visit_cell(args.cell, [&](auto c) {
    if (args.saved != nullptr)
      forward_impl<T, decltype(c), true>(args);
    else
      forward_impl<T, decltype(c), false>(args);
  });
}

template <typename T>
void recurrent_backward(const BackwardArgs<T>& args) {
  if (args.batch == 0) return;
  cells::visit_cell(args.cell, [&](auto c) { backward_impl<T, decltype(c)>(args); });
}

template void recurrent_forward<float>(const ForwardArgs<float>&);
template void recurrent_forward<double>(const ForwardArgs<double>&);
template void recurrent_backward<float>(const BackwardArgs<float>&);
template void recurrent_backward<double>(const BackwardArgs<double>&);

}  // namespace RNNFAST_ISA_NS
}  // namespace rnnfast
