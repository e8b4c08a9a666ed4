// All cells, and visit_cell: the one place where the run-time Cell becomes a compile-time type.
#pragma once

#include <initializer_list>  // cell_from_name's loop over the cells

#include "rnnfast/cells/gru.h"
#include "rnnfast/cells/lstm.h"
#include "rnnfast/cells/rnn.h"
#include "rnnfast/common.h"

namespace rnnfast::cells {

// Calls f(CellType{}) for the cell's type; f is a generic lambda, instantiated once per cell.
template <class F>
decltype(auto) visit_cell(Cell cell, F&& f) {
  switch (cell) {
    case Cell::RnnTanh:
      return f(RnnTanh{});
    case Cell::RnnRelu:
      return f(RnnRelu{});
    case Cell::Lstm:
      return f(Lstm{});
    case Cell::Gru:
      break;
  }
  return f(Gru{});
}

// Facts of a run-time Cell, read from its type.
inline int gate_count(Cell cell) {
  return visit_cell(cell, [](auto c) { return decltype(c)::kGates; });
}
inline int saved_per_unit(Cell cell) {
  return visit_cell(cell, [](auto c) { return decltype(c)::kSaved; });
}
inline const char* cell_name(Cell cell) {
  return visit_cell(cell, [](auto c) { return decltype(c)::kName; });
}

// The Cell whose kName is `name`; false if there is none.
inline bool cell_from_name(const char* name, Cell& cell) {
  for (Cell c : {Cell::RnnTanh, Cell::RnnRelu, Cell::Lstm, Cell::Gru}) {
    const char* n = cell_name(c);
    int i = 0;
    while (n[i] != 0 && n[i] == name[i]) ++i;
    if (n[i] == 0 && name[i] == 0) {
      cell = c;
      return true;
    }
  }
  return false;
}

}  // namespace rnnfast::cells
