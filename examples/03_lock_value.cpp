// examples/03_lock_value.cpp — a counter shared by four processes (Python:
// multiprocessing.Value and Lock).
//
// A Value lives in shared memory and carries its own lock (an RLock, as in Python).
// `counter.set(counter.value() + 1)` would lose updates, exactly like
// `counter.value += 1` in Python: hold get_lock() (or use with_lock) for the whole update.
// A Lock whose owner dies is not stuck: the next acquire gets it and throws
// mpx::OwnerDied (shown at the end).
//
// expect: counter = 400000, owner died and the lock was recovered
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <mutex>
#include <string_view>
#include <vector>

#include "mpx/context.hpp"
#include "mpx/process.hpp"
#include "mpx/sharedctypes.hpp"
#include "mpx/synchronize.hpp"

void work(mpx::Value<long> counter, mpx::Lock print_lock, int id) {
  for (int i = 0; i < 100'000; ++i) {
    std::lock_guard guard(counter.get_lock());
    counter.get_obj() += 1;  // or: counter.with_lock([](long& c) { ++c; });
  }
  std::lock_guard guard(print_lock);  // one line at a time on stdout
  std::printf("worker %d done\n", id);
  std::fflush(stdout);
}

// Takes the lock and never lets go (until it is killed).
void hold_forever(mpx::Lock lock, mpx::Event held) {
  lock.acquire();
  held.set();
  for (;;)
    ::pause();
}

int main(int argc, char** argv) {
  mpx::init(argc, argv);  // first: a spawned child runs its target here (mpx/context.hpp)
  // `--start-method spawn` (or forkserver): Python's mp.set_start_method('spawn').
  if (argc == 3 && std::string_view(argv[1]) == "--start-method") mpx::set_start_method(argv[2]);
  // Made by the program's context (Python's ctx.Value), they reach a child by any start
  // method; made by their constructors (mpx::Value<long> counter(0)), by fork only.
  auto ctx = mpx::get_context();
  auto counter = ctx.Value<long>(0);
  auto print_lock = ctx.Lock();
  std::vector<mpx::Process> workers;
  for (int id = 0; id < 4; ++id)
    workers.emplace_back(work, counter, print_lock, id);
  for (auto& p : workers)
    p.start();
  for (auto& p : workers)
    p.join();
  std::printf("counter = %ld", counter.value());

  // A process killed while holding a Lock: the next acquire is told, and holds the lock.
  auto lock = ctx.Lock();
  auto held = ctx.Event();
  mpx::Process owner(hold_forever, lock, held);
  owner.start();
  held.wait();
  owner.kill();
  owner.join();
  try {
    lock.acquire();
  } catch (const mpx::OwnerDied&) {
    std::printf(", owner died");  // repair what the lock protects here
  }
  lock.release();
  std::printf(" and the lock was recovered\n");
  std::printf("start method: %s\n", mpx::get_start_method().c_str());
}
