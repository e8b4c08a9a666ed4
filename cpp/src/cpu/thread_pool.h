// A persistent pool of worker threads for the CPU kernels, and the spin barrier they use
// between time steps. Internal to the CPU backend.
//
// One parallel run per kernel call: the run's job holds the whole time loop and meets the
// other threads at a barrier once per step, so a step costs one barrier, not a thread wake-up.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace rnnfast {

// Barrier for the threads of one run: spins for a few microseconds, then sleeps on a futex.
//
// Each thread announces its arrival in a cache line of its own (a count of the barriers it has
// reached) and waits until every other thread's count has caught up: one cache-line transfer
// per pair of threads, no read-modify-write on a shared line. On the 2-vCPU development
// machine that costs about 0.2 us a barrier, against 3-5 us for a central counter.
class SpinBarrier {
 public:
  explicit SpinBarrier(int threads) : threads_(threads), arrivals_(threads) {}
  void wait(int index);  // index: the calling thread's index in the run, 0 .. threads - 1

 private:
  // How long a waiter spins before it sleeps. Timed, not counted: a pause instruction takes
  // from about 10 ns (this development machine) to 140 ns depending on the core.
  static constexpr std::chrono::microseconds kSpinTime{30};
  struct alignas(64) Arrivals {
    std::atomic<unsigned> count{0};
  };
  bool all_arrived(unsigned count) const;

  const int threads_;
  std::vector<Arrivals> arrivals_;
  alignas(64) std::atomic<unsigned> generation_{0};  // futex word, bumped to wake sleepers
  std::atomic<int> sleepers_{0};
};

class ThreadPool {
 public:
  // The pool every kernel uses; starts with default_num_threads() threads.
  static ThreadPool& global();
  // RNNFAST_NUM_THREADS if set to a positive integer, else the cores this process may run on.
  static int default_num_threads();

  int num_threads() const { return num_threads_.load(); }
  void set_num_threads(int threads);  // threads >= 1

  // Runs job(thread_index) on exactly `threads` threads (the caller is thread 0; callers keep
  // `threads` <= num_threads()) and returns when all have finished. Runs from several callers
  // take turns. work: the run's multiply-adds, or values passed over memory; a run of at least
  // kMovesWorkers of them may move woken workers off the caller's CPU (see run()).
  void run(int threads, int64_t work, const std::function<void(int)>& job);

  // From now on, runs go to the threads of an OpenMP runtime that the process has already
  // loaded (the shared library at `path`, e.g. PyTorch's libgomp), instead of rnnfast's own
  // workers; an empty path goes back to them. Two libraries that alternate parallel work on the
  // same cores then share one set of threads: OpenMP's threads busy-wait for a while after each
  // parallel region, and rnnfast's workers would otherwise compete with them for the cores.
  // Returns false, changing nothing, where `path` is not loaded or lacks OpenMP's entry points.
  // A run whose OpenMP team comes out smaller than asked (inside another parallel region, an
  // OMP_THREAD_LIMIT) runs on rnnfast's workers instead.
  bool share_openmp_threads(const std::string& path);
  // The library given to share_openmp_threads, or "" where runs use rnnfast's own workers.
  std::string openmp_library() const;

 private:
  ThreadPool();
  void start_workers(int count);  // with run_mutex_ held
  void stop_workers();
  void worker_loop(int index, unsigned seen_generation);
  static void after_fork_in_child();
  static ThreadPool* const global_;  // see thread_pool.cpp: built at load, never lazily
  struct OpenMp;                     // an OpenMP runtime's entry points (thread_pool.cpp)
  static bool run_on_openmp(const OpenMp& runtime, int threads,
                            const std::function<void(int)>& job);

  std::atomic<int> num_threads_;
  std::mutex run_mutex_;  // one run at a time
  std::mutex mutex_;      // guards the fields below
  std::condition_variable wake_, done_;
  std::vector<std::thread>* workers_;  // pointer: a forked child leaks it instead of joining
  // How long an idle worker spins for the next run, and the caller for the workers to finish,
  // before sleeping on the condition variables: about the gap between two calls of a
  // streaming loop, far less than other libraries' pools spin (OpenMP's, OpenBLAS's).
  static constexpr std::chrono::microseconds kIdleSpinTime{100};
  const std::function<void(int)>* job_ = nullptr;
  int job_threads_ = 0;
  std::atomic<unsigned> job_generation_{0};  // bumped (release) once a run's fields are set
  std::atomic<int> pending_{0};              // workers still running the current job
  // Workers waiting on wake_ after their idle spin, since asleep_since_ (the first of them);
  // the caller's CPU in a run that moves workers, else -1; when the last such run ended (see
  // run()).
  static constexpr std::chrono::milliseconds kLongSleep{10};
  static constexpr std::chrono::microseconds kFollowingRun{500};
  static constexpr int64_t kMovesWorkers = int64_t{32} << 20;  // about 0.3 ms on 2 cores
  int asleep_ = 0;
  std::chrono::steady_clock::time_point asleep_since_;
  int caller_cpu_ = -1;
  std::chrono::steady_clock::time_point moving_run_end_;
  bool stopping_ = false;
  std::atomic<OpenMp*> openmp_{nullptr};  // replaced, never freed (a few pointers)
};

}  // namespace rnnfast
