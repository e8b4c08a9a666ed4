// rnnfast._cuda: the Python binding of the CUDA backend, built only where nvcc was found.
//
// Arrays come as any object with __cuda_array_interface__ (CuPy's arrays; rnnfast.cuda_functional
// allocates them from CuPy's pool), the stream as an integer handle (CuPy's current stream:
// cupy.cuda.get_current_stream().ptr). Every argument is checked before the device is touched
// (type, dtype, shape, C-contiguity, alignment, writability of outputs, no output overlapping
// another argument; TypeError/ValueError naming it), then that each pointer is device memory of
// the current device, then the kernels are enqueued on the stream with the GIL released. Nothing
// is allocated and nothing synchronizes; CUDA errors raise RuntimeError.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "binding_util.h"
#include "device_info.h"
#include "recurrence.cuh"
#include "rnnfast/recurrence.h"

namespace py = pybind11;

namespace rnnfast::cuda {
namespace {

using bindings::parse_cell;
using bindings::shape_str;

void check_cuda(cudaError_t status, const std::string& what) {
  if (status != cudaSuccess) {
    cudaGetLastError();  // clear the error state where it is not sticky
    throw std::runtime_error(what + ": " + cudaGetErrorString(status));
  }
}

template <typename T>
struct TypeStr;
template <>
struct TypeStr<float> {
  static constexpr const char* value = "<f4";
};
template <>
struct TypeStr<double> {
  static constexpr const char* value = "<f8";
};

// NumPy's name of a typestr, for error messages.
std::string dtype_name(const std::string& typestr) {
  if (typestr == "<f2") return "float16";
  if (typestr == "<f4") return "float32";
  if (typestr == "<f8") return "float64";
  return "'" + typestr + "'";
}

// What __cuda_array_interface__ (version 2 or 3) says about an array.
struct DeviceArray {
  uintptr_t data;
  bool readonly;
  std::string typestr;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;  // in bytes; empty when the interface says None (C-contiguous)

