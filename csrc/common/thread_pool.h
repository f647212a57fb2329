// The engine's own thread pool: persistent workers plus the calling thread, so no OpenMP runtime is shared with
// (and fought over with) torch or ONNX Runtime in the same process.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace sparsebert {

class ThreadPool {
 public:
  // num_threads counts the caller: num_threads - 1 workers are started.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs fn(task, thread_index) for every task in [0, n) and returns when all are done. thread_index is in
  // [0, size()) and unique among concurrently running tasks (for per-thread scratch). Not reentrant: one
  // parallel_for at a time per pool (the encoder serialises its runs). The first exception thrown by a task is
  // rethrown here once every task has finished.
  void parallel_for(int n, const std::function<void(int, int)>& fn) { run(n, fn, false); }

  // As parallel_for, but thread t always runs the same contiguous range of tasks, [n*t/size, n*(t+1)/size):
  // when consecutive ops split their data the same way, each thread reads what it wrote itself, from its own
  // cache, instead of pulling lines another core modified (dynamic scheduling measured up to 2x slower for the
  // sparse layers for that reason). The cost: a thread the OS preempts delays the whole op.
  void parallel_for_static(int n, const std::function<void(int, int)>& fn) { run(n, fn, true); }

 private:
  void run(int n, const std::function<void(int, int)>& fn, bool static_schedule);
  void worker_loop(int thread_index);
  void run_tasks(int thread_index);

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::condition_variable done_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> next_task_{0};
  std::atomic<int> busy_workers_{0};
  const std::function<void(int, int)>* job_ = nullptr;
  int job_size_ = 0;
  bool static_schedule_ = false;
  bool stop_ = false;
  std::exception_ptr error_;
  std::mutex error_mu_;
  int owner_pid_;
};

}  // namespace sparsebert
