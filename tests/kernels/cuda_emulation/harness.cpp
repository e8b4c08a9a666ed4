// C entry points to the emulated CUDA launchers (see cuda_runtime.h beside this), for ctypes.
// recurrence_emulated.cpp is cuda/recurrence.cu with its launches rewritten by the test.
#include "recurrence_emulated.cpp"

namespace {

template <typename T>
int forward(int cell, int64_t steps, int64_t batch, int64_t hidden, const T* zx, const T* w_hh,
            const T* b_hh, const T* h0, const T* c0, T* y, T* h_n, T* c_n, T* saved) {
  const rnnfast::ForwardArgs<T> args{rnnfast::Cell(cell), steps, batch, hidden, zx, w_hh, b_hh,
                                     h0, c0, y, h_n, c_n, saved};
  return rnnfast::cuda::recurrent_forward(args, nullptr);
}

template <typename T>
int backward(int cell, int64_t steps, int64_t batch, int64_t hidden, const T* w_hh, const T* h0,
             const T* c0, const T* y, const T* saved, const T* dy, const T* dh_n, const T* dc_n,
             T* dzx, T* dzh, T* dh0, T* dc0) {
  const rnnfast::BackwardArgs<T> args{rnnfast::Cell(cell), steps, batch, hidden, w_hh, h0, c0,
                                      y, saved, dy, dh_n, dc_n, dzx, dzh, dh0, dc0};
  return rnnfast::cuda::recurrent_backward(args, nullptr);
}

}  // namespace

#define RNNFAST_EMULATED_ENTRY_POINTS(T, suffix)                                               \
  extern "C" int forward_##suffix(int cell, int64_t steps, int64_t batch, int64_t hidden,      \
                                  const T* zx, const T* w_hh, const T* b_hh, const T* h0,      \
                                  const T* c0, T* y, T* h_n, T* c_n, T* saved) {               \
    return forward(cell, steps, batch, hidden, zx, w_hh, b_hh, h0, c0, y, h_n, c_n, saved);    \
  }                                                                                            \
  extern "C" int backward_##suffix(int cell, int64_t steps, int64_t batch, int64_t hidden,     \
                                   const T* w_hh, const T* h0, const T* c0, const T* y,        \
                                   const T* saved, const T* dy, const T* dh_n,                 \
                                   const T* dc_n, T* dzx, T* dzh, T* dh0, T* dc0) {            \
    return backward(cell, steps, batch, hidden, w_hh, h0, c0, y, saved, dy, dh_n, dc_n, dzx,   \
                    dzh, dh0, dc0);                                                            \
  }

RNNFAST_EMULATED_ENTRY_POINTS(float, f32)
RNNFAST_EMULATED_ENTRY_POINTS(double, f64)
