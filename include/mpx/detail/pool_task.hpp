// mpx/detail/pool_task.hpp — the worker engine behind Pool, ThreadPool and the executors.
// Not public API: the front ends (mpx/pool.hpp, mpx/futures.hpp) turn calls into Tasks.
//
// A Task is what one worker runs at a time: for thread workers a closure that runs the
// call and completes its sink itself; for process workers an entry point (a function
// of this binary: workers are forks of it, so the address is valid there) with the
// encoded callable state and arguments. The outcome goes to the task's sink.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <memory_resource>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "mpx/detail/bound_call.hpp"
#include "mpx/detail/deadline.hpp"
#include "mpx/detail/waiter.hpp"

namespace mpx {
enum class StartMethod;  // mpx/process.hpp
}  // namespace mpx

namespace mpx::detail {

using ByteVector = std::vector<std::byte>;

// Large buffers about to be filled (a map's chunks, their results, the result vector):
// faulted in by one system call (huge pages where whole 2 MiB pages fit) instead of
// one fault per page as they are written; a fault costs microseconds in a virtual
// machine, and a map of a million ints writes a few thousand fresh pages. Only advice.
inline constexpr std::size_t kPrefaultBytes = std::size_t{64} << 10;
void prefault(void* p, std::size_t bytes) noexcept;
// Room for `n` bytes in `v`; a large block it allocates anew is prefaulted.
void reserve_prefaulted(ByteVector& v, std::size_t n);

// Runs in a worker process: decodes `args`, makes the call, appends the encoded result
// to `out`. Throws what the call throws (the worker sends it back).
using Entry = void (*)(std::span<const std::byte> args, ByteVector& out);

// Worker side: where a large raw chunk's results may go instead of `out` (room the worker
// has in its outbox, right after a frame header), and how many bytes went there (0:
// none, the results went to `out`). Set by the worker loop around a call.
struct DirectResult {
  std::span<std::byte> room;
  std::size_t used = 0;
};
inline DirectResult& direct_result() noexcept {
  thread_local DirectResult d;
  return d;
}

// A task's encoded result (process workers), for TaskSink::task_results(). `placed`:
// the result was read straight to the place TaskSink::result_place() gave, and `bytes`
// holds only its first bytes (ResultPlace::head), for the sink to check.
struct TaskResult {
  std::size_t tag;
  std::span<const std::byte> bytes;
  bool placed = false;
};

// Where a large encoded result may be read to instead of a buffer of the engine's: its
// first `head` bytes go to the engine, the rest to `rest` (none: no such place).
struct ResultPlace {
  std::byte* rest = nullptr;
  std::size_t head = 0;
};

// Where the outcome of a task goes. Called from the engine's threads, never under an
// engine lock. Exactly one of task_result/task_failed/task_abandoned is called per task
// (unless task_running returned false: then none).
class TaskSink {
 public:
  virtual ~TaskSink() = default;
  // `tag`: the task's Task::tag, which of the sink's tasks it is (a future has one task,
  // a map one per chunk: one sink per map, not one allocation per chunk).
  // The task is about to be handed to a worker; false if it was cancelled (skip it).
  virtual bool task_running(std::size_t tag) noexcept = 0;
  // Process workers: the encoded result.
  virtual void task_result(std::size_t tag, std::span<const std::byte> result) noexcept = 0;
  // Several of its tasks' results that came together (a map's chunks): one call, so that
  // a sink can take them under one lock. By default, task_result() for each.
  virtual void task_results(std::span<const TaskResult> results) noexcept {
    for (const TaskResult& r : results)
      task_result(r.tag, r.bytes);
  }
  // Process workers: where the `bytes` of a task's result may be read straight to (a
  // map's chunk: its place in the result vector), skipping a copy; its results then
  // come to task_results() as placed. The place must stay valid while the sink lives
  // and the task has no outcome. By default, none.
  virtual ResultPlace result_place(std::size_t /*tag*/, std::size_t /*bytes*/) noexcept {
    return {};
  }
  virtual void task_failed(std::size_t tag, std::exception_ptr error) noexcept = 0;
  // The task will not run (terminate, shutdown(cancel_futures)): end as cancelled.
  virtual void task_abandoned(std::size_t tag) noexcept = 0;
  // Whether completing it runs user code (pool callbacks, done callbacks): such sinks
  // are completed on the pool's own thread, never on a thread that waits for a result.
  virtual bool has_callbacks() const noexcept { return false; }
  // Whether its tasks' results are needed only all together (a map's result vector,
  // unlike imap's chunks or a future): a process worker may then hold back waking the
  // collector for one while it runs the next. Must not change once a task is submitted.
  virtual bool whole() const noexcept { return false; }
};

// A predicate passed by reference, without allocating (the referenced callable must
// outlive it).
class ReadyRef {
 public:
  template <class F>
  static ReadyRef of(F& f) noexcept {
    ReadyRef r;
    r.object_ = &f;
    r.call_ = [](void* o) { return static_cast<bool>((*static_cast<F*>(o))()); };
    return r;
  }
  bool operator()() const { return call_(object_); }

