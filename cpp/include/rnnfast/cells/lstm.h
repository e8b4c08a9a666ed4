// LSTM cell, PyTorch's torch.nn.LSTM, gates in row order i, f, g, o:
//   i = sigmoid(z_i), f = sigmoid(z_f), g = tanh(z_g), o = sigmoid(z_o),  z = zx + zh
//   c = f * c_prev + i * g
//   h = o * tanh(c)
// Interface: see rnn.h.
#pragma once

#include "rnnfast/cells/activations.h"

namespace rnnfast::cells {

struct Lstm {
  static constexpr int kGates = 4;
  static constexpr int kSaved = 5;  // i, f, g, o (after activation), c
  static constexpr bool kHasCellState = true;
  static constexpr bool kReadsHPrev = false, kBackwardReadsH = false;

  template <class V>
  RNNFAST_HD static void forward(const V* zx, const V* zh, V /*h_prev*/, V& c, V& h, V* saved) {
    const V i = sigmoid(zx[0] + zh[0]);
    const V f = sigmoid(zx[1] + zh[1]);
    const V g = tanh_(zx[2] + zh[2]);
    const V o = sigmoid(zx[3] + zh[3]);
    c = f * c + i * g;
    h = o * tanh_(c);
    saved[0] = i;
    saved[1] = f;
    saved[2] = g;
    saved[3] = o;
    saved[4] = c;
  }

  template <class V>
  RNNFAST_HD static void backward(const V* saved, V /*h*/, V /*h_prev*/, V c_prev, V dh, V& dc,
                                  V* dzx, V* dzh, V& dh_direct) {
    const V i = saved[0], f = saved[1], g = saved[2], o = saved[3];
    const V tanh_c = tanh_(saved[4]);  // recomputed: cheaper than saving a sixth value
    const V dc_t = dc + dh * o * (V(1) - tanh_c * tanh_c);
    dzx[0] = dc_t * g * i * (V(1) - i);
    dzx[1] = dc_t * c_prev * f * (V(1) - f);
    dzx[2] = dc_t * i * (V(1) - g * g);
    dzx[3] = dh * tanh_c * o * (V(1) - o);
    for (int k = 0; k < 4; ++k) dzh[k] = dzx[k];
    dc = dc_t * f;
    dh_direct = V(0);
  }
};

}  // namespace rnnfast::cells
