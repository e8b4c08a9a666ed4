// rnnfast: definitions shared by the CPU and CUDA kernels. Framework-free: no pybind11, no Python.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define RNNFAST_HD __host__ __device__ __forceinline__
#else
#define RNNFAST_HD inline __attribute__((always_inline))
#endif

namespace rnnfast {

// The recurrent cells, one per type of cells/*.h (whose facts, the gate count G and the rest,
// cells.h's visit_cell reads). Weights follow PyTorch's layout: the G gates of a cell are
// stacked along the rows of W_ih [G*H, I] and W_hh [G*H, H], in PyTorch's gate order.
enum class Cell : int { RnnTanh = 0, RnnRelu = 1, Lstm = 2, Gru = 3 };

}  // namespace rnnfast
