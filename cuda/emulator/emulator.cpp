// The CUDA emulator (see emulator.h): a launch's CUDA threads as fibers on the launching host
// thread, barriers as switches between them.
#include "emulator.h"

#include <sys/mman.h>
#include <unistd.h>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace rnnfast::cuda::emulator {
namespace {

using Clock = std::chrono::steady_clock;

double initial_timeout() {
  const char* text = std::getenv("RNNFAST_EMULATOR_TIMEOUT");
  if (text != nullptr) {
    char* end = nullptr;
    const double seconds = std::strtod(text, &end);
    if (end != text && *end == '\0' && seconds > 0) return seconds;
    std::fprintf(stderr,
                 "rnnfast emulator: RNNFAST_EMULATOR_TIMEOUT='%s' is not a positive "
                 "number of seconds; using 60\n",
                 text);
  }
  return 60.0;
}

std::atomic<double>& timeout_seconds() {
  static std::atomic<double> seconds(initial_timeout());
  return seconds;
}

Clock::duration timeout_duration() {
  return std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(timeout_seconds().load()));
}

// Thrown in a waiting fiber to unwind its kernel when the launch failed. Not a
// std::exception, so that nothing but the emulator catches it.
struct Aborted {};

// A barrier for `count` threads. Its generation counts the times it opened: a fiber waits until
// that changes (see Barrier::wait).
struct Barrier {
  explicit Barrier(unsigned count_) : count(count_) {}
  // what: "__syncthreads", "grid_sync" or the warp's, for the message of a deadlock.
  void wait(const char* what);
  const unsigned count;
  unsigned arrived = 0;
  unsigned long long generation = 0;
};

struct Block {
  Block(dim3 index_, unsigned threads, size_t shared_bytes)
      : index(index_), barrier(threads), dynamic(poisoned(shared_bytes, 16)) {
    for (unsigned first = 0; first < threads; first += kWarpSize)
      warps.push_back(std::make_unique<Warp>(std::min(kWarpSize, threads - first)));
  }

  struct Deleter {
    void operator()(void* p) const { std::free(p); }
  };
  using Memory = std::unique_ptr<void, Deleter>;

  static Memory poisoned(size_t bytes, size_t align) {
    const size_t rounded = (std::max<size_t>(bytes, 1) + align - 1) / align * align;
    Memory memory(std::aligned_alloc(std::max<size_t>(align, sizeof(void*)), rounded));
    if (memory == nullptr) throw std::bad_alloc();
    std::memset(memory.get(), 0xFF, rounded);
    return memory;
  }

  // A warp's lanes meet at its barrier in warp_exchange, their contributions in one of two
  // buffers (alternately: see warp_exchange).
  struct Warp {
    explicit Warp(unsigned lanes) : barrier(lanes) {}
    Barrier barrier;
    unsigned char buffers[2][kWarpSize * kMaxLaneBytes];
  };

  dim3 index;
  Barrier barrier;
  std::vector<std::unique_ptr<Warp>> warps;
  Memory dynamic;
  std::vector<std::pair<const void*, Memory>> shared;  // filled by the first thread to declare
};

