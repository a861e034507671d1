// src/process/process_internal.hpp — the seams between process.cpp and thread.cpp.
#pragma once

#include <atomic>
#include <thread>

namespace mpx::detail {

// A registry (children, threads) copied into a forked child describes the parent's
// objects; the child adopts it lazily, on first use. `stale` is set to 1 by the
// pthread_atfork child handler; the first thread to get here runs adopt(), and others
// wait until it is done.
template <class Adopt>
void adopt_once_after_fork(std::atomic<int>& stale, Adopt&& adopt) {
  if (stale.load(std::memory_order_acquire) == 0) [[likely]]
    return;
  int expected = 1;
  if (stale.compare_exchange_strong(expected, 2, std::memory_order_acq_rel)) {
    adopt();
    stale.store(0, std::memory_order_release);
  } else {
    while (stale.load(std::memory_order_acquire) != 0)
      std::this_thread::yield();
  }
}

// Joins the mpx Threads that are running and not daemon (Python's threading._shutdown).
void join_non_daemon_threads() noexcept;

}  // namespace mpx::detail
