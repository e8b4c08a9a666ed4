// Helpers shared by the Python bindings: the cell's name and shapes in error messages.
#pragma once

#include <pybind11/pybind11.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "rnnfast/common.h"
#include "rnnfast/recurrence.h"

namespace rnnfast::bindings {

inline Cell parse_cell(const std::string& name) {
  Cell cell;
  if (cells::cell_from_name(name.c_str(), cell)) return cell;
  throw pybind11::value_error("cell must be one of 'rnn_tanh', 'rnn_relu', 'lstm', 'gru', not '" +
                              name + "'");
}

// An argument as the bindings take it: any Python object, read by a backend's Reader.
using Handle = pybind11::handle;

// "(2, 3)", "(5,)": as Python prints a shape.
inline std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

// The shape a binding expects of an argument: a braced list ({B, H}, held here) or a vector
// (referred to), without a heap allocation (a call checks several arrays).
class ShapeRef {
 public:
  ShapeRef(std::initializer_list<int64_t> dims) : size_(dims.size()) {
    if (size_ > held_.size()) throw std::logic_error("ShapeRef: more than 4 braced dimensions");
    std::copy(dims.begin(), dims.end(), held_.begin());
  }
  ShapeRef(const std::vector<int64_t>& dims) : vector_(&dims), size_(dims.size()) {}
  bool operator==(const std::vector<int64_t>& other) const {
    return other.size() == size_ && std::equal(other.begin(), other.end(), data());
  }
  std::vector<int64_t> vector() const { return std::vector<int64_t>(data(), data() + size_); }

 private:
  const int64_t* data() const { return vector_ != nullptr ? vector_->data() : held_.data(); }
  std::array<int64_t, 4> held_{};
  const std::vector<int64_t>* vector_ = nullptr;
  size_t size_;
};

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
// Reader::view<U>(obj, name) reads an argument whose element type should be U, raising
// TypeError if it is no array at all. T is the kernel's data type; arrays of another element
// type (lengths: int64_t; resets: uint8_t, which the readers accept as bool too) go through the
// same checks with U given.
template <typename T, class Reader>
class ArgChecker {
 public:
  struct Span {
    const char* name;
    uintptr_t begin, end;
    bool is_output;
  };

  using Element = T;
  using ArrayReader = Reader;

  // lead: the argument whose dtype chose T, named in dtype errors.
  explicit ArgChecker(const char* lead) : lead_(lead) { spans_.reserve(kTypicalArrays); }

