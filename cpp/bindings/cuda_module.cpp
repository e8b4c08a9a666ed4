// rnnfast._cuda and rnnfast._cuda_emulated: the Python binding of the CUDA kernels, one source
// compiled twice.
//
// _cuda (built where nvcc was found): arrays come as any object with __cuda_array_interface__
// (CuPy's arrays), the stream as an integer handle (CuPy's current stream:
// cupy.cuda.get_current_stream().ptr). After the arguments are checked, each pointer must be
// device memory of the current device; then the kernels are enqueued on the stream with the
// GIL released. Nothing is allocated and nothing synchronizes.
// _cuda_emulated (always built; RNNFAST_CUDA_EMULATED): the same kernels compiled for the host
// (cuda/emulator), over NumPy arrays; the stream is checked and ignored, and the kernels have
// run when the call returns.
//
// Both check every argument before any kernel runs (type, dtype, shape, C-contiguity,
// alignment, writability of outputs, no output overlapping another argument; TypeError or
// ValueError naming it) through bindings::ArgChecker; the array reader is the only difference.
// Launch errors raise RuntimeError (in the emulator: a barrier's timeout, naming the kernel).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "binding_util.h"
#include "device_info.h"
#include "launch.cuh"
#include "recurrence.cuh"
#include "rnnfast/recurrence.h"

#if defined(RNNFAST_CUDA_EMULATED)
#include "emulator/self_test.h"
#include "numpy_reader.h"
#define RNNFAST_CUDA_MODULE _cuda_emulated
#else
#define RNNFAST_CUDA_MODULE _cuda
#endif

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

std::string type_name(const py::handle& obj) {
  return py::str(py::type::handle_of(obj).attr("__name__"));
}

#if defined(RNNFAST_CUDA_EMULATED)

// NumPy arrays in host memory: nothing more to check about where they are.
struct Reader : bindings::NumpyReader {
  template <class Checker>
  static void check_memory(const Checker&) {}
};

#else

// The typestr of __cuda_array_interface__ for an element type (uint8_t: resets, which may be
// bool too).
template <typename T>
constexpr const char* typestr() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double> ||
                std::is_same_v<T, int64_t> || std::is_same_v<T, uint8_t>);
  if constexpr (std::is_same_v<T, float>) return "<f4";
  if constexpr (std::is_same_v<T, double>) return "<f8";
  if constexpr (std::is_same_v<T, int64_t>) return "<i8";
  return "|u1";
}

// NumPy's name of a typestr, for error messages.
std::string typestr_name(const std::string& typestr) {
  if (typestr == "<f2") return "float16";
  if (typestr == "<f4") return "float32";
  if (typestr == "<f8") return "float64";
  if (typestr == "<i8") return "int64";
  if (typestr == "|u1") return "uint8";
  if (typestr == "|b1") return "bool";
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

DeviceArray read_interface(const py::handle& obj, const char* name) {
  if (!py::hasattr(obj, "__cuda_array_interface__"))
    throw py::type_error(std::string(name) +
                         " must be a CUDA array (a cupy.ndarray, or any object with "
                         "__cuda_array_interface__), not " +
                         type_name(obj));
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
    if (!mask.is_none())
      throw py::value_error(std::string(name) + ": masked arrays are not supported");
    if (!strides.is_none()) {
      a.strides = strides.cast<std::vector<int64_t>>();
      if (a.strides.size() != a.shape.size()) throw py::type_error("");
    }
  } catch (const py::value_error&) {
    throw;
  } catch (
      const std::exception&) {  // missing keys, wrong types (py::cast_error, py::error_already_set)
    throw py::type_error(malformed);
  }
  return a;
}

// __cuda_array_interface__ objects in device memory.
struct Reader {
  static std::vector<int64_t> shape(const py::handle& obj, const char* name) {
    return read_interface(obj, name).shape;
  }

  static std::string dtype_name(const py::handle& obj, const char* name) {
    return typestr_name(read_interface(obj, name).typestr);
  }

  template <typename T>
  static bool is_dtype(const py::handle& obj, const char* name) {
    return read_interface(obj, name).typestr == typestr<T>();
  }

  template <typename T>
  static bindings::ArrayView view(const py::handle& obj, const char* name) {
    const DeviceArray a = read_interface(obj, name);
    uintptr_t bytes = sizeof(T);
    for (int64_t extent : a.shape) bytes *= static_cast<uintptr_t>(extent);
    constexpr bool kBoolToo = std::is_same_v<T, uint8_t>;
    const bool dtype_ok = a.typestr == typestr<T>() || (kBoolToo && a.typestr == "|b1");
    return {typestr_name(a.typestr),
            kBoolToo ? "bool or uint8" : typestr_name(typestr<T>()),
            dtype_ok,
            a.c_contiguous(sizeof(T)),
            a.data % sizeof(T) == 0,
            !a.readonly,
            a.shape,
            a.data,
            a.data + bytes};
  }

