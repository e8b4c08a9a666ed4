// Run-time choice among the instruction sets the kernels were compiled for, and the thread
// count of the CPU kernels.
#include <atomic>
#include <stdexcept>
#include <type_traits>

#if defined(__linux__) && (defined(__x86_64__) || defined(__i386__))
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "rnnfast/activations_cpu.h"
#include "rnnfast/cell_step.h"
#include "rnnfast/cpu_features.h"
#include "rnnfast/float16.h"
#include "rnnfast/gemm.h"
#include "rnnfast/recurrence.h"
#include "thread_pool.h"

namespace rnnfast {

// The per-instruction-set copies of the kernels (one namespace each).
#define RNNFAST_DECLARE_ISA(ns)                                                                 \
  namespace ns {                                                                                \
  template <typename T>                                                                         \
  void recurrent_forward(const ForwardArgs<T>&);                                                \
  template <typename T>                                                                         \
  void recurrent_backward(const BackwardArgs<T>&);                                              \
  template <typename T>                                                                         \
  void gemm(const GemmArgs<T>&);                                                                \
  template <typename T>                                                                         \
  void column_sums(const T*, int64_t, int64_t, T*);                                             \
  template <typename S>                                                                         \
  void round_to(const float*, int64_t, S*);                                                     \
  template <typename T>                                                                         \
  void apply_activation(Activation, const T*, T*, int64_t);                                     \
  template <typename T>                                                                         \
  void pack_cell(PackedCell<T>&, const T*, const T*, const T*, const T*, bool);                 \
  template <typename T>                                                                         \
  void cell_step(const PackedCell<T>&, int64_t, const T*, const T*, const T*, T*, T*);          \
  void cell_step_bf16(const PackedCell<float>&, int64_t, const Bf16*, const Bf16*, const Bf16*, \
                      Bf16*, Bf16*);                                                            \
  void gemm_bf16(const Bf16GemmArgs&);                                                          \
  }
RNNFAST_DECLARE_ISA(isa_baseline)
#if RNNFAST_X86_TARGETS
RNNFAST_DECLARE_ISA(isa_avx2)
RNNFAST_DECLARE_ISA(isa_avx512)
#endif
#undef RNNFAST_DECLARE_ISA
// The bfloat16 instruction sets have their own GEMM and recurrence (for bfloat16 matmuls);
// their other kernels are AVX-512's, but for the bfloat16 cells' step, avx512_bf16's on both
// (vdpbf16ps: a step's few rows would fill AMX's 16-row tiles with zeros).
#if RNNFAST_BF16_TARGETS
#define RNNFAST_DECLARE_BF16_ISA(ns)               \
  namespace ns {                                   \
  void gemm_bf16(const Bf16GemmArgs&);             \
  template <typename T>                            \
  void recurrent_forward(const ForwardArgs<T>&);   \
  template <typename T>                            \
  void recurrent_backward(const BackwardArgs<T>&); \
  }
RNNFAST_DECLARE_BF16_ISA(isa_avx512_bf16)
RNNFAST_DECLARE_BF16_ISA(isa_amx)
#undef RNNFAST_DECLARE_BF16_ISA
namespace isa_avx512_bf16 {
template <typename T>
void pack_cell(PackedCell<T>&, const T*, const T*, const T*, const T*, bool);
void cell_step_bf16(const PackedCell<float>&, int64_t, const Bf16*, const Bf16*, const Bf16*, Bf16*,
                    Bf16*);
}  // namespace isa_avx512_bf16
#endif

namespace {

// Returns isa_<isa>::call, and isa_<active instruction set>::call.
#if RNNFAST_X86_TARGETS
#define RNNFAST_ON_ISA(isa, call) \
  switch (isa) {                  \
    case Isa::Amx:                \
    case Isa::Avx512Bf16:         \
    case Isa::Avx512:             \
      return isa_avx512::call;    \
    case Isa::Avx2:               \
      return isa_avx2::call;      \
    case Isa::Baseline:           \
      break;                      \
  }                               \
  return isa_baseline::call
#else
#define RNNFAST_ON_ISA(isa, call) return isa_baseline::call
#endif
#define RNNFAST_ON_ACTIVE_ISA(call) RNNFAST_ON_ISA(active().load(), call)

// Above AVX-512: AVX512-BF16 (vdpbf16ps) and AMX (tdpbf16ps), which only the bfloat16 GEMM
// uses; every other kernel runs AVX-512's code on them.
enum class Isa : int { Baseline = 0, Avx2 = 1, Avx512 = 2, Avx512Bf16 = 3, Amx = 4 };

bool has(const std::vector<std::string>& features, const char* name) {
  for (const std::string& f : features)
    if (f == name) return true;
  return false;
}

// Whether this process may use the AMX tile registers. Linux enables them for a process only
// once it asks (arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)); asked once, the answer
// holds for all its threads. Refused (an old kernel, a sandbox), AMX is not available.
bool amx_permitted() {
#if defined(__linux__) && (defined(__x86_64__) || defined(__i386__))
  static const bool permitted = [] {
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return permitted;
#else
  return false;
#endif
}

bool supported(Isa isa) {
  if (isa == Isa::Baseline) return true;
#if RNNFAST_X86_TARGETS
  static const std::vector<std::string> f = cpu_features();
  if (isa == Isa::Avx2) return has(f, "avx2") && has(f, "fma");
  const bool avx512 =
      has(f, "avx512f") && has(f, "avx512bw") && has(f, "avx512dq") && has(f, "avx512vl");
  if (isa == Isa::Avx512) return avx512;
  const bool bf16 = avx512 && has(f, "avx512bf16");
  if (isa == Isa::Avx512Bf16) return bf16;
  return bf16 && has(f, "amx-tile") && has(f, "amx-bf16") && amx_permitted();
#else
  return false;
#endif
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Amx:
      return "amx";
    case Isa::Avx512Bf16:
      return "avx512_bf16";
    case Isa::Avx512:
      return "avx512";
    case Isa::Avx2:
      return "avx2";
    case Isa::Baseline:
      break;
  }
  return "baseline";
}

constexpr Isa kCompiled[] = {Isa::Baseline,
#if RNNFAST_X86_TARGETS
                             Isa::Avx2, Isa::Avx512,
#endif
#if RNNFAST_BF16_TARGETS
                             Isa::Avx512Bf16, Isa::Amx
#endif
};

Isa best_available() {
  Isa best = Isa::Baseline;
  for (Isa isa : kCompiled)
    if (supported(isa)) best = isa;
  return best;
}

std::atomic<Isa>& active() {
  static std::atomic<Isa> isa{best_available()};
  return isa;
}

}  // namespace

std::vector<std::string> compiled_isas() {
  std::vector<std::string> names;
  for (Isa isa : kCompiled) names.push_back(isa_name(isa));
  return names;
}

std::vector<std::string> available_isas() {
  std::vector<std::string> names;
  for (Isa isa : kCompiled)
    if (supported(isa)) names.push_back(isa_name(isa));
  return names;
}

std::string active_isa() { return isa_name(active().load()); }

namespace {
Isa compiled_isa(const std::string& name) {
  for (Isa isa : kCompiled)
    if (name == isa_name(isa)) return isa;
  throw std::invalid_argument("unknown instruction set '" + name + "'");
}
}  // namespace

void set_isa(const std::string& name) {
  for (Isa isa : kCompiled) {
    if (name != isa_name(isa)) continue;
    if (!supported(isa))
      throw std::invalid_argument("instruction set '" + name + "' is not supported by this CPU");
    active().store(isa);
    return;
  }
  std::string known;
  for (const std::string& n : compiled_isas()) known += (known.empty() ? "" : ", ") + n;
  throw std::invalid_argument("unknown instruction set '" + name + "'; compiled: " + known);
}

// The recurrence multiplies in bfloat16 (bf16_matmul) with AMX tiles (tile_product16) or, on
// AVX512-BF16 alone, with vdpbf16ps (twice float32's FMA rate on AMD Zen 4; on an Emerald
// Rapids Xeon, whose vdpbf16ps issues on one port, the LSTM forward recurrence at T=100, B=64,
// H=512 ran at 30 GFLOP/s against float32 FMA's 55: there AMX does it). Below those, float32.
// Their copies of the recurrence hold float32 with bf16_matmul alone (recurrence.cpp).
#if RNNFAST_BF16_TARGETS
#define RNNFAST_BF16_RECURRENCE(args, call)                                                     \
  if constexpr (std::is_same_v<T, float>) {                                                     \
    if ((args).bf16_matmul && active().load() == Isa::Amx) return isa_amx::call;                \
    if ((args).bf16_matmul && active().load() == Isa::Avx512Bf16) return isa_avx512_bf16::call; \
  }
#else
#define RNNFAST_BF16_RECURRENCE(args, call) (void)0
#endif

template <typename T>
void recurrent_forward(const ForwardArgs<T>& args) {
  RNNFAST_BF16_RECURRENCE(args, recurrent_forward(args));
  RNNFAST_ON_ACTIVE_ISA(recurrent_forward(args));
}

template <typename T>
void recurrent_backward(const BackwardArgs<T>& args) {
  RNNFAST_BF16_RECURRENCE(args, recurrent_backward(args));
  RNNFAST_ON_ACTIVE_ISA(recurrent_backward(args));
}

template <typename T>
void gemm(const GemmArgs<T>& args) {
  RNNFAST_ON_ACTIVE_ISA(gemm(args));
}

void gemm_bf16(const Bf16GemmArgs& args) {
#if RNNFAST_BF16_TARGETS
  switch (active().load()) {
    case Isa::Amx:
      return isa_amx::gemm_bf16(args);
    case Isa::Avx512Bf16:
      return isa_avx512_bf16::gemm_bf16(args);
    default:
      break;
  }
#endif
  RNNFAST_ON_ACTIVE_ISA(gemm_bf16(args));
}

template <typename T>
void column_sums(const T* a, int64_t rows, int64_t cols, T* out) {
  RNNFAST_ON_ACTIVE_ISA(column_sums(a, rows, cols, out));
}

template <typename T>
void apply_activation(Activation f, const T* in, T* out, int64_t n) {
  RNNFAST_ON_ACTIVE_ISA(apply_activation(f, in, out, n));
}

template <typename S>
void round_to(const float* in, int64_t n, S* out) {
  RNNFAST_ON_ACTIVE_ISA(round_to(in, n, out));
}
template void round_to<Bf16>(const float*, int64_t, Bf16*);
template void round_to<F16>(const float*, int64_t, F16*);

#if RNNFAST_BF16_TARGETS
namespace {
// Whether the bfloat16 cells' step multiplies in bfloat16 (vdpbf16ps) on this instruction set.
bool bf16_step(Isa isa) { return isa == Isa::Amx || isa == Isa::Avx512Bf16; }
}  // namespace
#endif

template <typename T>
PackedCell<T> pack_cell(Cell cell, int64_t input, int64_t hidden, const T* w_ih, const T* w_hh,
                        const T* b_ih, const T* b_hh, bool bfloat16) {
  PackedCell<T> packed;
  packed.cell = cell;
  packed.input = input;
  packed.hidden = hidden;
  packed.bfloat16 = bfloat16;
  const Isa isa = active().load();
  packed.isa = isa_name(isa);
#if RNNFAST_BF16_TARGETS
  if constexpr (std::is_same_v<T, float>) {
    if (bfloat16 && bf16_step(isa)) {
      isa_avx512_bf16::pack_cell(packed, w_ih, w_hh, b_ih, b_hh, true);
      return packed;
    }
  }
#endif
  [&] { RNNFAST_ON_ISA(isa, pack_cell(packed, w_ih, w_hh, b_ih, b_hh, false)); }();
  return packed;
}

template <typename T>
void cell_step(const PackedCell<T>& packed, int64_t batch, const T* x, const T* h, const T* c,
               T* h_out, T* c_out) {
  RNNFAST_ON_ISA(compiled_isa(packed.isa), cell_step(packed, batch, x, h, c, h_out, c_out));
}

void cell_step_bf16(const PackedCell<float>& packed, int64_t batch, const Bf16* x, const Bf16* h,
                    const Bf16* c, Bf16* h_out, Bf16* c_out) {
#if RNNFAST_BF16_TARGETS
  if (bf16_step(compiled_isa(packed.isa)))
    return isa_avx512_bf16::cell_step_bf16(packed, batch, x, h, c, h_out, c_out);
#endif
  RNNFAST_ON_ISA(compiled_isa(packed.isa), cell_step_bf16(packed, batch, x, h, c, h_out, c_out));
}

template void recurrent_forward<float>(const ForwardArgs<float>&);
template void recurrent_forward<double>(const ForwardArgs<double>&);
template void recurrent_backward<float>(const BackwardArgs<float>&);
template void recurrent_backward<double>(const BackwardArgs<double>&);
template void gemm<float>(const GemmArgs<float>&);
template void gemm<double>(const GemmArgs<double>&);
template void column_sums<float>(const float*, int64_t, int64_t, float*);
template void column_sums<double>(const double*, int64_t, int64_t, double*);
template void apply_activation<float>(Activation, const float*, float*, int64_t);
template void apply_activation<double>(Activation, const double*, double*, int64_t);
template PackedCell<float> pack_cell(Cell, int64_t, int64_t, const float*, const float*,
                                     const float*, const float*, bool);
template PackedCell<double> pack_cell(Cell, int64_t, int64_t, const double*, const double*,
                                      const double*, const double*, bool);
template void cell_step(const PackedCell<float>&, int64_t, const float*, const float*, const float*,
                        float*, float*);
template void cell_step(const PackedCell<double>&, int64_t, const double*, const double*,
                        const double*, double*, double*);

int num_threads() { return ThreadPool::global().num_threads(); }

namespace {
thread_local SplitRecord last_split_record;
}  // namespace

SplitRecord last_split() { return last_split_record; }

void record_split(const char* kernel, int threads, const char* split) {
  last_split_record = SplitRecord{kernel, threads, split};
}

void set_num_threads(int threads) {
  if (threads < 1) throw std::invalid_argument("threads must be >= 1");
  ThreadPool::global().set_num_threads(threads);
}

bool share_openmp_threads(const std::string& path) {
  return ThreadPool::global().share_openmp_threads(path);
}

std::string openmp_library() { return ThreadPool::global().openmp_library(); }

}  // namespace rnnfast
