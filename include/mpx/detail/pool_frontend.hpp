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
#include <variant>
#include <vector>

#include "mpx/detail/pool_checks.hpp"
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
  std::shared_ptr<InitObjects> objects;  // process pools, arguments with mpx objects
};
// Python's keyword arguments callback= and error_callback= (mpx::callback(),
// mpx::error_callback()).
template <class F>
struct CallbackArg {
  F fn;
};
template <class F>
struct ErrorCallbackArg {
  F fn;
};
}  // namespace detail

// Python's callback= and error_callback= of apply_async, as its last argument(s):
//
//   pool.apply_async(f, 1, 2, mpx::callback([](int r) { ... }),
//                    mpx::error_callback([](std::exception_ptr e) { ... }));
//
// callback(result) (callback() for a function that returns nothing) or
// error_callback(exception_ptr): exactly one runs, before get() returns, in the pool's
// result thread (process pools) or the worker thread (thread pools). They must not block
// on this pool.
template <class F>
detail::CallbackArg<std::decay_t<F>> callback(F&& fn) {
  return {std::forward<F>(fn)};
}
template <class F>
detail::ErrorCallbackArg<std::decay_t<F>> error_callback(F&& fn) {
  return {std::forward<F>(fn)};
}

// Options of Pool, ThreadPool and the executors.
struct PoolOptions {
  // Replace a worker process after it ran this many tasks (a map chunk counts as one);
  // 0: never. Process pools only.
  std::size_t maxtasksperchild = 0;
  // Per-task timeout (process pools only): a task running longer has its worker killed
  // and replaced, and fails with TimeoutError.
  std::optional<std::chrono::nanoseconds> timeout{};
  detail::Initializer init{};
  // Process pools: the start method of the workers (Python's ctx.Pool() and
  // ProcessPoolExecutor(mp_context=ctx); a Context converts to one). Empty: the
  // program's (set_start_method; fork when none was set). See mpx/pool.hpp.
  std::optional<StartMethod> context{};

  // Sets the initializer: fn(args...) runs once in each new worker. For a process pool
  // fn must be portable (see Pool) and args encodable, or mpx objects (a Queue,
  // SharedMemory, ...: under fork any, inherited; under spawn and forkserver those that
  // can reach such a child, see mpx/context.hpp, else the pool's constructor throws
  // ValueError); if it throws, the pool breaks (tasks fail with BrokenPool) instead of
  // restarting workers forever.
  template <class F, class... Args>
  PoolOptions& initializer(F fn, Args... args) {
    static_assert(std::is_invocable_v<F&, Args&...>,
                  "mpx: the initializer cannot be called with these arguments: "
                  "initializer(f, a, b) calls f(a, b) in each new worker.");
    if constexpr (std::is_invocable_v<F&, Args&...>) {
      init.thread = [fn, args...]() mutable { std::invoke(fn, args...); };
      init.objects.reset();
      init.args.clear();
      if constexpr (detail::PortableCallable<F> && !(detail::encodable_v<Args> && ...) &&
                    (detail::Sendable<Args> && ...)) {
        init.entry = nullptr;
        auto objects = std::make_shared<detail::InitObjects>();
        objects->entry = &detail::init_objects_entry<F, Args...>;
        detail::encode_callable(fn, objects->args);
        try {
          (detail::encode_arg(args, objects->args, objects->fds), ...);
        } catch (const std::exception& e) {  // fine under fork: said at the pool's start
          objects->error = e.what();
        }
        init.objects = std::move(objects);
      } else if constexpr (detail::PortableCallable<F>) {
        init.entry = &detail::init_entry<F, Args...>;
        detail::encode_callable(fn, init.args);
        mpx::encode_append(std::tuple<Args...>(args...), init.args);
      } else {
        init.entry = nullptr;
      }
    }
    return *this;
  }
};

