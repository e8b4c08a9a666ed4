// NumPy arrays for bindings::ArgChecker: the reader of rnnfast._cpu and rnnfast._cuda_emulated.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "binding_util.h"
#include "rnnfast/bfloat16.h"
#include "rnnfast/float16.h"

namespace rnnfast::bindings {

// The NumPy dtype of T: bfloat16 is ml_dtypes.bfloat16 (imported only when an array of that
// dtype is checked, so ml_dtypes has been imported already).
template <typename T>
pybind11::dtype numpy_dtype() {
  return pybind11::dtype::of<T>();
}
template <>
inline pybind11::dtype numpy_dtype<Bf16>() {
  static const pybind11::handle dtype =
      pybind11::dtype::from_args(pybind11::module_::import("ml_dtypes").attr("bfloat16")).release();
  return pybind11::reinterpret_borrow<pybind11::dtype>(dtype);
}

template <>
inline pybind11::dtype numpy_dtype<F16>() {
  return pybind11::dtype("float16");
}

struct NumpyReader {
  static pybind11::array array(const pybind11::handle& obj, const char* name) {
    if (!pybind11::isinstance<pybind11::array>(obj))
      throw pybind11::type_error(
          std::string(name) + " must be a numpy.ndarray, not " +
          std::string(pybind11::str(pybind11::type::handle_of(obj).attr("__name__"))));
    return pybind11::reinterpret_borrow<pybind11::array>(obj);
  }

  static std::vector<int64_t> shape(const pybind11::handle& obj, const char* name) {
    const pybind11::array arr = array(obj, name);
    return std::vector<int64_t>(arr.shape(), arr.shape() + arr.ndim());
  }

  template <typename T>
  static bool is_dtype(const pybind11::handle& obj, const char* name) {
    return array(obj, name).dtype().equal(numpy_dtype<T>());
  }

  // NumPy's name of the dtype ("float32").
  static std::string dtype_name(const pybind11::handle& obj, const char* name) {
    return std::string(pybind11::str(array(obj, name).dtype()));
  }

  // For T = uint8_t (resets), bool arrays are accepted too.
  template <typename T>
  static ArrayView view(const pybind11::handle& obj, const char* name) {
    const pybind11::array arr = array(obj, name);
    const auto begin = reinterpret_cast<uintptr_t>(arr.data());
    // Equality, not identity: an unpickled array has an equal but distinct dtype object. The
    // names are only for the error message: formatting them costs microseconds per array.
    constexpr bool kBoolToo = std::is_same_v<T, uint8_t>;
    const bool dtype_ok = arr.dtype().equal(numpy_dtype<T>()) ||
                          (kBoolToo && arr.dtype().equal(pybind11::dtype::of<bool>()));
    std::string dtype, expected;
    if (!dtype_ok) {
      dtype = std::string(pybind11::str(arr.dtype()));
      expected = kBoolToo ? "bool or uint8" : std::string(pybind11::str(numpy_dtype<T>()));
    }
    return {dtype,
            expected,
            dtype_ok,
            (arr.flags() & pybind11::array::c_style) != 0,
            (arr.flags() & pybind11::detail::npy_api::NPY_ARRAY_ALIGNED_) != 0,
            arr.writeable(),
            std::vector<int64_t>(arr.shape(), arr.shape() + arr.ndim()),
            begin,
            begin + static_cast<uintptr_t>(arr.nbytes())};
  }
};

}  // namespace rnnfast::bindings
