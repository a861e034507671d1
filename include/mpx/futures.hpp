// mpx/futures.hpp — concurrent.futures for C++: Future<T>, as_completed, wait, and the
// executors ThreadPoolExecutor / ProcessPoolExecutor.
//
//   mpx::ProcessPoolExecutor ex(4);
//   auto f = ex.submit(square, 7);
//   for (auto& done : mpx::as_completed(std::vector{f})) std::cout << done.result();
//
// A Future is a handle to a shared state: copies refer to the same result. All member
// functions are thread-safe. A Future is a parent-side object: do not pass it to
// another process.
#pragma once

#include <chrono>
#include <cstddef>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <ranges>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "mpx/detail/deadline.hpp"
#include "mpx/detail/pool_future.hpp"
#include "mpx/detail/pool_iterator.hpp"
#include "mpx/detail/pool_progress.hpp"
#include "mpx/errors.hpp"

namespace mpx {

// The result of an asynchronous call (concurrent.futures.Future, and also what
// multiprocessing's apply_async/map_async return: AsyncResult is the same type).
template <class T>
class Future {
 public:
  using value_type = T;

  Future() = default;
  explicit Future(std::shared_ptr<detail::FutureState<T>> state) : state_(std::move(state)) {}

  // False for a default-constructed Future.
  bool valid() const noexcept { return state_ != nullptr; }

  // The call's result. Blocks until the future is done.
  // Timeout: throws TimeoutError if not done in time.
  // Throws: the call's exception (WorkerLost, TimeoutError for a task over its pool's
  // timeout, RemoteError...), CancelledError if it was cancelled.
  T result() const { return result_until(detail::Deadline::never()); }
  template <class Rep, class Period>
  T result(std::chrono::duration<Rep, Period> timeout) const {
    return result_until(detail::Deadline::after(timeout));
  }

  // The call's exception, nullptr if it succeeded. Blocks like result().
  // Throws: TimeoutError on timeout, CancelledError if cancelled.
  std::exception_ptr exception() const { return exception_until(detail::Deadline::never()); }
  template <class Rep, class Period>
  std::exception_ptr exception(std::chrono::duration<Rep, Period> timeout) const {
    return exception_until(detail::Deadline::after(timeout));
  }

  bool done() const noexcept { return state_->done(); }
  bool running() const noexcept { return state_->status() == detail::FutureStateBase::kRunning; }
  bool cancelled() const noexcept {
    return state_->status() == detail::FutureStateBase::kCancelled;
  }
  // Cancels the call if it has not started; true if the future is (now) cancelled.
  bool cancel() const { return state_->cancel(); }

  // Calls fn(future) when the future is done (at once, in this thread, if it is done
  // already; otherwise in the thread that completes it: a pool's result thread or a
  // worker thread). fn must not block on other futures of the same pool.
  void add_done_callback(std::function<void(const Future&)> fn) const {
    state_->add_done_callback([fn = std::move(fn), self = *this] { fn(self); });
  }

  // --- AsyncResult (multiprocessing) names ---
  // get(): as result().
  T get() const { return result(); }
  template <class Rep, class Period>
  T get(std::chrono::duration<Rep, Period> timeout) const {
    return result(timeout);
  }
  // Blocks until done. The timed form returns whether it is done.
  void wait() const { state_->wait(detail::Deadline::never()); }
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout) const {
    return state_->wait(detail::Deadline::after(timeout));
  }
  bool ready() const noexcept { return done(); }
  // Whether the call completed without an exception. Throws ValueError if not ready.
  bool successful() const {
    if (!done()) throw ValueError("the result is not ready");
    return state_->error() == nullptr;
  }

  // Internal: the shared state.
  const std::shared_ptr<detail::FutureState<T>>& state() const noexcept { return state_; }
  // Identity: copies of a future are equal (they share one state), other futures are
  // not, whatever their results. With std::hash below, a Future is a key
  // (Python's {ex.submit(f, u): u}).
  friend bool operator==(const Future& a, const Future& b) noexcept { return a.state_ == b.state_; }

