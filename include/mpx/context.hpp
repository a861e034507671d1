// mpx/context.hpp — start methods and contexts (Python's multiprocessing.context):
// mpx::init, get_context, set_start_method, get_start_method, get_all_start_methods,
// set_executable, set_forkserver_preload.
//
//   int main(int argc, char** argv) {
//     mpx::init(argc, argv);  // first line: a spawned child runs its target here
//     auto ctx = mpx::get_context("spawn");
//     mpx::Process p = ctx.Process(work, 42);  // work: a function, args with a codec
//     p.start();
//     p.join();
//   }
//
// fork, spawn and forkserver are described in mpx/process.hpp. A program that uses spawn
// or forkserver (through a Context, ProcessOptions::context or set_start_method) calls
// mpx::init(argc, argv) first in main (Python's `if __name__ == "__main__":` guard);
// a start without it throws InvalidStateError saying so, so that a child never runs the
// parent's main. The forkserver is spawned by the first forkserver start of a process
// (from that moment's state of the program: its threads do not matter, it is a fresh
// run of it) and lives until that process exits; it is single-threaded and forks each
// child on request. A process forked from its starter starts its own.
//
// mpx objects among a spawn or forkserver target's arguments (or a spawn or forkserver
// pool's initializer arguments, mpx/pool.hpp): a Queue, JoinableQueue,
// SimpleQueue or SharedMemory arrives working in the child (its memfd or shared memory
// object travels by SCM_RIGHTS; the child's handle shares the parent's). So do a Lock,
// RLock, Semaphore, BoundedSemaphore, Event, Condition, Barrier, Value, Array, RawValue,
// RawArray or Pipe end (a Connection, moved in) made by a spawn or forkserver Context
// (ctx.Lock(), ctx.Value<int>(0), ctx.Pipe()), as in Python, or by their constructors
// (and mpx::Pipe()) while the program's start method is spawn or forkserver
// (set_start_method, as Python's module-level objects); made by their constructors
// under fork they live in an anonymous mapping that only fork passes on, and start()
// throws ValueError saying so. A handed-off Pipe end behaves as under fork: the
// parent drops its copy at start(), and the other end sees EOF when the child dies. A
// Barrier with an action cannot travel (the action is this process's): ValueError. A
// Listener/Client connection cannot travel in this release: ValueError.
//
// Thread safety: all functions may be called from any thread.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mpx/connection.hpp"
#include "mpx/detail/handoff.hpp"
#include "mpx/process.hpp"
#include "mpx/queues.hpp"
#include "mpx/sharedctypes.hpp"
#include "mpx/synchronize.hpp"

namespace mpx {

namespace detail {
// Context::Pool's argument to make_context_pool (mpx/pool.hpp), found by ADL.
struct ContextTag {
  StartMethod method;
};
}  // namespace detail

// The first line of main in a program that uses spawn or forkserver. In the parent it
// returns at once. In a child spawned by mpx (its argv carries mpx's marker) it runs
// the child's target, or the forkserver's loop, and never returns: the process exits
// with the target's exit code (as Process::exitcode() describes).
void init(int argc, char** argv);

// "fork", "spawn" or "forkserver".
std::string_view start_method_name(StartMethod method);

// A start method with the module's factories (Python's context objects). Converts to a
// StartMethod, so it may be given as ProcessOptions::context.
class Context {
 public:
  explicit Context(StartMethod method) noexcept : method_(method) {}
  StartMethod method() const noexcept { return method_; }
  operator StartMethod() const noexcept { return method_; }  // NOLINT: as Python's ctx
  std::string get_start_method() const { return std::string(start_method_name(method_)); }

  // Process(target, args...), Process(options, target, args...): a Process with this
  // start method. The target must be portable and its arguments encodable, checked at
  // compile time (they may have to reach a child that is not a fork).
  template <class F, class... Args>
  requires(!std::same_as<std::decay_t<F>, ProcessOptions>) mpx::Process
      Process(F&& target, Args&&... args)
  const { return Process(ProcessOptions{}, std::forward<F>(target), std::forward<Args>(args)...); }
  template <class F, class... Args>
  mpx::Process Process(ProcessOptions options, F&& target, Args&&... args) const {
    detail::require_spawnable<std::decay_t<F>, std::decay_t<Args>...>();
    options.context = method_;
    return mpx::Process(std::move(options), std::forward<F>(target), std::forward<Args>(args)...);
  }

