// CUDA recurrence, standard path: one fused kernel launch per step (recurrent matmul tile + the
// cell's gate math in registers), forward and backward through time, with every option of the
// CPU kernel (lengths, resets, the LSTM projection). Framework-free.
//
// The arguments are the CPU kernel's (rnnfast/recurrence.h: same shapes, same training
// workspace layout, same meaning of every pointer, same results up to the order of summation),
// here device pointers, plus `workspace`: scratch memory of workspace_size(...) elements (may
// be nullptr where that is 0) that the call uses and leaves undefined. The launchers enqueue
// their kernels on `stream` and return at once: they allocate nothing and never synchronize.
// They return the first launch error (cudaSuccess otherwise); errors of the kernels' execution
// surface, as always in CUDA, at a later synchronizing call. lengths must lie in [0, T]: the
// kernels do not check it (other values give unspecified results, but no access outside the
// arrays).
//
// Two paths compute the same values without a rounding (each sum over k in the same order):
//   Path::Standard    one fused launch per step (two with the LSTM projection); any size.
//   Path::Persistent  one cooperative launch for the whole call: each block keeps its units'
//                     slice of W_hh in shared memory for all T steps, and the blocks meet at a
//                     grid-wide barrier once per step. Not with the LSTM projection, and only
//                     where the slices fit on the device's SMs: persistent_refusal says why
//                     not (the launchers then return cudaErrorInvalidValue).
//                     recurrent_forward_pair runs both directions of a bidirectional layer's
//                     forward in one such launch, half of the SMs a direction
//                     (persistent_refusal with directions 2 says whether they fit); the
//                     backward runs one direction a launch (see backward_persistent).
// Rounding (float32 only): what the recurrent matmul rounds its operands to before multiplying
// them with float32 sums (rnnfast._dtypes.matmul_rounding: bfloat16 and float16 for the 16-bit
// layers, which reach the kernels widened to float32; TF32 for float32 under "high"). Both
// paths then multiply on the tensor cores (mma.sync, cuda/mma.cuh), forward and backward: both
// operands are rounded (h_{t-1} and W_hh forward, dzh_t and W_hh backward, as the CPU's
// bfloat16 kernels round them), and the sums run in the hardware's order, so the two paths'
// values are no longer equal bit for bit. The LSTM projection's products (standard path only)
// stay float32.
// Not yet here (later steps of the CUDA backend): the standard path's launch overhead cut by a
// CUDA graph, float16 and bfloat16 storage.
#pragma once

#include <cstdint>
#include <string>

#include "launch.cuh"
#include "rnnfast/common.h"
#include "rnnfast/recurrence.h"

namespace rnnfast::cuda {

enum class Direction { Forward, Backward };

// Elements of the data type that recurrent_forward (Forward) or recurrent_backward (Backward)
// needs as workspace for `batch` rows of `hidden` units, with a projection to `proj` (0: none).
//   forward:  with the projection, m = o * tanh(c) of the step at hand [B, H]; else nothing
//   backward: the running gradients between steps: dh_direct [B, H] (not with the projection,
//             which only the LSTM has, whose dh_direct is 0) and, for the LSTM, dc [B, H]
inline int64_t workspace_size(Direction direction, Cell cell, int64_t batch, int64_t hidden,
                              int64_t proj) {
  if (direction == Direction::Forward) return proj > 0 ? batch * hidden : 0;
  return (proj > 0 ? 0 : batch * hidden) + (cell == Cell::Lstm ? batch * hidden : 0);
}

enum class Path { Standard, Persistent };

enum class Rounding { None, Bfloat16, Float16, Tf32 };

// Why Path::Persistent cannot run a call with these sizes on the current device, with T
// storage and this rounding, for one direction or both directions of a layer at once
// (directions 2, recurrent_forward_pair); "" where it can.
template <typename T>
std::string persistent_refusal(Cell cell, int64_t hidden, int64_t proj,
                               Rounding rounding = Rounding::None, int directions = 1);

template <typename T>
cudaError_t recurrent_forward(const ForwardArgs<T>& args, T* workspace, cudaStream_t stream,
                              Path path = Path::Standard, Rounding rounding = Rounding::None);

template <typename T>
cudaError_t recurrent_backward(const BackwardArgs<T>& args, T* workspace, cudaStream_t stream,
                               Path path = Path::Standard, Rounding rounding = Rounding::None);

// Both directions of a bidirectional layer in one persistent launch: what recurrent_forward
// with Path::Persistent computes for `forward` and for `reverse` (its own
// arguments: rnnfast.functional gives the reverse direction each sequence reversed within its
// length, and resets of its own), each direction on its own half of the blocks. The two must
// have the same cell and sizes (else cudaErrorInvalidValue, as where persistent_refusal with
// directions 2 refuses them).
template <typename T>
cudaError_t recurrent_forward_pair(const ForwardArgs<T>& forward, const ForwardArgs<T>& reverse,
                                   cudaStream_t stream, Rounding rounding = Rounding::None);

}  // namespace rnnfast::cuda