// A fiber's stack: kStackBytes, mapped with an inaccessible guard page below it, so that an
// overflow faults instead of writing over another stack. Kept by the host thread between
// launches (`stacks`).
class Stack {
 public:
  static constexpr size_t kStackBytes = size_t{1} << 20;  // kernels keep little on their stack
  Stack() {
    page_ = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    void* p = mmap(nullptr, page_ + kStackBytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    mprotect(p, page_, PROT_NONE);
    base_ = static_cast<char*>(p);
  }
  ~Stack() { munmap(base_, page_ + kStackBytes); }
  Stack(const Stack&) = delete;
  Stack& operator=(const Stack&) = delete;
  void* bottom() const { return base_ + page_; }

 private:
  char* base_;
  size_t page_;
};

// A fiber's saved registers, and the switch from one context to another. On x86-64 a switch of
// its own: the callee-saved registers and the floating-point control words pushed on the old
// stack, the stack pointers exchanged, the new stack's popped (glibc's swapcontext also saves
// and restores the signal mask, a system call at every switch). Elsewhere ucontext.
#if defined(__x86_64__)
extern "C" void rnnfast_emulator_switch(void** save_sp, void* load_sp);
asm(R"(
  .text
  .p2align 4
  .globl rnnfast_emulator_switch
  .hidden rnnfast_emulator_switch
  .type rnnfast_emulator_switch, @function
rnnfast_emulator_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size rnnfast_emulator_switch, .-rnnfast_emulator_switch
)");

struct Context {
  void* sp = nullptr;
};

inline void switch_context(Context& from, Context& to) { rnnfast_emulator_switch(&from.sp, to.sp); }

// Prepares `c` to start entry() on the stack [bottom, bottom + bytes) at its first switch: the
// frame that rnnfast_emulator_switch pops (control words as now, registers zero), returning into
// entry with the stack aligned as at a call. entry never returns.
void start_context(Context& c, void* bottom, size_t bytes, void (*entry)()) {
  auto top = reinterpret_cast<uintptr_t>(static_cast<char*>(bottom) + bytes) & ~uintptr_t{15};
  auto* slot = reinterpret_cast<uint64_t*>(top);
  *--slot = 0;                                   // entry's return address: none
  *--slot = reinterpret_cast<uintptr_t>(entry);  // where the switch returns to
  for (int r = 0; r < 6; ++r) *--slot = 0;       // rbp, rbx, r12 .. r15
  uint32_t control[2];
  asm volatile("stmxcsr %0\n\tfnstcw %1" : "=m"(control[0]), "=m"(control[1]));
  std::memcpy(--slot, control, sizeof(control));
  c.sp = slot;
}
#else
struct Context {
  ucontext_t uc;
};

inline void switch_context(Context& from, Context& to) {
  if (swapcontext(&from.uc, &to.uc) != 0) std::abort();
}

void start_context(Context& c, void* bottom, size_t bytes, void (*entry)()) {
  if (getcontext(&c.uc) != 0) std::abort();
  c.uc.uc_stack.ss_sp = bottom;
  c.uc.uc_stack.ss_size = bytes;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
}
#endif

// One CUDA thread: its coordinates, context and where it waits.
struct Fiber {
  Fiber(Block* block_, dim3 thread_) : block(block_), thread(thread_) {}
  Block* block;
  dim3 thread;
  Context context;
  const Barrier* waiting = nullptr;   // the barrier it waits at, else nullptr
  unsigned long long generation = 0;  // the waited barrier's generation when it arrived
  const char* what = nullptr;         // that barrier's name
  bool finished = false;
  unsigned long long warp_exchanges = 0;  // its calls of warp_exchange
};

// One launch: its blocks and fibers, how it ends, and the host context that runs them.
struct Launch {
  Launch(const char* kernel_, dim3 grid_, dim3 block_, bool cooperative_,
         const std::function<void()>& body_)
      : kernel(kernel_),
        grid(grid_),
        block(block_),
        cooperative(cooperative_),
        body(body_),
        grid_barrier(cooperative_ ? grid_.x * grid_.y * grid_.z * block_.x * block_.y * block_.z
                                  : 0) {}

  // The first failure wins; every waiting fiber, resumed, sees it and unwinds.
  void fail(cudaError_t status_, const std::string& message_) {
    if (status != cudaSuccess) return;
    status = status_;
    message = message_;
  }
  bool failed() const { return status != cudaSuccess; }

