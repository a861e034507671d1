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

#include <cstdio>
#include <mutex>
#include <vector>

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

int main() {
  mpx::Value<long> counter(0);
  mpx::Lock print_lock;
  std::vector<mpx::Process> workers;
  for (int id = 0; id < 4; ++id)
    workers.emplace_back(work, counter, print_lock, id);
  for (auto& p : workers)
    p.start();
  for (auto& p : workers)
    p.join();
  std::printf("counter = %ld", counter.value());

  // A process killed while holding a Lock: the next acquire is told, and holds the lock.
  mpx::Lock lock;
  mpx::Event held;
  mpx::Process owner([&] {
    lock.acquire();
    held.set();
    for (;;)
      ::pause();
  });
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
}
