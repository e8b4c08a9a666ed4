// CPU recurrence: for each step, the recurrent matmul on packed weights with the cell's gate
// math fused into the epilogue of each output tile (ARCHITECTURE.md, One orchestration).
//
// Forward, step t:   acc[b, g, j] = b_hh[g*H + j] + sum_k h_{t-1}[b, k] W_hh[g*H + j, k]
//                    then, on the tile while it is in registers, the cell's forward per unit.
// Backward, step t:  acc[b, j] = sum_k dzh_t[b, k] W_hh[k, j]    (= dh_{t-1} through W_hh)
//                    then, on the tile, the cell's backward of step t-1 per unit: the epilogue
//                    of one step's matmul is the gate math of the next, and dzh never waits.
//
// The weights are packed once per call into panels of `units` consecutive hidden units, all
// G gates of a unit side by side, so that one tile holds every gate of its units.
//
// Variable lengths and resets act per row in the epilogues (no extra pass, no branch in the
// matmul): a padding row writes zeros and keeps its state; a reset row takes h0 W_hh^T + b_hh,
// kept from step 0, instead of its row of the tile, and in the backward sends the gradient that
// reaches its starting state to dh0/dc0. The LSTM projection adds a second matmul per step
// (h = m W_hr^T; backward dm = dh W_hr), on its own packed panels, after a barrier.
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <type_traits>

#include "microkernel.h"
#include "rnnfast/aligned_buffer.h"
#include "rnnfast/cells/cells.h"
#include "rnnfast/cpu_features.h"
#include "rnnfast/recurrence.h"
#include "tile_cell.h"

namespace rnnfast {
namespace RNNFAST_ISA_NS {
namespace {

// The cell's forward on one row of a tile: units j0 .. j0 + units - 1 of batch row b, whose
// recurrent pre-activations acc[g * kUnits + u] the tile has just computed. The row's pointers
// (zx_row [G*H], h_prev_row, c_prev_row, h_row, c_row [H], saved_row [S*H]) start at b;
// h_prev_row may be nullptr for a cell that does not read h_prev (the GRU does), and is then
// taken as 0. zx is staged into the tile's layout, then tile_forward does the math.
template <typename T, class C, int kUnits>
inline void forward_epilogue(const T* acc, const T* zx_row, const T* h_prev_row,
                             const T* c_prev_row, T* h_row, T* c_row, T* saved_row, int64_t H,
                             int64_t j0, int64_t units) {
  constexpr int G = C::kGates;
  alignas(64) T zx_l[G][kUnits];
  for (int g = 0; g < G; ++g) load_units<kUnits>(zx_l[g], zx_row + g * H + j0, units);
  tile_forward<T, C, kUnits>(&zx_l[0][0], acc, h_prev_row != nullptr ? h_prev_row + j0 : nullptr,
                             c_prev_row != nullptr ? c_prev_row + j0 : nullptr, h_row + j0,
                             c_row != nullptr ? c_row + j0 : nullptr,
                             saved_row != nullptr ? saved_row + j0 : nullptr, H, units);
}

// Steps of sequence b: lengths[b], or all of them.
template <class Args>
int64_t length_of(const Args& a, int64_t b) {
  return a.lengths != nullptr ? a.lengths[b] : a.steps;
}

// Whether step t of row b starts from the initial state (h0, c0).
template <class Args>
bool starts_fresh(const Args& a, int64_t t, int64_t b) {
  return t == 0 || (a.resets != nullptr && a.resets[t * a.batch + b] != 0);
}

// Size of h: proj_size with the LSTM projection, else hidden.
template <class Args>
int64_t state_size(const Args& a) {
  return a.proj > 0 ? a.proj : a.hidden;
}

// How the threads share the steps. By default they split each step's columns (blocks of
// units) over all batch rows, and meet at a barrier every step. When W_hh's panels fit in
// every thread's L2 (cpu_tuning().row_split_panel_bytes, from the L2 size read at run time)
// and the batch is two row tiles, they split the batch rows instead: rows never exchange
// values, so each thread runs its rows through every step and every block with no barrier and
// no data from another core. The rows go in groups fixed by B alone (at two row tiles,
// balanced tiles, one matmul call each; else one group, all rows), so that every row is tiled
// and summed the same way whatever the split and the thread count. More tiles would give a
// thread several groups, each streaming the panels again (a loss at B=24). Measured
// (benchmarks/time_recurrence.py, T=1000, B=8, H=128, 2 threads, three runs): backward
// LSTM 12.4-13.6 -> 6.4-6.5 ms, GRU 14.1-15.4 -> 5.3-6.6; forward LSTM 7.3-8.7 -> 6.6-7.0,
// RNN 2.3-2.4 -> 1.6-1.8.
struct StepSplit {
  static constexpr int64_t kRowSplitMaxTiles = 2;
  bool by_rows;
  int64_t batch, groups;
  int64_t macs;  // per step
  int threads;

