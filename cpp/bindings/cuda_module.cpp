// rnnfast._cuda: the Python binding of the CUDA backend, built only where nvcc was found.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "device_info.h"

namespace py = pybind11;

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "rnnfast CUDA backend (low level)";
  m.attr("compiled_architectures") = RNNFAST_CUDA_ARCHITECTURES;
  m.def("device_info", [] {
    const rnnfast::cuda::DeviceInfo info = rnnfast::cuda::device_info();
    py::dict d;
    d["runtime_version"] = info.runtime_version;
    d["driver_version"] = info.driver_version;
    d["devices"] = info.devices;
    d["error"] = info.error.empty() ? py::object(py::none()) : py::object(py::str(info.error));
    return d;
  }, "CUDA runtime and driver versions, the visible devices, and why none is usable if so.");
}
