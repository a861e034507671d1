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
// go to other workers and a new worker takes its place. With options.timeout, a task
// running longer has its worker killed and fails with TimeoutError. A task's exception
// comes back: standard exception types (std::runtime_error, std::logic_error,
// std::invalid_argument, std::out_of_range, ...) and mpx's errors as the same type,
// others as RemoteError (type name, message, worker pid).
//
// What a process pool can run (checked at compile time): function pointers, captureless
// lambdas, empty function objects, and function objects with a serialize() method;
// arguments and results travel through mpx's codec. A capturing lambda does not
// compile: use mpx::fork_map, a ThreadPool, or pass the state as arguments or through
// the initializer. ThreadPool runs any callable on threads.
//
// Differences from Python:
// - The destructor finishes the submitted work (close() + join()); Python's
//   `with Pool() as p:` terminates it. Call terminate() to drop pending work.
// - terminate() ends unfinished tasks as cancelled: their get() throws CancelledError
//   (Python's would block forever).
// - A failing initializer makes the pool broken (tasks and submits fail with
//   BrokenPool) instead of restarting workers forever.
// - imap reads its input lazily, so an endless range works.
//
// Thread safety: all member functions may be called from any thread.
// Across fork: a pool belongs to the process that built it; do not use it in a child.
// OS resources: the zygote and worker processes, one shared mapping (rings of 2 MiB
// per worker, touched on use), one eventfd and one socket; all released by join()
// or the destructor, and by the kernel if the parent dies (the zygote then kills its
// workers and exits).
#pragma once

#include "mpx/futures.hpp"

namespace mpx {

// multiprocessing.Pool: worker processes. Pool(processes = cpu_count(), options).
using Pool = detail::BasicPool<detail::WorkerKind::kProcess>;
// multiprocessing.pool.ThreadPool: worker threads, any callable. No per-task timeout
// (a thread cannot be killed); maxtasksperchild is ignored.
using ThreadPool = detail::BasicPool<detail::WorkerKind::kThread>;

}  // namespace mpx
