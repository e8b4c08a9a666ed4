// Vanilla RNN cell (Elman), PyTorch's torch.nn.RNN:
//   h = act(zx + zh),  zx = x W_ih^T + b_ih,  zh = h_prev W_hh^T + b_hh,  act = tanh or relu.
//
// Every cell exposes the same interface, per hidden unit (V is the value type):
//   kName    the name Python code uses (rnnfast.cell_registry)
//   kGates   gates stacked in W_ih / W_hh rows
//   kSaved   values per hidden unit that the training forward saves for backward (named
//            slots kSaved<X> give their order; the cell state, where there is one, kSavedC)
//   kHasCellState  whether the cell carries c besides h (LSTM)
//   kReadsHPrev    whether forward and backward read h_prev (GRU); kBackwardReadsH: whether
//                  backward reads h (RNN). Kernels skip loading what a cell does not read.
//   forward(zx[G], zh[G], h_prev, c, h, saved[S])     c: cell state in/out (LSTM only)
//   backward(saved[S], h, h_prev, c_prev, dh, dc, dzx[G], dzh[G], dh_direct)
//     dh: gradient reaching h_t (from the output and from step t+1);
//     dc: in, gradient reaching c_t; out, gradient for c_{t-1} (LSTM only);
//     dzx, dzh: gradients of the two pre-activation parts;
//     dh_direct: the part of dh_{t-1} that does not go through W_hh (GRU's z * dh).
#pragma once

#include "rnnfast/cells/activations.h"

namespace rnnfast::cells {

template <bool kRelu>
struct Rnn {
  static constexpr const char* kName = kRelu ? "rnn_relu" : "rnn_tanh";
  static constexpr int kGates = 1;
  static constexpr int kSaved = 0;  // h_t is the output y[t]: nothing more to save
  static constexpr bool kHasCellState = false;
  static constexpr bool kReadsHPrev = false, kBackwardReadsH = true;

  template <class V>
  RNNFAST_HD static void forward(const V* zx, const V* zh, V /*h_prev*/, V& /*c*/, V& h,
                                 V* /*saved*/) {
    const V z = zx[0] + zh[0];
    h = kRelu ? relu(z) : tanh_(z);
  }

  template <class V>
  RNNFAST_HD static void backward(const V* /*saved*/, V h, V /*h_prev*/, V /*c_prev*/, V dh,
                                  V& /*dc*/, V* dzx, V* dzh, V& dh_direct) {
    // relu'(z) from its output: 1 where h > 0 (a NaN h gives 0 here and NaN upstream anyway).
    const V dz = kRelu ? (h > V(0) ? dh : V(0)) : dh * (V(1) - h * h);
    dzx[0] = dz;
    dzh[0] = dz;
    dh_direct = V(0);
  }
};

using RnnTanh = Rnn<false>;
using RnnRelu = Rnn<true>;

}  // namespace rnnfast::cells
