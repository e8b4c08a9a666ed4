#include "thread_pool.h"

#include <dlfcn.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>

#include <cstdlib>
#include <new>
#include <optional>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define RNNFAST_PAUSE() _mm_pause()
#else
#define RNNFAST_PAUSE() std::this_thread::yield()
#endif

namespace rnnfast {

namespace {

static_assert(sizeof(std::atomic<unsigned>) == sizeof(unsigned), "futex needs a plain word");

void futex_wait(std::atomic<unsigned>* word, unsigned expected) {
  syscall(SYS_futex, reinterpret_cast<unsigned*>(word), FUTEX_WAIT_PRIVATE, expected, nullptr,
          nullptr, 0);
}

void futex_wake_all(std::atomic<unsigned>* word) {
  syscall(SYS_futex, reinterpret_cast<unsigned*>(word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr,
          nullptr, 0);
}

// Spins until done() or until `time` has passed; true if done(). Gives the core away now and
// then: another library's threads (a BLAS's workers, busy-waiting after its last call) may hold
// the core that the thread we wait for needs.
template <class Done>
bool spin_until(std::chrono::microseconds time, Done done) {
  const auto deadline = std::chrono::steady_clock::now() + time;
  for (int spins = 1;; ++spins) {
    if (done()) return true;
    RNNFAST_PAUSE();
    if (spins % 16 != 0) continue;
    if (std::chrono::steady_clock::now() > deadline) return false;
    sched_yield();
  }
}

// Restricts the calling thread to `cpus` until destroyed, then gives it back the CPUs it had;
// does nothing where `cpus` is empty or the system refuses.
class CpuRestriction {
 public:
  explicit CpuRestriction(const cpu_set_t& cpus) {
    active_ = CPU_COUNT(&cpus) > 0 && sched_getaffinity(0, sizeof(saved_), &saved_) == 0 &&
              sched_setaffinity(0, sizeof(cpus), &cpus) == 0;
  }
  CpuRestriction(const CpuRestriction&) = delete;
  CpuRestriction& operator=(const CpuRestriction&) = delete;
  ~CpuRestriction() {
    if (active_) sched_setaffinity(0, sizeof(saved_), &saved_);
  }

 private:
  cpu_set_t saved_;
  bool active_ = false;
};

cpu_set_t only_cpu(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (cpu >= 0 && cpu < CPU_SETSIZE) CPU_SET(cpu, &set);
  return set;
}

// The calling thread's CPUs but `cpu`; empty where it has no other.
cpu_set_t cpus_but(int cpu) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) != 0 || cpu < 0 || cpu >= CPU_SETSIZE) {
    CPU_ZERO(&set);
    return set;
  }
  CPU_CLR(cpu, &set);
  return set;
}

}  // namespace

bool SpinBarrier::all_arrived(unsigned count) const {
  for (const Arrivals& other : arrivals_)
    if (static_cast<int>(other.count.load(std::memory_order_acquire) - count) < 0) return false;
  return true;
}

void SpinBarrier::wait(int index) {
  Arrivals& mine = arrivals_[index];
  const unsigned count = mine.count.load(std::memory_order_relaxed) + 1;
  mine.count.store(count, std::memory_order_seq_cst);
  // A thread that went to sleep counted itself in sleepers_ before its last look at the
  // counts; seq_cst orders that look and this load, so either it saw our arrival or we see it.
  if (sleepers_.load(std::memory_order_seq_cst) > 0) {
    generation_.fetch_add(1, std::memory_order_seq_cst);
    futex_wake_all(&generation_);
  }
  // Spin briefly (a balanced step ends within microseconds), then sleep in the kernel: when
  // the cores are oversubscribed (another library's threads spinning, say) a spinning waiter
  // would take the core from the very thread it waits for.
  if (spin_until(kSpinTime, [&] { return all_arrived(count); })) return;
  while (true) {
    const unsigned generation = generation_.load(std::memory_order_seq_cst);
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    const bool done = all_arrived(count);
    if (!done) futex_wait(&generation_, generation);
    sleepers_.fetch_sub(1, std::memory_order_seq_cst);
    if (done || all_arrived(count)) return;
  }
}

int ThreadPool::default_num_threads() {
  if (const char* env = std::getenv("RNNFAST_NUM_THREADS")) {
    char* end = nullptr;
    const long value = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && value >= 1 && value <= 4096) return static_cast<int>(value);
  }
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

