// Warp-level tensor-core MMA: D [16, 8] += A [16, K] B [K, 8], float32 accumulation, with the
// operands rounded to the operation's precision (Op):
//   Bf16  mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32   K = 16
//   F16   mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32     K = 16
//   Tf32  mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32    K = 8
// Every lane of a warp holds a fragment of each matrix, in the register layout of the PTX ISA
// ("Matrix Fragments for mma.m16n8k16 with floating point type", "... for mma.m16n8k8"):
// lane = 4 * group + thread (group = lane / 4, thread = lane % 4), and
//   A, 16-bit: element e (of 8, two a register, the lower column in the low half) at
//              row group + 8 * (e / 2 % 2), column 2 * thread + e % 2 + 8 * (e / 4)
//   A, TF32:   element e (of 4, one a register) at row group + 8 * (e % 2), column thread +
//              4 * (e / 2)
//   B, 16-bit: element e (of 4) at row 2 * thread + e % 2 + 8 * (e / 2), column group
//   B, TF32:   element e (of 2) at row thread + 4 * e, column group
//   C and D:   element e (of 4 floats) at row group + 8 * (e / 2), column 2 * thread + e % 2
// The kernels use only load_a, load_b_registers (B from registers packed ahead with pack; load_b,
// B from floats, is the same over pack), for_each (the accumulator's elements) and mma; on the
// GPU mma is the instruction, in the emulator a host version over emulator::warp_exchange that
// assembles A and B from the warp's fragments through the same table and computes each lane's
// elements of D. So the kernel code is the same in both builds, and the emulator checks it
// against the layout as written here (tests/kernels/test_cuda_kernels_emulated.py checks the
// table against the PTX ISA's own statement of it, and the host mma, through load_a and
// load_b, against NumPy).
//
// Rounding: load_a, load_b and pack round each float to the operand type, to nearest even (as
// rnnfast._dtypes.round_operand does: bfloat16, float16, TF32 with inf and NaN kept). The
// products of two such values are exact in float32; the accumulation is float32. Its order and
// rounding inside the tensor core are the hardware's own (not IEEE sums in a documented
// order): the emulator's mma adds the exact products and C in float64 and rounds once, so the
// two agree to about float32's rounding of the sum, not bit for bit.
#pragma once

#include <cstdint>
#include <type_traits>

#include "launch.cuh"

#include <cstring>

#if defined(__CUDACC__) && !defined(RNNFAST_CUDA_EMULATED)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace rnnfast::cuda::mma {

constexpr int kM = 16, kN = 8;  // rows and columns of D

struct Bf16 {
  static constexpr int kK = 16;
};
struct F16 {
  static constexpr int kK = 16;
};
struct Tf32 {
  static constexpr int kK = 8;
};

// Operand elements per 32-bit register: two 16-bit values, or one TF32 (a float's bits).
template <class Op>
constexpr int kPerRegister = std::is_same_v<Op, Tf32> ? 1 : 2;

template <class Op>
struct FragmentA {  // this lane's part of A [16, K]
  uint32_t reg[4];
};
template <class Op>
struct FragmentB {  // this lane's part of B [K, 8]
  uint32_t reg[2];
};
struct Accumulator {  // this lane's part of C or D [16, 8]
  float value[4];
};

struct Position {
  int row, col;
};

// The layout table above: where element e of this lane's fragment lies in its matrix.
template <class Op>
__host__ __device__ inline Position a_position(int lane, int e) {
  const int group = lane / 4, thread = lane % 4;
  if constexpr (kPerRegister<Op> == 2)
    return {group + 8 * (e / 2 % 2), 2 * thread + e % 2 + 8 * (e / 4)};
  return {group + 8 * (e % 2), thread + 4 * (e / 2)};
}

template <class Op>
__host__ __device__ inline Position b_position(int lane, int e) {
  const int group = lane / 4, thread = lane % 4;
  if constexpr (kPerRegister<Op> == 2) return {2 * thread + e % 2 + 8 * (e / 2), group};
  return {thread + 4 * e, group};
}