  // Pool(processes = 0, options = {}): a process pool whose workers this start method
  // makes (Python's ctx.Pool()); needs mpx/pool.hpp. Executors take a Context through
  // their options: ProcessPoolExecutor(n, {.context = ctx}) (Python's mp_context=ctx).
  template <class... A>
  auto Pool(A&&... a) const {
    return make_context_pool(detail::ContextTag{method_}, std::forward<A>(a)...);
  }

  // The objects of the module. Under spawn and forkserver, the locks, semaphores, events
  // and values keep the memfd of their shared page open, so that they can be handed to
  // a child (one fd each; made by their constructors they have none).
  template <class T, class... A>
  mpx::Queue<T> Queue(A&&... a) const {
    return mpx::Queue<T>(std::forward<A>(a)...);
  }
  template <class T, class... A>
  mpx::JoinableQueue<T> JoinableQueue(A&&... a) const {
    return mpx::JoinableQueue<T>(std::forward<A>(a)...);
  }
  template <class T, class... A>
  mpx::SimpleQueue<T> SimpleQueue(A&&... a) const {
    return mpx::SimpleQueue<T>(std::forward<A>(a)...);
  }
  std::pair<Connection, Connection> Pipe(bool duplex = true) const {
    const Shareable keep(method_);
    return mpx::Pipe(duplex);
  }
  template <class... A>
  mpx::Lock Lock(A&&... a) const {
    const Shareable keep(method_);
    return mpx::Lock(std::forward<A>(a)...);
  }
  template <class... A>
  mpx::RLock RLock(A&&... a) const {
    const Shareable keep(method_);
    return mpx::RLock(std::forward<A>(a)...);
  }
  mpx::Semaphore Semaphore(int value = 1) const {
    const Shareable keep(method_);
    return mpx::Semaphore(value);
  }
  mpx::BoundedSemaphore BoundedSemaphore(int value = 1) const {
    const Shareable keep(method_);
    return mpx::BoundedSemaphore(value);
  }
  template <class... A>
  mpx::Condition Condition(A&&... a) const {
    const Shareable keep(method_);
    return mpx::Condition(std::forward<A>(a)...);
  }
  mpx::Event Event() const {
    const Shareable keep(method_);
    return mpx::Event();
  }
  template <class... A>
  mpx::Barrier Barrier(A&&... a) const {
    const Shareable keep(method_);
    return mpx::Barrier(std::forward<A>(a)...);
  }
  template <class T, class... A>
  mpx::Value<T> Value(A&&... a) const {
    const Shareable keep(method_);
    return mpx::Value<T>(std::forward<A>(a)...);
  }
  template <class T, class... A>
  mpx::Array<T> Array(A&&... a) const {
    const Shareable keep(method_);
    return mpx::Array<T>(std::forward<A>(a)...);
  }
  template <class T, class... A>
  mpx::RawValue<T> RawValue(A&&... a) const {
    const Shareable keep(method_);
    return mpx::RawValue<T>(std::forward<A>(a)...);
  }
  template <class T, class... A>
  mpx::RawArray<T> RawArray(A&&... a) const {
    const Shareable keep(method_);
    return mpx::RawArray<T>(std::forward<A>(a)...);
  }

  friend bool operator==(const Context&, const Context&) = default;

 private:
  // Under spawn and forkserver, the shared pages made while it lives keep their memfds.
  struct Shareable {
    explicit Shareable(StartMethod m) {
      if (m != StartMethod::fork) keep.emplace();
    }
    std::optional<detail::KeepBlockFds> keep;
  };
  StartMethod method_;
};

// The context of a start method: "fork", "spawn" or "forkserver"; empty: the program's
// (get_start_method()). Throws: ValueError for another name ("cannot find context for
// 'x'", as Python).
Context get_context(std::string_view method = {});

// Sets the program's start method, used by every Process whose options name none (in
// this process and, as in Python, in its spawn and forkserver children).
// Throws: InvalidStateError("context has already been set") when it was set (or read by
// get_start_method()) before and `force` is false; ValueError for an unknown name.
void set_start_method(std::string_view method, bool force = false);

// The program's start method. Reading it fixes it (to "fork" when none was set), as in
// Python; with allow_none, returns empty instead when none was set.
std::optional<std::string> get_start_method(bool allow_none);
std::string get_start_method();

// {"fork", "spawn", "forkserver"}: the default first.
std::vector<std::string> get_all_start_methods();

// The program that spawn (and the forkserver) run: /proc/self/exe unless set. It must
// be a build of this program that calls mpx::init first in main.
void set_executable(std::string path);
std::string get_executable();

// Python preloads these modules into the forkserver. A C++ program's code is loaded
// whole in the server already, so there is nothing to preload: accepted and ignored.
void set_forkserver_preload(const std::vector<std::string>& module_names);

}  // namespace mpx
