// Process pools under faults from outside: workers killed as soon as they appear
// (issue 26 item 2), forks that fail (item 3), a constructor that fails half-way
// (item 4). The pool carries on, or fails with a message that names the cause, and
// leaves no process behind.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <set>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "mpx/futures.hpp"
#include "mpx/pool.hpp"
#include "support/leak_check.hpp"
#include "support/shared_counts.hpp"
#include "support/watchdog.hpp"
#include "sys/syscall.hpp"

using namespace std::chrono_literals;

namespace {

int square(int x) {
  return x * x;
}

// Polls `ready` until it holds or `limit` passes; whether it held.
template <class F>
bool eventually(F ready, std::chrono::milliseconds limit, bool spin = false) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!ready()) {
    if (std::chrono::steady_clock::now() > until) return false;
    if (spin) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(2ms);
    }
  }
  return true;
}

// The pids of the workers of this process's one pool, as soon as they are forked: the
// children of its zygote (this process's one child).
std::vector<pid_t> forked_workers() {
  std::vector<pid_t> out;
  auto children = mpx_test::child_processes();
  if (children.size() != 1) return out;
  const std::string zygote = children[0].substr(0, children[0].find(' '));
  std::ifstream in("/proc/" + zygote + "/task/" + zygote + "/children");
  for (pid_t p; in >> p;)
    out.push_back(p);
  return out;
}

// Kills a worker, then each new one as soon as it is forked, `kills` times in all.
void kill_new_workers(int kills) {
  std::set<pid_t> seen;
  for (int k = 0; k < kills; ++k) {
    pid_t victim = 0;
    ASSERT_TRUE(eventually(
        [&] {
          for (pid_t p : forked_workers())
            if (seen.insert(p).second) victim = p;
          return victim != 0;
        },
        10s, true))
        << "no new worker after " << k << " kills";
    ::kill(victim, SIGKILL);
  }
}

// A pool with no initializer whose new workers are killed as they appear used to break
// for good after three kills ("workers keep dying before finishing their initializer").
TEST(PoolFaults, WorkersKilledAsTheyAppearAreReplacedAndThePoolWorks) {
  mpx_test::Watchdog dog(60s, "killing new workers");
  {
    mpx::Pool pool(2);
    kill_new_workers(10);
    std::vector<mpx::AsyncResult<int>> rs;
    for (int i = 0; i < 20; ++i)
      rs.push_back(pool.apply_async(square, i));
    for (int i = 0; i < 20; ++i)
      EXPECT_EQ(rs[static_cast<std::size_t>(i)].get(), i * i);
  }
  mpx::ProcessPoolExecutor ex(2);
  kill_new_workers(10);
  for (int i = 0; i < 10; ++i)
    EXPECT_EQ(ex.submit(square, i).result(), i * i);
}

// Forks of workers fail while this counter (shared with the zygotes) is positive.
std::atomic<int>& forks_to_fail() {
  return mpx_test::counts<1>().of[0];
}
int fail_worker_forks(const char* what) {
  if (std::strcmp(what, "fork (a pool worker)") != 0) return 0;
  auto& left = forks_to_fail();
  for (int n = left.load(); n > 0;)
    if (left.compare_exchange_weak(n, n - 1)) return EAGAIN;
  return 0;
}
struct FailForks {
  explicit FailForks(int n) {
    forks_to_fail().store(n);
    mpx::sys::set_failure_injector(fail_worker_forks);
  }
  ~FailForks() {
    forks_to_fail().store(0);
    mpx::sys::set_failure_injector(nullptr);
  }
};

// One failed fork used to break the pool for good ("the zygote could not fork a worker").
TEST(PoolFaults, AFailedForkIsRetriedWhileTheLiveWorkersWork) {
  mpx_test::Watchdog dog(60s, "failed forks");
  FailForks faults(1);  // one of the first two workers
  mpx::Pool pool(2);
  for (int i = 0; i < 10; ++i)
    EXPECT_EQ(pool.apply_async(square, i).get(), i * i);
  EXPECT_TRUE(eventually([&] { return pool.pids().size() == 2; }, 10s));
  // A replacement's forks fail three times: the other worker goes on meanwhile.
  forks_to_fail().store(3);
  ::kill(pool.pids().front(), SIGKILL);
  std::vector<mpx::AsyncResult<int>> rs;
  for (int i = 0; i < 20; ++i)
    rs.push_back(pool.apply_async(square, i));
  for (int i = 0; i < 20; ++i)
    EXPECT_EQ(rs[static_cast<std::size_t>(i)].get(), i * i);
  EXPECT_TRUE(eventually([&] { return pool.pids().size() == 2; }, 10s));
  EXPECT_EQ(forks_to_fail().load(), 0);
}

// No worker can exist: queued tasks fail after a bounded time with the errno in the
// message, and the pool recovers once forks work again.
TEST(PoolFaults, TasksFailWithTheErrnoWhenNoWorkerCanStart) {
  mpx_test::Watchdog dog(60s, "no worker can fork");
  FailForks faults(1'000'000);
  mpx::ProcessPoolExecutor ex(1);
  EXPECT_TRUE(ex.pids().empty());
  auto f = ex.submit(square, 3);
  const auto start = std::chrono::steady_clock::now();
  try {
    f.result(30s);
    ADD_FAILURE() << "a task ran with no worker";
  } catch (const mpx::BrokenPool& e) {
    EXPECT_NE(std::string(e.what()).find("Resource temporarily unavailable"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("fork"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 20s);
  forks_to_fail().store(0);  // a retry (at most a second apart) starts the worker
  EXPECT_TRUE(eventually([&] { return ex.pids().size() == 1; }, 10s));
  EXPECT_EQ(ex.submit(square, 4).result(20s), 16);
}

// The constructor failing after the zygote was forked (the supervisor thread could not
// be created) used to leave the zygote a zombie, and said only "Resource temporarily
// unavailable".
int fail_thread(const char* what) {
  return std::strcmp(what, "pthread_create") == 0 ? EAGAIN : 0;
}
TEST(PoolFaults, AFailedConstructorLeavesNoProcessAndNamesTheCall) {
  mpx::sys::set_failure_injector(fail_thread);
  try {
    mpx::Pool pool(2);
    ADD_FAILURE() << "the pool was built";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().value(), EAGAIN);
    EXPECT_NE(std::string(e.what()).find("pthread_create"), std::string::npos) << e.what();
  }
  mpx::sys::set_failure_injector(nullptr);
  EXPECT_TRUE(mpx_test::child_processes().empty());
  mpx::Pool pool(1);  // and the next one works
  EXPECT_EQ(pool.apply_async(square, 5).get(), 25);
}

}  // namespace