  const char* kernel;
  dim3 grid, block;
  bool cooperative;
  const std::function<void()>& body;
  Barrier grid_barrier;
  std::vector<std::unique_ptr<Block>> blocks;   // those running now
  std::vector<Fiber> fibers;                    // their threads
  Fiber* current = nullptr;                     // the fiber running now
  Context host;                                 // the scheduler's
  std::atomic<unsigned long long> progress{0};  // fibers resumed (for the watchdog)
  cudaError_t status = cudaSuccess;
  std::string message;
};

// The launch this host thread is running (fibers run on their launch's host thread).
thread_local Launch* running_launch = nullptr;

std::string coordinates(dim3 d) {
  return "(" + std::to_string(d.x) + ", " + std::to_string(d.y) + ", " + std::to_string(d.z) + ")";
}

// Back to the scheduler, until it resumes this fiber.
void yield(Launch& launch) { switch_context(launch.current->context, launch.host); }

void Barrier::wait(const char* what) {
  Launch& launch = *running_launch;
  if (launch.failed()) throw Aborted{};
  if (++arrived == count) {  // the last to arrive opens it; the others run again
    arrived = 0;
    ++generation;
    return;
  }
  Fiber& self = *launch.current;
  self.waiting = this;
  self.generation = generation;
  self.what = what;
  yield(launch);  // resumed once it opened, or the launch failed
  self.waiting = nullptr;
  if (launch.failed()) throw Aborted{};
}

// Where a fiber starts: its kernel, with the failures caught (exceptions cannot leave a
// fiber), then back to the scheduler for good.
void fiber_main() {
  Launch& launch = *running_launch;
  try {
    launch.body();
  } catch (const Aborted&) {
  } catch (const std::exception& e) {
    launch.fail(cudaErrorLaunchFailure,
                std::string("kernel ") + launch.kernel + " threw: " + e.what());
  } catch (...) {
    launch.fail(cudaErrorLaunchFailure,
                std::string("kernel ") + launch.kernel + " threw an exception");
  }
  launch.current->finished = true;
  yield(launch);
}

// The stacks of this host thread's fibers, kept for its next launch.
thread_local std::vector<std::unique_ptr<Stack>> stacks;

// Ends the process where a launch made no progress for the timeout: a fiber that loops without
// reaching a barrier holds its host thread, and nothing can unwind it. One watchdog thread per
// process (started again in a child after fork, where the parent's does not exist).
class Watchdog {
 public:
  static Watchdog& global() {
    static Watchdog* watchdog = new Watchdog;  // never destroyed: it may watch to the end
    return *watchdog;
  }
  void add(Launch* launch) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (pid_ != getpid()) {  // not started yet in this process
      pid_ = getpid();
      std::thread([this] { watch(); }).detach();
    }
    launches_.push_back({launch, launch->progress.load(), Clock::now()});
  }
  void remove(Launch* launch) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t i = 0; i < launches_.size(); ++i)
      if (launches_[i].launch == launch) {
        launches_[i] = launches_.back();
        launches_.pop_back();
        return;
      }
  }

 private:
  struct Watched {
    Launch* launch;
    unsigned long long progress;
    Clock::time_point since;  // when progress last changed
  };
  void watch() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      // Never notified: a sleep that releases the lock.
      tick_.wait_for(lock, std::chrono::milliseconds(100));
      const auto now = Clock::now();
      for (Watched& w : launches_) {
        const unsigned long long progress = w.launch->progress.load();
        if (progress != w.progress) {
          w.progress = progress;
          w.since = now;
        } else if (now - w.since > timeout_duration()) {
          std::fprintf(stderr,
                       "rnnfast emulator: kernel %s: a thread neither finished nor reached a "
                       "barrier for %g s (a loop that never ends?); ending the process\n",
                       w.launch->kernel, timeout_seconds().load());
          std::abort();
        }
      }
    }
  }
  std::mutex mutex_;
  std::condition_variable tick_;
  pid_t pid_ = 0;
  std::vector<Watched> launches_;
};

