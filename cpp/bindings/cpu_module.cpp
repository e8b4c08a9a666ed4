// rnnfast._cpu: the Python binding of the CPU kernels. The only CPU file that includes pybind11.
// It checks every array (type, dtype, shape, C-contiguity, writability of outputs, no output
// overlapping another argument), raises TypeError/ValueError naming the argument, then releases
// the GIL and calls the framework-free kernels. It allocates nothing: rnnfast.functional does.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <vector>

#include "binding_util.h"
#include "numpy_reader.h"
#include "rnnfast/activations_cpu.h"
#include "rnnfast/cell_step.h"
#include "rnnfast/cpu_features.h"
#include "rnnfast/gemm.h"
#include "rnnfast/recurrence.h"

namespace py = pybind11;

namespace rnnfast {
namespace {

using bindings::parse_cell;
using bindings::shape_str;

using bindings::numpy_dtype;
using bindings::NumpyReader;

bool is_bfloat16(const py::array& arr) {
  return arr.dtype().itemsize() == 2 && std::string(py::str(arr.dtype())) == "bfloat16";
}

template <typename T>
using ArgChecker = bindings::ArgChecker<T, NumpyReader>;

// The CPU backend of bindings::def_recurrent. run: once every argument is checked, refuses
// lengths outside [0, T] (the kernels index the sequences by them) and overlapping outputs,
// then runs the kernel without the GIL; its option: bf16_matmul.
struct CpuRecurrence {
  using Reader = NumpyReader;

  template <class Checker, class Args>
  static void run(const Checker& check, Args& args, bool bf16_matmul) {
    for (int64_t b = 0; args.lengths && b < args.batch; ++b)
      if (args.lengths[b] < 0 || args.lengths[b] > args.steps)
        throw py::value_error("lengths[" + std::to_string(b) +
                              "] = " + std::to_string(args.lengths[b]) + " is outside [0, " +
                              std::to_string(args.steps) + "]");
    check.check_no_overlap();
    args.bf16_matmul = bf16_matmul;
    py::gil_scoped_release release;
    if constexpr (std::is_same_v<Args, ForwardArgs<typename Checker::Element>>)
      recurrent_forward(args);
    else
      recurrent_backward(args);
  }
};

// Fills args for c [m, n] = op(a) op(b) + bias, or c += op(a) op(b) + bias with accumulate,
// where op(x) is x or, with trans_x, x.T: op(a) [m, k], op(b) [k, n], bias [n] or None. a's
// elements are TA, b's TB, c's and bias's the checker's type.
template <typename TA, typename TB, class Checker, class Args>
void gemm_operands(Checker& check, Args& args, const py::object& a, const py::object& b,
                   const py::object& c, bool trans_a, bool trans_b, const py::object& bias,
                   bool accumulate) {
  const auto shape_2d = [](const py::object& obj, const char* name) {
    if (!py::isinstance<py::array>(obj))
      throw py::type_error(std::string(name) + " must be a numpy.ndarray");
    auto arr = py::reinterpret_borrow<py::array>(obj);
    if (arr.ndim() != 2)
      throw py::value_error(std::string(name) + " must be 2-D, not " + std::to_string(arr.ndim()) +
                            "-D");
    return std::pair<int64_t, int64_t>(arr.shape(0), arr.shape(1));
  };
  const auto [a0, a1] = shape_2d(a, "a");
  const auto [b0, b1] = shape_2d(b, "b");
  const int64_t m = trans_a ? a1 : a0, k = trans_a ? a0 : a1;
  const int64_t n = trans_b ? b0 : b1;
  args.m = m;
  args.n = n;
  args.k = k;
  args.a = check.template input<TA>(a, "a", {a0, a1});
  args.a_row = trans_a ? 1 : a1;
  args.a_col = trans_a ? a1 : 1;
  args.b = check.template input<TB>(
      b, "b", trans_b ? std::vector<int64_t>{n, k} : std::vector<int64_t>{k, n});
  args.b_row = trans_b ? 1 : n;
  args.b_col = trans_b ? k : 1;
  args.bias = check.optional_input(bias, "bias", {n});
  args.c = check.output(c, "c", {m, n});
  args.ldc = n;
  args.accumulate = accumulate;
  check.check_no_overlap();
}

void gemm_py(py::object a, py::object b, py::object c, bool trans_a, bool trans_b, py::object bias,
             bool accumulate) {
  bindings::dispatch_dtype<NumpyReader>(a, "a", [&](auto type_tag) {
    using T = decltype(type_tag);
    ArgChecker<T> check("a");
    GemmArgs<T> args{};
    gemm_operands<T, T>(check, args, a, b, c, trans_a, trans_b, bias, accumulate);
    py::gil_scoped_release release;
    gemm(args);
  });
}

void column_sums_py(py::object a, py::object out) {
  bindings::dispatch_dtype<NumpyReader>(a, "a", [&](auto type_tag) {
    using T = decltype(type_tag);
    ArgChecker<T> check("a");
    const auto arr = a.cast<py::array>();
    if (arr.ndim() != 2)
      throw py::value_error("a must be 2-D, not " + std::to_string(arr.ndim()) + "-D");
    const int64_t rows = arr.shape(0), cols = arr.shape(1);
    const T* in = check.input(a, "a", {rows, cols});
    T* sums = check.output(out, "out", {cols});
    check.check_no_overlap();
    py::gil_scoped_release release;
    column_sums(in, rows, cols, sums);
  });
}

// f(float{}) or f(Bf16{}) for a gemm_bf16 operand of dtype float32 or bfloat16.
template <class F>
void with_operand_type(const py::object& obj, const char* name, Operand& type, F&& f) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string(name) + " must be a numpy.ndarray");
  auto arr = py::reinterpret_borrow<py::array>(obj);
  if (is_bfloat16(arr)) {
    type = Operand::Bfloat16;
    return f(Bf16{});
  }
  if (arr.dtype().equal(py::dtype::of<float>())) {
    type = Operand::Float32;
    return f(float{});
  }
  throw py::type_error(std::string(name) + " has dtype " + std::string(py::str(arr.dtype())) +
                       ", expected float32 or bfloat16");
}