namespace detail {

enum class WorkerKind { kProcess, kThread };

template <class F, class... Args>
using call_result_t = std::invoke_result_t<std::decay_t<F>&, std::decay_t<Args>&...>;

template <class T, template <class> class Arg>
inline constexpr bool is_arg_v = false;
template <class F, template <class> class Arg>
inline constexpr bool is_arg_v<Arg<F>, Arg> = true;
template <class T>
inline constexpr bool is_callback_arg_v = is_arg_v<T, CallbackArg> || is_arg_v<T, ErrorCallbackArg>;
// How many of the last (at most two) arguments are mpx::callback()/error_callback().
template <class... Args>
constexpr std::size_t trailing_callbacks() {
  constexpr bool flags[] = {false, is_callback_arg_v<Args>...};
  constexpr std::size_t n = sizeof...(Args);
  if constexpr (n >= 2) {
    if (flags[n] && flags[n - 1]) return 2;
  }
  return n >= 1 && flags[n] ? 1 : 0;
}
// The function of the Arg (CallbackArg or ErrorCallbackArg) among mpx::callback() and
// error_callback() arguments, or nullptr.
template <template <class> class Arg>
std::nullptr_t hook_in() {
  return nullptr;
}
template <template <class> class Arg, class First, class... More>
auto hook_in(First& first, More&... more) {
  if constexpr (is_arg_v<First, Arg>) {
    return std::move(first.fn);
  } else {
    return hook_in<Arg>(more...);
  }
}

// A pool callback fits a future of R: callback(const R&) (callback() or
// callback(std::monostate) for void), error_callback(std::exception_ptr); nullptr: none.
template <class C, class R>
constexpr bool result_hook_fits() {
  if constexpr (std::is_null_pointer_v<C>) {
    return true;
  } else if constexpr (std::is_void_v<R>) {
    return std::is_invocable_v<C&> || std::is_invocable_v<C&, const std::monostate&>;
  } else {
    return std::is_invocable_v<C&, const R&>;
  }
}
template <class E>
constexpr bool error_hook_fits() {
  return std::is_null_pointer_v<E> || std::is_invocable_v<E&, std::exception_ptr>;
}
template <class C, class E, class R>
constexpr bool check_hooks() {
  static_assert(result_hook_fits<C, R>(),
                "mpx: the callback must take the result: callback(const R&), or callback() "
                "for a function that returns nothing (map_async: the vector of results).");
  static_assert(error_hook_fits<E>(), "mpx: the error callback must take a std::exception_ptr.");
  return result_hook_fits<C, R>() && error_hook_fits<E>();
}

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

// Every call checks what it is given first (mpx/detail/pool_checks.hpp): a misuse is one
// static_assert, after which the call returns CallRejected and instantiates nothing more.
template <WorkerKind K>
class BasicPool {
 public:
  static constexpr bool kProcesses = K == WorkerKind::kProcess;

  explicit BasicPool(std::size_t processes = 0, PoolOptions options = {})
      : engine_(make_options(processes, std::move(options))) {}
  // The executors: thread workers start as tasks come (EngineOptions::on_demand).
  struct OnDemand {};
  BasicPool(OnDemand, std::size_t processes, PoolOptions options)
      : engine_(on_demand(make_options(processes, std::move(options)))) {}
  // Workers elsewhere (mpx/mpi.hpp): make(EngineOptions) returns the engine's Impl.
  template <class Make>
  BasicPool(std::size_t processes, PoolOptions options, Make make)
      : engine_(make(make_options(processes, std::move(options)))) {}

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

  // fn(args...) in a worker; blocks for the result (Python's apply).
  template <class F, class... Args>
  auto apply(F&& fn, Args&&... args) {
    return take(apply_async(std::forward<F>(fn), std::forward<Args>(args)...));
  }

