// LSTM cell, PyTorch's torch.nn.LSTM, gates in row order i, f, g, o:
//   i = sigmoid(z_i), f = sigmoid(z_f), g = tanh(z_g), o = sigmoid(z_o),  z = zx + zh
//   c = f * c_prev + i * g
//   h = o * tanh(c)
// Interface: see rnn.h.
#pragma once

#include "rnnfast/cells/activations.h"

namespace rnnfast::cells {

struct Lstm {
  static constexpr const char* kName = "lstm";
  static constexpr int kGates = 4;
  // The training workspace's slots, in order: the gates after activation, then c.
  static constexpr int kSavedI = 0, kSavedF = 1, kSavedG = 2, kSavedO = 3, kSavedC = 4;
  static constexpr int kSaved = 5;
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
    saved[kSavedI] = i;
    saved[kSavedF] = f;
    saved[kSavedG] = g;
    saved[kSavedO] = o;
    saved[kSavedC] = c;
  }

  template <class V>
  RNNFAST_HD static void backward(const V* saved, V /*h*/, V /*h_prev*/, V c_prev, V dh, V& dc,
                                  V* dzx, V* dzh, V& dh_direct) {
    const V i = saved[kSavedI], f = saved[kSavedF], g = saved[kSavedG], o = saved[kSavedO];
    const V tanh_c = tanh_(saved[kSavedC]);  // recomputed: cheaper than saving a sixth value
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