 private:
  T result_until(const detail::Deadline& deadline) const {
    if (!state_->wait(deadline)) throw TimeoutError("future did not complete in time");
    if (auto error = state_->error()) std::rethrow_exception(error);
    if constexpr (!std::is_void_v<T>) return state_->value();
  }
  std::exception_ptr exception_until(const detail::Deadline& deadline) const {
    if (!state_->wait(deadline)) throw TimeoutError("future did not complete in time");
    if (cancelled()) throw CancelledError();
    return state_->error();
  }

  std::shared_ptr<detail::FutureState<T>> state_;
};

// multiprocessing's name for the same thing.
template <class T>
using AsyncResult = Future<T>;

}  // namespace mpx

// A Future's hash is its shared state's identity (as operator==).
template <class T>
struct std::hash<mpx::Future<T>> {
  std::size_t operator()(const mpx::Future<T>& f) const noexcept {
    return std::hash<const void*>()(f.state().get());
  }
};

namespace mpx {

namespace detail {
template <class X>
struct is_future : std::false_type {};
template <class T>
struct is_future<Future<T>> : std::true_type {};
template <class R>
concept FutureRange =
    std::ranges::input_range<R> && is_future<std::ranges::range_value_t<R>>::value;

template <class R>
std::vector<std::ranges::range_value_t<R>> unique_futures(const R& futures) {
  std::vector<std::ranges::range_value_t<R>> out;
  std::unordered_set<const void*> seen;
  for (const auto& f : futures)
    if (seen.insert(f.state().get()).second) out.push_back(f);
  return out;
}
}  // namespace detail

// The iterable as_completed() returns: yields each distinct future once, as it
// completes (those already done first).
template <class T>
class AsCompleted {
 public:
  AsCompleted(std::vector<Future<T>> futures, detail::Deadline deadline)
      : futures_(std::move(futures)),
        deadline_(deadline),
        waiter_(std::make_shared<detail::CompletionWaiter>()) {
    for (const auto& f : futures_)
      by_state_.emplace(f.state().get(), f);
    for (const auto& f : futures_)
      f.state()->add_waiter(waiter_);
  }
  AsCompleted(const AsCompleted&) = delete;
  AsCompleted& operator=(const AsCompleted&) = delete;
  AsCompleted(AsCompleted&& other) noexcept
      : futures_(std::exchange(other.futures_, {})),
        by_state_(std::move(other.by_state_)),
        deadline_(other.deadline_),
        waiter_(std::move(other.waiter_)),
        yielded_(other.yielded_) {}
  ~AsCompleted() {
    for (const auto& f : futures_)
      f.state()->remove_waiter(waiter_.get());
  }

  // The next completed future, nullopt when all were yielded.
  // Blocks. Timeout: throws TimeoutError when the as_completed() timeout has passed
  // with futures still pending.
  std::optional<Future<T>> next() {
    if (yielded_ == futures_.size()) return std::nullopt;
    if (!waiter_->wait([&] { return waiter_->count() > yielded_; }, deadline_))
      throw TimeoutError(std::to_string(futures_.size() - yielded_) + " (of " +
                         std::to_string(futures_.size()) + ") futures unfinished");
    auto states = waiter_->since(yielded_);
    ++yielded_;
    return by_state_.at(states.front());
  }

  using iterator = detail::PullIterator<AsCompleted, const Future<T>&>;
  iterator begin() { return iterator(this); }
  std::default_sentinel_t end() { return {}; }