// gemm with bfloat16 products: a and b float32 or bfloat16, c and bias float32.
void gemm_bf16_py(py::object a, py::object b, py::object c, bool trans_a, bool trans_b,
                  py::object bias, bool accumulate) {
  ArgChecker<float> check("c, float32");
  Bf16GemmArgs args{};
  with_operand_type(a, "a", args.a_type, [&](auto ta) {
    with_operand_type(b, "b", args.b_type, [&](auto tb) {
      gemm_operands<decltype(ta), decltype(tb)>(check, args, a, b, c, trans_a, trans_b, bias,
                                                accumulate);
    });
  });
  py::gil_scoped_release release;
  gemm_bf16(args);
}

// Packs a cell's weights for cell_step (PyTorch's names: weight_ih [G*H, I], weight_hh [G*H, H],
// bias_ih, bias_hh [G*H] or None). bfloat16: for a bfloat16 cell, the weights given in float32.
py::object pack_cell_py(const std::string& cell_name, py::object w_ih, py::object w_hh,
                        py::object b_ih, py::object b_hh, bool bfloat16) {
  const Cell cell = parse_cell(cell_name);
  return bindings::dispatch_dtype<NumpyReader>(w_ih, "weight_ih", [&](auto type_tag) -> py::object {
    using T = decltype(type_tag);
    if (bfloat16 && !std::is_same_v<T, float>)
      throw py::type_error("a bfloat16 cell's weights must be given in float32");
    ArgChecker<T> check("weight_ih");
    const auto w = w_ih.cast<py::array>();
    const int64_t G = gate_count(cell);
    if (w.ndim() != 2 || w.shape(0) < G || w.shape(0) % G != 0 || w.shape(1) < 1)
      throw py::value_error("weight_ih must have shape (" + std::to_string(G) +
                            "*hidden_size, input_size) with both sizes >= 1");
    const int64_t H = w.shape(0) / G, I = w.shape(1);
    const T* wi = check.input(w_ih, "weight_ih", {G * H, I});
    const T* wh = check.input(w_hh, "weight_hh", {G * H, H});
    const T* bi = check.optional_input(b_ih, "bias_ih", {G * H});
    const T* bh = check.optional_input(b_hh, "bias_hh", {G * H});
    PackedCell<T> packed;
    {
      py::gil_scoped_release release;
      packed = pack_cell(cell, I, H, wi, wh, bi, bh, bfloat16);
    }
    return py::cast(std::move(packed));
  });
}

