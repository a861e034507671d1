// mpx/detail/pool_future.hpp — the shared state behind mpx::Future<T>.
// Not public API. The state is also the TaskSink of the task that completes it.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "mpx/detail/deadline.hpp"
#include "mpx/detail/pool_task.hpp"
#include "mpx/detail/waiter.hpp"
#include "mpx/errors.hpp"

namespace mpx::detail {

class FutureStateBase;

// Collects the futures that complete, for as_completed() and wait().
class CompletionWaiter {
 public:
  void add(FutureStateBase* state) {
    Collector* collector;
    {
      std::lock_guard lock(mutex_);
      done_.push_back(state);
      count_.fetch_add(1, std::memory_order_release);
      collector = collector_.get();
    }
    notify(word_);
    if (collector) collector->poke();  // the waiter may be collecting, asleep on the workers
  }
  // Each watched future's collector, before waiting: when all come from one process pool,
  // wait() reads their results itself (as Future::wait does) instead of waiting for the
  // pool's thread to read them and wake this one.
  void note_collector(const std::shared_ptr<Collector>& collector) {
    std::lock_guard lock(mutex_);
    if (!noted_) {
      collector_ = collector;
      noted_ = true;
    } else if (collector_ != collector) {
      collector_.reset();  // futures of several pools: a plain wait
    }
  }
  std::size_t count() const noexcept { return count_.load(std::memory_order_acquire); }
  // Call from the thread that noted the collectors.
  template <class Pred>
  bool wait(Pred&& ready, const Deadline& deadline) {
    return collect_until(collector_.get(), word_, ready, deadline);
  }
  // The completed states from index `from` on.
  std::vector<FutureStateBase*> since(std::size_t from) {
    std::lock_guard lock(mutex_);
    return {done_.begin() + static_cast<std::ptrdiff_t>(from), done_.end()};
  }

 private:
  std::mutex mutex_;
  std::vector<FutureStateBase*> done_;
  std::atomic<std::size_t> count_{0};
  WaitWord word_;
  std::shared_ptr<Collector> collector_;  // under mutex_; see note_collector()
  bool noted_ = false;
};

class FutureStateBase : public TaskSink {
 public:
  enum Status : uint32_t { kPending, kRunning, kCancelled, kFinished };

  Status status() const noexcept {
    return static_cast<Status>(status_.load(std::memory_order_acquire));
  }
  bool done() const noexcept {
    Status s = status();
    return s == kCancelled || s == kFinished;
  }
  // Finished with an exception (not cancelled).
  bool failed() const noexcept { return status() == kFinished && error_ != nullptr; }
  bool wait(const Deadline& deadline) {
    return collect_until(
        collector_.get(), word_, [this] { return done(); }, deadline);
  }
  // Process pools: waits read results through the pool's collector. Set before the
  // task is submitted.
  void set_collector(std::shared_ptr<Collector> collector) { collector_ = std::move(collector); }
  bool has_callbacks() const noexcept override { return hooked_.load(std::memory_order_acquire); }

  // As its task's sink (one task: the tag is not used).
  bool task_running(std::size_t) noexcept override { return set_running(); }
  void task_failed(std::size_t, std::exception_ptr error) noexcept override {
    set_exception(std::move(error));
  }
  void task_abandoned(std::size_t) noexcept override { abandon(); }

  bool cancel() {
    std::unique_lock lock(mutex_);
    Status s = status();
    if (s == kCancelled) return true;
    if (s != kPending) return false;
    error_ = std::make_exception_ptr(CancelledError());
    complete(lock, kCancelled);
    return true;
  }

  bool set_running() noexcept {
    uint32_t expected = kPending;
    if (status_.compare_exchange_strong(expected, kRunning, std::memory_order_acq_rel)) return true;
    return expected == kRunning;  // a task handed to a second worker after a crash
  }

  void set_exception(std::exception_ptr error) noexcept {
    if (on_error_ && !done()) run_callback([&] { (*on_error_)(error); });
    std::unique_lock lock(mutex_);
    if (done()) return;
    error_ = std::move(error);
    complete(lock, kFinished);
  }

  // Ends the future as cancelled whatever its state (Pool.terminate()).
  void abandon() noexcept {
    std::unique_lock lock(mutex_);
    if (done()) return;
    error_ = std::make_exception_ptr(CancelledError());
    complete(lock, kCancelled);
  }

  // Pool callbacks (apply_async's error_callback): run before the future is done, in
  // the thread that completes it. Set before the task is submitted.
  void set_error_hook(std::function<void(std::exception_ptr)> hook) {
    on_error_ = std::make_unique<std::function<void(std::exception_ptr)>>(std::move(hook));
    hooked_.store(true, std::memory_order_release);
  }

  // The stored exception once done (nullptr after success).
  std::exception_ptr error() const noexcept { return error_; }