 private:
  ReadyRef() = default;
  void* object_ = nullptr;
  bool (*call_)(void*) = nullptr;
};

// How a thread that waits for a process pool's result reads the workers' results
// itself instead of sleeping until the pool's thread hands them over (src/pool/collector.cpp).
// Shared by the pool's futures; outlives the pool (then waits are plain waits).
class Collector {
 public:
  virtual ~Collector() = default;
  // Blocks until ready() or the deadline (then returns ready()), reading results while
  // no other thread does. `word` is notified whenever ready() may have become true.
  virtual bool wait(WaitWord& word, ReadyRef ready, const Deadline& deadline) = 0;
  // Call after making a waiter's ready() true from outside the collector (the pool's
  // thread, a cancel): wakes a collecting waiter that sleeps on the workers.
  virtual void poke() noexcept = 0;
};

// wait_until(), reading results through `collector` when there is one.
template <class Pred>
bool collect_until(Collector* collector, WaitWord& word, Pred&& ready, const Deadline& deadline) {
  if (ready()) return true;
  if (!collector) return wait_until(word, ready, deadline);
  return collector->wait(word, ReadyRef::of(ready), deadline);
}

struct Task {
  std::shared_ptr<TaskSink> sink;
  std::size_t tag = 0;  // passed to the sink's calls
  // Process workers.
  Entry entry = nullptr;
  ByteVector args;
  // Thread workers: runs the call and completes the sink (after sink->task_running()).
  // A pointer, not a std::function: a task is moved several times on its way (a 64-byte
  // task, not 88, and no call through std::function's manager per move).
  std::unique_ptr<BoundCall> run;
};

// A lazy source of tasks (imap over a range, possibly endless). The engine pulls from
// it when it has room, on one of its own threads, and drops it once next() returns
// nullopt. next() must not throw (a failure ends the source).
class Feeder {
 public:
  virtual ~Feeder() = default;
  virtual std::optional<Task> next() noexcept = 0;
  // False while the source must not produce (its consumer is behind). Ignored once
  // the pool is closed, so that join() finishes.
  virtual bool ready() const noexcept { return true; }
};

// Wakes an engine's dispatcher (a feeder became ready); harmless after the engine died.
class EngineWaker {
 public:
  void wake() const noexcept;

