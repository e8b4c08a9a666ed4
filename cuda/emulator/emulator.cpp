// The CUDA emulator (see emulator.h): host threads from a pool, barriers with a deadline.
#include "emulator.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
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

std::string timeout_text() {
  char text[32];
  std::snprintf(text, sizeof(text), "%g s", timeout_seconds().load());
  return text;
}

Clock::duration timeout_duration() {
  return std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(timeout_seconds().load()));
}

// Thrown in a waiting thread to unwind its kernel when the launch failed. Not a
// std::exception, so that nothing but the emulator catches it.
struct Aborted {};

struct Launch;

// A barrier for `count` threads whose waits end at a deadline (see Barrier::wait).
class Barrier {
 public:
  explicit Barrier(unsigned count) : count_(count) {}
  // what: "__syncthreads" or "grid_sync", for the message.
  void wait(Launch& launch, const char* what);
  // Wakes the waiting threads, so that they see that the launch failed.
  void wake() {
    std::lock_guard<std::mutex> lock(mutex_);
    changed_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  const unsigned count_;
  unsigned arrived_ = 0;
  unsigned long long generation_ = 0;
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
  std::mutex shared_mutex;  // guards `shared`, filled by the first thread that declares each
  std::vector<std::pair<const void*, Memory>> shared;
};

// One launch: its threads' shared state and how it ends.
struct Launch {
  Launch(const char* kernel_, dim3 grid_, dim3 block_, bool cooperative_)
      : kernel(kernel_),
        grid(grid_),
        block(block_),
        cooperative(cooperative_),
        grid_barrier(cooperative_ ? grid_.x * grid_.y * grid_.z * block_.x * block_.y * block_.z
                                  : 0) {}

  // The first failure wins; every waiting thread is woken to see it.
  void fail(cudaError_t status_, const std::string& message_) {
    std::lock_guard<std::mutex> lock(mutex);
    if (status != cudaSuccess) return;
    status = status_;
    message = message_;
    failed.store(true);
    for (Block* b : blocks) {
      b->barrier.wake();
      for (auto& warp : b->warps) warp->barrier.wake();
    }
    grid_barrier.wake();
    done.notify_all();
  }

  const char* kernel;
  dim3 grid, block;
  bool cooperative;
  std::vector<Block*> blocks;  // those running now
  Barrier grid_barrier;
  std::atomic<bool> failed{false};
  std::atomic<unsigned long long> progress{0};  // barriers passed and threads finished
  std::mutex mutex;                             // guards the rest
  std::condition_variable done;
  unsigned running = 0;  // threads started and not finished
  cudaError_t status = cudaSuccess;
  std::string message;
};

struct Context {
  Launch* launch = nullptr;
  Block* block = nullptr;
  unsigned long long warp_exchanges = 0;  // this thread's calls of warp_exchange
};
thread_local Context context;

std::string coordinates(dim3 d) {
  return "(" + std::to_string(d.x) + ", " + std::to_string(d.y) + ", " + std::to_string(d.z) + ")";
}

void Barrier::wait(Launch& launch, const char* what) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (launch.failed.load()) throw Aborted{};
  const unsigned long long generation = generation_;
  if (++arrived_ == count_) {
    arrived_ = 0;
    ++generation_;
    ++launch.progress;
    lock.unlock();  // so that the threads it wakes do not wait for the lock
    changed_.notify_all();
    return;
  }
  const auto deadline = Clock::now() + timeout_duration();
  while (generation_ == generation) {
    if (launch.failed.load()) throw Aborted{};
    if (changed_.wait_until(lock, deadline) == std::cv_status::timeout &&
        generation_ == generation && !launch.failed.load()) {
      const unsigned arrived = arrived_;
      lock.unlock();
      launch.fail(cudaErrorLaunchTimeout,
                  std::string("kernel ") + launch.kernel + ": " + what + " timed out after " +
                      timeout_text() + " with " + std::to_string(arrived) + " of " +
                      std::to_string(count_) + " threads arrived (block " + coordinates(blockIdx) +
                      ", thread " + coordinates(threadIdx) +
                      " waiting): a barrier that not every thread "
                      "reaches");
      throw Aborted{};
    }
  }
}