// Constructed when the library is loaded (the module's import, which a fork cannot interrupt:
// Python holds the import lock across os.fork), never lazily: a fork while another thread ran a
// lazy construction would leave the child waiting on the initialisation guard of a thread that
// does not exist there. Never destroyed: worker threads must not outlive the pool at exit.
ThreadPool* const ThreadPool::global_ = [] {
  auto* pool = new ThreadPool();
  pthread_atfork(nullptr, nullptr, &ThreadPool::after_fork_in_child);
  return pool;
}();

ThreadPool& ThreadPool::global() { return *global_; }

ThreadPool::ThreadPool()
    : num_threads_(default_num_threads()), workers_(new std::vector<std::thread>()) {}

void ThreadPool::after_fork_in_child() {
  // Only the forking thread exists in the child: forget the parent's workers (their handles
  // are leaked, not joined) and start afresh; workers are started again on first use.
  ThreadPool& pool = *global_;
  new (&pool.run_mutex_) std::mutex();
  new (&pool.mutex_) std::mutex();
  new (&pool.wake_) std::condition_variable();
  new (&pool.done_) std::condition_variable();
  pool.workers_ = new std::vector<std::thread>();
  pool.job_ = nullptr;
  pool.pending_ = 0;
  pool.asleep_ = 0;
  pool.caller_cpu_ = -1;
  pool.stopping_ = false;
  // An OpenMP runtime's threads do not survive a fork either, and libgomp's do not come back
  // in the child: its runs go to rnnfast's own workers.
  pool.openmp_.store(nullptr);
}

void ThreadPool::set_num_threads(int threads) {
  std::lock_guard<std::mutex> run_lock(run_mutex_);
  if (threads < static_cast<int>(workers_->size()) + 1) stop_workers();
  num_threads_.store(threads);
}

void ThreadPool::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (std::thread& worker : *workers_) worker.join();
  workers_->clear();
  std::lock_guard<std::mutex> lock(mutex_);
  stopping_ = false;
}

void ThreadPool::start_workers(int count) {
  while (static_cast<int>(workers_->size()) < count) {
    const int index = static_cast<int>(workers_->size()) + 1;
    // The generation before the next run is posted: the worker waits for a newer one.
    const unsigned seen = job_generation_;
    workers_->emplace_back([this, index, seen] { worker_loop(index, seen); });
  }
}

void ThreadPool::worker_loop(int index, unsigned seen) {
  for (;;) {
    const std::function<void(int)>* job;
    // Back-to-back runs (a layer's GEMM then its recurrence; a streaming loop of cell steps)
    // find the worker still spinning: no futex wake-up, which costs tens of microseconds.
    const bool spun = spin_until(
        kIdleSpinTime, [&] { return job_generation_.load(std::memory_order_acquire) != seen; });
    int caller_cpu;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      if (!spun && asleep_++ == 0) asleep_since_ = std::chrono::steady_clock::now();
      wake_.wait(lock, [&] { return stopping_ || job_generation_.load() != seen; });
      if (!spun) --asleep_;
      if (stopping_) return;
      seen = job_generation_.load();
      if (index >= job_threads_) continue;  // this run needs fewer threads
      job = job_;
      caller_cpu = caller_cpu_;
    }
    // On the caller's CPU in a run that moves workers (caller_cpu_ is set only then): run
    // elsewhere.
    const bool shares_cpu = caller_cpu >= 0 && sched_getcpu() == caller_cpu;
    const CpuRestriction elsewhere(shares_cpu ? cpus_but(caller_cpu) : cpu_set_t{});
    (*job)(index);
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(mutex_);  // the caller tests pending_ under the lock
      done_.notify_one();
    }
  }
}

// The entry points of an OpenMP runtime: GNU's ABI (GOMP_parallel, what GCC compiles
// `#pragma omp parallel` to), which libgomp and LLVM's and Intel's runtimes all export.
struct ThreadPool::OpenMp {
  std::string library;
  void (*parallel)(void (*body)(void*), void* data, unsigned threads, unsigned flags);
  int (*thread_num)();
  int (*team_size)();
};