// One step: writes out (h) and, for the LSTM, out_c from input [B, I] and the state. The
// argument names in errors are those of rnnfast.LSTMCell & co.: input, hx, out. S: the arrays'
// element type, T or, for weights packed for bfloat16, Bf16.
template <typename S, typename T>
void cell_step_typed(const PackedCell<T>& packed, const py::object& x, const py::object& h,
                     const py::object& c, const py::object& h_out, const py::object& c_out) {
  const bool lstm = packed.cell == Cell::Lstm;
  const int64_t I = packed.input, H = packed.hidden;
  ArgChecker<S> check("the cell's weights");
  if (!py::isinstance<py::array>(x) || x.cast<py::array>().ndim() != 2)
    throw py::value_error("input must be a 2-D numpy.ndarray (batch, input_size)");
  const int64_t B = x.cast<py::array>().shape(0);
  const S* xp = check.input(x, "input", {B, I});
  const S* hp = check.input(h, lstm ? "hx[0]" : "hx", {B, H});
  S* h_outp = check.output(h_out, lstm ? "out[0]" : "out", {B, H});
  const S* cp = nullptr;
  S* c_outp = nullptr;
  if (lstm) {
    cp = check.input(c, "hx[1]", {B, H});
    c_outp = check.output(c_out, "out[1]", {B, H});
  } else {
    check.require_none(c, "c", "for this cell (only the LSTM has a cell state)");
    check.require_none(c_out, "c_out", "for this cell (only the LSTM has a cell state)");
  }
  check.check_no_overlap();
  py::gil_scoped_release release;
  if constexpr (std::is_same_v<S, Bf16>)
    cell_step_bf16(packed, B, xp, hp, cp, h_outp, c_outp);
  else
    cell_step(packed, B, xp, hp, cp, h_outp, c_outp);
}

// False, doing nothing, where packed is in the layout of another instruction set than the one
// in use (set_isa changed it since): the caller packs again, so that the step runs on the
// instruction set in use.
bool cell_step_py(const py::object& packed, const py::object& x, const py::object& h,
                  const py::object& c, const py::object& h_out, const py::object& c_out) {
  const auto current = [](const auto& p) { return p.isa == active_isa(); };
  if (py::isinstance<PackedCell<float>>(packed)) {
    const auto& p = packed.cast<const PackedCell<float>&>();
    if (!current(p)) return false;
    if (p.bfloat16)
      cell_step_typed<Bf16>(p, x, h, c, h_out, c_out);
    else
      cell_step_typed<float>(p, x, h, c, h_out, c_out);
    return true;
  }
  if (py::isinstance<PackedCell<double>>(packed)) {
    const auto& p = packed.cast<const PackedCell<double>&>();
    if (!current(p)) return false;
    cell_step_typed<double>(p, x, h, c, h_out, c_out);
    return true;
  }
  throw py::type_error("packed must be the result of pack_cell");
}

// Module-local: the type is rnnfast._cpu's own, so another build of rnnfast loaded in the same
// process (the benchmark's --baseline) registers its PackedCell without a clash.
template <typename T>
void bind_packed_cell(py::module_& m, const char* name) {
  py::class_<PackedCell<T>>(m, name, "A cell's weights packed by pack_cell (opaque).",
                            py::module_local())
      .def_property_readonly(
          "isa", [](const PackedCell<T>& p) { return p.isa; },
          "The instruction set whose layout the panels have.")
      .def_property_readonly("input_size", [](const PackedCell<T>& p) { return p.input; })
      .def_property_readonly("hidden_size", [](const PackedCell<T>& p) { return p.hidden; });
}

// out = x rounded to S, bfloat16 (to_bf16) or float16 (to_f16): x float32, out of x's shape.
template <typename S>
void round_to_typed(const py::object& x, const py::object& out) {
  if (!py::isinstance<py::array>(x)) throw py::type_error("x must be a numpy.ndarray");
  const auto arr = x.cast<py::array>();
  const std::vector<int64_t> shape(arr.shape(), arr.shape() + arr.ndim());
  ArgChecker<S> check("out");
  const float* in = check.template input<float>(x, "x", shape);
  S* result = check.output(out, "out", shape);
  check.check_no_overlap();
  py::gil_scoped_release release;
  round_to(in, arr.size(), result);
}