  // Required input: a C-contiguous array of dtype U with exactly this shape.
  template <typename U = T>
  const U* input(const pybind11::handle& obj, const char* name, ShapeRef shape) {
    return checked<U>(obj, name, shape, false);
  }
  // Optional input: None gives nullptr.
  template <typename U = T>
  const U* optional_input(const pybind11::handle& obj, const char* name, ShapeRef shape) {
    return obj.is_none() ? nullptr : checked<U>(obj, name, shape, false);
  }
  T* output(const pybind11::handle& obj, const char* name, ShapeRef shape) {
    return checked<T>(obj, name, shape, true);
  }
  T* optional_output(const pybind11::handle& obj, const char* name, ShapeRef shape) {
    return obj.is_none() ? nullptr : checked<T>(obj, name, shape, true);
  }
  // Scratch memory: a 1-D array of at least `size` elements, or None where size is 0
  // (nullptr).
  T* scratch(const pybind11::handle& obj, const char* name, int64_t size) {
    if (obj.is_none()) {
      if (size == 0) return nullptr;
      throw pybind11::value_error(std::string(name) + " must be a 1-D array of at least " +
                                  std::to_string(size) + " elements, not None");
    }
    const ArrayView a = Reader::template view<T>(obj, name);
    if (a.shape.size() != 1 || a.shape[0] < size)
      throw pybind11::value_error(std::string(name) + " has shape " + shape_str(a.shape) +
                                  ", expected a 1-D array of at least " + std::to_string(size) +
                                  " elements");
    return checked<T>(obj, name, a.shape, true);
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
  template <typename U = T>
  U* checked(const pybind11::handle& obj, const char* name, ShapeRef shape, bool is_output) {
    const ArrayView a = Reader::template view<U>(obj, name);
    if (!a.dtype_ok)
      throw pybind11::type_error(
          std::string(name) + " has dtype " + a.dtype + ", expected " + a.expected_dtype +
          (std::is_same_v<U, T> ? std::string(" (the dtype of ") + lead_ + ")" : std::string()));
    if (!(shape == a.shape))
      throw pybind11::value_error(std::string(name) + " has shape " + shape_str(a.shape) +
                                  ", expected " + shape_str(shape.vector()));
    if (!a.c_contiguous) throw pybind11::value_error(std::string(name) + " must be C-contiguous");
    if (!a.aligned)
      throw pybind11::value_error(std::string(name) + " must be aligned to its element size");
    if (is_output && !a.writable)
      throw pybind11::value_error(std::string(name) + " is read-only; outputs must be writable");
    spans_.push_back({name, a.begin, a.end, is_output});
    return reinterpret_cast<U*>(a.begin);
  }

  static constexpr size_t kTypicalArrays = 16;  // a call's arrays: one allocation for spans_
  const char* lead_;
  std::vector<Span> spans_;
};

// Calls f(T{}) with T the lead array's element type, float or double (Reader::is_dtype<T>);
// every other array of the call must have the same (ArgChecker<T> refuses another).
template <class Reader, class F>
decltype(auto) dispatch_dtype(const pybind11::handle& lead, const char* name, F&& f) {
  if (Reader::template is_dtype<float>(lead, name)) return f(float{});
  if (Reader::template is_dtype<double>(lead, name)) return f(double{});
  throw pybind11::type_error(std::string(name) + " has dtype " + Reader::dtype_name(lead, name) +
                             ", expected float32 or float64");
}

// Args (ForwardArgs or BackwardArgs) with the cell and the sizes filled in: T, B from z
// [T, B, G*H] (zx or dzx); H from w_hh [G*H, H], or with the LSTM's projection H and P from
// w_hr [P, H] (then w_hh is [G*H, P]).
template <class Args, class Reader>
Args args_with_sizes(const std::string& cell_name, const pybind11::handle& z, const char* z_name,
                     const pybind11::handle& w_hh, const pybind11::handle& w_hr) {
  const Cell cell = parse_cell(cell_name);
  const std::vector<int64_t> w = Reader::shape(w_hh, "w_hh");
  const int64_t gates = gate_count(cell);
  Args args{};
  if (!w_hr.is_none()) {
    if (cell != Cell::Lstm)
      throw pybind11::value_error("w_hr must be None for this cell (the projection is the LSTM's)");
    const std::vector<int64_t> p = Reader::shape(w_hr, "w_hr");
    if (p.size() != 2 || p[0] < 1 || p[1] < 1)
      throw pybind11::value_error("w_hr has shape " + shape_str(p) +
                                  ", expected (P, H) with P, H >= 1");
    args.proj = p[0];
    args.hidden = p[1];
    if (w.size() != 2 || w[0] != gates * args.hidden || w[1] != args.proj)
      throw pybind11::value_error("w_hh has shape " + shape_str(w) + ", expected " +
                                  shape_str({gates * args.hidden, args.proj}) + " = (4*H, P)");
  } else {
    if (w.size() != 2 || w[1] < 1 || w[0] != gates * w[1])
      throw pybind11::value_error("w_hh has shape " + shape_str(w) + ", expected (" +
                                  std::to_string(gates) + "*H, H) with H >= 1");
    args.hidden = w[1];
  }
  const std::vector<int64_t> zs = Reader::shape(z, z_name);
  if (zs.size() != 3 || zs[0] < 1)
    throw pybind11::value_error(std::string(z_name) + " must have shape (T, B, G*H) with T >= 1");
  args.cell = cell;
  args.steps = zs[0];
  args.batch = zs[1];
  return args;
}

// The shapes of one recurrence's arrays: G gates, S saved values per unit, T steps, B batch,
// H units, R the size of h (P with the projection, else H), P the projection.
struct Dims {
  int64_t G, S, T, B, H, R, P;

