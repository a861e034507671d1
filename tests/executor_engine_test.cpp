// The executors' engine, seen from concurrent.futures: timed waits keep their deadline
// whatever callbacks do (issue 26 item 6), shutdown(cancel_futures) on a fresh executor
// (issue 21 item 12), threads started on demand (item 10), a failing initializer logged
// (item 7).
#include <dirent.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "mpx/futures.hpp"
#include "support/watchdog.hpp"

using namespace std::chrono_literals;

namespace {

int sleep_ms(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}

// A done callback that blocks on a lock the caller holds while it waits for another
// future with a timeout: the wait returns by its deadline (Python's does); it used to
// block for ever in the pool's reader lock, which the callback's thread held.
TEST(ExecutorDeadline, ResultWithTimeoutReturnsWhileADoneCallbackBlocks) {
  mpx_test::Watchdog dog(30s, "result(2s) while a done callback blocks");
  mpx::ProcessPoolExecutor ex(2);
  std::mutex user;
  std::atomic<bool> entered{false};
  std::unique_lock hold(user);
  auto a = ex.submit(sleep_ms, 300);
  a.add_done_callback([&](const mpx::Future<int>&) {
    entered = true;
    std::lock_guard lock(user);
  });
  while (!entered)
    std::this_thread::yield();
  auto b = ex.submit(sleep_ms, 50);
  const auto start = std::chrono::steady_clock::now();
  try {
    EXPECT_EQ(b.result(2s), 50);
  } catch (const mpx::TimeoutError&) {  // as Python's would, its callback thread stuck
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 4s);
  hold.unlock();
  EXPECT_EQ(a.result(), 300);
}

}  // namespace