  // fn(args...) in a worker; returns its Future<R> (AsyncResult). The last argument(s)
  // may be mpx::callback(cb) and mpx::error_callback(ecb), Python's keyword arguments:
  // exactly one of them runs, in the pool's result thread (process pools) or the worker
  // thread (thread pools), before get() returns. They must not block on this pool.
  template <class F, class... Args>
  auto apply_async(F&& fn, Args&&... args) {
    constexpr std::size_t kw = trailing_callbacks<std::decay_t<Args>...>();
    if constexpr (kw == 0) {
      return submit_call(std::forward<F>(fn), nullptr, nullptr, std::forward<Args>(args)...);
    } else {
      auto all = std::forward_as_tuple(std::forward<Args>(args)...);
      constexpr std::size_t n = sizeof...(Args) - kw;
      static_assert((is_arg_v<std::decay_t<Args>, CallbackArg> + ...) <= 1 &&
                        (is_arg_v<std::decay_t<Args>, ErrorCallbackArg> + ...) <= 1,
                    "mpx: apply_async takes one mpx::callback() and one mpx::error_callback()");
      return [&]<std::size_t... I, std::size_t... J>(std::index_sequence<I...>,
                                                     std::index_sequence<J...>) {
        return submit_call(
            std::forward<F>(fn), hook_in<CallbackArg>(std::get<n + J>(all)...),
            hook_in<ErrorCallbackArg>(std::get<n + J>(all)...),
            std::forward<std::tuple_element_t<I, std::tuple<Args...>>>(std::get<I>(all))...);
      }
      (std::make_index_sequence<n>(), std::make_index_sequence<kw>());
    }
  }
  // Python's apply_async(func, args, callback, error_callback) with the arguments as a
  // tuple: apply_async(f, std::tuple{1, 2}, cb), or apply_async(f, std::tuple{1}, nullptr,
  // ecb) for an error callback alone. As above.
  template <class F, class... Args, class Callback, class ErrorCallback = std::nullptr_t>
  requires(
      !is_callback_arg_v<Callback> && std::is_invocable_v<std::decay_t<F>&, Args&...> &&
      result_hook_fits<Callback, call_result_t<F, Args...>>() &&
      error_hook_fits<ErrorCallback>()) auto apply_async(F&& fn, std::tuple<Args...> args,
                                                         Callback callback,
                                                         ErrorCallback error_callback = nullptr) {
    return std::apply(
        [&](auto&&... a) {
          return submit_call(std::forward<F>(fn), std::move(callback), std::move(error_callback),
                             std::move(a)...);
        },
        std::move(args));
  }

  // Applies fn to every element, results in order: a std::vector<R>, or nothing for a
  // function that returns nothing (Python's list of None). chunksize 0: Python's
  // default, ceil(n / (4 * workers)). Blocks. Throws: the first failed call's exception.
  template <class F, std::ranges::input_range Range>
  auto map(F&& fn, Range&& range, std::size_t chunksize = 0) {
    using Item = std::ranges::range_value_t<Range>;
    return take(map_impl<Item, false>(std::forward<F>(fn), std::forward<Range>(range), chunksize,
                                      nullptr, kBlocking));
  }
  // As map, without blocking: a Future<std::vector<R>> (Future<void> for a function that
  // returns nothing). With callbacks (Python's callback=, error_callback=): as
  // apply_async's, the callback taking the vector of results.
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

  // fn(args...) for each tuple of the range (Python's starmap); as map.
  template <class F, std::ranges::input_range Range>
  auto starmap(F&& fn, Range&& range, std::size_t chunksize = 0) {
    using Item = std::ranges::range_value_t<Range>;
    return take(map_impl<Item, true>(std::forward<F>(fn), std::forward<Range>(range), chunksize,
                                     nullptr, kBlocking));
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
  // in order (an IMapIterator<R>; of std::monostate, Python's None, for a function that
  // returns nothing). An lvalue range must outlive the returned iterator; an rvalue
  // range is moved into it. Leaving the iteration early (break, exception, close(),
  // destroying the iterator) stops reading the input and cancels the items not yet
  // handed to a worker (see IMapIterator).
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
    if constexpr (!check_map<kProcesses, Fn, Item, Star>()) {
      return CallRejected{};
    } else {
      using V = map_value_t<item_result_t<Fn, Item, Star>>;
      if (chunksize == 0) throw ValueError("chunksize must be at least 1");
      auto state = std::make_shared<MapState<V>>(std::nullopt);
      state->set_waker(engine_.waker());
      state->set_collector(engine_.collector());
      if constexpr (kProcesses) state->set_decoder(&decode_chunk<V>);
      auto make = [state, f = Fn(std::forward<F>(fn))](std::vector<Item> chunk, std::size_t index) {
        return chunk_task<V, Item, Star>(state, index, f, chunk);
      };
      // Chunks ahead of the consumer: a few per worker at any size; with small chunks
      // enough for 256 items per worker, so that the workers need not wait for the
      // consumer's every take (chunksize 1: 3 -> 1-1.4 us an item), as long as they hold
      // about kMapInFlightBytes at most.
      const std::size_t base = 4 * engine_.workers() + 4;
      engine_.submit(std::make_shared<RangeFeeder<V, Item, View, decltype(make)>>(
          state, std::move(view), chunksize, base,
          std::max(base, 256 * engine_.workers() / chunksize), kMapInFlightBytes, std::move(make)));
      return IMapIterator<V>(state, ordered, deadline);
    }
  }

