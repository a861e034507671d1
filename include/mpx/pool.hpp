// mpx/pool.hpp — multiprocessing.Pool and multiprocessing.pool.ThreadPool for C++.
//
//   int square(int x) { return x * x; }
//   mpx::Pool pool(4);
//   std::vector<int> squares = pool.map(square, std::views::iota(0, 100));
//   auto r = pool.apply_async(square, 7);   // mpx::AsyncResult<int> (a Future<int>)
//   r.get();                                 // 49
//
// Pool runs tasks in worker processes forked from a zygote (a single-threaded process
// the pool forks when it is built, before it starts its own thread); every worker, and
// every replacement, is forked by the zygote. A worker that dies (signal, exit, OOM
// kill) fails exactly the task it was running with WorkerLost; its other queued tasks
// go to other workers and a new worker takes its place (workers that keep dying before
// they finish a task, or forks that fail, are retried after a delay doubling from 10 ms
// to 1 s; queued tasks fail with BrokenPool, naming the errno, only once no worker
// could exist for 5 s). Start methods (mpx/context.hpp): under fork (the default, or
// the program's set_start_method) the zygote is a fork of the caller; under spawn or
// forkserver (options.context, or ctx.Pool(n) as Python's) it is a new run of the
// program (spawned, or forked by the forkserver; mpx::init must be the first line of
// main, else the constructor throws InvalidStateError), which receives the pool's
// shared memory as memfds and forks the workers as under fork, so that tasks cost the
// same. Tasks and the initializer must then be code of a module the new run loads too
// (they are portable callables anyway), and the initializer's arguments travel through
// the codec or are mpx objects that reach such a child (a Queue, a ctx.Lock(): see
// mpx/context.hpp; under fork any mpx object, inherited). fork_map and fork_imap
// always fork. Each worker holds a short queue of tasks (a deep one while tasks take
// microseconds); once nothing else waits, an idle
// worker takes over a task queued behind another worker's running one, so that no task
// waits behind a long one while a worker idles. With options.timeout, a task
// running longer has its worker killed and fails with TimeoutError. A task's exception
// comes back: standard exception types (std::runtime_error, std::logic_error,
// std::invalid_argument, std::out_of_range, ...) and mpx's errors as the same type,
// others as RemoteError (type name, message, worker pid).
//
// What a process pool can run (checked at compile time): function pointers, captureless
// lambdas, empty function objects, and function objects with a serialize() method;
// arguments and results travel through mpx's codec. A capturing lambda does not
// compile: use mpx::fork_map, a ThreadPool, or pass the state as arguments or through
// the initializer. ThreadPool runs any callable on threads. Each misuse (that one, a
// type with no codec, arguments the function cannot take) stops the compilation with
// one message starting "mpx:" and little after it (mpx/detail/pool_checks.hpp).
// A function that returns nothing maps too: map returns nothing, map_async a
// Future<void>, imap yields std::monostate (Python's None) per item.
//
// Ending: the workers exist once the constructor returns (each runs the initializer,
// even if close() comes at once). After close() they leave once the queued tasks are
// done, as in Python: each flushes its stdout and stderr and exits (so what they print
// reaches a pipe or a file), also when replaced after maxtasksperchild tasks.
// terminate() SIGKILLs them; so does join() for one still there 10 s after the pool ran
// out of tasks.
//
// Differences from Python:
// - The destructor finishes the submitted work (close() + join()); Python's
//   `with Pool() as p:` terminates it. Call terminate() to drop pending work.
// - terminate() ends unfinished tasks as cancelled: their get() throws CancelledError
//   (Python's would block forever).
// - A failing initializer (one that throws, or kills three workers in a row) makes
//   the pool broken (tasks and submits fail with BrokenPool) instead of restarting
//   workers forever. Workers killed from outside never break it.
// - imap reads its input lazily, so an endless range works: it runs ahead of its
//   consumer by 4 chunks per worker + 4, or by up to 256 items per worker while that
//   stays within about 64 MiB of encoded input and results. An lvalue input must
//   outlive the iterator imap returns (as with std::views; an rvalue one is moved in);
//   leaving the loop early (break, exception, destroying or closing the iterator) stops
//   reading the input and cancels the items not yet handed to a worker (Python's pool
//   runs them all).
//
// Thread safety: all member functions may be called from any thread.
// Across fork: a pool belongs to the process that built it; do not use it in a child.
// OS resources: the zygote and worker processes, one shared mapping (rings of 2 MiB
// per worker, written once when the pool is built, so that no task waits on their
// page faults; memfds handed to the zygote under spawn and forkserver, which keeps them),
// one eventfd and one socket; all released by join() or the destructor,
// and by the kernel if the parent dies (the zygote then kills its workers and exits).
// Memory: the pool's futures (and its queue of pending tasks) live in memory of its own,
// 64 KiB and then 2 MiB transparent huge pages as bursts of submits need them, reused
// and kept until the pool and the last of its futures are gone.
#pragma once