  // Runs fn once the future is done: now, in this thread, if it is done already;
  // otherwise in the thread that completes it. Exceptions from fn are reported on
  // stderr and dropped (as Python logs them).
  void add_done_callback(std::function<void()> fn) {
    {
      std::lock_guard lock(mutex_);
      if (!done()) {
        listeners().callbacks.push_back(std::move(fn));
        hooked_.store(true, std::memory_order_release);
        return;
      }
    }
    run_callback(fn);
  }

  void add_waiter(const std::shared_ptr<CompletionWaiter>& waiter) {
    waiter->note_collector(collector_);
    {
      std::lock_guard lock(mutex_);
      if (!done()) {
        listeners().waiters.push_back(waiter);
        return;
      }
    }
    waiter->add(this);
  }
  void remove_waiter(const CompletionWaiter* waiter) {
    std::lock_guard lock(mutex_);
    if (listeners_)
      std::erase_if(listeners_->waiters, [&](const auto& w) { return w.get() == waiter; });
  }

 protected:
  // Call with the lock held and the outcome stored; releases the lock, wakes waiters,
  // runs callbacks.
  void complete(std::unique_lock<std::mutex>& lock, Status final_status) noexcept {
    status_.store(final_status, std::memory_order_release);
    std::unique_ptr<Listeners> listeners = std::move(listeners_);
    lock.unlock();
    notify(word_);
    if (collector_) collector_->poke();
    if (!listeners) return;
    for (auto& w : listeners->waiters)
      w->add(this);
    for (auto& fn : listeners->callbacks)
      run_callback(fn);
  }

  static void run_callback(const std::function<void()>& fn) noexcept {
    try {
      fn();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "mpx: exception in a future's done callback: %s\n", e.what());
    } catch (...) {
      std::fprintf(stderr, "mpx: unknown exception in a future's done callback\n");
    }
  }

  std::mutex mutex_;
  std::atomic<uint32_t> status_{kPending};
  WaitWord word_;
  std::exception_ptr error_;
  // Who hears of the completion; most futures have nobody, so they are allocated on
  // first use (a future is 100 bytes smaller: thousands are made per second).
  struct Listeners {
    std::vector<std::function<void()>> callbacks;
    std::vector<std::shared_ptr<CompletionWaiter>> waiters;
  };
  Listeners& listeners() {  // mutex_ held
    if (!listeners_) listeners_ = std::make_unique<Listeners>();
    return *listeners_;
  }
  std::unique_ptr<Listeners> listeners_;                               // under mutex_
  std::unique_ptr<std::function<void(std::exception_ptr)>> on_error_;  // set before submit
  std::shared_ptr<Collector> collector_;
  std::atomic<bool> hooked_{false};
};

template <class T>
class FutureState final : public FutureStateBase {
 public:
  using Stored = std::conditional_t<std::is_void_v<T>, std::monostate, T>;
  using Decoder = Stored (*)(std::span<const std::byte>);

  explicit FutureState(Decoder decoder = nullptr) : decoder_(decoder) {}

  template <class... V>
  void set_result(V&&... value) noexcept {
    if (on_value_) {
      if (done()) return;
      try {
        Stored v(std::forward<V>(value)...);
        run_callback([&] { (*on_value_)(v); });
        std::unique_lock lock(mutex_);
        if (done()) return;
        value_.emplace(std::move(v));
        complete(lock, kFinished);
      } catch (...) {
        set_exception(std::current_exception());
      }
      return;
    }
    std::unique_lock lock(mutex_);
    if (done()) return;
    try {
      value_.emplace(std::forward<V>(value)...);
    } catch (...) {
      error_ = std::current_exception();
    }
    complete(lock, kFinished);
  }

  // Pool callbacks (apply_async's callback): run with the value before the future is
  // done, in the thread that completes it. Set before the task is submitted.
  void set_value_hook(std::function<void(const Stored&)> hook) {
    on_value_ = std::make_unique<std::function<void(const Stored&)>>(std::move(hook));
    hooked_.store(true, std::memory_order_release);
  }

  void task_result(std::size_t, std::span<const std::byte> bytes) noexcept override {
    set_result_bytes(bytes);
  }
  void set_result_bytes(std::span<const std::byte> bytes) noexcept {
    if (!decoder_) {
      set_exception(std::make_exception_ptr(InvalidStateError("future has no decoder")));
      return;
    }
    try {
      set_result(decoder_(bytes));
    } catch (...) {
      set_exception(std::current_exception());
    }
  }

  // Only once done without error.
  const Stored& value() const noexcept { return *value_; }
  Stored& value() noexcept { return *value_; }

 private:
  Decoder decoder_;
  std::optional<Stored> value_;
  std::unique_ptr<std::function<void(const Stored&)>> on_value_;  // set before submit
};

}  // namespace mpx::detail