__host__ __device__ inline Position c_position(int lane, int e) {
  return {lane / 4 + 8 * (e / 2), 2 * (lane % 4) + e % 2};
}

// from's bits as a To of the same size (on the GPU, memcpy of a register is a move).
template <typename To, typename From>
__host__ __device__ inline To bit_cast(From from) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast: sizes differ");
  To to;
  memcpy(&to, &from, sizeof to);
  return to;
}

// x rounded to TF32 (10 of float32's 23 mantissa bits kept), to nearest even; inf and NaN
// kept. The same code on the GPU (whose cvt.rna.tf32.f32 rounds ties away from zero) and the
// host.
__host__ __device__ inline uint32_t tf32_bits(float x) {
  const uint32_t bits = bit_cast<uint32_t>(x);
  if ((bits & 0x7F800000u) == 0x7F800000u) return bits;
  return (bits + 0xFFFu + ((bits >> 13) & 1u)) & 0xFFFFE000u;
}

#if defined(RNNFAST_CUDA_EMULATED)

// This thread's lane in its warp.
inline int lane_id() { return static_cast<int>(emulator::thread_rank() % emulator::kWarpSize); }

// x rounded to the 16-bit type, to nearest even: its bits.
template <class Op>
uint32_t half_bits(float x) {
  if constexpr (std::is_same_v<Op, F16>) {
    const _Float16 h = static_cast<_Float16>(x);
    uint16_t bits;
    std::memcpy(&bits, &h, sizeof bits);
    return bits;
  } else {
    const uint32_t bits = bit_cast<uint32_t>(x);
    if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return (bits >> 16) | 0x40u;  // NaN stays NaN
    return (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  }
}

// The register holding the operand values lo and hi (hi in the high half; TF32: lo alone).
template <class Op>
uint32_t pack(float lo, float hi) {
  if constexpr (std::is_same_v<Op, Tf32>)
    return tf32_bits(lo);
  else
    return half_bits<Op>(lo) | half_bits<Op>(hi) << 16;
}

// Operand value `half` (0: low) of a register, as a float.
template <class Op>
float unpack(uint32_t reg, int half) {
  if constexpr (std::is_same_v<Op, Tf32>) {
    return bit_cast<float>(reg);
  } else {
    const uint16_t bits = static_cast<uint16_t>(reg >> (16 * half));
    if constexpr (std::is_same_v<Op, F16>) {
      _Float16 h;
      std::memcpy(&h, &bits, sizeof h);
      return static_cast<float>(h);
    } else {
      return bit_cast<float>(uint32_t(bits) << 16);
    }
  }
}

// d += a b over the warp, every lane calling it (the instruction's host version).
template <class Op>
void mma(Accumulator& d, const FragmentA<Op>& a, const FragmentB<Op>& b) {
  struct Lane {
    FragmentA<Op> a;
    FragmentB<Op> b;
  };
  const Lane mine{a, b};
  const auto* shared =
      static_cast<const unsigned char*>(emulator::warp_exchange(&mine, sizeof(Lane)));
  constexpr int K = Op::kK, P = kPerRegister<Op>;
  float A[kM][K], B[K][kN];
  for (int lane = 0; lane < 32; ++lane) {
    Lane l;
    std::memcpy(&l, shared + lane * sizeof(Lane), sizeof(Lane));
    for (int e = 0; e < 4 * P; ++e) {
      const Position p = a_position<Op>(lane, e);
      A[p.row][p.col] = unpack<Op>(l.a.reg[e / P], e % P);
    }
    for (int e = 0; e < 2 * P; ++e) {
      const Position p = b_position<Op>(lane, e);
      B[p.row][p.col] = unpack<Op>(l.b.reg[e / P], e % P);
    }
  }
  for (int e = 0; e < 4; ++e) {
    const Position p = c_position(lane_id(), e);
    double sum = d.value[e];
    for (int k = 0; k < K; ++k) sum += double(A[p.row][k]) * B[k][p.col];
    d.value[e] = static_cast<float>(sum);
  }
}

#elif defined(__CUDACC__)

__device__ __forceinline__ int lane_id() {
  int lane;
  asm("mov.u32 %0, %%laneid;" : "=r"(lane));
  return lane;
}

template <class Op>
__device__ __forceinline__ uint32_t pack(float lo, float hi) {
  if constexpr (std::is_same_v<Op, Tf32>) {
    return tf32_bits(lo);
  } else if constexpr (std::is_same_v<Op, Bf16>) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);  // lo in the low half
    return *reinterpret_cast<const uint32_t*>(&h);
  } else {
    const __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
}

