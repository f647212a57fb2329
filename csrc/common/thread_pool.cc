#include "common/thread_pool.h"

#include <sched.h>
#include <unistd.h>

#include <utility>

namespace sparsebert {
namespace {

// Waiting for the next job (workers) or for the workers to finish (caller) goes through three stages:
// pause-spinning, which answers within ~100 ns and spans the gap between two ops of one run; then spinning with
// sched_yield, so that on an oversubscribed machine (another process, torch's or ONNX Runtime's pool) a waiting
// thread hands its core to whoever is runnable instead of burning its time slice while the thread it waits for
// is preempted; then sleeping on a condition variable, so an idle
// engine stops using the CPU about a millisecond after its last run.
constexpr int kPauseIterations = 4000;
constexpr int kYieldIterations = 400;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ volatile("yield");  // the spin-wait hint Arm has instead of PAUSE
#endif
}

// One step of the wait; false once the thread should block instead.
inline bool keep_spinning(int spin) {
  if (spin < kPauseIterations) {
    cpu_relax();
    return true;
  }
  if (spin < kPauseIterations + kYieldIterations) {
    sched_yield();
    return true;
  }
  return false;
}

}  // namespace

ThreadPool::ThreadPool(int num_threads) : owner_pid_(static_cast<int>(getpid())) {
  for (int i = 1; i < num_threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  // After fork() the child holds std::thread objects whose threads do not exist (joining would fail), and mu_
  // may have been locked by one of them when the parent forked: touch neither.
  if (static_cast<int>(getpid()) != owner_pid_) {
    for (auto& t : workers_) t.detach();
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::run_tasks(int thread_index) {
  const auto& fn = *job_;
  auto guarded = [&](int task) {
    try {
      fn(task, thread_index);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mu_);
      if (!error_) error_ = std::current_exception();
    }
  };
  if (static_schedule_) {
    const int64_t threads = size();
    const int begin = static_cast<int>(job_size_ * thread_index / threads);
    const int end = static_cast<int>(job_size_ * (thread_index + 1) / threads);
    for (int task = begin; task < end; ++task) guarded(task);
    return;
  }
  for (int task = next_task_.fetch_add(1); task < job_size_; task = next_task_.fetch_add(1)) guarded(task);
}

void ThreadPool::run(int n, const std::function<void(int, int)>& fn, bool static_schedule) {
  if (n <= 0) return;
  // A forked child has no workers; run everything on the caller rather than wait for threads that are gone.
  if (workers_.empty() || n == 1 || static_cast<int>(getpid()) != owner_pid_) {
    for (int i = 0; i < n; ++i) fn(i, 0);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = &fn;
    job_size_ = n;
    static_schedule_ = static_schedule;
    error_ = nullptr;
    next_task_.store(0, std::memory_order_relaxed);
    busy_workers_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  run_tasks(0);
  // Wait until every worker has finished its share (and so no longer touches job_).
  for (int spin = 0; busy_workers_.load(std::memory_order_acquire) != 0; ++spin) {
    if (!keep_spinning(spin)) {
      std::unique_lock<std::mutex> lock(mu_);
      done_.wait(lock, [this] { return busy_workers_.load(std::memory_order_acquire) == 0; });
    }
  }
  job_ = nullptr;
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

void ThreadPool::worker_loop(int thread_index) {
  uint64_t seen = 0;
  for (;;) {
    for (int spin = 0; generation_.load(std::memory_order_acquire) == seen; ++spin) {
      if (!keep_spinning(spin)) {
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
      }
    }
    seen = generation_.load(std::memory_order_acquire);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
    }
    run_tasks(thread_index);
    if (busy_workers_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(mu_);
      done_.notify_one();
    }
  }
}

}  // namespace sparsebert