#include <cstdint>
#include <memory>
#include <ranges>
#include <utility>

#include "mpx/context.hpp"
#include "mpx/futures.hpp"

namespace mpx {

// multiprocessing.Pool: worker processes. Pool(processes = cpu_count(), options).
using Pool = detail::BasicPool<detail::WorkerKind::kProcess>;
// multiprocessing.pool.ThreadPool: worker threads, any callable. No per-task timeout
// (a thread cannot be killed); maxtasksperchild is ignored.
using ThreadPool = detail::BasicPool<detail::WorkerKind::kThread>;

namespace detail {
// Context::Pool (mpx/context.hpp).
inline Pool make_context_pool(ContextTag ctx, std::size_t processes = 0, PoolOptions options = {}) {
  options.context = ctx.method;
  return Pool(processes, std::move(options));
}
// fork_map's workers see the caller's memory: a fork pool, whatever the program's start
// method.
inline PoolOptions fork_options() {
  PoolOptions options;
  options.context = StartMethod::fork;
  return options;
}

// Calls a callable through its address in the process the workers were forked from:
// the workers of fork_map are forks of the caller (through a zygote forked by the
// call), so the address, and whatever the callable refers to, is valid there.
template <class Fn>
struct ForkCall {
  uint64_t address = 0;
  template <class... A>
  auto operator()(A&&... a) const -> decltype(std::declval<Fn&>()(std::forward<A>(a)...)) {
    return (*reinterpret_cast<Fn*>(address))(std::forward<A>(a)...);
  }
  template <class Archive>
  void serialize(Archive& ar) {
    ar(address);
  }
};
template <class Fn>
ForkCall<Fn> fork_call(Fn& fn) {
  return ForkCall<Fn>{reinterpret_cast<uint64_t>(std::addressof(fn))};
}
}  // namespace detail

// Pool.map for any callable, capturing lambdas included: forks `processes` workers
// (0: cpu_count()) for this one call; they see the caller's memory as it is at the
// call (later changes in the caller are not seen). Elements and results still travel
// through the codec. Crash isolation as in Pool: a call that kills its worker fails
// the map with WorkerLost.
// Blocks until every result is in. Throws: the first failed call's exception.
// OS resources: a zygote and the workers, gone when it returns.
//
//   std::vector<double> weights = load();
//   auto scores = mpx::fork_map([&](int i) { return score(weights, i); }, ids);
template <class F, std::ranges::input_range Range>
auto fork_map(F&& fn, Range&& range, std::size_t processes = 0, std::size_t chunksize = 0) {
  Pool pool(processes, detail::fork_options());
  return pool.map(detail::fork_call(fn), std::forward<Range>(range), chunksize);
}

// The iterator fork_imap() returns; owns its workers: destroying it stops them.
template <class R>
class ForkIMap {
 public:
  ForkIMap(std::unique_ptr<Pool> pool, detail::IMapIterator<R> it)
      : pool_(std::move(pool)), it_(std::move(it)) {}
  ForkIMap(ForkIMap&&) noexcept = default;
  ~ForkIMap() {
    if (pool_) pool_->terminate();
  }
  // As IMapIterator::next.
  std::optional<R> next() { return it_.next(); }
  template <class Rep, class Period>
  std::optional<R> next(std::chrono::duration<Rep, Period> timeout) {
    return it_.next(timeout);
  }
  // As IMapIterator::close.
  void close() noexcept { it_.close(); }
  auto begin() { return it_.begin(); }
  auto end() { return it_.end(); }

 private:
  std::unique_ptr<Pool> pool_;
  detail::IMapIterator<R> it_;
};

// Pool.imap (ordered, lazy input) for any callable, as fork_map. The workers live as
// long as the returned iterator. An lvalue range must outlive the iterator (see
// IMapIterator); an rvalue one is moved in.
template <class F, std::ranges::input_range Range>
auto fork_imap(F&& fn, Range&& range, std::size_t processes = 0, std::size_t chunksize = 1) {
  auto pool = std::make_unique<Pool>(processes, detail::fork_options());
  auto it = pool->imap(detail::fork_call(fn), std::forward<Range>(range), chunksize);
  if constexpr (detail::rejected_v<decltype(it)>) {
    return it;
  } else {
    using R = typename decltype(it.begin())::value_type;
    return ForkIMap<R>(std::move(pool), std::move(it));
  }
}

}  // namespace mpx