  // Every non-empty array the checker saw must be device (or managed) memory of the current
  // device: the first call that touches the device.
  template <class Checker>
  static void check_memory(const Checker& check) {
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
};

#endif

template <typename T>
using ArgChecker = bindings::ArgChecker<T, Reader>;

cudaStream_t parse_stream(const py::handle& stream) {
  if (!py::isinstance<py::int_>(stream) || py::isinstance<py::bool_>(stream))
    throw py::type_error(
        "stream must be an integer handle (cupy.cuda.get_current_stream().ptr), "
        "not " +
        type_name(stream));
  if (stream.cast<py::int_>() < py::int_(0))
    throw py::value_error("stream must be a non-negative integer handle");
  return reinterpret_cast<cudaStream_t>(stream.cast<uintptr_t>());
}

Direction parse_direction(const std::string& name) {
  if (name == "forward") return Direction::Forward;
  if (name == "backward") return Direction::Backward;
  throw py::value_error("direction must be 'forward' or 'backward', not '" + name + "'");
}

Path parse_path(const std::string& name) {
  if (name == "standard") return Path::Standard;
  if (name == "persistent") return Path::Persistent;
  throw py::value_error("path must be 'standard' or 'persistent', not '" + name + "'");
}

// None, or the name of a rounding of the matmul's operands (rnnfast._dtypes.matmul_rounding's:
// "bfloat16", "float16", "tf32").
Rounding parse_rounding(const py::object& rounding) {
  if (rounding.is_none()) return Rounding::None;
  const std::string name = py::str(rounding);
  if (name == "bfloat16") return Rounding::Bfloat16;
  if (name == "float16") return Rounding::Float16;
  if (name == "tf32") return Rounding::Tf32;
  throw py::value_error("rounding must be None, 'bfloat16', 'float16' or 'tf32', not " +
                        std::string(py::repr(rounding)));
}

// A call that path='persistent' cannot run: raised to Python as the module's
// PersistentPathRefused, a ValueError whose message says why.
struct PersistentPathRefused : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The CUDA backend of bindings::def_recurrent (run), and of recurrent_forward_pair
// (run_directions with two directions): once every argument is checked, takes the workspaces,
// refuses overlapping outputs and a persistent path that cannot run the call, does nothing for B =
// 0, else checks where the arrays are and enqueues the kernels on the stream without the GIL; its
// options: workspace, stream, path, rounding.
struct CudaRecurrence {
  using Reader = cuda::Reader;

  template <class Checker, class Args>
  static void run(Checker& check, const Args& args, py::object workspace, py::object stream,
                  const std::string& path_name, py::object rounding_name) {
    run_directions<1>(check, std::array<Args, 1>{args}, {workspace}, stream, parse_path(path_name),
                      rounding_name);
  }

