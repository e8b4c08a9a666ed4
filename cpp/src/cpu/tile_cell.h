// The cell's math on one row of a tile: what the forward kernels run on each output tile of
// their matmul while it is in registers or L1. Included by the per-instruction-set sources
// after microkernel.h.
#pragma once

#include <algorithm>
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

// dst[0 .. units) = src[0 .. units) for units <= kUnits. Every block but the last of an H that
// is not a multiple of kUnits is whole: a copy of known size, a few vector moves. With the
// size known only at run time GCC makes the loop a call to memcpy, which took 7% of the LSTM
// backward's samples at T=100, B=64, H=256 (inline, most of that remains as waits for the rows
// from memory; the GRU backward there ran 6% faster).
template <int kUnits, typename T>
inline void copy_units(T* dst, const T* src, int64_t units) {
  using S = Simd<T>;
  static_assert(kUnits % S::kLanes == 0, "a block is whole vectors");
  if (units == kUnits)
    for (int i = 0; i < kUnits; i += S::kLanes) S::store(dst + i, S::load(src + i));
  else
    copy_short(dst, src, units);
}

// Copies `units` (<= kUnits) values of a tile row into a local array of kUnits, zeros past
// them (the last block of an H that is not a multiple of kUnits); src nullptr (a row the cell
// does not read): all zeros. Rows go out with copy_units.
template <int kUnits, typename T>
inline void load_units(T* local, const T* src, int64_t units) {
  if (src == nullptr) units = 0;
  copy_units<kUnits>(local, src, units);
  std::fill(local + std::min<int64_t>(units, kUnits), local + kUnits, T(0));
}

// Whether tile_forward streams the training workspace around the caches (stream_short): only
// where a row's kUnits values fill whole cache lines (AVX-512's 16 floats). A non-temporal
// store of part of a line (AVX2's 8 floats, 32 bytes; the line's other half comes a block
// later) leaves the line to go to memory in parts. Measured with plain stores instead, the
// LSTM's training forward under AVX2 (benchmarks/time_recurrence.py lstm T B H --training,
// Zen 3, 2 threads, two runs each): (100,16,256) 8.1-8.2 -> 7.2-7.4 ms, (1000,8,128)
// 12.9-14.0 -> 11.6-11.9, (100,64,256) 32.0-33.0 -> 27.6-28.5, (100,64,512) 107-110 -> 95,
// whose 65 MB workspace is larger than a Zen 3 L3 (32 MB).
template <typename T, int kUnits>
constexpr bool kStreamsWorkspace = kUnits * sizeof(T) % 64 == 0;

// The cell's forward for `units` (<= kUnits) consecutive hidden units of one batch row, from
// the tile's pre-activations zx and zh, laid out [G][kUnits]. h_prev, c_prev, h, c point at the
// row's first unit (h_prev: nullptr for a cell that does not read it, taken as 0; c_prev, c:
// LSTM only, else nullptr; c may equal c_prev). saved, when not nullptr, gets the training
// workspace of these units: value s of unit u at saved[s * saved_stride + u], streamed where
// kStreamsWorkspace (the caller ends with store_fence). Values are staged in local arrays so that
// the loop doing the math touches no pointer the compiler must assume aliased, and vectorizes
// over units.
//
// Not inlined: compiled on its own, the unit loop vectorizes for every cell; inlined into the
// kernels' tile loops, GCC 12 gives up on some of them ("control flow in loop") and runs the
// activations one unit at a time. A call per tile row costs far less.
template <typename T, class C, int kUnits>
__attribute__((noinline)) void tile_forward(const T* zx, const T* zh, const T* h_prev,
                                            const T* c_prev, T* h, T* c, T* saved,
                                            int64_t saved_stride, int64_t units) {
  constexpr int G = C::kGates, S = C::kSaved > 0 ? C::kSaved : 1;
  alignas(64) T h_prev_l[kUnits], c_l[kUnits], h_l[kUnits], saved_l[S][kUnits];
  load_units<kUnits>(h_prev_l, h_prev, units);
  load_units<kUnits>(c_l, C::kHasCellState ? c_prev : nullptr, units);
  for (int u = 0; u < kUnits; ++u) {
    T zx_u[G], zh_u[G], saved_u[S];
    for (int g = 0; g < G; ++g) {
      zx_u[g] = zx[g * kUnits + u];
      zh_u[g] = zh[g * kUnits + u];
    }
    C::forward(zx_u, zh_u, h_prev_l[u], c_l[u], h_l[u], saved_u);
    for (int s = 0; s < S; ++s) saved_l[s][u] = saved_u[s];
  }
  copy_units<kUnits>(h, h_l, units);
  if constexpr (C::kHasCellState) copy_units<kUnits>(c, c_l, units);
  for (int s = 0; saved != nullptr && s < C::kSaved; ++s) {
    if constexpr (kStreamsWorkspace<T, kUnits>)
      stream_short(saved + s * saved_stride, saved_l[s], units);
    else
      copy_units<kUnits>(saved + s * saved_stride, saved_l[s], units);
  }
}

}  // namespace
}  // namespace RNNFAST_ISA_NS
}  // namespace rnnfast