bool ThreadPool::share_openmp_threads(const std::string& path) {
  OpenMp* runtime = nullptr;
  if (!path.empty()) {
    // RTLD_NOLOAD: only a library the process has loaded already (its threads are the ones
    // worth sharing); the handle is kept, so it stays loaded.
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_NOLOAD);
    if (handle == nullptr) return false;
    runtime = new OpenMp{
        path, reinterpret_cast<decltype(OpenMp::parallel)>(dlsym(handle, "GOMP_parallel")),
        reinterpret_cast<int (*)()>(dlsym(handle, "omp_get_thread_num")),
        reinterpret_cast<int (*)()>(dlsym(handle, "omp_get_num_threads"))};
    if (!runtime->parallel || !runtime->thread_num || !runtime->team_size) {
      delete runtime;
      dlclose(handle);
      return false;
    }
  }
  openmp_.store(runtime);  // the previous one is leaked: a run may still be using it
  return true;
}

std::string ThreadPool::openmp_library() const {
  const OpenMp* runtime = openmp_.load();
  return runtime != nullptr ? runtime->library : std::string();
}

bool ThreadPool::run_on_openmp(const OpenMp& runtime, int threads,
                               const std::function<void(int)>& job) {
  struct Region {
    const OpenMp& runtime;
    const std::function<void(int)>& job;
    int threads;
    std::atomic<bool> short_team{false};
  } region{runtime, job, threads};
  // Every thread of the team checks its size first: a job meets its threads at barriers, so it
  // must run on all `threads` of them or on none.
  const auto body = [](void* data) {
    Region& r = *static_cast<Region*>(data);
    if (r.runtime.team_size() != r.threads) {
      r.short_team.store(true, std::memory_order_relaxed);
      return;
    }
    r.job(r.runtime.thread_num());
  };
  region.runtime.parallel(body, &region, static_cast<unsigned>(threads), 0);
  return !region.short_team.load(std::memory_order_relaxed);
}

void ThreadPool::run(int threads, int64_t work, const std::function<void(int)>& job) {
  if (threads <= 1) {
    job(0);
    return;
  }
  std::lock_guard<std::mutex> run_lock(run_mutex_);
  const OpenMp* runtime = openmp_.load();
  if (runtime != nullptr && run_on_openmp(*runtime, threads, job)) return;
  start_workers(threads - 1);
  // Workers asleep for a while may be woken onto the caller's CPU, and Linux can take many
  // milliseconds to spread them out again. Measured on a 2-vCPU KVM guest: a 2-thread call
  // after 0.1 s idle ran at the speed of one thread (an LSTM layer at T=100, B=16, H=256: 24 ms
  // against 11.5 back to back; after 0.05 s, 13.5). So a long run (kMovesWorkers) that wakes
  // workers asleep for kLongSleep, and a long run that starts within kFollowingRun of the end
  // of such a run (the rest of the same layer call: its recurrence after its projection),
  // moves a worker that finds itself on the caller's CPU to another; the first also holds the
  // caller on its CPU meanwhile, so as not to follow it; each restores its CPUs afterwards.
  // Not in other runs. Where another library's threads keep the other CPUs busy (NumPy's
  // OpenBLAS spins for about 0.1 s after each matmul), a worker held off the caller's CPU
  // shares one with them and Linux can no longer balance the threads: an inference loop of that
  // layer with a NumPy matmul after each call took 34-52 ms a call when every long run moved
  // workers, 24.5 ms with workers left where Linux put them. Nor in short runs: a worker moved
  // to an idle CPU waits for it to wake (an LSTMCell(256, 256) step at B = 1 after 20 ms idle
  // took 149 us moved against 103 us sharing the caller's CPU). Runs that move workers pay a
  // sched_getcpu() in each thread.
  std::optional<CpuRestriction> hold;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    caller_cpu_ = -1;
    if (work >= kMovesWorkers) {
      const auto now = std::chrono::steady_clock::now();
      const bool wakes_sleepers = asleep_ > 0 && now - asleep_since_ >= kLongSleep;
      if (wakes_sleepers || now - moving_run_end_ < kFollowingRun) caller_cpu_ = sched_getcpu();
      if (wakes_sleepers && caller_cpu_ >= 0) hold.emplace(only_cpu(caller_cpu_));
    }
    job_ = &job;
    job_threads_ = threads;
    pending_.store(threads - 1, std::memory_order_relaxed);
    job_generation_.fetch_add(1, std::memory_order_release);  // publishes the fields above
  }
  wake_.notify_all();
  job(0);
  const auto finished = [&] { return pending_.load(std::memory_order_acquire) == 0; };
  if (!spin_until(kIdleSpinTime, finished)) {
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, finished);
  }
  std::lock_guard<std::mutex> lock(mutex_);
  job_ = nullptr;
  if (caller_cpu_ >= 0) moving_run_end_ = std::chrono::steady_clock::now();
}

}  // namespace rnnfast