void round_to_py(const py::object& x, const py::object& out) {
  if (NumpyReader::is_dtype<F16>(out, "out")) return round_to_typed<F16>(x, out);
  // by name: ml_dtypes (bfloat16's NumPy type) need not be installed for the other types
  if (is_bfloat16(out.cast<py::array>())) return round_to_typed<Bf16>(x, out);
  throw py::type_error("out has dtype " + NumpyReader::dtype_name(out, "out") +
                       ", expected bfloat16 or float16");
}

void activation_py(const std::string& name, py::object x, py::object out) {
  Activation f;
  if (name == "exp")
    f = Activation::Exp;
  else if (name == "tanh")
    f = Activation::Tanh;
  else if (name == "sigmoid")
    f = Activation::Sigmoid;
  else
    throw py::value_error("activation must be 'exp', 'tanh' or 'sigmoid', not '" + name + "'");
  bindings::dispatch_dtype<NumpyReader>(x, "x", [&](auto type_tag) {
    using T = decltype(type_tag);
    ArgChecker<T> check("x");
    const int64_t n = x.cast<py::array>().size();
    const T* in = check.input(x, "x", {n});
    T* result = check.output(out, "out", {n});
    check.check_no_overlap();
    py::gil_scoped_release release;
    apply_activation(f, in, result, n);
  });
}

}  // namespace
}  // namespace rnnfast