  bool c_contiguous(int64_t item_size) const {
    if (strides.empty()) return true;
    for (int64_t extent : shape)
      if (extent == 0) return true;  // an empty array holds nothing to be misplaced
    int64_t expected = item_size;
    for (size_t i = shape.size(); i-- > 0;) {
      if (shape[i] != 1 && strides[i] != expected) return false;
      expected *= shape[i];
    }
    return true;
  }
};

std::string type_name(const py::handle& obj) {
  return py::str(py::type::handle_of(obj).attr("__name__"));
}

DeviceArray read_interface(const py::handle& obj, const char* name) {
  if (!py::hasattr(obj, "__cuda_array_interface__"))
    throw py::type_error(std::string(name) +
                         " must be a CUDA array (a cupy.ndarray, or any object with "
                         "__cuda_array_interface__), not " + type_name(obj));
  const py::object interface = obj.attr("__cuda_array_interface__");
  const std::string malformed = std::string(name) + " has a malformed __cuda_array_interface__";
  if (!py::isinstance<py::dict>(interface)) throw py::type_error(malformed + " (not a dict)");
  const auto d = interface.cast<py::dict>();
  DeviceArray a{};
  try {
    const auto data = d["data"].cast<py::tuple>();
    if (data.size() != 2) throw py::type_error("");
    a.data = data[0].cast<uintptr_t>();
    a.readonly = data[1].cast<bool>();
    a.typestr = d["typestr"].cast<std::string>();
    a.shape = d["shape"].cast<std::vector<int64_t>>();
    const py::object strides = d.contains("strides") ? py::object(d["strides"]) : py::none();
    const py::object mask = d.contains("mask") ? py::object(d["mask"]) : py::none();
    if (!mask.is_none()) throw py::value_error(std::string(name) + ": masked arrays are not supported");
    if (!strides.is_none()) {
      a.strides = strides.cast<std::vector<int64_t>>();
      if (a.strides.size() != a.shape.size()) throw py::type_error("");
    }
  } catch (const py::value_error&) {
    throw;
  } catch (const std::exception&) {  // missing keys, wrong types (py::cast_error, py::error_already_set)
    throw py::type_error(malformed);
  }
  return a;
}

// __cuda_array_interface__ objects, for bindings::ArgChecker.
struct InterfaceReader {
  template <typename T>
  static bindings::ArrayView view(const py::handle& obj, const char* name) {
    const DeviceArray a = read_interface(obj, name);
    uintptr_t bytes = sizeof(T);
    for (int64_t extent : a.shape) bytes *= static_cast<uintptr_t>(extent);
    return {dtype_name(a.typestr), dtype_name(TypeStr<T>::value), a.typestr == TypeStr<T>::value,
            a.c_contiguous(sizeof(T)), a.data % sizeof(T) == 0, !a.readonly, a.shape,
            a.data, a.data + bytes};
  }
};

template <typename T>
using ArgChecker = bindings::ArgChecker<T, InterfaceReader>;

// The first call that touches the device: every non-empty array the checker saw must be device
// (or managed) memory of the current device.
template <typename T>
void check_device_memory(const ArgChecker<T>& check) {
  int device = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  for (const auto& span : check.spans()) {
    if (span.end == span.begin) continue;
    cudaPointerAttributes attributes{};
    check_cuda(cudaPointerGetAttributes(&attributes, reinterpret_cast<void*>(span.begin)),
               std::string("cudaPointerGetAttributes(") + span.name + ")");
    if (attributes.type != cudaMemoryTypeDevice && attributes.type != cudaMemoryTypeManaged)
      throw py::value_error(std::string(span.name) + " is not in device memory");
    if (attributes.device != device)
      throw py::value_error(std::string(span.name) + " is on device " +
                            std::to_string(attributes.device) + ", but the current device is " +
                            std::to_string(device));
  }
}

// The lead array's dtype picks the kernel's type; every other array must have the same.
template <class F>
void dispatch_dtype(const py::handle& lead, const char* name, F&& f) {
  const std::string typestr = read_interface(lead, name).typestr;
  if (typestr == TypeStr<float>::value) return f(float{});
  if (typestr == TypeStr<double>::value) return f(double{});
  throw py::type_error(std::string(name) + " has dtype " + dtype_name(typestr) +
                       ", expected float32 or float64");
}

cudaStream_t parse_stream(const py::handle& stream) {
  if (!py::isinstance<py::int_>(stream) || py::isinstance<py::bool_>(stream))
    throw py::type_error("stream must be an integer handle (cupy.cuda.get_current_stream().ptr), "
                         "not " + type_name(stream));
  if (stream.cast<py::int_>() < py::int_(0))
    throw py::value_error("stream must be a non-negative integer handle");
  return reinterpret_cast<cudaStream_t>(stream.cast<uintptr_t>());
}

// ForwardArgs or BackwardArgs with the cell and the sizes (T, B, H) from z [T, B, G*H] and
// w_hh [G*H, H].
template <class Args>
Args args_with_sizes(Cell cell, const py::handle& z, const char* z_name, const py::handle& w_hh) {
  const std::vector<int64_t> zs = read_interface(z, z_name).shape;
  const std::vector<int64_t> ws = read_interface(w_hh, "w_hh").shape;
  const int64_t gates = gate_count(cell);
  if (ws.size() != 2 || ws[1] < 1 || ws[0] != gates * ws[1])
    throw py::value_error("w_hh has shape " + shape_str(ws) + ", expected (" +
                          std::to_string(gates) + "*H, H) with H >= 1");
  if (zs.size() != 3 || zs[0] < 1)
    throw py::value_error(std::string(z_name) + " must have shape (T, B, G*H) with T >= 1");
  Args args{};
  args.cell = cell;
  args.steps = zs[0];
  args.batch = zs[1];
  args.hidden = ws[1];
  return args;
}

// Once every argument is checked: refuses overlapping outputs, does nothing for B = 0, else
// checks that the arrays are in device memory and runs launch() (which returns the CUDA status)
// without the GIL.
template <class Checker, class Launch>
void launch_checked(const Checker& check, int64_t batch, const char* what, Launch&& launch) {
  check.check_no_overlap();
  if (batch == 0) return;
  check_device_memory(check);
  cudaError_t status;
  {
    py::gil_scoped_release release;
    status = launch();
  }
  check_cuda(status, what);
}

void recurrent_forward_py(const std::string& cell_name, py::object zx, py::object w_hh,
                          py::object b_hh, py::object h0, py::object c0, py::object y,
                          py::object h_n, py::object c_n, py::object saved, py::object stream) {
  const Cell cell = parse_cell(cell_name);
  const cudaStream_t cuda_stream = parse_stream(stream);
  dispatch_dtype(zx, "zx", [&](auto type_tag) {
    using T = decltype(type_tag);
    ArgChecker<T> check("zx");
    auto args = args_with_sizes<ForwardArgs<T>>(cell, zx, "zx", w_hh);
    bindings::check_forward_arrays(check, args, zx, w_hh, b_hh, h0, c0, y, h_n, c_n, saved);
    launch_checked(check, args.batch, "rnnfast recurrent_forward launch",
                   [&] { return recurrent_forward(args, cuda_stream); });
  });
}

void recurrent_backward_py(const std::string& cell_name, py::object w_hh, py::object h0,
                           py::object c0, py::object y, py::object saved, py::object dy,
                           py::object dh_n, py::object dc_n, py::object dzx, py::object dzh,
                           py::object dh0, py::object dc0, py::object stream) {
  const Cell cell = parse_cell(cell_name);
  const cudaStream_t cuda_stream = parse_stream(stream);
  dispatch_dtype(dzx, "dzx", [&](auto type_tag) {
    using T = decltype(type_tag);
    ArgChecker<T> check("dzx");
    auto args = args_with_sizes<BackwardArgs<T>>(cell, dzx, "dzx", w_hh);
    bindings::check_backward_arrays(check, args, w_hh, h0, c0, y, saved, dy, dh_n, dc_n, dzx,
                                    dzh, dh0, dc0);
    launch_checked(check, args.batch, "rnnfast recurrent_backward launch",
                   [&] { return recurrent_backward(args, cuda_stream); });
  });
}

}  // namespace
}  // namespace rnnfast::cuda

