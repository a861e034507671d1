// Thread workers (ThreadPool, ThreadPoolExecutor): threads that pop tasks from the
// engine's shared queue themselves and run them in this process.
#include <condition_variable>
#include <string>
#include <thread>

#include "mpx/detail/waiter.hpp"
#include "pool/engine_impl.hpp"

namespace mpx::detail {

namespace {

class ThreadImpl final : public Engine::Impl {
 public:
  explicit ThreadImpl(EngineOptions opts) : Impl(std::move(opts)) {
    threads_.reserve(options.workers);
    if (options.on_demand) return;
    std::lock_guard lock(mutex);
    while (threads_.size() < options.workers)
      start_thread();
  }
  ~ThreadImpl() override {
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }

  void wake() noexcept override {
    { std::lock_guard lock(mutex); }
    cv_.notify_all();
  }
  void join_workers() override {
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }
  // On demand: a thread for each queued task that no idle (or starting) thread can
  // take, up to the limit, as Python's ThreadPoolExecutor._adjust_thread_count.
  void submitted(std::unique_lock<std::mutex>& lock) override {
    while (options.on_demand && threads_.size() < options.workers && available_ < pending.size())
      start_thread();
    lock.unlock();
    wake();
  }
  // A lazy map: Python's submits all of its items, starting threads up to the limit.
  void feeding() override {
    while (threads_.size() < options.workers)
      start_thread();
  }

 private:
  // Lock held (threads_ only grows under the lock, and not once the pool is closed).
  void start_thread() {
    threads_.emplace_back([this] { loop(); });
    ++available_;
  }

  void loop() {
    if (options.thread_initializer) {
      try {
        options.thread_initializer();
      } catch (...) {
        auto error = std::current_exception();
        report_initializer_failure(error);
        std::vector<std::shared_ptr<Feeder>> dropped_feeders;
        std::vector<Task> dropped;
        {
          std::lock_guard lock(mutex);
          set_broken(std::make_exception_ptr(
              BrokenPool("a worker's initializer failed: " + describe(error))));
          dropped = take_pending(dropped_feeders);
        }
        for (auto& t : dropped)
          if (t.sink) t.sink->task_failed(t.tag, broken);
        cv_.notify_all();
        return;
      }
    }
    std::unique_lock lock(mutex);
    for (;;) {
      if (terminating) return;
      if (auto task = pop(lock)) {
        --available_;
        lock.unlock();
        if (task->sink && !task->sink->task_running(task->tag)) {
          lock.lock();
          ++available_;
          continue;
        }
        (*task->run)();
        task.reset();
        lock.lock();
        ++available_;
        continue;
      }
      if (closed || broken) return;
      // Spin briefly before sleeping: a thread pool's round trip is dominated by the
      // wake-up otherwise.
      lock.unlock();
      spin_until([this] { return pending_count.load(std::memory_order_relaxed) != 0; },
                 spin_limit());
      lock.lock();
      if (has_work() || closed || terminating) continue;
      cv_.wait(lock);
    }
  }

  static std::string describe(const std::exception_ptr& e) {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      return x.what();
    } catch (...) {
      return "unknown exception";
    }
  }

  std::condition_variable cv_;
  std::vector<std::thread> threads_;
  std::size_t available_ = 0;  // threads started and not running a task (lock held)
};

}  // namespace

std::unique_ptr<Engine::Impl> make_thread_workers(EngineOptions options) {
  return std::make_unique<ThreadImpl>(std::move(options));
}

}  // namespace mpx::detail
