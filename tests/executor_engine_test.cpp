// The executors' engine, seen from concurrent.futures: timed waits keep their deadline
// whatever callbacks do (issue 26 item 6), shutdown(cancel_futures) on a fresh executor
// (issue 21 item 12), threads started on demand (item 10), a failing initializer logged
// (item 7).
#include <dirent.h>
#include <fcntl.h>
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

// Issue 21 item 12: shutdown(cancel_futures = true) right after the submits cancelled
// all 50 tasks of a fresh executor, whose workers did not exist yet. Python's rule: the
// tasks workers already have run, the others are cancelled; a fresh executor now hands
// out tasks as a warm one does (up to two per worker while tasks are long).
TEST(ExecutorShutdown, CancelFuturesRightAfterSubmitRunsTheTasksWorkersHave) {
  mpx_test::Watchdog dog(60s, "shutdown(cancel_futures) after submits");
  constexpr std::size_t kWorkers = 5;
  mpx::ProcessPoolExecutor ex(kWorkers);
  std::vector<mpx::Future<int>> fs;
  for (int i = 0; i < 50; ++i)
    fs.push_back(ex.submit(sleep_ms, 100));
  ex.shutdown(true, true);
  std::size_t ran = 0;
  for (auto& f : fs) {
    ASSERT_TRUE(f.done());
    if (!f.cancelled()) {
      EXPECT_EQ(f.result(), 100);
      ++ran;
    }
  }
  EXPECT_GE(ran, kWorkers);
  EXPECT_LE(ran, 2 * kWorkers);
}

std::size_t threads_of_this_process() {
  std::size_t n = 0;
  if (DIR* dir = ::opendir("/proc/self/task")) {
    while (dirent* e = ::readdir(dir))
      n += e->d_name[0] != '.';
    ::closedir(dir);
  }
  return n;
}

// Issue 21 item 10: ThreadPoolExecutor(n) started its n threads when built; Python
// starts one per task that no idle thread can take, up to n.
TEST(ExecutorThreads, ThreadsStartOnDemand) {
  mpx_test::Watchdog dog(30s, "threads on demand");
  const std::size_t before = threads_of_this_process();
  mpx::ThreadPoolExecutor ex(8);
  EXPECT_EQ(threads_of_this_process(), before);
  // Tasks that hold their thread until released: each needs a thread of its own.
  std::mutex m;
  std::unique_lock gate(m);
  std::atomic<int> started{0};
  auto held = [&] {
    ++started;
    std::lock_guard lock(m);
    return 0;
  };
  std::vector<mpx::Future<int>> fs;
  for (int k = 1; k <= 3; ++k) {
    fs.push_back(ex.submit(held));
    while (started.load() < k)
      std::this_thread::yield();
    EXPECT_EQ(threads_of_this_process(), before + static_cast<std::size_t>(k));
  }
  gate.unlock();
  for (auto& f : fs)
    f.result();
  // Ten more tasks, one at a time: an idle thread takes each (a new one only if it
  // was not back yet).
  for (int i = 0; i < 10; ++i)
    EXPECT_EQ(ex.submit(sleep_ms, 1).result(), 1);
  EXPECT_LE(threads_of_this_process(), before + 8);
  // A map starts them all, as Python's submits all of its items.
  int sum = 0;
  for (int r : ex.map(sleep_ms, std::vector<int>(16, 1)))
    sum += r;
  EXPECT_EQ(sum, 16);
  EXPECT_EQ(threads_of_this_process(), before + 8);
}

void failing_init() {
  throw std::runtime_error("no database");
}

// Captures what fd 2 receives while `body` runs (the workers a pool built in it fork
// inherit that stderr).
template <class F>
std::string stderr_of(F body) {
  std::fflush(stderr);
  int fds[2];
  EXPECT_EQ(::pipe(fds), 0);
  const int saved = ::dup(2);
  ::dup2(fds[1], 2);
  ::close(fds[1]);
  body();
  std::fflush(stderr);
  ::dup2(saved, 2);
  ::close(saved);
  std::string out;
  ::fcntl(fds[0], F_SETFL, O_NONBLOCK);
  char buf[4096];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;)
    out.append(buf, static_cast<std::size_t>(n));
  ::close(fds[0]);
  return out;
}

// Issue 21 item 7: a failing initializer broke the executor silently; Python logs
// "Exception in initializer:" and the traceback first.
TEST(ExecutorInitializer, AFailingInitializerIsLoggedOnStderr) {
  mpx_test::Watchdog dog(30s, "failing initializer");
  std::string err = stderr_of([] {
    mpx::ProcessPoolExecutor ex(1, mpx::PoolOptions{}.initializer(failing_init));
    EXPECT_THROW(ex.submit(sleep_ms, 1).result(), mpx::BrokenPool);
  });
  EXPECT_NE(err.find("Exception in initializer:"), std::string::npos) << err;
  EXPECT_NE(err.find("no database"), std::string::npos) << err;
  err = stderr_of([] {
    mpx::ThreadPoolExecutor ex(1, mpx::PoolOptions{}.initializer(failing_init));
    EXPECT_THROW(ex.submit(sleep_ms, 1).result(), mpx::BrokenPool);
  });
  EXPECT_NE(err.find("Exception in initializer:"), std::string::npos) << err;
  EXPECT_NE(err.find("std::runtime_error: no database"), std::string::npos) << err;
}

}  // namespace
