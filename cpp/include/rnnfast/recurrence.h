// rnnfast: the recurrent part of one layer in one direction, forward and backward through time.
//
// The layer around it (Python, rnnfast.functional) does the large GEMMs that need no
// recurrence: the input projection zx = x W_ih^T + b_ih for all T steps before the forward,
// and dW_ih = dzx^T x, dx = dzx W_ih, dW_hh = dzh^T h_prev, db = column sums, after the backward
// (ARCHITECTURE.md, One orchestration). What stays here is the loop over time, with the recurrent
// matmul and the cell's gate math fused in one pass per step.
//
// Shapes (row-major, C-contiguous; G = gate_count(cell); S = saved_per_unit(cell); R = H, or
// P = proj with the LSTM's projection):
//   zx     [T, B, G*H]     w_hh [G*H, R]    b_hh [G*H]
//   h0     [B, R]          y    [T, B, R]   h_n [B, R]      c0, c_n [B, H]
//   saved  [T, B, S*H]     training workspace: what backward needs besides y
//   w_hr   [P, H]          optional (LSTM, proj = P > 0): h = m W_hr^T with m = o * tanh(c)
//   lengths [B]            optional: sequence b has lengths[b] steps (0 <= lengths[b] <= T);
//                          steps t >= lengths[b] are padding: y is 0 there, h_n/c_n are the
//                          state after the sequence's own last step (h0/c0 for length 0), and
//                          backward ignores dy there and writes zero dzx/dzh
//   resets  [T, B]         optional: where nonzero, the state of row b is put back to (h0, c0)
//                          before step t (a no-op at t = 0); backward sends the gradient that
//                          reaches that state to dh0/dc0
// Sizes and offsets are 64-bit. Preconditions: T >= 1, H >= 1, B >= 0 (B = 0 does nothing);
// arrays aligned to their element size; no output overlapping another argument; lengths in
// [0, T].
#pragma once

#include <cstdint>

#include <string>
#include <vector>

#include "rnnfast/cells/cells.h"
#include "rnnfast/common.h"

namespace rnnfast {

using cells::gate_count;      // G of a run-time Cell
using cells::saved_per_unit;  // values per hidden unit and step of the training workspace

template <typename T>
struct ForwardArgs {
  Cell cell;
  int64_t steps, batch, hidden;  // T, B, H
  const T* zx;                   // [T, B, G*H] input projection, b_ih included
  const T* w_hh;                 // [G*H, R]
  const T* b_hh;                 // [G*H], or nullptr for no bias
  const T* h0;                   // [B, R]
  const T* c0;                   // [B, H], LSTM only
  T* y;                          // [T, B, R] out: h_t of every step
  T* h_n;                        // [B, R] out
  T* c_n;                        // [B, H] out, LSTM only
  T* saved;                      // [T, B, S*H] out, training; nullptr for inference (nothing saved)
  const int64_t* lengths;        // [B], or nullptr: every sequence has T steps
  const uint8_t* resets;         // [T, B], or nullptr: no resets
  int64_t proj;                  // P, or 0: no projection (then w_hr is unused)
  const T* w_hr;                 // [P, H], LSTM only
  bool bf16_matmul;              // float32: the recurrent matmul's operands rounded to bfloat16,
                                 // float32 sums, on the instruction sets amx and avx512_bf16
};

template <typename T>
struct BackwardArgs {
  Cell cell;
  int64_t steps, batch, hidden;
  const T* w_hh;   // [G*H, R]
  const T* h0;     // [B, R]
  const T* c0;     // [B, H], LSTM only
  const T* y;      // [T, B, R] from the training forward
  const T* saved;  // [T, B, S*H] from the training forward (unused when S = 0)
  const T* dy;     // [T, B, R] gradient of the loss with respect to y
  const T* dh_n;   // [B, R], or nullptr for zero
  const T* dc_n;   // [B, H], or nullptr for zero (LSTM only)
  T* dzx;          // [T, B, G*H] out: gradient of zx
  T* dzh;          // [T, B, G*H] out: gradient of h_{t-1} W_hh^T + b_hh. It differs from dzx
                   // only for the GRU; for the other cells it may be the same pointer as dzx.
  T* dh0;          // [B, R] out
  T* dc0;          // [B, H] out, LSTM only
  const int64_t* lengths;  // [B], or nullptr; as in the forward
  const uint8_t* resets;   // [T, B], or nullptr; as in the forward
  int64_t proj;            // P, or 0; as in the forward
  const T* w_hr;           // [P, H], with proj
  T* dh_proj;              // [T, B, P] out, with proj: the gradient reaching each h_t, for
                           // dW_hr = sum_t dh_proj_t^T m_t (m_t = o * tanh(c_t), from saved)
  bool bf16_matmul;        // as in ForwardArgs: dzh_t and W_hh rounded to bfloat16
};

// Run on the instruction set in use (see below) and the global thread pool's threads.
// Results are bitwise identical for any number of threads.
template <typename T>
void recurrent_forward(const ForwardArgs<T>& args);

template <typename T>
void recurrent_backward(const BackwardArgs<T>& args);

// The CPU kernels are compiled for several instruction sets, named from the lowest:
// "baseline" (any x86-64, or the target's default elsewhere), "avx2" (AVX2 + FMA), "avx512"
// (AVX-512 F, BW, DQ, VL), then for the bfloat16 GEMM "avx512_bf16" (AVX-512 + AVX512-BF16)
// and "amx" (AVX512-BF16 + AMX-BF16, with the operating system's permission); their other
// kernels are AVX-512's. The best one this CPU supports is used unless set_isa says otherwise.
std::vector<std::string> compiled_isas();
std::vector<std::string> available_isas();  // compiled and supported by this CPU
std::string active_isa();
void set_isa(const std::string& name);  // throws std::invalid_argument if not available

// Threads of the CPU kernels (a persistent pool; the caller's thread counts as one).
int num_threads();
void set_num_threads(int threads);  // throws std::invalid_argument unless threads >= 1
// Whether the kernels' parallel work runs on the threads of an OpenMP runtime already loaded in
// the process (the shared library at `path`; "" for rnnfast's own threads): see
// ThreadPool::share_openmp_threads. False where the library cannot be used.
bool share_openmp_threads(const std::string& path);
std::string openmp_library();  // the library in use, or ""

// How the last kernel call made by the calling thread shared its work: the kernel's name
// ("recurrent_forward", "recurrent_backward", "gemm", "cell_step"), the threads it ran on and
// how they split it ("columns" or "rows" of a step, "panels" or "rows" of a GEMM, "units" of a
// cell step). Per calling thread, so that tests can assert that a call really split.
struct SplitRecord {
  const char* kernel = "";
  int threads = 0;
  const char* split = "";
};
SplitRecord last_split();
void record_split(const char* kernel, int threads, const char* split);

}  // namespace rnnfast
