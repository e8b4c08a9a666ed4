// GRU cell, PyTorch's torch.nn.GRU, gates in row order r, z, n, with the reset gate applied
// after the recurrent matmul ("linear before reset", as PyTorch and cuDNN do):
//   r = sigmoid(zx_r + zh_r), z = sigmoid(zx_z + zh_z)
//   n = tanh(zx_n + r * zh_n)          zh_n = W_hn h_prev + b_hn
//   h = (1 - z) * n + z * h_prev
// Interface: see rnn.h.
#pragma once

#include "rnnfast/cells/activations.h"

namespace rnnfast::cells {

struct Gru {
  static constexpr const char* kName = "gru";
  static constexpr int kGates = 3;
  // The training workspace's slots, in order: the gates after activation, then zh_n.
  static constexpr int kSavedR = 0, kSavedZ = 1, kSavedN = 2, kSavedHn = 3;
  static constexpr int kSaved = 4;
  static constexpr bool kHasCellState = false;
  static constexpr bool kReadsHPrev = true, kBackwardReadsH = false;

  template <class V>
  RNNFAST_HD static void forward(const V* zx, const V* zh, V h_prev, V& /*c*/, V& h, V* saved) {
    const V r = sigmoid(zx[0] + zh[0]);
    const V z = sigmoid(zx[1] + zh[1]);
    const V n = tanh_(zx[2] + r * zh[2]);
    h = (V(1) - z) * n + z * h_prev;
    saved[kSavedR] = r;
    saved[kSavedZ] = z;
    saved[kSavedN] = n;
    saved[kSavedHn] = zh[2];
  }

  template <class V>
  RNNFAST_HD static void backward(const V* saved, V /*h*/, V h_prev, V /*c_prev*/, V dh, V& /*dc*/,
                                  V* dzx, V* dzh, V& dh_direct) {
    const V r = saved[kSavedR], z = saved[kSavedZ], n = saved[kSavedN], zh_n = saved[kSavedHn];
    const V dn = dh * (V(1) - z) * (V(1) - n * n);  // gradient of n's pre-activation
    const V dr = dn * zh_n * r * (V(1) - r);
    const V dz = dh * (h_prev - n) * z * (V(1) - z);
    dzx[0] = dr;
    dzx[1] = dz;
    dzx[2] = dn;
    dzh[0] = dr;
    dzh[1] = dz;
    dzh[2] = dn * r;
    dh_direct = dh * z;
  }
};

}  // namespace rnnfast::cells