// Runs the given blocks' threads as fibers to the end: round after round, each fiber that can
// run (not finished, and not waiting at a barrier that has not opened since it arrived) runs
// until it waits or finishes. A round in which none could run is a deadlock: every unfinished
// thread waits at a barrier that not all of its threads reach (they finished, or wait at
// another). The launch fails naming one such barrier, and its fibers, resumed, unwind.
void run_blocks(Launch& launch, const std::vector<dim3>& indices, unsigned threads,
                size_t shared_bytes) {
  launch.blocks.clear();
  launch.fibers.clear();
  for (dim3 index : indices)
    launch.blocks.push_back(std::make_unique<Block>(index, threads, shared_bytes));
  launch.fibers.reserve(launch.blocks.size() * threads);
  for (auto& b : launch.blocks)
    for (unsigned z = 0; z < launch.block.z; ++z)
      for (unsigned y = 0; y < launch.block.y; ++y)
        for (unsigned x = 0; x < launch.block.x; ++x)
          launch.fibers.emplace_back(b.get(), dim3(x, y, z));
  while (stacks.size() < launch.fibers.size()) stacks.push_back(std::make_unique<Stack>());
  for (size_t i = 0; i < launch.fibers.size(); ++i) {
    Fiber& f = launch.fibers[i];
#if defined(__SANITIZE_ADDRESS__)
    // The last fiber on this stack left its frames' redzones marked in ASan's shadow (it never
    // returned): the stack starts clean.
    ASAN_UNPOISON_MEMORY_REGION(stacks[i]->bottom(), Stack::kStackBytes);
#endif
    start_context(f.context, stacks[i]->bottom(), Stack::kStackBytes, fiber_main);
  }
  for (;;) {
    bool ran = false, unfinished = false;
    for (Fiber& f : launch.fibers) {
      if (f.finished) continue;
      unfinished = true;
      if (f.waiting != nullptr && f.waiting->generation == f.generation && !launch.failed())
        continue;
      threadIdx = f.thread;
      blockIdx = f.block->index;
      launch.current = &f;
      ++launch.progress;
      switch_context(launch.host, f.context);
      ran = true;
    }
    if (!unfinished) break;
    if (!ran) {
      const Fiber* f = nullptr;
      for (const Fiber& g : launch.fibers)
        if (!g.finished) {
          f = &g;
          break;
        }
      launch.fail(cudaErrorLaunchTimeout,
                  std::string("kernel ") + launch.kernel + ": " + f->what + " with " +
                      std::to_string(f->waiting->arrived) + " of " +
                      std::to_string(f->waiting->count) + " threads arrived (block " +
                      coordinates(f->block->index) + ", thread " + coordinates(f->thread) +
                      " waiting), the others finished or waiting at another: a barrier that "
                      "not every thread reaches");
    }
  }
}

// This host thread's last launch error (cleared by cudaGetLastError), and the status and
// message of its last failed launch (kept for cudaGetErrorString).
thread_local cudaError_t last_error = cudaSuccess, failed_status = cudaSuccess;
thread_local std::string failed_message;

cudaError_t finish(cudaError_t status, const std::string& message) {
  if (status != cudaSuccess) {
    last_error = failed_status = status;
    failed_message = message;
  }
  return status;
}

}  // namespace

void set_timeout(double seconds) {
  if (!(seconds > 0)) throw std::invalid_argument("the timeout must be a positive number");
  timeout_seconds().store(seconds);
}

double timeout() { return timeout_seconds().load(); }

cudaError_t run(const char* kernel, dim3 grid, dim3 block, size_t shared_bytes, bool cooperative,
                const std::function<void()>& body) {
  const unsigned long long blocks = 1ull * grid.x * grid.y * grid.z;
  const unsigned long long threads = 1ull * block.x * block.y * block.z;
  if (blocks == 0 || threads == 0 || threads > 1024)
    return finish(cudaErrorInvalidValue,
                  std::string("kernel ") + kernel + ": invalid launch configuration (grid " +
                      coordinates(grid) + ", block " + coordinates(block) + ")");
  if (cooperative && blocks * threads > kMaxCooperativeThreads)
    return finish(cudaErrorCooperativeLaunchTooLarge,
                  std::string("kernel ") + kernel + ": a cooperative launch of " +
                      std::to_string(blocks * threads) + " threads; the emulator runs at most " +
                      std::to_string(kMaxCooperativeThreads) + " at once");
  Launch launch(kernel, grid, block, cooperative, body);
  running_launch = &launch;
  blockDim = block;
  gridDim = grid;
  Watchdog::global().add(&launch);
  std::vector<dim3> indices;
  for (unsigned z = 0; z < grid.z && !launch.failed(); ++z)
    for (unsigned y = 0; y < grid.y && !launch.failed(); ++y)
      for (unsigned x = 0; x < grid.x && !launch.failed(); ++x) {
        indices.push_back(dim3(x, y, z));
        if (!cooperative) {
          run_blocks(launch, indices, static_cast<unsigned>(threads), shared_bytes);
          indices.clear();
        }
      }
  if (cooperative) run_blocks(launch, indices, static_cast<unsigned>(threads), shared_bytes);
  Watchdog::global().remove(&launch);
  running_launch = nullptr;
  return finish(launch.status, launch.message);
}