  template <class Args>
  explicit Dims(const Args& args)
      : G(gate_count(args.cell)),
        S(saved_per_unit(args.cell)),
        T(args.steps),
        B(args.batch),
        H(args.hidden),
        R(args.proj > 0 ? args.proj : args.hidden),
        P(args.proj) {}
};

// Calls f(check, args, dims) for a call whose lead array z (zx or dzx) chose the element type T
// (dispatch_dtype): an ArgChecker<T, Reader>, ArgsOf<T> from args_with_sizes, and its Dims.
template <template <typename> class ArgsOf, class Reader, class F>
void with_sized_args(const std::string& cell, Handle z, const char* z_name, Handle w_hh,
                     Handle w_hr, F&& f) {
  dispatch_dtype<Reader>(z, z_name, [&](auto type_tag) {
    using T = decltype(type_tag);
    ArgChecker<T, Reader> check(z_name);
    auto args = args_with_sizes<ArgsOf<T>, Reader>(cell, z, z_name, w_hh, w_hr);
    f(check, args, Dims(args));
  });
}

// lengths [B] (int64) and resets [T, B] (bool or uint8), each optional (None: nullptr), checked
// like every other array. Their values are not read here: the kernels stay within memory
// whatever they are; lengths outside [0, T] are refused by the backend that can read them and
// are the caller's to refuse otherwise (device memory).
template <class Checker, class Args>
void check_sequence_options(Checker& check, Args& args, const pybind11::handle& lengths,
                            const pybind11::handle& resets) {
  args.lengths = check.template optional_input<int64_t>(lengths, "lengths", {args.batch});
  args.resets = check.template optional_input<uint8_t>(resets, "resets", {args.steps, args.batch});
}

// recurrent_forward's arrays checked into args, whose cell and sizes args_with_sizes set (d).
template <class Checker, class Args>
void check_forward_arrays(Checker& check, Args& args, const Dims& d, Handle zx, Handle w_hh,
                          Handle b_hh, Handle h0, Handle c0, Handle y, Handle h_n, Handle c_n,
                          Handle saved, Handle lengths, Handle resets, Handle w_hr) {
  args.zx = check.input(zx, "zx", {d.T, d.B, d.G * d.H});
  args.w_hh = check.input(w_hh, "w_hh", {d.G * d.H, d.R});
  args.b_hh = check.optional_input(b_hh, "b_hh", {d.G * d.H});
  args.h0 = check.input(h0, "h0", {d.B, d.R});
  args.y = check.output(y, "y", {d.T, d.B, d.R});
  args.h_n = check.output(h_n, "h_n", {d.B, d.R});
  if (args.cell == Cell::Lstm) {
    args.c0 = check.input(c0, "c0", {d.B, d.H});
    args.c_n = check.output(c_n, "c_n", {d.B, d.H});
  } else {
    check.require_none(c0, "c0", "for this cell (only the LSTM has a cell state)");
    check.require_none(c_n, "c_n", "for this cell (only the LSTM has a cell state)");
  }
  if (d.S > 0)
    args.saved = check.optional_output(saved, "saved", {d.T, d.B, d.S * d.H});
  else
    check.require_none(saved, "saved", "for this cell (it saves nothing besides y)");
  args.w_hr = check.optional_input(w_hr, "w_hr", {d.P, d.H});
  check_sequence_options(check, args, lengths, resets);
}

// The same for recurrent_backward's, into BackwardArgs.
template <class Checker, class Args>
void check_backward_arrays(Checker& check, Args& args, const Dims& d, Handle w_hh, Handle h0,
                           Handle c0, Handle y, Handle saved, Handle dy, Handle dh_n, Handle dc_n,
                           Handle dzx, Handle dzh, Handle dh0, Handle dc0, Handle lengths,
                           Handle resets, Handle w_hr, Handle dh_proj) {
  args.w_hh = check.input(w_hh, "w_hh", {d.G * d.H, d.R});
  args.h0 = check.input(h0, "h0", {d.B, d.R});
  args.y = check.input(y, "y", {d.T, d.B, d.R});
  if (d.S > 0)
    args.saved = check.input(saved, "saved", {d.T, d.B, d.S * d.H});
  else
    check.require_none(saved, "saved", "for this cell (it saves nothing besides y)");
  args.dy = check.input(dy, "dy", {d.T, d.B, d.R});
  args.dh_n = check.optional_input(dh_n, "dh_n", {d.B, d.R});
  args.dzx = check.output(dzx, "dzx", {d.T, d.B, d.G * d.H});
  if (args.cell == Cell::Gru) {
    args.dzh = check.output(dzh, "dzh", {d.T, d.B, d.G * d.H});
  } else {
    check.require_none(dzh, "dzh", "for this cell (its dzh equals dzx)");
    args.dzh = args.dzx;
  }
  args.dh0 = check.output(dh0, "dh0", {d.B, d.R});
  if (args.cell == Cell::Lstm) {
    args.c0 = check.input(c0, "c0", {d.B, d.H});
    args.dc_n = check.optional_input(dc_n, "dc_n", {d.B, d.H});
    args.dc0 = check.output(dc0, "dc0", {d.B, d.H});
  } else {
    const char* why = "for this cell (only the LSTM has a cell state)";
    check.require_none(c0, "c0", why);
    check.require_none(dc_n, "dc_n", why);
    check.require_none(dc0, "dc0", why);
  }
  if (d.P > 0) {
    args.w_hr = check.input(w_hr, "w_hr", {d.P, d.H});
    args.dh_proj = check.output(dh_proj, "dh_proj", {d.T, d.B, d.P});
  } else {
    check.require_none(dh_proj, "dh_proj", "without the projection (w_hr None)");
  }
  check_sequence_options(check, args, lengths, resets);
}

// The recurrent_forward of every backend's module: checks every argument (the arrays through
// Backend::Reader) into ForwardArgs, then Backend::run(check, args, options...) checks what is
// the backend's own (its keyword-only `options`) and runs the kernels.
template <class Backend, class... Options>
void forward_binding(const std::string& cell, Handle zx, Handle w_hh, Handle b_hh, Handle h0,
                     Handle c0, Handle y, Handle h_n, Handle c_n, Handle saved, Handle lengths,
                     Handle resets, Handle w_hr, Options... options) {
  with_sized_args<ForwardArgs, typename Backend::Reader>(
      cell, zx, "zx", w_hh, w_hr, [&](auto& check, auto& args, const Dims& d) {
        check_forward_arrays(check, args, d, zx, w_hh, b_hh, h0, c0, y, h_n, c_n, saved, lengths,
                             resets, w_hr);
        Backend::run(check, args, options...);
      });
}

// The same for recurrent_backward, into BackwardArgs.
template <class Backend, class... Options>
void backward_binding(const std::string& cell, Handle w_hh, Handle h0, Handle c0, Handle y,
                      Handle saved, Handle dy, Handle dh_n, Handle dc_n, Handle dzx, Handle dzh,
                      Handle dh0, Handle dc0, Handle lengths, Handle resets, Handle w_hr,
                      Handle dh_proj, Options... options) {
  with_sized_args<BackwardArgs, typename Backend::Reader>(
      cell, dzx, "dzx", w_hh, w_hr, [&](auto& check, auto& args, const Dims& d) {
        check_backward_arrays(check, args, d, w_hh, h0, c0, y, saved, dy, dh_n, dc_n, dzx, dzh, dh0,
                              dc0, lengths, resets, w_hr, dh_proj);
        Backend::run(check, args, options...);
      });
}

// Defines m.recurrent_forward and m.recurrent_backward of Backend: the parameters that every
// backend shares, then its keyword-only options, of types Options (`keywords`: their
// pybind11::arg with defaults).
template <class Backend, class... Options, class... Keywords>
void def_recurrent(pybind11::module_& m, const std::string& forward_doc,
                   const std::string& backward_doc, Keywords&&... keywords) {
  using pybind11::arg;
  m.def("recurrent_forward", &forward_binding<Backend, Options...>, arg("cell"), arg("zx"),
        arg("w_hh"), arg("b_hh"), arg("h0"), arg("c0"), arg("y"), arg("h_n"), arg("c_n"),
        arg("saved"), arg("lengths") = pybind11::none(), arg("resets") = pybind11::none(),
        arg("w_hr") = pybind11::none(), pybind11::kw_only(), keywords..., forward_doc.c_str());
  m.def("recurrent_backward", &backward_binding<Backend, Options...>, arg("cell"), arg("w_hh"),
        arg("h0"), arg("c0"), arg("y"), arg("saved"), arg("dy"), arg("dh_n"), arg("dc_n"),
        arg("dzx"), arg("dzh"), arg("dh0"), arg("dc0"), arg("lengths") = pybind11::none(),
        arg("resets") = pybind11::none(), arg("w_hr") = pybind11::none(),
        arg("dh_proj") = pybind11::none(), pybind11::kw_only(), keywords..., backward_doc.c_str());
}

}  // namespace rnnfast::bindings
