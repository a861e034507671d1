// mpx/detail/pool_frontend.hpp — the one template behind Pool, ThreadPool and the
// executors: turns calls into engine Tasks. Not public API (see mpx/pool.hpp,
// mpx/futures.hpp).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <ranges>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "mpx/detail/pool_entry.hpp"
#include "mpx/detail/pool_future.hpp"
#include "mpx/detail/pool_map.hpp"
#include "mpx/detail/pool_task.hpp"
#include "mpx/errors.hpp"

namespace mpx {

template <class T>
class Future;

namespace detail {
// A pool's initializer: run once in each worker before its first task.
struct Initializer {
  std::function<void()> thread;  // thread pools
  Entry entry = nullptr;         // process pools (a portable callable)
  ByteVector args;
};
}  // namespace detail

// Options of Pool, ThreadPool and the executors.
struct PoolOptions {
  // Replace a worker process after it ran this many tasks (a map chunk counts as one);
  // 0: never. Process pools only.
  std::size_t maxtasksperchild = 0;
  // Per-task timeout (process pools only): a task running longer has its worker killed
  // and replaced, and fails with TimeoutError.
  std::optional<std::chrono::nanoseconds> timeout;
  detail::Initializer init;

  // Sets the initializer: fn(args...) runs once in each new worker. For a process pool
  // fn must be portable (see Pool) and args encodable; if it throws, the pool breaks
  // (tasks fail with BrokenPool) instead of restarting workers forever.
  template <class F, class... Args>
  PoolOptions& initializer(F fn, Args... args) {
    init.thread = [fn, args...]() mutable { std::invoke(fn, args...); };
    if constexpr (detail::PortableCallable<F>) {
      init.entry = &detail::init_entry<F, Args...>;
      init.args.clear();
      detail::encode_callable(fn, init.args);
      mpx::encode_append(std::tuple<Args...>(args...), init.args);
    } else {
      init.entry = nullptr;
    }
    return *this;
  }
};

namespace detail {

enum class WorkerKind { kProcess, kThread };

template <class F, class... Args>
using call_result_t = std::invoke_result_t<std::decay_t<F>&, std::decay_t<Args>&...>;

// A future's state, in the pool's state memory (Engine::state_memory()).
template <class R>
std::shared_ptr<FutureState<R>> make_future_state(std::pmr::memory_resource* memory) {
  typename FutureState<R>::Decoder decoder;
  if constexpr (std::is_void_v<R>) {
    decoder = +[](std::span<const std::byte>) { return std::monostate{}; };
  } else {
    decoder = &decode_result<R>;
  }
  return std::allocate_shared<FutureState<R>>(
      std::pmr::polymorphic_allocator<FutureState<R>>(memory), decoder);
}

template <WorkerKind K>
class BasicPool {
 public:
  static constexpr bool kProcesses = K == WorkerKind::kProcess;

  explicit BasicPool(std::size_t processes = 0, PoolOptions options = {})
      : engine_(make_options(processes, std::move(options))) {}

  // Python's with-block terminates; mpx's destructor finishes the submitted work
  // (close + join). Call terminate() first to drop it.
  ~BasicPool() {
    try {
      engine_.close();
      engine_.join();
    } catch (...) {
    }
  }
  BasicPool(const BasicPool&) = delete;
  BasicPool& operator=(const BasicPool&) = delete;

  template <class F, class... Args>
  auto apply(F&& fn, Args&&... args) {
    return apply_async(std::forward<F>(fn), std::forward<Args>(args)...).get();
  }

  template <class F, class... Args>
  Future<call_result_t<F, Args...>> apply_async(F&& fn, Args&&... args) {
    using R = call_result_t<F, Args...>;
    auto state = new_future<R>();
    engine_.submit(call_task<R>(state, std::forward<F>(fn), std::forward<Args>(args)...),
                   &spare_args());
    return Future<R>(state);
  }