  // panel_bytes: W_hh packed; column_blocks: the column split's blocks; macs: multiply-adds
  // per step; row_split_allowed: false where a step needs all rows of another pass (the
  // projection).
  StepSplit(int64_t batch_, int64_t panel_bytes, bool row_split_allowed, int64_t column_blocks,
            int64_t macs_)
      : batch(batch_), macs(macs_) {
    const int64_t row_tiles = ceil_div(batch, kTileRows);
    groups = row_tiles > 1 && row_tiles <= kRowSplitMaxTiles ? row_tiles : 1;
    by_rows = row_split_allowed && groups > 1 && panel_bytes <= cpu_tuning().row_split_panel_bytes;
    threads = choose_threads(by_rows ? groups : column_blocks, macs_);
  }
  // Thread `index`'s blocks of `blocks` column blocks and its groups of rows.
  BlockRange blocks_of(int64_t blocks, int index) const {
    return by_rows ? BlockRange(blocks, 0, 1) : BlockRange(blocks, index, threads);
  }
  BlockRange groups_of(int index) const {
    return by_rows ? BlockRange(groups, index, threads) : BlockRange(groups, 0, 1);
  }
  int64_t group_start(int64_t group) const { return batch * group / groups; }
  void record(const char* kernel) const {
    record_split(kernel, threads, by_rows ? "rows" : "columns");
  }
};

// The recurrent matmul's operands have element type M: T, or Bf16 (args.bf16_matmul, on the
// instruction sets avx512_bf16 and amx) for bfloat16 products with float32 sums. Then the
// packed weights hold two depths side by side (pack_panel_pairs, depth padded to bf16_depth),
// and each step's A operand is rounded into a per-thread buffer first (step_operand), of
// operand_rows rows (whole AMX tiles, zeros past the batch).
template <typename M, typename T>
int64_t operand_depth(int64_t depth) {
  return std::is_same_v<M, T> ? depth : bf16_depth(depth);
}

template <typename M, typename T>
int64_t operand_rows(int64_t rows) {
  return std::is_same_v<M, T> ? 0 : ceil_div(rows, kBf16RowAlign) * kBf16RowAlign;
}

template <typename M, typename T>
void pack_operand_panel(int64_t block, int64_t gates, int64_t hidden, int64_t depth, int64_t units,
                        const Strided<T>& src, M* out) {
  if constexpr (std::is_same_v<M, T>)
    pack_panel(block, gates, hidden, depth, units, src, out);
  else
    pack_panel_pairs(block, gates, hidden, depth, units, src, out);
}

// Runs job(index, operand_buf), `steps` steps, on split's threads (recorded under `kernel`),
// each with the tile registers set up for M and a buffer of its own for its rounded step
// operands: whole tiles of rows of `depth` elements, zeroed (past the batch they stay zero);
// empty unless M is Bf16.
template <typename M, typename T, class Job>
void run_steps(const char* kernel, const StepSplit& split, int64_t depth, int64_t steps,
               Job&& job) {
  split.record(kernel);
  // (A second group's whole tiles start at its first row, and may read a tile past B.)
  const int64_t size = operand_rows<M, T>(split.batch + (split.groups - 1) * kBf16RowAlign) * depth;
  AlignedBuffer<M> operands(split.threads * size);
  std::fill(operands.data(), operands.data() + split.threads * size, M{});
  ThreadPool::global().run(split.threads, split.macs * steps, [&](int index) {
    [[maybe_unused]] const TilesFor<M, T> tiles;
    job(index, operands.data() + index * size);
  });
}

// The A operand of a step's matmul for rows first .. last - 1 of src [., n] (row stride n):
// (pointer to row `first`, row stride), src itself or those rows rounded into buf.
template <typename M, typename T>
std::pair<const M*, int64_t> step_operand(const T* src, int64_t first, int64_t last, int64_t n,
                                          M* buf) {
  if constexpr (std::is_same_v<M, T>) {
    return {src + first * n, n};
  } else {
    round_rows(src + first * n, last - first, n, n, buf);
    return {buf, operand_depth<M, T>(n)};
  }
}

// Per step: pass 1 over blocks of hidden units, the recurrent matmul with the cell's forward
// in its epilogue; with the projection, after a barrier, pass 2 over blocks of h's units:
// h_t = m_t W_hr^T, where m_t = o * tanh(c_t) [B, H] is what the cell produced in pass 1.
template <typename T, class C, bool kTraining, typename M = T>
void forward_impl(const ForwardArgs<T>& a) {
  constexpr int G = C::kGates, S = C::kSaved;
  constexpr int kUnits = kForwardUnits<T, C>, kWidth = G * kUnits;
  constexpr int kProjUnits = kTileWidth<T>;
  const int64_t B = a.batch, H = a.hidden, GH = G * H, R = state_size(a);
  const bool projected = a.proj > 0;
  const int64_t blocks = ceil_div(H, kUnits);
  const int64_t proj_blocks = projected ? ceil_div(R, kProjUnits) : 0;
  // Whether tile_forward streams the workspace's rows around the caches (kStreamsWorkspace,
  // and rows that start vector-aligned); if not, its stores read the lines first, and the
  // epilogue prefetches them like its other operands.
  const bool saved_streams = kStreamsWorkspace<T, kUnits> &&
                             reinterpret_cast<uintptr_t>(a.saved) % kVectorBytes == 0 &&
                             H * static_cast<int64_t>(sizeof(T)) % kVectorBytes == 0;

  // W_hh and b_hh in panels of kUnits units, each packed by the thread that owns the block.
  const int64_t depth = operand_depth<M, T>(R);
  AlignedBuffer<M> panels(blocks * depth * kWidth);
  AlignedBuffer<T> bias(blocks * kWidth);
  // The projection: m [B, H] of the step at hand, and W_hr [R, H] in panels of its rows.
  AlignedBuffer<T> m(projected ? B * H : 0), proj_panels(proj_blocks * H * kProjUnits);

  // The LSTM's running cell state [B, H]; c_n gets each row's c at the row's last step.
  AlignedBuffer<T> c_run(C::kHasCellState ? B * H : 0);
  // With resets, zh0 [blocks][B][kWidth] = h0 W_hh^T + b_hh in the tiles' layout: the
  // recurrent part of a step that starts from h0. Step 0's matmul computes exactly that, so it
  // is kept from there for the rows reset later, and the matmul's A operand stays h_{t-1}.
  AlignedBuffer<T> zh0(a.resets != nullptr ? blocks * B * kWidth : 0);
  for (int64_t b = 0; b < B; ++b) {  // sequences of length 0 end where they start
    if (length_of(a, b) != 0) continue;
    std::memcpy(a.h_n + b * R, a.h0 + b * R, sizeof(T) * R);
    if constexpr (C::kHasCellState) std::memcpy(a.c_n + b * H, a.c0 + b * H, sizeof(T) * H);
  }

  const StepSplit split(B, blocks * depth * kWidth * static_cast<int64_t>(sizeof(M)), !projected,
                        std::max(blocks, proj_blocks), B * GH * R + (projected ? B * R * H : 0));
  SpinBarrier barrier(split.threads);
  run_steps<M, T>("recurrent_forward", split, depth, a.steps, [&](int index, M* operand_buf) {
    const int threads = split.threads;
    const BlockRange packs(blocks, index, threads), mine_proj(proj_blocks, index, threads);
    for (int64_t block = packs.first; block < packs.last; ++block) {
      pack_operand_panel(block, G, H, R, kUnits, weight_rows(a.w_hh, H, R),
                         panels.data() + block * depth * kWidth);
      pack_panel(block, G, H, 1, kUnits, bias_rows(a.b_hh, H), bias.data() + block * kWidth);
    }
    for (int64_t block = mine_proj.first; block < mine_proj.last; ++block)
      pack_panel(block, 1, R, H, kProjUnits, weight_rows(a.w_hr, R, H),
                 proj_panels.data() + block * H * kProjUnits);
    if (split.by_rows) barrier.wait(index);  // every panel packed before any thread reads it
    const BlockRange mine = split.blocks_of(blocks, index), my_groups = split.groups_of(index);
    // This thread's rows (its groups are consecutive).
    const int64_t rows0 = split.group_start(my_groups.first);
    const int64_t rows1 = split.group_start(my_groups.last);
    for (int64_t t = 0; t < a.steps; ++t) {
      const T* h_prev = t == 0 ? a.h0 : a.y + (t - 1) * B * R;
      const T* zx_t = a.zx + t * B * GH;
      T* h_t = a.y + t * B * R;
      T* cell_h = projected ? m.data() : h_t;  // [B, H]: the cell's output
      const auto [h_op, ld] = step_operand<M>(h_prev, rows0, rows1, R, operand_buf);
      for (int64_t block = mine.first; block < mine.last; ++block) {
        const int64_t j0 = block * kUnits;
        const int64_t units = std::min<int64_t>(kUnits, H - j0);
        for (int64_t group = my_groups.first; group < my_groups.last; ++group) {
          const int64_t r0 = split.group_start(group), r1 = split.group_start(group + 1);
          gemm_panel<T, kWidth, M>(
              h_op + (r0 - rows0) * ld, r1 - r0, depth, ld, panels.data() + block * depth * kWidth,
              bias.data() + block * kWidth,
              [&](int64_t row0, auto& acc) {
                constexpr int MR = std::extent_v<std::remove_reference_t<decltype(acc)>>;
                for (int r = 0; r < MR; ++r) {
                  const int64_t b = r0 + row0 + r, bh = b * H, length = length_of(a, b);
                  T* saved_bt = kTraining && S > 0 ? a.saved + (t * B + b) * S * H : nullptr;
                  if (t >= length) {  // padding: output 0 (also after the projection), state kept
                    std::fill(cell_h + bh + j0, cell_h + bh + j0 + units, T(0));
                    for (int s = 0; saved_bt != nullptr && s < S; ++s)
                      std::fill(saved_bt + s * H + j0, saved_bt + s * H + j0 + units, T(0));
                    continue;
                  }
                  const bool fresh = starts_fresh(a, t, b);
                  const T* zh = acc[r];
                  if (a.resets != nullptr) {
                    T* zh0_b = zh0.data() + (block * B + b) * kWidth;
                    if (t == 0)
                      std::copy(acc[r], acc[r] + kWidth, zh0_b);
                    else if (fresh)
                      zh = zh0_b;
                  }
                  T* c_b = C::kHasCellState ? c_run.data() + bh : nullptr;
                  const T* c_prev_b = C::kHasCellState ? (fresh ? a.c0 + bh : c_b) : nullptr;
                  const T* h_prev_b = C::kReadsHPrev ? (fresh ? a.h0 : h_prev) + b * R : nullptr;
                  forward_epilogue<T, C, kUnits>(zh, zx_t + b * GH, h_prev_b, c_prev_b, cell_h + bh,
                                                 c_b, saved_bt, H, j0, units);
                  if (t == length - 1) {  // the sequence's last step: its final state
                    if (!projected)
                      std::copy(h_t + bh + j0, h_t + bh + j0 + units, a.h_n + bh + j0);
                    if constexpr (C::kHasCellState)
                      std::copy(c_b + j0, c_b + j0 + units, a.c_n + bh + j0);
                  }
                }
              },
              [&](int64_t row0, int64_t rows) {  // the epilogue's rows of zx, h, c and saved
                for (int64_t b = r0 + row0; b < r0 + row0 + rows; ++b) {
                  for (int g = 0; g < G; ++g) prefetch_span(zx_t + b * GH + g * H + j0, units);
                  prefetch_span(cell_h + b * H + j0, units);
                  if constexpr (C::kHasCellState) prefetch_span(c_run.data() + b * H + j0, units);
                  for (int s = 0; kTraining && !saved_streams && s < S; ++s)
                    prefetch_span(a.saved + ((t * B + b) * S + s) * H + j0, units);
                }
              });
        }
      }
      if (projected) {
        barrier.wait(index);  // m_t complete before any thread projects it
        for (int64_t block = mine_proj.first; block < mine_proj.last; ++block) {
          const int64_t j0 = block * kProjUnits;
          const int64_t units = std::min<int64_t>(kProjUnits, R - j0);
          gemm_panel<T, kProjUnits>(m.data(), B, H, proj_panels.data() + block * H * kProjUnits,
                                    nullptr, [&](int64_t row0, auto& acc) {
                                      constexpr int MR =
                                          std::extent_v<std::remove_reference_t<decltype(acc)>>;
                                      for (int r = 0; r < MR; ++r) {
                                        const int64_t b = row0 + r;
                                        std::copy(acc[r], acc[r] + units, h_t + b * R + j0);
                                        if (t == length_of(a, b) - 1)
                                          std::copy(acc[r], acc[r] + units, a.h_n + b * R + j0);
                                      }
                                    });
        }
      }
      if (!split.by_rows) barrier.wait(index);  // h_t complete before any thread reads it
    }
    if constexpr (kTraining) store_fence();  // saved's stores done before the caller reads it
  });
}

// The cell's backward at step t for batch row b, units j0 .. j0 + units - 1, given dh_t and
// dc_t [units], the full gradients reaching the cell's h_t and c_t (LSTM), and rows [H] of
// the cell's h_t (h_row: the RNN reads it), of the state step t started from (h_prev_row: the
// GRU reads it; c_prev_row: the LSTM); rows that a cell does not read may be nullptr. Writes
// dzx, dzh (GRU) at step t, and the running gradients for step t-1 (rows [B, H]): dh_run, the
// part of dh_{t-1} that bypasses W_hh (dh_direct; nullptr: not kept, it is 0 for the LSTM),
// and dc_run, the gradient reaching c_{t-1}. Staged through local arrays like
// forward_epilogue, so that the math vectorizes; out of line for the reason tile_forward is.
template <typename T, class C, int kUnits>
__attribute__((noinline)) void backward_epilogue(const BackwardArgs<T>& a, int64_t t, int64_t b,
                                                 int64_t j0, int64_t units, const T* h_row,
                                                 const T* h_prev_row, const T* c_prev_row,
                                                 const T* dh_t, const T* dc_t, T* dh_run,
                                                 T* dc_run) {
  constexpr int G = C::kGates, S = C::kSaved > 0 ? C::kSaved : 1;
  const int64_t B = a.batch, H = a.hidden, GH = G * H;
  const int64_t row = b * H + j0;  // offset of unit j0 of row b in [B, H] arrays
  alignas(64) T saved_l[S][kUnits], h_l[kUnits], h_prev_l[kUnits], c_prev_l[kUnits], dc_l[kUnits],
      dzx_l[G][kUnits], dzh_l[G][kUnits], dh_direct_l[kUnits];
  // Rows that this cell does not read (nullptr) stage as zeros.
  const T* saved_bt = C::kSaved > 0 ? a.saved + (t * B + b) * C::kSaved * H + j0 : nullptr;
  for (int s = 0; s < S; ++s)
    load_units<kUnits>(saved_l[s], saved_bt != nullptr ? saved_bt + s * H : nullptr, units);
  load_units<kUnits>(h_l, h_row != nullptr ? h_row + j0 : nullptr, units);
  load_units<kUnits>(h_prev_l, h_prev_row != nullptr ? h_prev_row + j0 : nullptr, units);
  load_units<kUnits>(c_prev_l, C::kHasCellState ? c_prev_row + j0 : nullptr, units);
  load_units<kUnits>(dc_l, C::kHasCellState ? dc_t : nullptr, units);
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
  T* dzx_bt = a.dzx + (t * B + b) * GH + j0;
  T* dzh_bt = a.dzh + (t * B + b) * GH + j0;
  for (int g = 0; g < G; ++g) {
    copy_units<kUnits>(dzx_bt + g * H, dzx_l[g], units);
    if (a.dzh != a.dzx) copy_units<kUnits>(dzh_bt + g * H, dzh_l[g], units);
  }
  if (dh_run != nullptr) copy_units<kUnits>(dh_run + row, dh_direct_l, units);
  if constexpr (C::kHasCellState) copy_units<kUnits>(dc_run + row, dc_l, units);
}

// Per step t, from T down to 0 ("step T" runs no matmul: nothing comes from beyond the last
// step): pass 1 over blocks of h's units, dh_{t-1} = dzh_t W_hh (+ dh_direct, dy[t-1], dh_n),
// with, without the projection, the cell's backward of step t-1 in the same epilogue. With
// the projection, dh_{t-1} goes to dh_proj, and after a barrier pass 2 over blocks of hidden
// units computes dm_{t-1} = dh_{t-1} W_hr (the gradient reaching o * tanh(c_{t-1})) with the
// cell's backward in its epilogue.
template <typename T, class C, typename M = T>
void backward_impl(const BackwardArgs<T>& a) {
  constexpr int G = C::kGates, S = C::kSaved;
  constexpr int kUnits = kTileWidth<T>;
  const int64_t B = a.batch, H = a.hidden, GH = G * H, T_ = a.steps, R = state_size(a);
  const bool projected = a.proj > 0;
  const int64_t blocks = ceil_div(R, kUnits), cell_blocks = ceil_div(H, kUnits);

  // dh_{t-1}[b, j] = sum_k dzh_t[b, k] W_hh[k, j]: panels of W_hh's columns, depth G*H; and
  // dm[b, j] = sum_k dh[b, k] W_hr[k, j]: panels of W_hr's columns, depth R. Each block is
  // packed by the thread that owns it.
  const int64_t depth = operand_depth<M, T>(GH);
  AlignedBuffer<M> panels(blocks * depth * kUnits);
  AlignedBuffer<T> proj_panels(projected ? cell_blocks * R * kUnits : 0);

  // The running gradients between steps [B, H] (see backward_epilogue). dh0 and dc0
  // accumulate what reaches the initial state: at step 0 and at every reset.
  AlignedBuffer<T> dh_run(projected ? 0 : B * H), dc_run(C::kHasCellState ? B * H : 0);

  // d [units] holds the gradient that step t sends to the state after step t-1 (row b, from
  // offset `row` of a [B, .] array). Where step t started from the initial state it goes to
  // d0 instead; d_n is added where step t-1 is the row's last; at t = 0 the rest goes to d0.
  auto route = [&](int64_t t, int64_t b, int64_t row, int64_t units, T* d0, const T* d_n, T* d) {
    if (t < T_ && starts_fresh(a, t, b)) {
      for (int64_t u = 0; u < units; ++u) {
        d0[row + u] += d[u];
        d[u] = T(0);
      }
    }
    if (t == length_of(a, b) && d_n != nullptr)
      for (int64_t u = 0; u < units; ++u) d[u] += d_n[row + u];
    if (t == 0)
      for (int64_t u = 0; u < units; ++u) d0[row + u] += d[u];
  };
  // The gradient reaching c_{t-1} (cell units j0 ..): what the cell's backward at t left.
  auto grad_c = [&](int64_t t, int64_t b, int64_t j0, int64_t units, T* dc) {
    if constexpr (!C::kHasCellState) return;
    const int64_t row = b * H + j0;
    for (int64_t u = 0; u < units; ++u) dc[u] = dc_run.data()[row + u];
    route(t, b, row, units, a.dc0, a.dc_n, dc);
  };
  // The cell's backward of step s for cell units j0 .., given the gradients reaching its h and
  // c; zero gradients and nothing passed on where s is padding.
  auto cell_step = [&](int64_t s, int64_t b, int64_t j0, int64_t units, const T* dh, const T* dc) {
    const int64_t row = b * H + j0;
    if (s >= length_of(a, b)) {
      for (int g = 0; g < G; ++g) {
        T* dzx_g = a.dzx + (s * B + b) * GH + g * H + j0;
        T* dzh_g = a.dzh + (s * B + b) * GH + g * H + j0;
        std::fill(dzx_g, dzx_g + units, T(0));
        std::fill(dzh_g, dzh_g + units, T(0));
      }
      if (!projected) std::fill(dh_run.data() + row, dh_run.data() + row + units, T(0));
      if constexpr (C::kHasCellState)
        std::fill(dc_run.data() + row, dc_run.data() + row + units, T(0));
      return;
    }
    const bool fresh = starts_fresh(a, s, b);
    const T* h_row = C::kBackwardReadsH ? a.y + (s * B + b) * H : nullptr;
    const T* h_prev_row = !C::kReadsHPrev ? nullptr
                          : fresh         ? a.h0 + b * H
                                          : a.y + ((s - 1) * B + b) * H;
    const T* c_prev_row = nullptr;
    if constexpr (C::kHasCellState)  // c0, or the c that step s-1 saved
      c_prev_row = fresh ? a.c0 + b * H : a.saved + ((s - 1) * B + b) * S * H + C::kSavedC * H;
    backward_epilogue<T, C, kUnits>(a, s, b, j0, units, h_row, h_prev_row, c_prev_row, dh, dc,
                                    projected ? nullptr : dh_run.data(), dc_run.data());
  };
  // Pass 1 for row b, h's units j0 .., given from_w = (dzh_t W_hh)[b, j0 ..] (zero at t = T).
  auto pass1_row = [&](int64_t t, int64_t b, int64_t j0, int64_t units, const T* from_w) {
    const int64_t row = b * R + j0, s = t - 1;
    alignas(64) T dh[kUnits], dc[kUnits];
    if (projected)  // two loops, not a choice inside one: that one stayed scalar
      std::copy(from_w, from_w + units, dh);
    else
      for (int64_t u = 0; u < units; ++u) dh[u] = from_w[u] + dh_run.data()[row + u];
    route(t, b, row, units, a.dh0, a.dh_n, dh);
    if (s < 0) {
      if (!projected) grad_c(t, b, j0, units, dc);
      return;
    }
    if (s < length_of(a, b))
      for (int64_t u = 0; u < units; ++u) dh[u] += a.dy[s * B * R + row + u];
    if (projected) {
      std::copy(dh, dh + units, a.dh_proj + s * B * R + row);
      return;
    }
    grad_c(t, b, j0, units, dc);
    cell_step(s, b, j0, units, dh, dc);
  };

  const StepSplit split(B, depth * R * static_cast<int64_t>(sizeof(M)), !projected,
                        std::max(blocks, cell_blocks), B * GH * R + (projected ? B * R * H : 0));
  SpinBarrier barrier(split.threads);
  run_steps<M, T>("recurrent_backward", split, depth, T_ + 1, [&](int index, M* operand_buf) {
    const int threads = split.threads;
    const BlockRange packs(blocks, index, threads), mine_cell(cell_blocks, index, threads);
    for (int64_t block = packs.first; block < packs.last; ++block)
      pack_operand_panel(block, 1, R, GH, kUnits, Strided<T>{a.w_hh, 0, 1, R},
                         panels.data() + block * depth * kUnits);
    for (int64_t block = mine_cell.first; block < mine_cell.last && projected; ++block)
      pack_panel(block, 1, H, R, kUnits, Strided<T>{a.w_hr, 0, 1, H},
                 proj_panels.data() + block * R * kUnits);
    if (split.by_rows) barrier.wait(index);  // every panel packed before any thread reads it
    const BlockRange mine = split.blocks_of(blocks, index), my_groups = split.groups_of(index);
    const BlockRange mine_cells = split.blocks_of(cell_blocks, index);
    // This thread's rows: r0 .. r1 - 1 (its groups are consecutive).
    const int64_t r0 = split.group_start(my_groups.first);
    const int64_t r1 = split.group_start(my_groups.last);
    alignas(64) const T zeros[kUnits] = {};
    // Each thread owns its rows r0 .. r1 - 1 of the units of its blocks: those entries of
    // dh0, dh_run, dh_proj (blocks of h) and of dc0, dc_run, dzx, dzh (blocks of the cell; the
    // same blocks without the projection). Accumulators start at 0.
    for (int64_t block = mine.first; block < mine.last; ++block) {
      const int64_t j0 = block * kUnits, units = std::min<int64_t>(kUnits, R - j0);
      for (int64_t b = r0; b < r1; ++b) {
        std::fill(a.dh0 + b * R + j0, a.dh0 + b * R + j0 + units, T(0));
        if (!projected)
          std::fill(dh_run.data() + b * R + j0, dh_run.data() + b * R + j0 + units, T(0));
      }
    }
    for (int64_t block = mine_cells.first; block < mine_cells.last; ++block) {
      const int64_t j0 = block * kUnits, units = std::min<int64_t>(kUnits, H - j0);
      for (int64_t b = r0; b < r1 && C::kHasCellState; ++b) {  // the LSTM's dc0, dc_run
        std::fill(a.dc0 + b * H + j0, a.dc0 + b * H + j0 + units, T(0));
        std::fill(dc_run.data() + b * H + j0, dc_run.data() + b * H + j0 + units, T(0));
      }
    }

    for (int64_t t = T_; t >= 0; --t) {
      const int64_t s = t - 1;
      const auto [dzh_op, ld] = t < T_
                                    ? step_operand<M>(a.dzh + t * B * GH, r0, r1, GH, operand_buf)
                                    : std::pair<const M*, int64_t>{nullptr, 0};
      for (int64_t block = mine.first; block < mine.last; ++block) {
        const int64_t j0 = block * kUnits, units = std::min<int64_t>(kUnits, R - j0);
        if (t == T_) {
          for (int64_t b = r0; b < r1; ++b) pass1_row(t, b, j0, units, zeros);
          continue;
        }
        for (int64_t group = my_groups.first; group < my_groups.last; ++group) {
          const int64_t g0 = split.group_start(group), g1 = split.group_start(group + 1);
          gemm_panel<T, kUnits, M>(
              dzh_op + (g0 - r0) * ld, g1 - g0, depth, ld, panels.data() + block * depth * kUnits,
              nullptr,
              [&](int64_t row0, auto& acc) {
                constexpr int MR = std::extent_v<std::remove_reference_t<decltype(acc)>>;
                for (int r = 0; r < MR; ++r) pass1_row(t, g0 + row0 + r, j0, units, acc[r]);
              },
              [&](int64_t row0, int64_t rows) {  // what the cell's backward of step s reads, writes
                if (s < 0 || projected) return;
                for (int64_t b = g0 + row0; b < g0 + row0 + rows; ++b) {
                  const int64_t sb = s * B + b;
                  for (int k = 0; k < S; ++k) prefetch_span(a.saved + (sb * S + k) * H + j0, units);
                  if constexpr (C::kHasCellState)  // c_{s-1}, saved by step s-1
                    if (s > 0) prefetch_span(a.saved + ((sb - B) * S + C::kSavedC) * H + j0, units);
                  prefetch_span(a.dy + sb * R + j0, units);
                  if (C::kBackwardReadsH) prefetch_span(a.y + sb * R + j0, units);
                  if (C::kReadsHPrev && s > 0) prefetch_span(a.y + (sb - B) * R + j0, units);
                  for (int g = 0; g < G; ++g) {
                    prefetch_span(a.dzx + sb * GH + g * H + j0, units);
                    if (a.dzh != a.dzx) prefetch_span(a.dzh + sb * GH + g * H + j0, units);
                  }
                }
              });
        }
      }
      if (projected) {
        barrier.wait(index);  // dh_{t-1} complete before any thread projects it back
        for (int64_t block = mine_cell.first; block < mine_cell.last; ++block) {
          const int64_t j0 = block * kUnits, units = std::min<int64_t>(kUnits, H - j0);
          alignas(64) T dc[kUnits];
          if (s < 0) {
            for (int64_t b = 0; b < B; ++b) grad_c(t, b, j0, units, dc);
            continue;
          }
          gemm_panel<T, kUnits>(
              a.dh_proj + s * B * R, B, R, proj_panels.data() + block * R * kUnits, nullptr,
              [&](int64_t row0, auto& acc) {
                constexpr int MR = std::extent_v<std::remove_reference_t<decltype(acc)>>;
                for (int r = 0; r < MR; ++r) {
                  grad_c(t, row0 + r, j0, units, dc);
                  cell_step(s, row0 + r, j0, units, acc[r], dc);
                }
              });
        }
      }
      if (t > 0 && !split.by_rows) barrier.wait(index);  // dzh_{t-1} complete
    }
  });
}

}  // namespace

// f(T{}), or f(Bf16{}) for float32 with bf16_matmul on an instruction set with vdpbf16ps.
// Those instruction sets' copies of this file (amx, avx512_bf16) are called for nothing else
// (dispatch.cpp): they compile only f(Bf16{}), a third of the templates (GCC 12 took 69 s for
// each of them with all three, 29 s with this one).
template <typename T, class F>
void with_operand_type(bool bf16_matmul, F&& f) {
#if defined(__AVX512BF16__)
  if (!bf16_matmul) throw std::logic_error("the bfloat16 recurrence called without bf16_matmul");
  f(Bf16{});
#else
  (void)bf16_matmul;
  f(T{});
#endif
}

template <typename T>
void recurrent_forward(const ForwardArgs<T>& args) {
  if (args.batch == 0) return;
  cells::visit_cell(args.cell, [&](auto c) {
    with_operand_type<T>(args.bf16_matmul, [&](auto m) {
      using M = decltype(m);
      if (args.saved != nullptr)
        forward_impl<T, decltype(c), true, M>(args);
      else
        forward_impl<T, decltype(c), false, M>(args);
    });
  });
}

template <typename T>
void recurrent_backward(const BackwardArgs<T>& args) {
  if (args.batch == 0) return;
  cells::visit_cell(args.cell, [&](auto c) {
    with_operand_type<T>(args.bf16_matmul,
                         [&](auto m) { backward_impl<T, decltype(c), decltype(m)>(args); });
  });
}

template void recurrent_forward<float>(const ForwardArgs<float>&);
template void recurrent_backward<float>(const BackwardArgs<float>&);
#if !defined(__AVX512BF16__)
template void recurrent_forward<double>(const ForwardArgs<double>&);
template void recurrent_backward<double>(const BackwardArgs<double>&);
#endif

}  // namespace RNNFAST_ISA_NS
}  // namespace rnnfast
