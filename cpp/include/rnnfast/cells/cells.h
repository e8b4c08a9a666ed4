// All cells, and visit_cell: the one place where the run-time Cell becomes a compile-time type.
#pragma once

#include "rnnfast/cells/gru.h"
#include "rnnfast/cells/lstm.h"
#include "rnnfast/cells/rnn.h"
#include "rnnfast/common.h"

namespace rnnfast::cells {

// Calls f(CellType{}) for the cell's type; f is a generic lambda, instantiated once per cell.
template <class F>
decltype(auto) visit_cell(Cell cell, F&& f) {
  switch (cell) {
    case Cell::RnnTanh: return f(RnnTanh{});
    case Cell::RnnRelu: return f(RnnRelu{});
    case Cell::Lstm: return f(Lstm{});
    case Cell::Gru: break;
  }
  return f(Gru{});
}

}  // namespace rnnfast::cells