  // Python's apply_async(func, args, callback, error_callback): exactly one of the
  // callbacks runs, in the pool's result thread (process pools) or the worker thread
  // (thread pools), before get() returns. They must not block on this pool.
  template <class F, class... Args, class Callback, class ErrorCallback = std::nullptr_t>
  Future<call_result_t<F, Args...>> apply_async(
      F&& fn, std::tuple<Args...> args, Callback callback,
      ErrorCallback error_callback =
          nullptr) requires(!std::is_void_v<call_result_t<F, Args...>> &&
                            std::is_invocable_v<Callback&, const call_result_t<F, Args...>&>) {
    using R = call_result_t<F, Args...>;
    auto state = new_future<R>();
    set_hooks(*state, std::move(callback), std::move(error_callback));
    engine_.submit(
        std::apply(
            [&](auto&&... a) { return call_task<R>(state, std::forward<F>(fn), std::move(a)...); },
            std::move(args)),
        &spare_args());
    return Future<R>(state);
  }
  // Python's apply_async(func, args, error_callback=...): no callback, only an
  // error_callback (pass nullptr as the callback). As above.
  template <class F, class... Args, class ErrorCallback>
  Future<call_result_t<F, Args...>> apply_async(F&& fn, std::tuple<Args...> args, std::nullptr_t,
                                                ErrorCallback error_callback) requires
      std::is_invocable_v<ErrorCallback&, std::exception_ptr> {
    using R = call_result_t<F, Args...>;
    auto state = new_future<R>();
    state->set_error_hook([error_callback](std::exception_ptr e) mutable { error_callback(e); });
    engine_.submit(
        std::apply(
            [&](auto&&... a) { return call_task<R>(state, std::forward<F>(fn), std::move(a)...); },
            std::move(args)),
        &spare_args());
    return Future<R>(state);
  }

  // Applies fn to every element, results in order. chunksize 0: Python's default,
  // ceil(n / (4 * workers)). Blocks.
  template <class F, std::ranges::input_range Range>
  auto map(F&& fn, Range&& range, std::size_t chunksize = 0) {
    using Item = std::ranges::range_value_t<Range>;
    auto f = map_impl<Item, false>(std::forward<F>(fn), std::forward<Range>(range), chunksize,
                                   nullptr, kBlocking);
    return take(f);
  }
  template <class F, std::ranges::input_range Range>
  auto map_async(F&& fn, Range&& range, std::size_t chunksize = 0) {
    using Item = std::ranges::range_value_t<Range>;
    return map_impl<Item, false>(std::forward<F>(fn), std::forward<Range>(range), chunksize);
  }
  template <class F, std::ranges::input_range Range, class Callback,
            class ErrorCallback = std::nullptr_t>
  auto map_async(F&& fn, Range&& range, std::size_t chunksize, Callback callback,
                 ErrorCallback error_callback = nullptr) {
    using Item = std::ranges::range_value_t<Range>;
    return map_impl<Item, false>(
        std::forward<F>(fn), std::forward<Range>(range), chunksize,
        [&](auto& state) { set_hooks(state, std::move(callback), std::move(error_callback)); });
  }

  // fn(args...) for each tuple of the range (Python's starmap).
  template <class F, std::ranges::input_range Range>
  auto starmap(F&& fn, Range&& range, std::size_t chunksize = 0) {
    using Item = std::ranges::range_value_t<Range>;
    auto f = map_impl<Item, true>(std::forward<F>(fn), std::forward<Range>(range), chunksize,
                                  nullptr, kBlocking);
    return take(f);
  }
  template <class F, std::ranges::input_range Range>
  auto starmap_async(F&& fn, Range&& range, std::size_t chunksize = 0) {
    using Item = std::ranges::range_value_t<Range>;
    return map_impl<Item, true>(std::forward<F>(fn), std::forward<Range>(range), chunksize);
  }
  template <class F, std::ranges::input_range Range, class Callback,
            class ErrorCallback = std::nullptr_t>
  auto starmap_async(F&& fn, Range&& range, std::size_t chunksize, Callback callback,
                     ErrorCallback error_callback = nullptr) {
    using Item = std::ranges::range_value_t<Range>;
    return map_impl<Item, true>(
        std::forward<F>(fn), std::forward<Range>(range), chunksize,
        [&](auto& state) { set_hooks(state, std::move(callback), std::move(error_callback)); });
  }