  // N = 1: one direction on `path`; N = 2: both directions of a bidirectional layer's forward
  // in one persistent launch (recurrent_forward_pair), args and workspaces[d] of direction d.
  template <size_t N, class Checker, class Args>
  static void run_directions(Checker& check, const std::array<Args, N>& args,
                             const std::array<py::object, N>& workspaces, py::object stream,
                             Path path, py::object rounding_name) {
    using T = typename Checker::Element;
    const cudaStream_t cuda_stream = parse_stream(stream);
    const Rounding rounding = parse_rounding(rounding_name);
    if (rounding != Rounding::None && !std::is_same_v<T, float>)
      throw py::value_error("a rounding of the matmul's operands needs float32");
    constexpr bool kForward = std::is_same_v<Args, ForwardArgs<T>>;
    const Direction direction = kForward ? Direction::Forward : Direction::Backward;
    const Args& a = args[0];
    const int64_t size = workspace_size(direction, a.cell, a.batch, a.hidden, a.proj);
    const char* names[] = {N == 1 ? "workspace" : "workspaces[0]", "workspaces[1]"};
    std::array<T*, N> scratch;
    for (size_t d = 0; d < N; ++d) scratch[d] = check.scratch(workspaces[d], names[d], size);
    check.check_no_overlap();
    if (path == Path::Persistent) {
      const std::string refusal =
          persistent_refusal<T>(a.cell, a.hidden, a.proj, rounding, static_cast<int>(N));
      if (!refusal.empty())
        throw PersistentPathRefused("path='persistent' cannot run this call: " + refusal);
    }
    if (a.batch == 0) return;
    Reader::check_memory(check);
    cudaError_t status;
    {
      py::gil_scoped_release release;
      if constexpr (N == 2) {
        static_assert(kForward, "both directions in one launch: the forward only");
        status = recurrent_forward_pair(a, args[1], cuda_stream, rounding);
      } else if constexpr (kForward) {
        status = recurrent_forward(a, scratch[0], cuda_stream, path, rounding);
      } else {
        status = recurrent_backward(a, scratch[0], cuda_stream, path, rounding);
      }
    }
    check_cuda(status, kForward ? "rnnfast recurrent_forward" : "rnnfast recurrent_backward");
  }
};

// The handles of `arguments`, a tuple of N positional arguments (named `what` in errors).
template <size_t N>
std::array<py::handle, N> positional(const py::tuple& arguments, const char* what) {
  if (arguments.size() != N)
    throw py::value_error(std::string(what) + " must be a tuple of " + std::to_string(N) +
                          " arguments, not " + std::to_string(arguments.size()));
  std::array<py::handle, N> handles;
  for (size_t i = 0; i < N; ++i) handles[i] = arguments[i];
  return handles;
}

// bindings::check_forward_arrays(check, args, dims, h[1], ..., h[12]): the arguments after
// the cell.
template <class Checker, class Args, size_t... I>
void check_forward_handles(Checker& check, Args& args, const bindings::Dims& d,
                           const std::array<py::handle, 13>& h, std::index_sequence<I...>) {
  bindings::check_forward_arrays(check, args, d, h[I + 1]...);
}

// recurrent_forward_pair: `forward` and `reverse`, each a tuple of the 13 positional arguments
// of recurrent_forward, checked by one checker, so that no output overlaps an argument of
// either direction; the two must have the same cell and sizes.
void forward_pair(const py::tuple& forward, const py::tuple& reverse, const py::tuple& workspaces,
                  py::object stream, py::object rounding) {
  const std::array<py::handle, 13> h[] = {positional<13>(forward, "forward"),
                                          positional<13>(reverse, "reverse")};
  const auto w = positional<2>(workspaces, "workspaces");
  // zx, w_hh and w_hr at 1, 2 and 12
  bindings::with_sized_args<ForwardArgs, Reader>(
      py::str(h[0][0]), h[0][1], "zx", h[0][2], h[0][12],
      [&](auto& check, auto& first, const bindings::Dims& d) {
        using Args = std::decay_t<decltype(first)>;
        const Args second = bindings::args_with_sizes<Args, Reader>(py::str(h[1][0]), h[1][1], "zx",
                                                                    h[1][2], h[1][12]);
        if (second.cell != first.cell || second.steps != first.steps ||
            second.batch != first.batch || second.hidden != first.hidden ||
            second.proj != first.proj)
          throw py::value_error("the two directions must have the same cell and sizes");
        std::array<Args, 2> args{first, second};
        for (size_t i = 0; i < 2; ++i)
          check_forward_handles(check, args[i], d, h[i], std::make_index_sequence<12>{});
        CudaRecurrence::run_directions<2>(
            check, args,
            {py::reinterpret_borrow<py::object>(w[0]), py::reinterpret_borrow<py::object>(w[1])},
            stream, Path::Persistent, rounding);
      });
}

}  // namespace
}  // namespace rnnfast::cuda

