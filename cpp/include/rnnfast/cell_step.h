// rnnfast: one step of a cell, for streaming inference (rnnfast.LSTMCell, GRUCell, RNNCell).
//
//   h_out, c_out = cell(x W_ih^T + b_ih, h W_hh^T + b_hh, h, c)
//
// The weights are packed once into the micro-kernel's panels (W_ih and W_hh separately, as
// the GRU applies its reset gate between them), and every step is a single pass: both matmuls
// of a tile, then the cell's math on it. Nothing is allocated per step.
//
// Shapes (row-major, C-contiguous): x [B, I], h, c, h_out, c_out [B, H]; w_ih [G*H, I],
// w_hh [G*H, H], b_ih, b_hh [G*H] in PyTorch's layout and gate order (see recurrence.h).
//
// bfloat16 cells (cell_step_bf16): x, h, c and the new state in bfloat16, the math in float32,
// the new state rounded to bfloat16 as it is stored. Where the CPU has vdpbf16ps (instruction
// sets avx512_bf16 and amx) the weights are packed in bfloat16 and multiplied so: half the
// bytes of float32 weights to stream per step, the products exact, the sums float32.
#pragma once

#include <cstdint>
#include <string>

#include "rnnfast/aligned_buffer.h"
#include "rnnfast/bfloat16.h"
#include "rnnfast/common.h"

namespace rnnfast {

template <typename T>
struct PackedCell {
  Cell cell = Cell::Lstm;
  int64_t input = 0, hidden = 0;  // I, H
  std::string isa;                // the instruction set whose panel layout this is
  AlignedBuffer<T> w_ih, w_hh;    // panels
  AlignedBuffer<T> b_ih, b_hh;    // packed like the panels; zero when the cell has no bias
  bool bfloat16 = false;          // packed for cell_step_bf16
  // With bfloat16 products: W_ih and W_hh in panels of bfloat16 pairs (w_ih, w_hh empty).
  AlignedBuffer<Bf16> w_ih_pairs, w_hh_pairs;
};

// Packs for the instruction set in use. b_ih, b_hh may be nullptr (no bias). bfloat16 (float
// only): for cell_step_bf16, the weights given as the float32 values of bfloat16 weights.
template <typename T>
PackedCell<T> pack_cell(Cell cell, int64_t input, int64_t hidden, const T* w_ih, const T* w_hh,
                        const T* b_ih, const T* b_hh, bool bfloat16 = false);

// One step for B rows, on the kernels of packed.isa (the layout it was packed for) and the
// global pool's threads. c and c_out: LSTM only, else nullptr. Outputs must not overlap inputs.
// Results are bitwise identical for any number of threads.
template <typename T>
void cell_step(const PackedCell<T>& packed, int64_t batch, const T* x, const T* h, const T* c,
               T* h_out, T* c_out);

// The same on bfloat16 arrays, for weights packed with bfloat16.
void cell_step_bf16(const PackedCell<float>& packed, int64_t batch, const Bf16* x, const Bf16* h,
                    const Bf16* c, Bf16* h_out, Bf16* c_out);

}  // namespace rnnfast
