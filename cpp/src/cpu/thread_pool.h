// A persistent pool of worker threads for the CPU kernels, and the spin barrier they use
// between time steps. Internal to the CPU backend.
//
// One parallel run per kernel call: the run's job holds the whole time loop and meets the
// other threads at a barrier once per step, so a step costs one barrier, not a thread wake-up.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace rnnfast {

// Barrier for the threads of one run: spins for a few microseconds, then sleeps on a futex.
class SpinBarrier {
 public:
  explicit SpinBarrier(int threads) : threads_(threads) {}
  void wait();

 private:
  static constexpr int kSpins = 256;  // pause instructions, about 10 us on current x86 cores
  const int threads_;
  std::atomic<int> arrived_{0};
  std::atomic<unsigned> generation_{0};
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
  // take turns.
  void run(int threads, const std::function<void(int)>& job);

 private:
  ThreadPool();
  void start_workers(int count);  // with run_mutex_ held
  void stop_workers();
  void worker_loop(int index, unsigned seen_generation);
  static void after_fork_in_child();

  std::atomic<int> num_threads_;
  std::mutex run_mutex_;  // one run at a time
  std::mutex mutex_;      // guards the fields below
  std::condition_variable wake_, done_;
  std::vector<std::thread>* workers_;  // pointer: a forked child leaks it instead of joining
  const std::function<void(int)>* job_ = nullptr;
  int job_threads_ = 0;
  unsigned job_generation_ = 0;
  int pending_ = 0;
  bool stopping_ = false;
};

}  // namespace rnnfast
