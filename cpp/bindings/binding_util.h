// Helpers shared by the Python bindings: the cell's name and shapes in error messages.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <utility>
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

// What a binding reads of one array argument (a NumPy array, a __cuda_array_interface__ ...)
// for a kernel whose element type is T.
struct ArrayView {
  std::string dtype, expected_dtype;  // names for errors; dtype_ok: they are the same type
  bool dtype_ok, c_contiguous, aligned, writable;
  std::vector<int64_t> shape;
  uintptr_t begin, end;  // the memory it spans
};

// Checks the arrays of one kernel call and remembers the memory each one spans, so that an
// output overlapping any other argument is refused (it would corrupt the caller's data).
// Reader::view<T>(obj, name) reads an argument, raising TypeError if it is no array at all.
template <typename T, class Reader>
class ArgChecker {
 public:
  struct Span {
    const char* name;
    uintptr_t begin, end;
    bool is_output;
  };

  // lead: the argument whose dtype chose T, named in dtype errors.
  explicit ArgChecker(const char* lead) : lead_(lead) {}

  // Required input: a C-contiguous array of dtype T with exactly this shape.
  const T* input(const pybind11::handle& obj, const char* name,
                 const std::vector<int64_t>& shape) {
    return checked(obj, name, shape, false);
  }
  // Optional input: None gives nullptr.
  const T* optional_input(const pybind11::handle& obj, const char* name,
                          const std::vector<int64_t>& shape) {
    return obj.is_none() ? nullptr : checked(obj, name, shape, false);
  }
  T* output(const pybind11::handle& obj, const char* name, const std::vector<int64_t>& shape) {
    return checked(obj, name, shape, true);
  }
  T* optional_output(const pybind11::handle& obj, const char* name,
                     const std::vector<int64_t>& shape) {
    return obj.is_none() ? nullptr : checked(obj, name, shape, true);
  }
  void require_none(const pybind11::handle& obj, const char* name, const char* why) {
    if (!obj.is_none()) throw pybind11::value_error(std::string(name) + " must be None " + why);
  }

  // Call after all arguments are checked.
  void check_no_overlap() const {
    for (const Span& out : spans_) {
      if (!out.is_output) continue;
      for (const Span& other : spans_) {
        if (&other == &out || other.end <= out.begin || out.end <= other.begin) continue;
        throw pybind11::value_error(std::string(out.name) + " overlaps the memory of " +
                                    other.name + "; pass separate arrays");
      }
    }
  }

  const std::vector<Span>& spans() const { return spans_; }

 private:
  T* checked(const pybind11::handle& obj, const char* name, const std::vector<int64_t>& shape,
             bool is_output) {
    const ArrayView a = Reader::template view<T>(obj, name);
    if (!a.dtype_ok)
      throw pybind11::type_error(std::string(name) + " has dtype " + a.dtype + ", expected " +
                                 a.expected_dtype + " (the dtype of " + lead_ + ")");
    if (a.shape != shape)
      throw pybind11::value_error(std::string(name) + " has shape " + shape_str(a.shape) +
                                  ", expected " + shape_str(shape));
    if (!a.c_contiguous) throw pybind11::value_error(std::string(name) + " must be C-contiguous");
    if (!a.aligned)
      throw pybind11::value_error(std::string(name) + " must be aligned to its element size");
    if (is_output && !a.writable)
      throw pybind11::value_error(std::string(name) +
                                  " is read-only; outputs must be writable");
    spans_.push_back({name, a.begin, a.end, is_output});
    return reinterpret_cast<T*>(a.begin);
  }

  const char* lead_;
  std::vector<Span> spans_;
};

}  // namespace rnnfast::bindings
