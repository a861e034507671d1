// src/pool/engine_impl.hpp — the part of the engine shared by thread and process workers:
// the queue of tasks not yet handed out (`pending`), lazy input (feeders), the pool's
// state (closed, terminating, broken), and the argument buffers kept for reuse. The two
// kinds of workers derive from Engine::Impl: src/pool/thread_workers.cpp and
// src/pool/process_engine.hpp.
#pragma once

#include <atomic>
#include <deque>
#include <exception>
#include <memory>
#include <memory_resource>
#include <mutex>
#include <optional>
#include <vector>

#include "mpx/detail/pool_task.hpp"
#include "mpx/errors.hpp"
#include "pool/state_memory.hpp"

namespace mpx::detail {

// Takes an engine lock, trying for a moment before it sleeps (src/pool/engine.cpp).
std::unique_lock<std::mutex> lock_soon(std::mutex& m);

struct Engine::Impl {
  explicit Impl(EngineOptions opts) : options(std::move(opts)) {
    if (options.workers == 0) options.workers = cpu_count();
  }
  virtual ~Impl() = default;
  virtual void wake() noexcept = 0;
  // Waits for the workers to stop (after close or terminate).
  virtual void join_workers() = 0;
  virtual std::vector<pid_t> pids() const { return {}; }
  // A feeder was queued (lock held).
  virtual void feeding() {}
  // A task about to be queued while nothing else is (lock held): handed to a worker at
  // once if one has room (or dropped, cancelled). Returns whether it was.
  virtual bool take_now(Task&) { return false; }
  // Engine::submit_written (lock held): whether it wrote the task to a worker.
  virtual bool take_written(Task&, std::size_t, Engine::ArgsWriter, void*) { return false; }
  // Tasks were queued (lock held on entry, released on return).
  virtual void submitted(std::unique_lock<std::mutex>& lock) {
    lock.unlock();
    wake();
  }

  void check_open() const {
    if (broken) std::rethrow_exception(broken);
    if (closed) throw InvalidStateError("pool is not running (closed or terminated)");
  }

  // Keeps the argument buffer of a task that no longer needs it (lock held; see
  // Engine::submit) for a later one: a chunksize-1 map allocated one per task in the
  // caller and freed it in whichever thread read the result, and a map of a million
  // ints faulted in a fresh 500 KB buffer for each of its chunks. Small buffers are
  // kept by number, large ones within a budget of bytes.
  void recycle_args(ByteVector& args) noexcept {
    const std::size_t bytes = args.capacity();
    if (bytes == 0 || spare_args.size() >= kSpares) return;
    if (bytes > kSmallSpareBytes && spare_large_bytes + bytes > kLargeSpareBytes) return;
    try {
      if (spare_args.capacity() == 0) spare_args.reserve(kSpares);
      spare_args.push_back(std::move(args));
      if (bytes > kSmallSpareBytes) spare_large_bytes += bytes;
    } catch (const std::bad_alloc&) {
    }
  }
  // The buffer last kept, or none (lock held).
  ByteVector take_spare() noexcept {
    if (spare_args.empty()) return {};
    ByteVector b = std::move(spare_args.back());
    spare_args.pop_back();
    if (b.capacity() > kSmallSpareBytes) spare_large_bytes -= b.capacity();
    return b;
  }
  // Process pools: the arguments of tasks that workers started go to recycle_args()
  // (lock held); a task is sent again only if its worker died before starting it.
  virtual void release_started_args() noexcept {}

  // Pops the next task to run, pulling from feeders when the queue runs low.
  // Lock held on entry and exit; released while a feeder runs.
  std::optional<Task> pop(std::unique_lock<std::mutex>& lock, bool use_feeders = true) {
    // Round robin over the ready feeders, so that an endless one starves nobody.
    std::size_t tries = feeders.size();
    while (use_feeders && pending.size() < low_water() && !feeders.empty() && tries-- > 0) {
      auto feeder = feeders.front();
      feeders.erase(feeders.begin());
      if (!closed && !feeder->ready()) {
        feeders.push_back(std::move(feeder));
        continue;
      }
      lock.unlock();
      auto task = feeder->next();
      lock.lock();
      if (task) {
        pending.push_back(std::move(*task));
        feeders.push_back(std::move(feeder));
        tries = feeders.size();
      } else {
        lock.unlock();
        feeder.reset();  // may run its destructor: not under our lock
        lock.lock();
      }
    }
    feeder_count.store(feeders.size(), std::memory_order_relaxed);
    if (pending.empty()) return std::nullopt;
    Task t = std::move(pending.front());
    pending.pop_front();
    pending_count.store(pending.size(), std::memory_order_relaxed);
    return t;
  }
  std::size_t low_water() const noexcept { return 2 * options.workers; }
  bool has_work() const noexcept { return !pending.empty() || has_lazy_work(); }
  // A feeder that may produce now.
  bool has_lazy_work() const noexcept {
    for (const auto& f : feeders)
      if (closed || f->ready()) return true;
    return false;
  }

  // Takes everything still queued (lock held).
  // The caller drops `dropped_feeders` after releasing the lock.
  std::vector<Task> take_pending(std::vector<std::shared_ptr<Feeder>>& dropped_feeders) {
    std::vector<Task> out(std::make_move_iterator(pending.begin()),
                          std::make_move_iterator(pending.end()));
    pending.clear();
    dropped_feeders = std::move(feeders);
    feeders.clear();
    pending_count.store(0, std::memory_order_relaxed);
    feeder_count.store(0, std::memory_order_relaxed);
    return out;
  }

  EngineOptions options;
  StateMemoryHandle state_memory{StateMemory::create()};  // the pool's future states
  mutable std::mutex mutex;
  std::pmr::deque<Task> pending{state_memory.get()};  // its nodes too: as many as futures
  static constexpr std::size_t kSpares = 4096;
  static constexpr std::size_t kSmallSpareBytes = 256;
  static constexpr std::size_t kLargeSpareBytes = std::size_t{4} << 20;
  std::vector<ByteVector> spare_args;  // recycle_args()
  std::size_t spare_large_bytes = 0;   // of those over kSmallSpareBytes
  std::vector<std::shared_ptr<Feeder>> feeders;
  std::atomic<std::size_t> pending_count{0};  // pending.size(), or more (a hint)
  std::atomic<std::size_t> feeder_count{0};   // feeders.size() once the lock is free
  bool closed = false;
  bool terminating = false;
  bool joined = false;
  std::exception_ptr broken;
  // Raised with closed, terminating or broken (lock held): a supervisor that polls does
  // not take the lock to learn that there is nothing to stop for.
  std::atomic<bool> stopping{false};
  // The first failure that breaks the pool (lock held).
  void set_broken(std::exception_ptr error) {
    if (!broken) broken = std::move(error);
    stopping.store(true, std::memory_order_release);
  }
  std::shared_ptr<Collector> collector;  // process pools
};

inline void abandon_all(std::vector<Task>& tasks) noexcept {
  for (auto& t : tasks)
    if (t.sink) t.sink->task_abandoned(t.tag);
}

// The two kinds of workers.
std::unique_ptr<Engine::Impl> make_thread_workers(EngineOptions options);
std::unique_ptr<Engine::Impl> make_process_workers(EngineOptions options);

}  // namespace mpx::detail