PYBIND11_MODULE(_cpu, m) {
  using namespace rnnfast;
  m.doc() = "rnnfast CPU kernels (low level; use rnnfast.functional or the layers)";
  bindings::def_recurrent<CpuRecurrence, bool>(
      m,
      "Recurrence of one layer and direction. zx [T,B,G*H] = x W_ih^T + b_ih; writes y [T,B,R], "
      "h_n [B,R], c_n [B,H] (LSTM) and, when given, the training workspace saved [T,B,S*H]. "
      "Optional: lengths [B] int64 in [0, T] (steps past a sequence's length are padding: y 0, "
      "state kept), resets [T,B] bool (state put back to h0, c0 before step t), w_hr [P,H] "
      "(LSTM projection h = (o*tanh(c)) W_hr^T; R = P, else R = H). bf16_matmul (float32): "
      "h_{t-1} and W_hh rounded to bfloat16 in the recurrent matmul, float32 sums, on the "
      "instruction sets amx and avx512_bf16 (ignored on the others).",
      "Backward through time of recurrent_forward. Writes dzx [T,B,G*H], dzh [T,B,G*H] (GRU "
      "only: for the other cells it equals dzx and must be None), dh0 and dc0 [B,H]. lengths, "
      "resets, w_hr: those of the forward; with w_hr, writes dh_proj [T,B,P], the gradient "
      "reaching each h_t. bf16_matmul: dzh_t and W_hh rounded to bfloat16 in the recurrent "
      "matmul, as in recurrent_forward.",
      py::arg("bf16_matmul") = false);
  bind_packed_cell<float>(m, "PackedCellFloat32");
  bind_packed_cell<double>(m, "PackedCellFloat64");
  m.def("gemm", &gemm_py, py::arg("a"), py::arg("b"), py::arg("c"), py::arg("trans_a") = false,
        py::arg("trans_b") = false, py::arg("bias") = py::none(), py::arg("accumulate") = false,
        "c = op(a) op(b) + bias (c += ... with accumulate), op(x) = x.T where trans_x; on "
        "rnnfast's threads. a, b, c, bias: C-contiguous, one float dtype; c [m, n] is written.");
  m.def("column_sums", &column_sums_py, py::arg("a"), py::arg("out"),
        "out [n] = the sums of the columns of a [m, n] (C-contiguous, float32 or float64, as "
        "out), added in float64 row after row: a.sum(axis=0, dtype=numpy.float64) rounded to "
        "a's dtype, bit for bit.");
  m.def("gemm_bf16", &gemm_bf16_py, py::arg("a"), py::arg("b"), py::arg("c"),
        py::arg("trans_a") = false, py::arg("trans_b") = false, py::arg("bias") = py::none(),
        py::arg("accumulate") = false,
        "gemm with bfloat16 products and float32 sums: a and b float32 (rounded to bfloat16) or "
        "bfloat16, c and bias float32; on AMX or AVX512-BF16 where the instruction set in use "
        "has them.");
  m.def("pack_cell", &pack_cell_py, py::arg("cell"), py::arg("w_ih"), py::arg("w_hh"),
        py::arg("b_ih"), py::arg("b_hh"), py::kw_only(), py::arg("bfloat16") = false,
        "Packs a cell's weights for cell_step, in the layout of the instruction set in use; "
        "bfloat16: for a bfloat16 cell (the weights' values given in float32), whose cell_step "
        "then takes bfloat16 arrays.");
  m.def("cell_step", &cell_step_py, py::arg("packed"), py::arg("x"), py::arg("h"), py::arg("c"),
        py::arg("h_out"), py::arg("c_out"),
        "One step of the cell: h_out (and c_out, LSTM) from x [B,I], h and c [B,H]. Outputs "
        "must not overlap the inputs. Returns False, doing nothing, where packed's layout is "
        "not that of the instruction set in use (pack it again).");
  m.def("compiled_isas", &compiled_isas, "Instruction sets the CPU kernels were compiled for.");
  m.def("available_isas", &available_isas, "Compiled instruction sets this CPU supports.");
  m.def("active_isa", &active_isa, "The instruction set the CPU kernels use now.");
  m.def(
      "set_isa",
      [](const std::string& name) {
        try {
          set_isa(name);
        } catch (const std::invalid_argument& e) {
          throw py::value_error(e.what());
        }
      },
      py::arg("name"), "Use this instruction set (one of available_isas()).");
  m.def("activation", &activation_py, py::arg("name"), py::arg("x"), py::arg("out"),
        "out = the cells' exp, tanh or sigmoid of the 1-D array x, as the kernels compute it.");
  m.def("round_to", &round_to_py, py::arg("x"), py::arg("out"),
        "out = x (float32, C-contiguous) rounded to out's dtype, ml_dtypes.bfloat16 or "
        "numpy.float16 (out of x's shape): x.astype(out.dtype)'s values bit for bit, NaNs "
        "included, on rnnfast's threads.");
  m.def("num_threads", &num_threads);
  m.def(
      "last_split",
      [] {
        const SplitRecord r = last_split();
        return py::dict(py::arg("kernel") = r.kernel, py::arg("threads") = r.threads,
                        py::arg("split") = r.split);
      },
      "How the calling thread's last kernel call shared its work: a dict with kernel (its name), "
      "threads (how many ran it) and split (what they divided: columns or rows of a step, "
      "panels or rows of a GEMM, units of a cell step).");
  m.def(
      "set_num_threads",
      [](int threads) {
        if (threads < 1 || threads > 4096) throw py::value_error("threads must be in [1, 4096]");
        py::gil_scoped_release release;  // waits for a running kernel to finish
        set_num_threads(threads);
      },
      py::arg("threads"));
  m.def("share_openmp_threads", &share_openmp_threads, py::arg("path"),
        "Run the kernels' parallel work on the threads of the OpenMP runtime at path, a shared "
        "library this process has loaded (\"\": rnnfast's own threads again). False, changing "
        "nothing, where it is not loaded or is not an OpenMP runtime.");
  m.def("openmp_library", &openmp_library,
        "The library given to share_openmp_threads, or \"\" for rnnfast's own threads.");
  m.def("cpu_features", &cpu_features,
        "Instruction-set extensions of this CPU that rnnfast can use.");
  m.def(
      "cpu_tuning",
      [] {
        const CpuCaches& c = cpu_caches();
        py::dict d;
        d["l1d_bytes"] = c.l1d;
        d["l2_bytes"] = c.l2;
        d["l3_bytes"] = c.l3;
        d["row_split_panel_bytes"] = cpu_tuning().row_split_panel_bytes;
        d["gemm_block_bytes"] = cpu_tuning().gemm_block_bytes;
        return d;
      },
      "The caches read at run time (bytes, 0: unknown) and the parameters derived from them.");
  m.def(
      "gate_count", [](const std::string& cell) { return gate_count(parse_cell(cell)); },
      py::arg("cell"));
  m.def(
      "saved_per_unit", [](const std::string& cell) { return saved_per_unit(parse_cell(cell)); },
      py::arg("cell"), "Values per hidden unit and step in the training workspace.");
}