PYBIND11_MODULE(RNNFAST_CUDA_MODULE, m) {
  using namespace rnnfast::cuda;
  using rnnfast::bindings::parse_cell;
#if defined(RNNFAST_CUDA_EMULATED)
  m.doc() =
      "rnnfast's CUDA kernels compiled for the host and run by its CUDA emulator, over "
      "NumPy arrays (low level; the interface of rnnfast._cuda)";
  m.attr("emulated") = true;
  m.attr("compiled_architectures") = "host";
  const char* arrays = "NumPy arrays";
#else
  m.doc() = "rnnfast CUDA backend (low level)";
  m.attr("emulated") = false;
  m.attr("compiled_architectures") = RNNFAST_CUDA_ARCHITECTURES;
  const char* arrays = "CUDA arrays (__cuda_array_interface__)";
#endif
  py::register_exception<PersistentPathRefused>(m, "PersistentPathRefused", PyExc_ValueError);
  m.def(
      "device_info",
      [] {
        const DeviceInfo info = device_info();
        return py::dict(py::arg("runtime_version") = info.runtime_version,
                        py::arg("driver_version") = info.driver_version,
                        py::arg("devices") = info.devices,
                        py::arg("error") = info.error.empty() ? py::object(py::none())
                                                              : py::object(py::str(info.error)));
      },
      "CUDA runtime and driver versions, the visible devices, and why none is usable if so.");
  rnnfast::bindings::def_recurrent<CudaRecurrence, py::object, py::object, std::string, py::object>(
      m,
      std::string("Recurrence of one layer and direction, enqueued on `stream`: the arguments "
                  "and results of rnnfast._cpu.recurrent_forward, as ") +
          arrays +
          " (lengths int64 [B], resets bool or uint8 [T, B]). lengths must lie in [0, T]: the "
          "kernels do not check it (the caller must). workspace: a 1-D array of the data's "
          "dtype with at least workspace_size('forward', cell, B, H, P) elements (None where "
          "that is 0); its contents are undefined afterwards. rounding (float32 only): None, or "
          "what the recurrent matmul rounds its operands to ('bfloat16', 'float16', 'tf32'): "
          "both paths then multiply h_{t-1} and W_hh so rounded on the tensor cores (float32 "
          "sums); the LSTM projection's product stays float32.",
      std::string("Backward through time of recurrent_forward, enqueued on `stream`: the "
                  "arguments and results of rnnfast._cpu.recurrent_backward, as ") +
          arrays +
          ". lengths must lie in [0, T] (unchecked). workspace: at least "
          "workspace_size('backward', cell, B, H, P) elements (None where that is 0). "
          "rounding: as in recurrent_forward (dzh W_hh is multiplied on the tensor cores, dzh "
          "and W_hh rounded).",
      py::arg("workspace") = py::none(), py::arg("stream") = 0, py::arg("path") = "standard",
      py::arg("rounding") = py::none());
  m.def("recurrent_forward_pair", &forward_pair, py::arg("forward"), py::arg("reverse"),
        py::kw_only(), py::arg("workspaces") = py::make_tuple(py::none(), py::none()),
        py::arg("stream") = 0, py::arg("rounding") = py::none(),
        "recurrent_forward of both directions of a bidirectional layer in one persistent launch "
        "(each on half of the device's SMs, one grid-wide barrier a step for both): `forward` "
        "and `reverse`, each a tuple of the positional arguments of recurrent_forward (the "
        "reverse direction's own: its sequences reversed within their lengths, its own "
        "resets), of the same cell and sizes; workspaces: each direction's, as its workspace. "
        "Computes what two calls with path='persistent' compute; refused (ValueError) where "
        "persistent_refusal(..., directions=2) says why. (The backward runs one direction a "
        "call.)");
  m.def(
      "workspace_size",
      [](const std::string& direction, const std::string& cell, int64_t batch, int64_t hidden,
         int64_t proj) {
        if (batch < 0 || hidden < 1 || proj < 0)
          throw py::value_error("workspace_size needs batch >= 0, hidden >= 1, proj >= 0");
        return workspace_size(parse_direction(direction), parse_cell(cell), batch, hidden, proj);
      },
      py::arg("direction"), py::arg("cell"), py::arg("batch"), py::arg("hidden"),
      py::arg("proj") = 0,
      "Elements of the workspace that recurrent_forward (direction 'forward') or "
      "recurrent_backward ('backward') needs; proj: the LSTM's projection size, 0 for none.");
  m.def(
      "persistent_refusal",
      [](const std::string& cell, int64_t hidden, int64_t proj, const std::string& dtype,
         const py::object& rounding, int directions) {
        if (hidden < 1 || proj < 0 || directions < 1 || directions > 2)
          throw py::value_error(
              "persistent_refusal needs hidden >= 1, proj >= 0, directions 1 or 2");
        const Rounding r = parse_rounding(rounding);
        if (dtype == "float32")
          return persistent_refusal<float>(parse_cell(cell), hidden, proj, r, directions);
        if (dtype == "float64")
          return persistent_refusal<double>(parse_cell(cell), hidden, proj, r, directions);
        throw py::value_error("dtype must be 'float32' or 'float64', not '" + dtype + "'");
      },
      py::arg("cell"), py::arg("hidden"), py::arg("proj") = 0, py::arg("dtype") = "float32",
      py::arg("rounding") = py::none(), py::arg("directions") = 1,
      "Why path='persistent' cannot run a layer of this cell and sizes on the current device "
      "with this rounding ('' where it can), one direction or both at once (directions=2: "
      "recurrent_forward_pair): the LSTM projection, a rounding with float64, or a W_hh too "
      "large for the device's shared memory.");
  m.def(
      "saved_per_unit",
      [](const std::string& cell) { return rnnfast::saved_per_unit(parse_cell(cell)); },
      py::arg("cell"), "Values per hidden unit and step in the training workspace.");
  m.def(
      "gate_count", [](const std::string& cell) { return rnnfast::gate_count(parse_cell(cell)); },
      py::arg("cell"), "Gates per hidden unit (rows of W_hh per unit).");
#if defined(RNNFAST_CUDA_EMULATED)
  m.def(
      "set_timeout",
      [](double seconds) {
        if (!(seconds > 0)) throw py::value_error("seconds must be a positive number");
        emulator::set_timeout(seconds);
      },
      py::arg("seconds"),
      "The longest an emulated thread waits at a barrier before its launch fails with "
      "RuntimeError (default: RNNFAST_EMULATOR_TIMEOUT seconds, else 60).");
  m.def("timeout", &emulator::timeout, "The emulator's barrier timeout in seconds.");
  m.def(
      "self_test_divergent_barrier",
      [](int threads, int waiting) {
        if (threads < 1 || threads > 1024 || waiting < 1 || waiting > threads)
          throw py::value_error("needs 1 <= waiting <= threads <= 1024");
        cudaError_t status;
        {
          py::gil_scoped_release release;
          status = emulator::self_test::divergent_barrier(threads, waiting);
        }
        check_cuda(status, "self_test_divergent_barrier");
      },
      py::arg("threads"), py::arg("waiting"),
      "The emulator's own test: one block of `threads` threads, of which the first `waiting` "
      "wait at a __syncthreads that the others never reach. With waiting < threads it must "
      "raise RuntimeError once the timeout has passed.");
  m.def(
      "self_test_grid_sync",
      [](int blocks, int threads) {
        if (blocks < 1 || threads < 1 || threads > 1024)
          throw py::value_error("needs blocks >= 1 and 1 <= threads <= 1024");
        std::vector<int64_t> seen(static_cast<size_t>(blocks) * threads);
        cudaError_t status;
        {
          py::gil_scoped_release release;
          status = emulator::self_test::grid_sync_exchange(blocks, threads, seen.data());
        }
        check_cuda(status, "self_test_grid_sync");
        return seen;
      },
      py::arg("blocks"), py::arg("threads"),
      "The emulator's own test: a cooperative launch where thread t of block b writes "
      "b * threads + t, meets every other thread at grid_sync(), then reads what thread t of "
      "block (b + 1) % blocks wrote. Returns what each thread read, block by block (-1 where "
      "its block's shared memory was not its own).");
  m.def(
      "self_test_mma",
      [](const std::string& rounding, py::array_t<float, py::array::c_style> a,
         py::array_t<float, py::array::c_style> b, py::array_t<float, py::array::c_style> c) {
        parse_rounding(py::str(rounding));  // refuses other names
        const ssize_t K = rounding == "tf32" ? 8 : 16;
        if (a.ndim() != 2 || a.shape(0) != 16 || a.shape(1) != K || b.ndim() != 2 ||
            b.shape(0) != K || b.shape(1) != 8 || c.ndim() != 2 || c.shape(0) != 16 ||
            c.shape(1) != 8)
          throw py::value_error("needs a [16, K], b [K, 8], c [16, 8] (K = " + std::to_string(K) +
                                ")");
        py::array_t<float> d({16, 8});
        cudaError_t status;
        {
          py::gil_scoped_release release;
          status = emulator::self_test::mma_tile(rounding.c_str(), a.data(), b.data(), c.data(),
                                                 d.mutable_data());
        }
        check_cuda(status, "self_test_mma");
        return d;
      },
      py::arg("rounding"), py::arg("a"), py::arg("b"), py::arg("c"),
      "cuda/mma.cuh on one emulated warp: c + a b (float32 arrays) with a and b rounded to "
      "`rounding` ('bfloat16', 'float16': K = 16; 'tf32': K = 8), through load_a, load_b, mma "
      "and the accumulator's layout.");
  m.def(
      "mma_positions",
      [](const std::string& rounding) {
        parse_rounding(py::str(rounding));
        const ssize_t per = rounding == "tf32" ? 1 : 2;
        py::array_t<int> a({ssize_t(32), 4 * per, ssize_t(2)}),
            b({ssize_t(32), 2 * per, ssize_t(2)}), c({32, 4, 2});
        emulator::self_test::mma_positions(rounding.c_str(), a.mutable_data(), b.mutable_data(),
                                           c.mutable_data());
        return py::make_tuple(a, b, c);
      },
      py::arg("rounding"),
      "cuda/mma.cuh's fragment layout: (A, B, C), each [lane, element, (row, column)].");
#endif
}