 private:
  static EngineOptions on_demand(EngineOptions o) {
    o.on_demand = true;
    return o;
  }
  static EngineOptions make_options(std::size_t workers, PoolOptions options) {
    EngineOptions o;
    o.workers = workers;
    o.processes = kProcesses;
    o.maxtasksperchild = options.maxtasksperchild;
    o.timeout = options.timeout;
    o.start_method = options.context;
    if constexpr (kProcesses) {
      if (options.init.thread && !options.init.entry && !options.init.objects)
        throw ValueError("a process pool's initializer must be a portable callable");
      o.initializer = options.init.entry;
      o.initargs = std::move(options.init.args);
      if (options.init.objects) {
        o.init_objects = std::move(options.init.objects);
        o.thread_initializer = std::move(options.init.thread);
      }
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

  // A blocking call's result (void for a Future<void>); a rejected call passes through.
  template <class R>
  static R take(Future<R> f) {
    f.wait();
    if (auto e = f.state()->error()) std::rethrow_exception(e);
    if constexpr (!std::is_void_v<R>) return std::move(f.state()->value());
  }
  static CallRejected take(CallRejected r) { return r; }

  // Python's callback and error_callback, on the future (nullptr: none). Checked first.
  template <class R, class Callback, class ErrorCallback>
  static void set_hooks(FutureState<R>& state, Callback callback, ErrorCallback error_callback) {
    if constexpr (check_hooks<Callback, ErrorCallback, R>()) {
      using Stored = typename FutureState<R>::Stored;
      if constexpr (!std::is_null_pointer_v<Callback>) {
        state.set_value_hook([callback](const Stored& v) mutable {
          if constexpr (std::is_void_v<R> && std::is_invocable_v<Callback&>) {
            (void)v;
            callback();
          } else {
            callback(v);
          }
        });
      }
      if constexpr (!std::is_null_pointer_v<ErrorCallback>)
        state.set_error_hook([error_callback](std::exception_ptr e) mutable { error_callback(e); });
    }
  }

  // apply_async and submit, once the callbacks are known.
  template <class F, class Callback, class ErrorCallback, class... Args>
  auto submit_call(F&& fn, Callback callback, ErrorCallback error_callback, Args&&... args) {
    if constexpr (!check_call<kProcesses, std::decay_t<F>, std::decay_t<Args>...>()) {
      return CallRejected{};
    } else {
      using R = call_result_t<F, Args...>;
      auto state = new_future<R>();
      set_hooks(*state, std::move(callback), std::move(error_callback));
      engine_.submit(call_task<R>(state, std::forward<F>(fn), std::forward<Args>(args)...),
                     &spare_args());
      return Future<R>(state);
    }
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

  // A task for one chunk: process pools encode `chunk`, thread pools move it out. R: the
  // map's value per item (map_value_t); State: its MapState.
  template <class R, class Item, bool Star, class Fn, class State>
  static Task chunk_task(const std::shared_ptr<State>& state, std::size_t index, const Fn& fn,
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
          for (auto& item : chunk)
            results.push_back(call_item<Star>(fn, item));
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
    if constexpr (!check_map<kProcesses, Fn, Item, Star>()) {
      return CallRejected{};
    } else {
      using V = map_value_t<item_result_t<Fn, Item, Star>>;
      // map_async's future: all results, or nothing for a function that returns nothing.
      using Whole =
          std::conditional_t<std::is_void_v<item_result_t<Fn, Item, Star>>, void, std::vector<V>>;
      Fn f(std::forward<F>(fn));
      if constexpr (std::ranges::sized_range<Range>) {
        std::size_t n = static_cast<std::size_t>(std::ranges::size(range));
        return map_chunks<Item, Star, V, Whole>(f, range, n, chunksize, setup, blocking,
                                                std::false_type{});
      } else {
        std::vector<Item> items;
        for (auto&& x : range)
          items.push_back(static_cast<Item>(x));
        return map_chunks<Item, Star, V, Whole>(f, items, items.size(), chunksize, setup, blocking,
                                                std::true_type{});
      }
    }
  }

  // Cuts `source` (n elements; moved from with MoveOut) into chunks and submits them as
  // they are made, in batches, so that the workers start while the rest is encoded.
  template <class Item, bool Star, class R, class Whole, class Fn, class Source, class Setup,
            class MoveOut>
  Future<Whole> map_chunks(const Fn& f, Source& source, std::size_t n, std::size_t chunksize,
                           Setup& setup, bool blocking, MoveOut) {
    if (chunksize == 0) chunksize = auto_chunksize(n, engine_.workers());
    std::size_t chunks = (n + chunksize - 1) / chunksize;
    auto state = std::make_shared<MapState<R, Whole>>(chunks);
    state->set_collector(engine_.collector());
    if constexpr (kProcesses) state->set_decoder(&decode_chunk<R>);
    if constexpr (trivially_encodable_v<R> && !std::is_void_v<Whole>)
      state->gather_in_place(n, chunksize);
    auto future = std::make_shared<FutureState<Whole>>();
    future->set_collector(engine_.collector());
    if constexpr (!std::is_same_v<Setup, std::nullptr_t>) setup(*future);
    state->attach_future(future);
    if (chunks == 0) {
      if constexpr (std::is_void_v<Whole>) {
        future->set_result();
      } else {
        future->set_result(Whole{});
      }
      return Future<Whole>(future);
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
    auto bound = [&] {
      if (!blocking) return;
      const std::size_t per_chunk = std::max<std::size_t>(1, encoded_bytes / index);
      const std::size_t limit =
          std::min(kMapInFlight, std::max(kMapInFlightBytes / per_chunk, 2 * engine_.workers()));
      // Past the bound, wait until half of it is done: the caller then collects (and,
      // stopping, hands the results to the supervisor, a wake-up) once per half bound,
      // not once per batch (chunksize 1: every 256 tasks).
      if (index > limit && !state->completed_at_least(index - limit))
        state->wait_completed(index - limit / 2);
    };
    auto queue = [&](Task t) {
      batch.push_back(std::move(t));
      ++index;
      batch_bytes += batch.back().args.size();
      encoded_bytes += batch.back().args.size();
      if (batch.size() >= kBatchTasks || batch_bytes >= kBatchBytes) {
        engine_.submit(batch, &spares);
        batch_bytes = 0;
        bound();
      }
    };
    if constexpr (kProcesses && !Star && trivially_encodable_v<Item>) {
      // Raw-byte items go straight into their chunk's message, with no vector between,
      // a chunk at a time (one loop per chunk, which the compiler can vectorize).
      auto it = std::ranges::begin(source);
      const auto end = std::ranges::end(source);
      std::size_t waited = 0;  // write_chunk()
      for (std::size_t left = n; left != 0;) {
        const std::size_t count = std::min(chunksize, left);
        if (batch.empty() && count * sizeof(Item) >= kWrittenChunkBytes &&
            write_chunk<Fn, Item, plain_items_v<Source, Item>>(
                engine_, f, it, end, count, state, index, blocking ? &waited : nullptr)) {
          left -= count;
          ++index;
          encoded_bytes += count * sizeof(Item);
          bound();
          continue;
        }
        std::byte* items = nullptr;
        Task t = process_raw_chunk_task<Fn, Item>(f, count, items, spare());
        if (!copy_raw_items<Item>(it, end, count, items))
          throw ValueError("map: the range holds fewer elements than its size()");
        left -= count;
        t.sink = state;
        t.tag = index;
        queue(std::move(t));
      }
      if (it != end) throw ValueError("map: the range holds more elements than its size()");
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
    return Future<Whole>(future);
  }

  Engine engine_;
};

}  // namespace detail
}  // namespace mpx