 private:
  std::vector<Future<T>> futures_;
  std::unordered_map<const void*, Future<T>> by_state_;
  detail::Deadline deadline_;
  std::shared_ptr<detail::CompletionWaiter> waiter_;
  std::size_t yielded_ = 0;
};

// Iterates over `futures` as they complete (concurrent.futures.as_completed).
// Duplicates are yielded once.
// Blocks: each step blocks until a future completes.
// Timeout: a step throws TimeoutError once `timeout` (counted from this call) passed.
template <detail::FutureRange R>
auto as_completed(const R& futures) {
  using F = std::ranges::range_value_t<R>;
  return AsCompleted<typename F::value_type>(detail::unique_futures(futures),
                                             detail::Deadline::never());
}
template <detail::FutureRange R, class Rep, class Period>
auto as_completed(const R& futures, std::chrono::duration<Rep, Period> timeout) {
  using F = std::ranges::range_value_t<R>;
  return AsCompleted<typename F::value_type>(detail::unique_futures(futures),
                                             detail::Deadline::after(timeout));
}

enum class ReturnWhen { FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED };
inline constexpr ReturnWhen FIRST_COMPLETED = ReturnWhen::FIRST_COMPLETED;
inline constexpr ReturnWhen FIRST_EXCEPTION = ReturnWhen::FIRST_EXCEPTION;
inline constexpr ReturnWhen ALL_COMPLETED = ReturnWhen::ALL_COMPLETED;

template <class T>
struct DoneAndNotDone {
  std::vector<Future<T>> done;
  std::vector<Future<T>> not_done;
};

namespace detail {
template <class T>
DoneAndNotDone<T> wait_futures(std::vector<Future<T>> futures, const Deadline& deadline,
                               ReturnWhen return_when) {
  auto waiter = std::make_shared<CompletionWaiter>();
  for (const auto& f : futures)
    f.state()->add_waiter(waiter);
  std::size_t seen = 0;
  bool failure = false;
  auto ready = [&] {
    std::size_t count = waiter->count();
    if (count == futures.size()) return true;
    if (return_when == ReturnWhen::FIRST_COMPLETED) return count > 0;
    if (return_when == ReturnWhen::FIRST_EXCEPTION && count > seen) {
      for (auto* s : waiter->since(seen))
        failure = failure || s->failed();
      seen = count;
      return failure;
    }
    return false;
  };
  waiter->wait(ready, deadline);
  for (const auto& f : futures)
    f.state()->remove_waiter(waiter.get());
  DoneAndNotDone<T> out;
  for (auto& f : futures)
    (f.done() ? out.done : out.not_done).push_back(std::move(f));
  return out;
}
}  // namespace detail

// Waits for futures (concurrent.futures.wait): until the first completes
// (FIRST_COMPLETED), the first fails with an exception or all complete
// (FIRST_EXCEPTION), or all complete (ALL_COMPLETED, the default).
// Blocks. Timeout: returns when it expires, with the pending ones in not_done.
// Duplicates are counted once.
template <detail::FutureRange R>
auto wait(const R& futures, ReturnWhen return_when = ALL_COMPLETED) {
  return detail::wait_futures(detail::unique_futures(futures), detail::Deadline::never(),
                              return_when);
}
template <detail::FutureRange R, class Rep, class Period>
auto wait(const R& futures, std::chrono::duration<Rep, Period> timeout,
          ReturnWhen return_when = ALL_COMPLETED) {
  return detail::wait_futures(detail::unique_futures(futures), detail::Deadline::after(timeout),
                              return_when);
}

}  // namespace mpx

// The executors share the pool engine (mpx/pool.hpp); it needs Future above.
#include "mpx/detail/pool_frontend.hpp"

namespace mpx {

// Options of Executor::map (Python's keyword arguments timeout= and chunksize=).
struct MapOptions {
  // Counted from the call to map(): a result not available by then makes the
  // iteration throw TimeoutError.
  std::optional<std::chrono::nanoseconds> timeout{};
  std::size_t chunksize = 1;
};

namespace detail {

template <class X>
struct is_map_options : std::is_same<std::decay_t<X>, MapOptions> {};

template <WorkerKind K>
class BasicExecutor {
 public:
  // max_workers 0: cpu_count().
  explicit BasicExecutor(std::size_t max_workers = 0, PoolOptions options = {})
      : pool_(typename BasicPool<K>::OnDemand{}, max_workers, std::move(options)) {}
  // Workers elsewhere (mpx/mpi.hpp); as BasicPool's.
  template <class Make>
  BasicExecutor(std::size_t max_workers, PoolOptions options, Make make)
      : pool_(max_workers, std::move(options), std::move(make)) {}
  // shutdown(wait=true).
  ~BasicExecutor() {
    try {
      shutdown(true);
    } catch (...) {
    }
  }
  BasicExecutor(const BasicExecutor&) = delete;
  BasicExecutor& operator=(const BasicExecutor&) = delete;

  // Schedules fn(args...). Throws InvalidStateError after shutdown(), BrokenPool when
  // the pool is broken (its initializer failed).
  template <class F, class... Args>
  auto submit(F&& fn, Args&&... args) {
    return pool_.apply_async(std::forward<F>(fn), std::forward<Args>(args)...);
  }