 private:
  friend class Engine;
  mutable std::mutex mutex_;
  void* impl_ = nullptr;  // Engine::Impl*, reset when the engine goes away
};

// mpx objects (a Queue, a Context's Lock, ...) among a process pool's initializer
// arguments. Under fork the workers run the initializer's closure they inherit
// (EngineOptions::thread_initializer); a zygote that is not a fork receives the objects'
// fds and runs `entry` (init_objects_entry) on `args`.
struct InitObjects {
  Entry entry = nullptr;
  ByteVector args;
  std::vector<int> fds;  // the objects' own, kept open by the closure's copies
  std::string error;     // why they cannot reach such a zygote (empty: they can)
};

struct EngineOptions {
  std::size_t workers = 0;  // 0: cpu_count()
  bool processes = false;
  // Process workers: run once in each new worker before its first task.
  Entry initializer = nullptr;
  ByteVector initargs;
  // Thread workers: run once in each worker thread. Process workers forked from the
  // caller's memory: the initializer, when its arguments include mpx objects.
  std::function<void()> thread_initializer;
  std::shared_ptr<const InitObjects> init_objects;  // null: none
  std::size_t maxtasksperchild = 0;                 // 0: unlimited (process workers only)
  std::optional<std::chrono::nanoseconds> timeout;  // per task (process workers only)
  // Thread workers: started as tasks come, a new one only when no idle one can take a
  // task (ThreadPoolExecutor, as Python's); otherwise all at once (ThreadPool).
  // Process workers: set for an executor's, which are named as Python's ("ForkProcess-N",
  // not daemons; a Pool's are "ForkPoolWorker-N", daemons).
  bool on_demand = false;
  // Process workers: how the zygote that forks them is made (mpx/pool.hpp); empty: the
  // program's start method.
  std::optional<StartMethod> start_method;
  // Process workers: the module table (mpx/detail/function_id.hpp) of the process whose
  // code addresses the tasks carry, for a pool that passes on another's tasks (a serving
  // MPI rank: its driver's). Empty: the pool's own process's.
  ByteVector task_modules;
};

// The one engine. Thread-safe.
class Engine {
 public:
  explicit Engine(EngineOptions options);
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;
  // terminate() unless join() returned.
  ~Engine();

  // Queues tasks. Throws InvalidStateError after close()/terminate(), BrokenPool when
  // the pool is broken. Never blocks on workers.
  // `spare` (process pools): given a finished small task's argument buffer if it has
  // none, to encode the caller's next task into.
  void submit(Task task, ByteVector* spare = nullptr);
  // `spares` (process pools): refilled, up to as many as `tasks` held, with the argument
  // buffers of finished small tasks, to encode the caller's next tasks into.
  void submit(std::vector<Task>& tasks, std::vector<ByteVector>* spares = nullptr);
  // Process pools: hands `task` (its args empty) to a worker whose inbox has room for its
  // `size` bytes of arguments in one piece, `write(ctx, at)` writing them there, with
  // no buffer between. False, calling nothing, if none has (or tasks wait, or the pool
  // is not open): submit() it then. What `write` throws comes out, the task not given.
  using ArgsWriter = void (*)(void* ctx, std::byte* at);
  bool submit_written(Task& task, std::size_t size, ArgsWriter write, void* ctx);
  // The largest `size` that submit_written() takes once a worker's inbox is empty.
  static std::size_t written_limit() noexcept;
  void submit(std::shared_ptr<Feeder> feeder);
  // Cancels the tasks not yet handed to a worker (their sinks are abandoned).
  void cancel_pending();

  // No more submissions; queued tasks still run.
  void close();
  // Cancels every unfinished task (its sink gets CancelledError), stops the workers.
  // Returns promptly.
  void terminate();
  // Waits for every task and for the workers to stop. Throws InvalidStateError unless
  // close() or terminate() was called first.
  void join();

  const std::shared_ptr<EngineWaker>& waker() const noexcept { return waker_; }
  // Where the pool's future states are allocated (make_future_state()): outlives the
  // engine while any of them is alive.
  std::pmr::memory_resource* state_memory() const noexcept;
  // Process pools: lets the pool's futures read results while they wait (null for
  // thread pools).
  const std::shared_ptr<Collector>& collector() const noexcept;

  std::size_t workers() const noexcept;
  bool processes() const noexcept;
  // Pids of the live process workers (tests, diagnostics).
  std::vector<pid_t> pids() const;

  struct Impl;
  // Workers elsewhere (mpx/mpi.hpp: MPI ranks): `impl` derives from Impl
  // (src/pool/engine_impl.hpp); the engine owns it.
  explicit Engine(Impl* impl);

 private:
  std::unique_ptr<Impl> impl_;
  std::shared_ptr<EngineWaker> waker_;
};

// Number of CPUs this process may run on (sched_getaffinity), at least 1.
std::size_t cpu_count() noexcept;

// Encodes/decodes a caught exception for the trip back from a worker process.
void encode_exception(std::exception_ptr error, ByteVector& out);
std::exception_ptr decode_exception(std::span<const std::byte> bytes);
// Prints "Exception in initializer:" and the error on stderr, as Python's executors log
// a failing initializer (from the worker that ran it).
void report_initializer_failure(std::exception_ptr error) noexcept;

}  // namespace mpx::detail
