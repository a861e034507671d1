// Ending process pools and executors: every order of close, get, join, terminate,
// shutdown and destruction returns, and leaves no worker behind (issue 21 item 2); the
// workers leave cleanly, flushing what they printed (item 1); the initializer runs in
// every worker started (item 6). Each test runs under a watchdog: a hang fails it.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "mpx/futures.hpp"
#include "mpx/pool.hpp"
#include "support/child.hpp"
#include "support/shared_counts.hpp"
#include "support/watchdog.hpp"

using namespace std::chrono_literals;

namespace {

int nap(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return static_cast<int>(::getpid());
}

bool alive(pid_t pid) {
  return ::kill(pid, 0) == 0 || errno != ESRCH;
}

// Whether every pid is gone within `limit` (polled: the workers of a pool that was only
// closed leave on their own).
bool all_gone(const std::set<pid_t>& pids, std::chrono::milliseconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  for (;;) {
    if (std::none_of(pids.begin(), pids.end(), alive)) return true;
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(5ms);
  }
}

// What a test does to a pool, in order.
enum class Step { kClose, kGet, kJoin, kTerminate };

const char* name(Step s) {
  switch (s) {
    case Step::kClose:
      return "close";
    case Step::kGet:
      return "get";
    case Step::kJoin:
      return "join";
    case Step::kTerminate:
      return "terminate";
  }
  return "?";
}

std::string describe(const std::vector<Step>& steps, int task_ms) {
  std::string s = task_ms > 0 ? "tasks of " + std::to_string(task_ms) + " ms:" : "no task:";
  for (Step step : steps)
    s += std::string(" ") + name(step);
  return s;
}

// Runs `steps` on a Pool(2) with four tasks of `task_ms` (none when 0) submitted, then
// destroys it; every worker must be gone after join() or the destructor.
void run_pool(const std::vector<Step>& steps, int task_ms) {
  const std::string what = describe(steps, task_ms);
  SCOPED_TRACE(what);
  mpx_test::Watchdog dog(30s, "Pool: " + what);
  std::set<pid_t> workers;
  {
    mpx::Pool pool(2);
    std::vector<mpx::AsyncResult<int>> results;
    for (int i = 0; task_ms > 0 && i < 4; ++i)
      results.push_back(pool.apply_async(nap, task_ms));
    for (pid_t p : pool.pids())
      workers.insert(p);
    bool terminated = false;
    for (Step step : steps) {
      switch (step) {
        case Step::kClose:
          pool.close();
          break;
        case Step::kTerminate:
          pool.terminate();
          terminated = true;
          break;
        case Step::kGet:
          for (auto& r : results) {
            if (terminated) {
              r.wait();
              continue;
            }
            workers.insert(r.get());
          }
          break;
        case Step::kJoin:
          pool.join();
          EXPECT_TRUE(all_gone(workers, 0ms)) << "workers alive after join()";
          break;
      }
    }
  }
  EXPECT_TRUE(all_gone(workers, 0ms)) << "workers alive after the pool's destructor";
}

using S = Step;
const std::vector<std::vector<Step>> kOrders = {
    {S::kClose, S::kGet, S::kJoin},  // the hang of issue 21 item 2
    {S::kGet, S::kClose, S::kJoin},
    {S::kClose, S::kJoin, S::kGet},
    {S::kClose, S::kGet},  // then the destructor
    {S::kClose},
    {S::kGet},
    {},
    {S::kClose, S::kTerminate, S::kJoin},
    {S::kClose, S::kGet, S::kTerminate, S::kJoin},
    {S::kTerminate, S::kJoin},
    {S::kTerminate, S::kGet},
    {S::kTerminate},
};

TEST(PoolShutdown, EveryOrderOfCloseGetJoinTerminateReturnsAndLeavesNoWorker) {
  for (int task_ms : {0, 1, 100})
    for (const auto& steps : kOrders)
      run_pool(steps, task_ms);
}

// A pool that was only closed: its workers leave once the queued tasks are done, even
// though nobody joins yet (pool.hpp's promise; issue 21 item 2).
TEST(PoolShutdown, WorkersLeaveAfterCloseOnceResultsAreCollected) {
  mpx_test::Watchdog dog(30s, "Pool close, get, wait for the workers to exit");
  mpx::Pool pool(2);
  std::vector<mpx::AsyncResult<int>> results;
  for (int i = 0; i < 4; ++i)
    results.push_back(pool.apply_async(nap, 50));
  std::set<pid_t> workers;
  for (pid_t p : pool.pids())
    workers.insert(p);
  pool.close();
  for (auto& r : results)
    workers.insert(r.get());
  EXPECT_TRUE(all_gone(workers, 10s)) << "closed pool's workers alive 10 s after the last result";
  pool.join();
}

// ProcessPoolExecutor::shutdown(wait = false): the workers exit once the submitted work
// is done, without a join.
TEST(ExecutorShutdown, ShutdownWithoutWaitLetsTheWorkersExit) {
  for (bool get_first : {false, true}) {
    for (bool cancel : {false, true}) {
      SCOPED_TRACE(std::string(get_first ? "get, shutdown(false" : "shutdown(false") +
                   (cancel ? ", cancel_futures)" : ")"));
      mpx_test::Watchdog dog(30s, "ProcessPoolExecutor shutdown(false)");
      std::set<pid_t> workers;
      {
        mpx::ProcessPoolExecutor ex(2);
        std::vector<mpx::Future<int>> futures;
        for (int i = 0; i < 4; ++i)
          futures.push_back(ex.submit(nap, 50));
        for (pid_t p : ex.pids())
          workers.insert(p);
        if (get_first) {
          for (auto& f : futures)
            workers.insert(f.result());
        }
        ex.shutdown(false, cancel);
        for (auto& f : futures) {
          f.wait();
          if (!f.cancelled()) workers.insert(f.result());
        }
        EXPECT_TRUE(all_gone(workers, 10s)) << "workers alive 10 s after shutdown(false)";
        EXPECT_THROW(ex.submit(nap, 1), mpx::InvalidStateError);
      }
      EXPECT_TRUE(all_gone(workers, 0ms));
    }
  }
}

TEST(ExecutorShutdown, EveryOrderOfShutdownAndDestructionReturns) {
  for (int task_ms : {0, 100}) {
    for (int order = 0; order < 4; ++order) {
      SCOPED_TRACE("order " + std::to_string(order) + ", tasks of " + std::to_string(task_ms));
      mpx_test::Watchdog dog(30s, "ProcessPoolExecutor shutdown order " + std::to_string(order));
      std::set<pid_t> workers;
      {
        mpx::ProcessPoolExecutor ex(2);
        std::vector<mpx::Future<int>> futures;
        for (int i = 0; task_ms > 0 && i < 3; ++i)
          futures.push_back(ex.submit(nap, task_ms));
        for (pid_t p : ex.pids())
          workers.insert(p);
        if (order == 0) ex.shutdown(true);
        if (order == 1) ex.shutdown(false);
        if (order == 2) {
          ex.shutdown(false);
          ex.shutdown(true);
        }
        // order 3: the destructor alone
        for (auto& f : futures)
          workers.insert(f.result());
        if (order == 0 || order == 2) {
          EXPECT_TRUE(all_gone(workers, 0ms));
        }
      }
      EXPECT_TRUE(all_gone(workers, 0ms)) << "workers alive after the executor's destructor";
    }
  }
}

// The tutorials' first Pool example: a function that prints and returns nothing.
void worker_function(int i) {
  std::printf("worker_function(%d)\n", i);
}
int print_and_return(int i) {
  std::printf("task %d\n", i);
  return i;
}

// Runs `body` in a child process whose stdout is a pipe (fully buffered, as in
// `./app | cat`) and returns what it printed.
template <class F>
std::string stdout_of(F body) {
  int fds[2];
  EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  std::fflush(stdout);
  mpx_test::Child child([&] {
    ::dup2(fds[1], 1);
    std::setvbuf(stdout, nullptr, _IOFBF, 1 << 16);
    body();
    std::fflush(stdout);
  });
  ::close(fds[1]);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  EXPECT_EQ(child.join(), 0);
  return out;
}

int count_lines(const std::string& out, const std::string& prefix, int n) {
  int found = 0;
  for (int i = 0; i < n; ++i)
    found += out.find(prefix + std::to_string(i) + ")\n") != std::string::npos ||
             out.find(prefix + std::to_string(i) + "\n") != std::string::npos;
  return found;
}

// Issue 21 item 1: workers used to be SIGKILLed at close/join with their stdio buffers
// unflushed: under `| cat` nothing they printed came out.
TEST(PoolShutdown, WhatWorkersPrintReachesAPipedStdout) {
  mpx_test::Watchdog dog(60s, "pools printing to a pipe");
  constexpr int kItems = 20;
  std::string out = stdout_of([] {
    std::vector<int> items(kItems);
    for (int i = 0; i < kItems; ++i)
      items[static_cast<std::size_t>(i)] = i;
    mpx::Pool pool(4);
    pool.map(worker_function, items);
  });
  EXPECT_EQ(count_lines(out, "worker_function(", kItems), kItems) << out;

  out = stdout_of([] {
    mpx::Pool pool(2);
    std::vector<mpx::AsyncResult<int>> rs;
    for (int i = 0; i < kItems; ++i)
      rs.push_back(pool.apply_async(print_and_return, i));
    pool.close();
    for (auto& r : rs)
      r.get();
    pool.join();
  });
  EXPECT_EQ(count_lines(out, "task ", kItems), kItems) << out;

  out = stdout_of([] {  // workers replaced after 3 tasks
    mpx::Pool pool(2, mpx::PoolOptions{.maxtasksperchild = 3});
    std::vector<mpx::AsyncResult<int>> rs;
    for (int i = 0; i < kItems; ++i)
      rs.push_back(pool.apply_async(print_and_return, i));
    for (auto& r : rs)
      r.get();
  });
  EXPECT_EQ(count_lines(out, "task ", kItems), kItems) << out;

  out = stdout_of([] {
    mpx::ProcessPoolExecutor ex(2);
    for (int i = 0; i < kItems; ++i)
      ex.submit(print_and_return, i);
    ex.shutdown(false);
  });
  EXPECT_EQ(count_lines(out, "task ", kItems), kItems) << out;
}

// Issue 21 item 1: what the parent printed before the pool forked is not printed again
// by the workers when they flush.
TEST(PoolShutdown, ParentOutputIsNotRepeatedByWorkers) {
  mpx_test::Watchdog dog(30s, "parent output before a pool");
  std::string out = stdout_of([] {
    std::printf("before the pool\n");
    mpx::Pool pool(3);
    pool.map(worker_function, std::vector<int>{0, 1, 2});
  });
  std::size_t n = 0;
  for (std::size_t at = 0; (at = out.find("before the pool", at)) != std::string::npos; ++at)
    ++n;
  EXPECT_EQ(n, 1u) << out;
  EXPECT_EQ(count_lines(out, "worker_function(", 3), 3) << out;
}

void count_init(int) {
  mpx_test::counts<1>().add(0);
}

// Issue 21 item 6: Pool(1, initializer) closed at once ran the initializer 0 times.
TEST(PoolShutdown, InitializerRunsInEveryWorkerEvenWhenClosedAtOnce) {
  mpx_test::Watchdog dog(30s, "initializer with close at once");
  auto& counts = mpx_test::counts<1>();
  for (std::size_t workers : {1u, 3u}) {
    counts.reset();
    {
      mpx::Pool p(workers, mpx::PoolOptions{}.initializer(count_init, 1));
      p.close();
      p.join();
    }
    EXPECT_EQ(counts.of[0].load(), static_cast<int>(workers));
    counts.reset();
    { mpx::ProcessPoolExecutor ex(workers, mpx::PoolOptions{}.initializer(count_init, 1)); }
    EXPECT_EQ(counts.of[0].load(), static_cast<int>(workers));
  }
}

}  // namespace