  // fn applied to the elements of the ranges taken in parallel (zip), results in
  // order; an optional last argument MapOptions{timeout, chunksize}. Input is read
  // lazily: lvalue ranges must outlive the returned iterator (rvalue ones are moved
  // into it). Iterating throws the first failed call's exception at its position.
  // When the timeout passes, or the iterator is closed or destroyed before its end, the
  // items not yet handed to a worker are cancelled, as Python cancels them (see
  // IMapIterator).
  template <class F, class... Xs>
  auto map(F&& fn, Xs&&... xs) {
    auto all = std::forward_as_tuple(std::forward<Xs>(xs)...);
    constexpr std::size_t n = sizeof...(Xs);
    if constexpr (n > 0 && is_map_options<std::tuple_element_t<n - 1, std::tuple<Xs...>>>::value) {
      MapOptions options = std::get<n - 1>(all);
      return [&]<std::size_t... I>(std::index_sequence<I...>) {
        return map_ranges(
            std::forward<F>(fn), options,
            std::forward<std::tuple_element_t<I, std::tuple<Xs...>>>(std::get<I>(all))...);
      }
      (std::make_index_sequence<n - 1>());
    } else {
      return map_ranges(std::forward<F>(fn), MapOptions{}, std::forward<Xs>(xs)...);
    }
  }

  // Frees the workers. wait: block until the pending futures are done and the
  // workers exited. cancel_futures: cancel the futures that have not started, Python's
  // rule: a task a worker already has runs. A process executor hands each worker up to
  // two tasks (many while tasks take microseconds) as they are submitted, from its
  // first submit on (its workers exist once it is built), so a fresh executor cancels
  // what a warm one would; a thread executor's threads take one task each.
  // Later submit() calls throw InvalidStateError. Calling it twice is harmless.
  void shutdown(bool wait = true, bool cancel_futures = false) {
    if (cancel_futures) pool_.engine().cancel_pending();
    pool_.close();
    if (wait && !joined_) {
      pool_.join();
      joined_ = true;
    }
  }

  std::vector<pid_t> pids() const { return pool_.pids(); }

 private:
  template <class F, class R1>
  auto map_ranges(F&& fn, const MapOptions& options, R1&& range) {
    using Item = std::ranges::range_value_t<R1>;
    return pool_.template imap_impl<Item, false>(
        std::forward<F>(fn), std::views::all(std::forward<R1>(range)), options.chunksize, true,
        Deadline::after(options.timeout));
  }
  template <class F, class... Rs>
  requires(sizeof...(Rs) > 1) auto map_ranges(F&& fn, const MapOptions& options, Rs&&... ranges) {
    auto deadline = Deadline::after(options.timeout);
    {
      using Item = std::tuple<std::ranges::range_value_t<Rs>...>;
      return pool_.template imap_impl<Item, true>(
          std::forward<F>(fn), ZipView(std::views::all(std::forward<Rs>(ranges))...),
          options.chunksize, true, deadline);
    }
  }

  BasicPool<K> pool_;
  bool joined_ = false;
};

}  // namespace detail

// concurrent.futures.ThreadPoolExecutor: any callable; workers are threads, started as
// in Python: on demand, a new one only when no idle thread can take a task, up to
// max_workers (a map starts them all). A failing initializer prints "Exception in
// initializer:" and the error on stderr, and breaks the executor (BrokenPool).
//
//   mpx::ThreadPoolExecutor ex(8);
//   auto f = ex.submit([&](int x) { return fetch(x); }, 3);
//   f.result();
using ThreadPoolExecutor = detail::BasicExecutor<detail::WorkerKind::kThread>;

// concurrent.futures.ProcessPoolExecutor: portable callables (see mpx::Pool); workers
// are processes forked from the executor's zygote, made by the start method of
// options.context (Python's mp_context=; ProcessPoolExecutor(4, {.context = ctx}); see
// Pool in mpx/pool.hpp). A crashing task fails alone with
// WorkerLost: unlike Python's, the executor never becomes broken by a crash. Its
// workers are all started when it is built (Python's start on demand). A failing
// initializer prints "Exception in initializer:" and the error on the worker's stderr.
//
//   mpx::ProcessPoolExecutor ex(4);
//   for (int r : ex.map(square, std::vector{1, 2, 3})) use(r);
using ProcessPoolExecutor = detail::BasicExecutor<detail::WorkerKind::kProcess>;

}  // namespace mpx