void grid_sync() {
  Launch& launch = *running_launch;
  if (!launch.cooperative) {
    launch.fail(cudaErrorLaunchFailure, std::string("kernel ") + launch.kernel +
                                            ": grid_sync in a launch that is not cooperative");
    throw Aborted{};
  }
  launch.grid_barrier.wait("grid_sync");
}

void* block_shared(const void* site, size_t bytes, size_t align) {
  Block& b = *running_launch->current->block;
  for (auto& [key, memory] : b.shared)
    if (key == site) return memory.get();
  b.shared.emplace_back(site, Block::poisoned(bytes, align));
  return b.shared.back().second.get();
}

void* dynamic_shared() { return running_launch->current->block->dynamic.get(); }

unsigned thread_rank() {
  return (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
}

const void* warp_exchange(const void* mine, size_t bytes) {
  Launch& launch = *running_launch;
  if (bytes > kMaxLaneBytes) {
    launch.fail(cudaErrorLaunchFailure, std::string("kernel ") + launch.kernel +
                                            ": warp_exchange of more than " +
                                            std::to_string(kMaxLaneBytes) + " bytes a lane");
    throw Aborted{};
  }
  Fiber& self = *launch.current;
  Block::Warp& warp = *self.block->warps[thread_rank() / kWarpSize];
  // The lanes alternate between the two buffers: a lane that writes one has passed the barrier
  // of the exchange before, so every lane has finished reading what that buffer held (two
  // exchanges ago).
  unsigned char* buffer = warp.buffers[self.warp_exchanges++ % 2];
  std::memcpy(buffer + thread_rank() % kWarpSize * bytes, mine, bytes);
  warp.barrier.wait("a warp-wide instruction (warp_exchange)");
  return buffer;
}

}  // namespace rnnfast::cuda::emulator

using namespace rnnfast::cuda::emulator;

void __syncthreads() { running_launch->current->block->barrier.wait("__syncthreads"); }

cudaError_t cudaGetLastError() {
  const cudaError_t status = last_error;
  last_error = cudaSuccess;
  return status;
}

const char* cudaGetErrorString(cudaError_t status) {
  if (status == cudaSuccess) return "no error";
  if (status == failed_status) return failed_message.c_str();
  switch (status) {
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorLaunchTimeout:
      return "the launch timed out";
    case cudaErrorCooperativeLaunchTooLarge:
      return "too many blocks in cooperative launch";
    default:
      return "unspecified launch failure";
  }
}

cudaError_t cudaRuntimeGetVersion(int* version) {
  *version = 0;
  return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int* version) {
  *version = 0;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device != 0) return cudaErrorInvalidValue;
  std::snprintf(prop->name, sizeof(prop->name), "rnnfast CUDA emulator on the host");
  prop->major = 0;
  prop->minor = 0;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attribute, int device) {
  if (device != 0) return cudaErrorInvalidValue;
  switch (attribute) {
    case cudaDevAttrMultiProcessorCount:
      *value = 8;
      return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *value = 227 * 1024;
      return cudaSuccess;
  }
  return cudaErrorInvalidValue;
}