// Host threads that run one task at a time and are kept between launches.
class Pool {
 public:
  static Pool& global() {
    static Pool* pool = new Pool;  // never destroyed: its threads wait until the process ends
    return *pool;
  }

  // Runs task() on an idle thread (a new one if none is), then, once the thread is idle
  // again, done().
  void start(std::function<void()> task, std::function<void()> done) {
    Worker* worker;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (idle_.empty()) {
        worker = new Worker;
        worker->pool = this;
        pthread_attr_t attributes;
        pthread_attr_init(&attributes);
        pthread_attr_setstacksize(&attributes, kStackBytes);
        pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
        pthread_t thread;
        const int error = pthread_create(&thread, &attributes, &Worker::main, worker);
        pthread_attr_destroy(&attributes);
        if (error != 0) {
          delete worker;
          throw std::runtime_error("rnnfast emulator: cannot create a host thread: " +
                                   std::string(std::strerror(error)));
        }
      } else {
        worker = idle_.back();
        idle_.pop_back();
      }
    }
    std::lock_guard<std::mutex> lock(worker->mutex);
    worker->task = std::move(task);
    worker->done = std::move(done);
    worker->wake.notify_one();
  }

 private:
  static constexpr size_t kStackBytes = 1 << 20;  // kernels keep little on their stack

  struct Worker {
    static void* main(void* self) {
      auto* worker = static_cast<Worker*>(self);
      for (;;) {
        std::function<void()> task, done;
        {
          std::unique_lock<std::mutex> lock(worker->mutex);
          worker->wake.wait(lock, [&] { return static_cast<bool>(worker->task); });
          task = std::move(worker->task);
          done = std::move(worker->done);
          worker->task = nullptr;
        }
        task();
        {
          std::lock_guard<std::mutex> lock(worker->pool->mutex_);
          worker->pool->idle_.push_back(worker);
        }
        done();  // after the line above: the launcher it wakes finds this thread idle
      }
    }
    Pool* pool;
    std::mutex mutex;
    std::condition_variable wake;
    std::function<void()> task, done;
  };

  std::mutex mutex_;
  std::vector<Worker*> idle_;
};

// Starts one thread of the launch in block `b` at `thread`; fails the launch where no host
// thread can be had.
void start_thread(Launch& launch, Block& b, dim3 thread, const std::function<void()>& body) {
  {
    std::lock_guard<std::mutex> lock(launch.mutex);
    ++launch.running;
  }
  auto run = [&launch, &b, thread, &body] {
    threadIdx = thread;
    blockIdx = b.index;
    blockDim = launch.block;
    gridDim = launch.grid;
    context = {&launch, &b};
    try {
      body();
    } catch (const Aborted&) {
    } catch (const std::exception& e) {
      launch.fail(cudaErrorLaunchFailure,
                  std::string("kernel ") + launch.kernel + " threw: " + e.what());
    } catch (...) {
      launch.fail(cudaErrorLaunchFailure,
                  std::string("kernel ") + launch.kernel + " threw an exception");
    }
    context = {};
  };
  auto finished = [&launch] {
    ++launch.progress;
    std::lock_guard<std::mutex> lock(launch.mutex);
    if (--launch.running == 0) launch.done.notify_all();
  };
  try {
    Pool::global().start(run, finished);
  } catch (const std::exception& e) {
    launch.fail(cudaErrorLaunchFailure, std::string("kernel ") + launch.kernel + ": " + e.what());
    finished();
  }
}