  // Lazy map: input is read as workers need it (an endless range works), results come
  // in order. Keep an lvalue range alive while iterating; an rvalue range is moved in.
  template <class F, std::ranges::input_range Range>
  auto imap(F&& fn, Range&& range, std::size_t chunksize = 1) {
    using Item = std::ranges::range_value_t<Range>;
    return imap_impl<Item, false>(std::forward<F>(fn), std::views::all(std::forward<Range>(range)),
                                  chunksize, true, Deadline::never());
  }
  // As imap, results in completion order.
  template <class F, std::ranges::input_range Range>
  auto imap_unordered(F&& fn, Range&& range, std::size_t chunksize = 1) {
    using Item = std::ranges::range_value_t<Range>;
    return imap_impl<Item, false>(std::forward<F>(fn), std::views::all(std::forward<Range>(range)),
                                  chunksize, false, Deadline::never());
  }

  // No more tasks; the workers exit once the queued ones are done.
  void close() { engine_.close(); }
  // Stops the workers now; unfinished tasks end as cancelled (get() throws
  // CancelledError). Returns promptly.
  void terminate() { engine_.terminate(); }
  // Waits for the workers to exit. Throws InvalidStateError before close()/terminate().
  void join() { engine_.join(); }

  std::size_t processes() const noexcept { return engine_.workers(); }
  // Pids of the live worker processes (empty for thread pools).
  std::vector<pid_t> pids() const { return engine_.pids(); }

  // Internal (executors).
  Engine& engine() noexcept { return engine_; }

  template <class Item, bool Star, class F, class View>
  auto imap_impl(F&& fn, View view, std::size_t chunksize, bool ordered, Deadline deadline) {
    using Fn = std::decay_t<F>;
    using R = chunk_result_t<Fn, Item, Star>;
    if constexpr (kProcesses) require_portable<Fn>();
    if (chunksize == 0) throw ValueError("chunksize must be at least 1");
    auto state = std::make_shared<MapState<R>>(std::nullopt);
    state->set_waker(engine_.waker());
    state->set_collector(engine_.collector());
    if constexpr (kProcesses) state->set_decoder(&decode_chunk<R>);
    auto make = [state, f = Fn(std::forward<F>(fn))](std::vector<Item> chunk, std::size_t index) {
      return chunk_task<R, Item, Star>(state, index, f, chunk);
    };
    // Chunks ahead of the consumer: a few per worker at any size; with small chunks
    // enough for 256 items per worker, so that the workers need not wait for the
    // consumer's every take (chunksize 1: 3 -> 1-1.4 us an item), as long as they hold
    // about kMapInFlightBytes at most.
    const std::size_t base = 4 * engine_.workers() + 4;
    engine_.submit(std::make_shared<RangeFeeder<R, Item, View, decltype(make)>>(
        state, std::move(view), chunksize, base,
        std::max(base, 256 * engine_.workers() / chunksize), kMapInFlightBytes, std::move(make)));
    return IMapIterator<R>(state, ordered, deadline);
  }

 private:
  template <class Fn, class Item, bool Star>
  struct chunk_result {
    using type = std::invoke_result_t<Fn&, Item&>;
  };
  template <class Fn, class Item>
  struct chunk_result<Fn, Item, true> {
    using type = decltype(std::apply(std::declval<Fn&>(), std::declval<Item&>()));
  };
  template <class Fn, class Item, bool Star>
  using chunk_result_t = typename chunk_result<Fn, Item, Star>::type;

  static EngineOptions make_options(std::size_t workers, PoolOptions options) {
    EngineOptions o;
    o.workers = workers;
    o.processes = kProcesses;
    o.maxtasksperchild = options.maxtasksperchild;
    o.timeout = options.timeout;
    if constexpr (kProcesses) {
      if (options.init.thread && !options.init.entry)
        throw ValueError("a process pool's initializer must be a portable callable");
      o.initializer = options.init.entry;
      o.initargs = std::move(options.init.args);
    } else {
      if (options.timeout) throw ValueError("a thread pool has no per-task timeout");
      o.thread_initializer = std::move(options.init.thread);
    }
    return o;
  }

  template <class R>
  auto new_future() {
    auto state = make_future_state<R>(engine_.state_memory());
    state->set_collector(engine_.collector());
    return state;
  }

  template <class R>
  static R take(Future<R>& f) {
    f.wait();
    if (auto e = f.state()->error()) std::rethrow_exception(e);
    return std::move(f.state()->value());
  }

  template <class R, class Callback, class ErrorCallback>
  static void set_hooks(FutureState<R>& state, Callback callback, ErrorCallback error_callback) {
    state.set_value_hook([callback](const R& v) mutable { callback(v); });
    if constexpr (!std::is_same_v<ErrorCallback, std::nullptr_t>)
      state.set_error_hook([error_callback](std::exception_ptr e) mutable { error_callback(e); });
  }