template <class Op>
__device__ __forceinline__ void mma(Accumulator& d, const FragmentA<Op>& a,
                                    const FragmentB<Op>& b) {
  float* c = d.value;
  if constexpr (std::is_same_v<Op, Tf32>)
    asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a.reg[0]), "r"(a.reg[1]), "r"(a.reg[2]), "r"(a.reg[3]), "r"(b.reg[0]), "r"(b.reg[1]));
  else if constexpr (std::is_same_v<Op, Bf16>)
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, "
        "%7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a.reg[0]), "r"(a.reg[1]), "r"(a.reg[2]), "r"(a.reg[3]), "r"(b.reg[0]), "r"(b.reg[1]));
  else
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, "
        "%7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a.reg[0]), "r"(a.reg[1]), "r"(a.reg[2]), "r"(a.reg[3]), "r"(b.reg[0]), "r"(b.reg[1]));
}

#endif

// Register r of a fragment whose element e lies at position(e), from at(row, col). (Two
// scalars to pack, not an array: ptxas put a two-float array in local memory.)
template <class Op, class Where, class At>
__device__ __forceinline__ uint32_t load_register(int r, Where&& position, At&& at) {
  const Position p = position(r * kPerRegister<Op>);
  const float lo = at(p.row, p.col);
  if constexpr (kPerRegister<Op> == 1) {
    return pack<Op>(lo, 0.0f);
  } else {
    const Position q = position(r * 2 + 1);
    return pack<Op>(lo, at(q.row, q.col));
  }
}

// This lane's fragment of A [16, K]: at(row, col) is element (row, col) as a float, rounded
// here to the operand type.
template <class Op, class At>
__device__ __forceinline__ void load_a(FragmentA<Op>& f, At&& at) {
  const int lane = lane_id();
  const auto position = [lane](int e) { return a_position<Op>(lane, e); };
#pragma unroll
  for (int r = 0; r < 4; ++r) f.reg[r] = load_register<Op>(r, position, at);
}

// This lane's fragment of B [K, 8] from registers packed ahead: registers(k, col) is the
// register of elements (k, col) and (k + 1, col) of B, pack<Op>(B[k, col], B[k + 1, col])
// (16-bit types, k even: a register holds two consecutive k), or of (k, col) alone (TF32).
template <class Op, class Registers>
__device__ __forceinline__ void load_b_registers(FragmentB<Op>& f, Registers&& registers) {
  const int lane = lane_id();
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const Position p = b_position<Op>(lane, r * kPerRegister<Op>);
    f.reg[r] = registers(p.row, p.col);
  }
}

// This lane's fragment of B [K, 8]: at(k, col) as in load_a.
template <class Op, class At>
__device__ __forceinline__ void load_b(FragmentB<Op>& f, At&& at) {
  load_b_registers(f, [&](int k, int col) {
    return pack<Op>(at(k, col), kPerRegister<Op> == 2 ? at(k + 1, col) : 0.0f);
  });
}

// f(row, col, value) for each of this lane's elements of an accumulator (to set or read them).
template <class F>
__device__ __forceinline__ void for_each(Accumulator& d, F&& f) {
  const int lane = lane_id();
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const Position p = c_position(lane, e);
    f(p.row, p.col, d.value[e]);
  }
}

}  // namespace rnnfast::cuda::mma