PYBIND11_MODULE(_cuda, m) {
  using namespace rnnfast::cuda;
  m.doc() = "rnnfast CUDA backend (low level; use rnnfast.cuda_functional)";
  m.attr("compiled_architectures") = RNNFAST_CUDA_ARCHITECTURES;
  m.def("device_info", [] {
    const DeviceInfo info = device_info();
    py::dict d;
    d["runtime_version"] = info.runtime_version;
    d["driver_version"] = info.driver_version;
    d["devices"] = info.devices;
    d["error"] = info.error.empty() ? py::object(py::none()) : py::object(py::str(info.error));
    return d;
  }, "CUDA runtime and driver versions, the visible devices, and why none is usable if so.");
  m.def("recurrent_forward", &recurrent_forward_py, py::arg("cell"), py::arg("zx"),
        py::arg("w_hh"), py::arg("b_hh"), py::arg("h0"), py::arg("c0"), py::arg("y"),
        py::arg("h_n"), py::arg("c_n"), py::arg("saved"), py::arg("stream"),
        "Recurrence of one layer and direction on the GPU, enqueued on `stream`; the arguments "
        "of rnnfast._cpu.recurrent_forward, as CUDA arrays.");
  m.def("recurrent_backward", &recurrent_backward_py, py::arg("cell"), py::arg("w_hh"),
        py::arg("h0"), py::arg("c0"), py::arg("y"), py::arg("saved"), py::arg("dy"),
        py::arg("dh_n"), py::arg("dc_n"), py::arg("dzx"), py::arg("dzh"), py::arg("dh0"),
        py::arg("dc0"), py::arg("stream"),
        "Backward through time of recurrent_forward on the GPU, enqueued on `stream`; the "
        "arguments of rnnfast._cpu.recurrent_backward, as CUDA arrays.");
  m.def("saved_per_unit",
        [](const std::string& cell) { return rnnfast::saved_per_unit(
            rnnfast::bindings::parse_cell(cell)); },
        py::arg("cell"), "Values per hidden unit and step in the training workspace.");
}
