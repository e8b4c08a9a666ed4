// The cell's math on one row of a tile: what the forward kernels run on each output tile of
// their matmul while it is in registers or L1. Included by the per-instruction-set sources
// after microkernel.h.
#pragma once

#include <cstdint>

#include "microkernel.h"
#include "rnnfast/cells/cells.h"

namespace rnnfast {
namespace RNNFAST_ISA_NS {
namespace {

// Hidden units per forward tile: the G gates of `units` units fill the tile (GRU: 3 of 4
// vectors). A forward panel holds, for each depth k, the G gates of these units side by side.
template <typename T, class C>
constexpr int kForwardUnits = C::kGates == 3 ? kTileWidth<T> / 4 : kTileWidth<T> / C::kGates;

// The cell's forward for `units` (<= kUnits) consecutive hidden units of one batch row, from
// the tile's pre-activations zx and zh, laid out [G][kUnits]. h_prev, c_prev, h, c point at the
// row's first unit (c_prev, c: LSTM only, else nullptr; c may equal c_prev). Values are staged
// in local arrays so that the loop doing the math touches no pointer the compiler must assume
// aliased, and vectorizes over units.
template <typename T, class C, int kUnits>
inline void tile_forward(const T* zx, const T* zh, const T* h_prev, const T* c_prev, T* h, T* c,
                         int64_t units) {
  constexpr int G = C::kGates, S = C::kSaved > 0 ? C::kSaved : 1;
  alignas(64) T h_prev_l[kUnits], c_l[kUnits], h_l[kUnits];
  for (int u = 0; u < kUnits; ++u) {
    const bool valid = u < units;
    h_prev_l[u] = valid ? h_prev[u] : T(0);
    c_l[u] = valid && C::kHasCellState ? c_prev[u] : T(0);
  }
  for (int u = 0; u < kUnits; ++u) {
    T zx_u[G], zh_u[G], saved[S];
    for (int g = 0; g < G; ++g) {
      zx_u[g] = zx[g * kUnits + u];
      zh_u[g] = zh[g * kUnits + u];
    }
    C::forward(zx_u, zh_u, h_prev_l[u], c_l[u], h_l[u], saved);
  }
  for (int64_t u = 0; u < units; ++u) {
    h[u] = h_l[u];
    if constexpr (C::kHasCellState) c[u] = c_l[u];
  }
}

}  // namespace
}  // namespace RNNFAST_ISA_NS
}  // namespace rnnfast