  // Process pools: a finished task's argument buffer, kept per thread for its next call
  // (Engine::submit hands one back): no allocation per apply_async/submit.
  static ByteVector& spare_args() {
    static thread_local ByteVector spare;
    return spare;
  }

  template <class R, class F, class... Args>
  Task call_task(const std::shared_ptr<FutureState<R>>& state, F&& fn, Args&&... args) {
    using Fn = std::decay_t<F>;
    if constexpr (kProcesses) {
      require_portable<Fn>();
      Task t = process_call_task(Fn(std::forward<F>(fn)),
                                 std::tuple<std::decay_t<Args>...>(std::forward<Args>(args)...),
                                 std::exchange(spare_args(), {}));
      t.sink = state;
      return t;
    } else {
      Task t;
      t.sink = state;
      t.run =
          bind_call([state, f = Fn(std::forward<F>(fn)),
                     a = std::tuple<std::decay_t<Args>...>(std::forward<Args>(args)...)]() mutable {
            try {
              if constexpr (std::is_void_v<R>) {
                std::apply(f, a);
                state->set_result();
              } else {
                state->set_result(std::apply(f, a));
              }
            } catch (...) {
              state->set_exception(std::current_exception());
            }
          });
      return t;
    }
  }

  // A task for one chunk: process pools encode `chunk`, thread pools move it out.
  template <class R, class Item, bool Star, class Fn>
  static Task chunk_task(const std::shared_ptr<MapState<R>>& state, std::size_t index, const Fn& fn,
                         std::vector<Item>& chunk, ByteVector buffer = {}) {
    if constexpr (kProcesses) {
      Task t = process_chunk_task<Fn, Item, Star>(fn, chunk, std::move(buffer));
      t.sink = state;
      t.tag = index;
      return t;
    } else {
      Task t;
      t.sink = state;
      t.tag = index;
      t.run = bind_call([state, index, fn, chunk = std::exchange(chunk, {})]() mutable {
        std::vector<R> results;
        try {
          results.reserve(chunk.size());
          for (auto& item : chunk) {
            if constexpr (Star) {
              results.push_back(std::apply(fn, item));
            } else {
              results.push_back(fn(item));
            }
          }
        } catch (...) {
          state->fail(index, std::current_exception());
          return;
        }
        try {
          state->complete(index, std::move(results));
        } catch (...) {
          state->fail(index, std::current_exception());
        }
      });
      return t;
    }
  }

  // map and starmap wait for the result anyway: they keep at most kMapInFlight chunks
  // (and, for process pools, about kMapInFlightBytes of encoded input) queued, collecting
  // results before they cut more, so that a long input (chunksize 1 over 100 000 items)
  // lives in a few hundred kilobytes that stay in cache instead of tens of megabytes of
  // tasks faulted in at once, and large items do not all sit in memory twice.
  // map_async must return at once: it queues everything.
  static constexpr bool kBlocking = true;
  static constexpr std::size_t kMapInFlight = 4096;
  static constexpr std::size_t kMapInFlightBytes = std::size_t{64} << 20;

  template <class Item, bool Star, class F, class Range, class Setup = std::nullptr_t>
  auto map_impl(F&& fn, Range&& range, std::size_t chunksize, Setup setup = nullptr,
                bool blocking = false) {
    using Fn = std::decay_t<F>;
    using R = chunk_result_t<Fn, Item, Star>;
    static_assert(!std::is_void_v<R>, "map: the function must return a value");
    if constexpr (kProcesses) require_portable<Fn>();
    Fn f(std::forward<F>(fn));
    if constexpr (std::ranges::sized_range<Range>) {
      std::size_t n = static_cast<std::size_t>(std::ranges::size(range));
      return map_chunks<Item, Star, R>(f, range, n, chunksize, setup, blocking, std::false_type{});
    } else {
      std::vector<Item> items;
      for (auto&& x : range)
        items.push_back(static_cast<Item>(x));
      return map_chunks<Item, Star, R>(f, items, items.size(), chunksize, setup, blocking,
                                       std::true_type{});
    }
  }