// Waits until every started thread has finished. Where for a whole timeout no thread finished
// and no barrier opened (threads that loop without reaching one), the launch fails. Once it
// failed, threads that are not waiting at a barrier get twice the timeout to reach one or
// finish; then the process ends.
void wait_for_threads(Launch& launch) {
  std::unique_lock<std::mutex> lock(launch.mutex);
  for (;;) {
    const unsigned long long progress = launch.progress.load();
    if (launch.done.wait_for(lock, timeout_duration(),
                             [&] { return launch.running == 0 || launch.status != cudaSuccess; }))
      break;
    if (launch.progress.load() != progress) continue;
    lock.unlock();
    launch.fail(cudaErrorLaunchTimeout, std::string("kernel ") + launch.kernel +
                                            ": no thread finished or passed a "
                                            "barrier for " +
                                            timeout_text());
    lock.lock();
  }
  if (launch.running == 0) return;
  if (!launch.done.wait_for(lock, 2 * timeout_duration(), [&] { return launch.running == 0; })) {
    std::fprintf(stderr,
                 "rnnfast emulator: %s\nrnnfast emulator: %u threads of kernel %s "
                 "neither finished nor reached a barrier after that; ending the process\n",
                 launch.message.c_str(), launch.running, launch.kernel);
    std::abort();
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
  Launch launch(kernel, grid, block, cooperative);
  std::vector<std::unique_ptr<Block>> running;
  // Starts the given blocks' threads and waits for them.
  auto run_blocks = [&](const std::vector<dim3>& indices) {
    running.clear();
    for (dim3 index : indices)
      running.push_back(
          std::make_unique<Block>(index, static_cast<unsigned>(threads), shared_bytes));
    {
      std::lock_guard<std::mutex> lock(launch.mutex);
      launch.blocks.clear();
      for (auto& b : running) launch.blocks.push_back(b.get());
    }
    for (auto& b : running)
      for (unsigned z = 0; z < block.z; ++z)
        for (unsigned y = 0; y < block.y; ++y)
          for (unsigned x = 0; x < block.x; ++x) start_thread(launch, *b, dim3(x, y, z), body);
    wait_for_threads(launch);
  };
  std::vector<dim3> indices;
  for (unsigned z = 0; z < grid.z && !launch.failed.load(); ++z)
    for (unsigned y = 0; y < grid.y && !launch.failed.load(); ++y)
      for (unsigned x = 0; x < grid.x && !launch.failed.load(); ++x) {
        indices.push_back(dim3(x, y, z));
        if (!cooperative) {
          run_blocks(indices);
          indices.clear();
        }
      }
  if (cooperative) run_blocks(indices);
  return finish(launch.status, launch.message);
}

void grid_sync() {
  Launch& launch = *context.launch;
  if (!launch.cooperative) {
    launch.fail(cudaErrorLaunchFailure, std::string("kernel ") + launch.kernel +
                                            ": grid_sync in a launch that is not cooperative");
    throw Aborted{};
  }
  launch.grid_barrier.wait(launch, "grid_sync");
}

void* block_shared(const void* site, size_t bytes, size_t align) {
  Block& b = *context.block;
  std::lock_guard<std::mutex> lock(b.shared_mutex);
  for (auto& [key, memory] : b.shared)
    if (key == site) return memory.get();
  b.shared.emplace_back(site, Block::poisoned(bytes, align));
  return b.shared.back().second.get();
}

void* dynamic_shared() { return context.block->dynamic.get(); }

unsigned thread_rank() {
  return (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
}

const void* warp_exchange(const void* mine, size_t bytes) {
  Launch& launch = *context.launch;
  if (bytes > kMaxLaneBytes) {
    launch.fail(cudaErrorLaunchFailure, std::string("kernel ") + launch.kernel +
                                            ": warp_exchange of more than " +
                                            std::to_string(kMaxLaneBytes) + " bytes a lane");
    throw Aborted{};
  }
  Block::Warp& warp = *context.block->warps[thread_rank() / kWarpSize];
  // The lanes alternate between the two buffers: a lane that writes one has passed the barrier
  // of the exchange before, so every lane has finished reading what that buffer held (two
  // exchanges ago).
  unsigned char* buffer = warp.buffers[context.warp_exchanges++ % 2];
  std::memcpy(buffer + thread_rank() % kWarpSize * bytes, mine, bytes);
  warp.barrier.wait(launch, "a warp-wide instruction (warp_exchange)");
  return buffer;
}

}  // namespace rnnfast::cuda::emulator

using namespace rnnfast::cuda::emulator;

void __syncthreads() { context.block->barrier.wait(*context.launch, "__syncthreads"); }

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
