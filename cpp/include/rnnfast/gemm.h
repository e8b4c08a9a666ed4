// rnnfast: the large matrix products of a layer (the input projection before the loop over
// time; the input and weight gradients after the backward one), on rnnfast's own threads and
// micro-kernel. Running them on the same pool as the recurrence, rather than through NumPy's
// BLAS, keeps a second library's threads from spinning on the cores the recurrence runs on
// right after (benchmarks/profile_layer.py measures what that costs).
//
// C = A B + bias, or C += A B with accumulate. A [m, k] and B [k, n] are strided views:
// element (i, p) of A at a[i * a_row + p * a_col], element (p, j) of B at b[p * b_row +
// j * b_col], so that transposed operands (a PyTorch weight W [n, k] as B = W^T; dzx^T as A)
// need no copy. C [m, n] is row-major with row stride ldc. Sizes are 64-bit. Each element of C
// is summed in an order fixed by k alone, so the result does not depend on the thread count.
// Preconditions: m, n, k >= 0; C overlaps neither A, B nor bias.
#pragma once

#include <cstdint>

#include "rnnfast/bfloat16.h"
#include "rnnfast/float16.h"

namespace rnnfast {

template <typename T>
struct GemmArgs {
  int64_t m, n, k;
  const T* a;
  int64_t a_row, a_col;
  const T* b;
  int64_t b_row, b_col;
  const T* bias;  // [n], or nullptr for none
  T* c;
  int64_t ldc;
  bool accumulate;  // C += A B (+ bias) instead of C = A B (+ bias)
};

template <typename T>
void gemm(const GemmArgs<T>& args);

// The same product with bfloat16 multiplications and float32 sums: C [m, n] float32 =
// A B + bias (or C += with accumulate), where A and B are each float32 (rounded to the
// nearest bfloat16 as they are packed, ties to even, as to_bf16) or bfloat16, strided as in
// GemmArgs with one stride of each operand 1 (a row-major matrix or its transpose; else
// std::invalid_argument). On AMX the tiles multiply (tdpbf16ps), on AVX512-BF16 the vectors
// (vdpbf16ps); below those, the operands are converted and the float32 gemm runs. The sums'
// order depends on k and the instruction set alone, so the result does not depend on the
// thread count.
enum class Operand : int { Float32, Bfloat16 };

struct Bf16GemmArgs {
  int64_t m, n, k;
  const void* a;
  Operand a_type;
  int64_t a_row, a_col;
  const void* b;
  Operand b_type;
  int64_t b_row, b_col;
  const float* bias;  // [n], or nullptr
  float* c;
  int64_t ldc;
  bool accumulate;
};

void gemm_bf16(const Bf16GemmArgs& args);

// The bias gradients: out [cols] = the sums of the columns of a [rows, cols] (row-major), each
// added in double, row after row from 0.0, and rounded to T once: the values of NumPy's
// a.sum(axis=0, dtype=numpy.float64).astype(T), bit for bit, about 4-10x faster.
template <typename T>
void column_sums(const T* a, int64_t rows, int64_t cols, T* out);

// out [n] = in [n] rounded to S, bfloat16 (Bf16, by to_bf16) or float16 (F16, by to_f16), on
// rnnfast's threads where n is large: the layers' 16-bit results (ml_dtypes' and NumPy's casts
// run about 1 and 0.4 G values a second, on one core).
template <typename S>
void round_to(const float* in, int64_t n, S* out);

}  // namespace rnnfast