  // Cuts `source` (n elements; moved from with MoveOut) into chunks and submits them as
  // they are made, in batches, so that the workers start while the rest is encoded.
  template <class Item, bool Star, class R, class Fn, class Source, class Setup, class MoveOut>
  Future<std::vector<R>> map_chunks(const Fn& f, Source& source, std::size_t n,
                                    std::size_t chunksize, Setup& setup, bool blocking, MoveOut) {
    if (chunksize == 0) chunksize = auto_chunksize(n, engine_.workers());
    std::size_t chunks = (n + chunksize - 1) / chunksize;
    auto state = std::make_shared<MapState<R>>(chunks);
    state->set_collector(engine_.collector());
    if constexpr (kProcesses) state->set_decoder(&decode_chunk<R>);
    if constexpr (trivially_encodable_v<R>) state->gather_in_place(n, chunksize);
    auto future = std::make_shared<FutureState<std::vector<R>>>();
    future->set_collector(engine_.collector());
    if constexpr (!std::is_same_v<Setup, std::nullptr_t>) setup(*future);
    state->attach_future(future);
    if (chunks == 0) {
      future->set_result(std::vector<R>{});
      return Future<std::vector<R>>(future);
    }
    constexpr std::size_t kBatchTasks = 256;
    constexpr std::size_t kBatchBytes = std::size_t{1} << 16;
    std::vector<Task> batch;
    batch.reserve(std::min(chunks, kBatchTasks));
    std::size_t batch_bytes = 0;
    std::size_t encoded_bytes = 0;  // of all chunks so far
    std::size_t index = 0;
    std::vector<ByteVector> spares;  // finished tasks' buffers, from submit()
    auto spare = [&] {
      ByteVector b;
      if (!spares.empty()) {
        b = std::move(spares.back());
        spares.pop_back();
      }
      return b;
    };
    auto queue = [&](Task t) {
      batch.push_back(std::move(t));
      ++index;
      batch_bytes += batch.back().args.size();
      encoded_bytes += batch.back().args.size();
      if (batch.size() >= kBatchTasks || batch_bytes >= kBatchBytes) {
        engine_.submit(batch, &spares);
        batch_bytes = 0;
        if (blocking) {
          const std::size_t per_chunk = std::max<std::size_t>(1, encoded_bytes / index);
          const std::size_t limit = std::min(
              kMapInFlight, std::max(kMapInFlightBytes / per_chunk, 2 * engine_.workers()));
          // Past the bound, wait until half of it is done: the caller then collects (and,
          // stopping, hands the results to the supervisor, a wake-up) once per half bound,
          // not once per batch (chunksize 1: every 256 tasks).
          if (index > limit && !state->completed_at_least(index - limit))
            state->wait_completed(index - limit / 2);
        }
      }
    };
    if constexpr (kProcesses && !Star && trivially_encodable_v<Item>) {
      // Raw-byte items go straight into their chunk's message, with no vector between.
      Task t;
      std::byte* items = nullptr;
      std::size_t filled = 0, count = 0, left = n;
      for (auto&& x : source) {
        if (filled == 0) {
          count = std::min(chunksize, left);
          if (count == 0) throw ValueError("map: the range holds more elements than its size()");
          t = process_raw_chunk_task<Fn, Item>(f, count, items, spare());
        }
        const Item item = static_cast<Item>(x);
        std::memcpy(items + filled * sizeof(Item), static_cast<const void*>(&item), sizeof(Item));
        if (++filled == count) {
          left -= count;
          filled = 0;
          t.sink = state;
          t.tag = index;
          queue(std::move(t));
        }
      }
      if (left != 0) throw ValueError("map: the range holds fewer elements than its size()");
    } else {
      std::vector<Item> chunk;
      chunk.reserve(std::min(chunksize, n));
      for (auto&& x : source) {
        if constexpr (MoveOut::value) {
          chunk.push_back(std::move(x));
        } else {
          chunk.push_back(static_cast<Item>(x));
        }
        if (chunk.size() == chunksize) {
          queue(chunk_task<R, Item, Star>(state, index, f, chunk, spare()));
          chunk.clear();  // thread pools took it already
        }
      }
      if (!chunk.empty()) queue(chunk_task<R, Item, Star>(state, index, f, chunk));
    }
    if (!batch.empty()) engine_.submit(batch);
    return Future<std::vector<R>>(future);
  }

  Engine engine_;
};

}  // namespace detail
}  // namespace mpx
