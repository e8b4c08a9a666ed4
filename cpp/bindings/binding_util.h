// Helpers shared by the Python bindings: the cell's name and shapes in error messages.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "rnnfast/common.h"

namespace rnnfast::bindings {

inline Cell parse_cell(const std::string& name) {
  if (name == "rnn_tanh") return Cell::RnnTanh;
  if (name == "rnn_relu") return Cell::RnnRelu;
  if (name == "lstm") return Cell::Lstm;
  if (name == "gru") return Cell::Gru;
  throw pybind11::value_error("cell must be one of 'rnn_tanh', 'rnn_relu', 'lstm', 'gru', not '" +
                              name + "'");
}

// "(2, 3)", "(5,)": as Python prints a shape.
inline std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

}  // namespace rnnfast::bindings
