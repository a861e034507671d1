// ThreadPoolExecutor and ProcessPoolExecutor: CPython's concurrent.futures behaviours,
// and a process executor that survives crashes (Python's breaks for good).
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <numeric>
#include <ranges>
#include <stdexcept>
#include <thread>
#include <vector>

#include "mpx/futures.hpp"

using namespace std::chrono_literals;

namespace {

int square(int x) {
  return x * x;
}
int mul(int a, int b) {
  return a * b;
}
int sleep_ms(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}
int crash(int) {
  ::raise(SIGKILL);
  return 0;
}
int fail(int) {
  throw std::logic_error("bad");
}

template <class Executor>
class ExecutorTest : public ::testing::Test {};
using Executors = ::testing::Types<mpx::ThreadPoolExecutor, mpx::ProcessPoolExecutor>;
class Names {
 public:
  template <class T>
  static std::string GetName(int) {
    return std::is_same_v<T, mpx::ThreadPoolExecutor> ? "Thread" : "Process";
  }
};
TYPED_TEST_SUITE(ExecutorTest, Executors, Names);

TYPED_TEST(ExecutorTest, SubmitReturnsAFutureOfTheResult) {
  TypeParam ex(2);
  auto f = ex.submit(mul, 6, 7);
  EXPECT_EQ(f.result(10s), 42);
  EXPECT_TRUE(f.done());
  EXPECT_FALSE(f.cancelled());
}

// As in Python, a done callback may submit more work to its executor. A process pool
// runs it on its own thread or on one that collects results, while tasks are queued:
// the submit must not wait for the reading it is called from.
TYPED_TEST(ExecutorTest, DoneCallbacksSubmitMoreWork) {
  TypeParam ex(2);
  constexpr int kTasks = 2000;
  std::mutex m;
  std::condition_variable cv;
  std::vector<mpx::Future<int>> second;
  std::vector<mpx::Future<int>> first;
  for (int i = 0; i < kTasks; ++i) {
    first.push_back(ex.submit(square, i % 200));
    first.back().add_done_callback([&](const mpx::Future<int>& f) {
      auto g = ex.submit(square, f.result());
      std::lock_guard lock(m);
      second.push_back(std::move(g));
      cv.notify_all();
    });
  }
  long long expected = 0;
  for (int i = 0; i < kTasks; ++i) {
    const long long x = i % 200;
    EXPECT_EQ(first[static_cast<std::size_t>(i)].result(20s), x * x);
    expected += x * x * x * x;
  }
  std::unique_lock lock(m);
  ASSERT_TRUE(cv.wait_for(lock, 20s, [&] { return second.size() == kTasks; }));
  long long sum = 0;
  for (auto& g : second)
    sum += g.result(20s);
  EXPECT_EQ(sum, expected);
}

TYPED_TEST(ExecutorTest, FuturesOutliveTheirExecutor) {
  // The futures' states live in their pool's memory, which must stay until the last.
  std::vector<mpx::Future<int>> futures;
  {
    TypeParam ex(2);
    for (int i = 0; i < 3000; ++i)
      futures.push_back(ex.submit(square, i));
    futures.erase(futures.begin(), futures.begin() + 1000);  // some freed in its lifetime
  }
  ASSERT_EQ(futures.size(), 2000u);
  for (int i = 0; i < 2000; ++i)
    EXPECT_EQ(futures[static_cast<std::size_t>(i)].result(10s), (i + 1000) * (i + 1000));
}

TYPED_TEST(ExecutorTest, SubmittedExceptionComesBackAsItsType) {
  TypeParam ex(1);
  auto f = ex.submit(fail, 1);
  EXPECT_THROW(f.result(10s), std::logic_error);
  EXPECT_NE(f.exception(), nullptr);
}

TYPED_TEST(ExecutorTest, MapYieldsResultsInOrder) {
  TypeParam ex(2);
  std::vector<int> xs(50);
  std::iota(xs.begin(), xs.end(), 0);
  std::vector<int> got;
  for (int r : ex.map(square, xs))
    got.push_back(r);
  ASSERT_EQ(got.size(), 50u);
  for (int i = 0; i < 50; ++i)
    EXPECT_EQ(got[static_cast<std::size_t>(i)], i * i);
}

TYPED_TEST(ExecutorTest, MapZipsSeveralRangesUpToTheShortest) {
  TypeParam ex(2);
  std::vector<int> got;
  for (int r :
       ex.map(mul, std::vector{1, 2, 3, 4}, std::vector{10, 20, 30}, mpx::MapOptions{{}, 2}))
    got.push_back(r);
  EXPECT_EQ(got, (std::vector<int>{10, 40, 90}));
}

TYPED_TEST(ExecutorTest, MapTimeoutThrowsTimeoutError) {
  TypeParam ex(1);
  auto start = std::chrono::steady_clock::now();
  auto it = ex.map(sleep_ms, std::vector{1000, 0}, mpx::MapOptions{200ms, 1});
  EXPECT_THROW(it.next(), mpx::TimeoutError);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 190ms);
  EXPECT_THROW(it.next(), mpx::TimeoutError);  // the timeout counts from the map() call
  ex.shutdown(false, true);
}

TYPED_TEST(ExecutorTest, SubmitAfterShutdownThrows) {
  TypeParam ex(1);
  ex.shutdown();
  EXPECT_THROW(ex.submit(square, 1), mpx::InvalidStateError);
  ex.shutdown();  // twice is harmless
}

TYPED_TEST(ExecutorTest, ShutdownWithWaitFinishesPendingFutures) {
  std::vector<mpx::Future<int>> fs;
  TypeParam ex(2);
  for (int i = 0; i < 20; ++i)
    fs.push_back(ex.submit(sleep_ms, 5));
  ex.shutdown(true);
  for (auto& f : fs) {
    EXPECT_TRUE(f.done());
    EXPECT_EQ(f.result(), 5);
  }
}

TYPED_TEST(ExecutorTest, ShutdownWithCancelFuturesCancelsThoseNotStarted) {
  TypeParam ex(1);
  std::vector<mpx::Future<int>> fs;
  for (int i = 0; i < 50; ++i)
    fs.push_back(ex.submit(sleep_ms, 100));
  ex.shutdown(true, true);
  int cancelled = 0;
  for (auto& f : fs) {
    EXPECT_TRUE(f.done());
    cancelled += f.cancelled();
  }
  EXPECT_GE(cancelled, 40);
}

TYPED_TEST(ExecutorTest, PendingFutureCanBeCancelled) {
  TypeParam ex(1);
  auto blocker = ex.submit(sleep_ms, 800);
  std::vector<mpx::Future<int>> queued;
  for (int i = 0; i < 8; ++i)
    queued.push_back(ex.submit(sleep_ms, 1));
  auto last = queued.back();
  EXPECT_TRUE(last.cancel());
  EXPECT_TRUE(last.cancelled());
  EXPECT_THROW(last.result(), mpx::CancelledError);
  EXPECT_EQ(blocker.result(10s), 800);
  for (std::size_t i = 0; i + 1 < queued.size(); ++i)
    EXPECT_EQ(queued[i].result(10s), 1);
}

TYPED_TEST(ExecutorTest, AsCompletedAndWaitWorkOnItsFutures) {
  TypeParam ex(2);
  std::vector<mpx::Future<int>> fs;
  for (int i = 0; i < 10; ++i)
    fs.push_back(ex.submit(square, i));
  int sum = 0;
  for (const auto& f : mpx::as_completed(fs, 20s))
    sum += f.result();
  EXPECT_EQ(sum, 285);
  auto r = mpx::wait(fs, 10s);
  EXPECT_EQ(r.done.size(), 10u);
}

TEST(ProcessPoolExecutorTest, AsCompletedAndWaitOverFuturesOfSeveralPools) {
  mpx::ProcessPoolExecutor a(2), b(1);
  mpx::ThreadPoolExecutor t(1);
  std::vector<mpx::Future<int>> one_pool, mixed;
  for (int i = 0; i < 200; ++i)
    one_pool.push_back(a.submit(square, i));
  for (int i = 0; i < 30; ++i)
    mixed.push_back(i % 3 == 0   ? a.submit(square, i)
                    : i % 3 == 1 ? b.submit(square, i)
                                 : t.submit(square, i));
  long sum = 0;
  std::size_t seen = 0;
  for (const auto& f : mpx::as_completed(one_pool, 20s)) {
    sum += f.result();
    ++seen;
  }
  EXPECT_EQ(seen, 200u);
  EXPECT_EQ(sum, 2646700);  // the sum of i * i below 200
  sum = 0;
  seen = 0;
  for (const auto& f : mpx::as_completed(mixed, 20s)) {
    sum += f.result();
    ++seen;
  }
  EXPECT_EQ(seen, 30u);
  EXPECT_EQ(sum, 8555);  // the sum of i * i below 30
  auto first = mpx::wait(mixed, 10s, mpx::FIRST_COMPLETED);
  EXPECT_EQ(first.done.size(), 30u);  // all were done already
  auto r = mpx::wait(one_pool, 10s);
  EXPECT_EQ(r.done.size(), 200u);
}

TEST(ProcessPoolExecutorTest, CrashFailsOneFutureAndTheExecutorCarriesOn) {
  mpx::ProcessPoolExecutor ex(2);
  auto bad = ex.submit(crash, 0);
  std::vector<mpx::Future<int>> good;
  for (int i = 0; i < 20; ++i)
    good.push_back(ex.submit(square, i));
  EXPECT_THROW(bad.result(20s), mpx::WorkerLost);
  for (int i = 0; i < 20; ++i)
    EXPECT_EQ(good[static_cast<std::size_t>(i)].result(20s), i * i);
  EXPECT_EQ(ex.submit(square, 9).result(20s), 81);
}

int worker_pid(int) {
  return static_cast<int>(::getpid());
}

// Python 3.11's max_tasks_per_child: each worker process runs at most that many tasks.
TEST(ProcessPoolExecutorTest, MaxTasksPerChildReplacesWorkers) {
  mpx::ProcessPoolExecutor ex(2, {.maxtasksperchild = 2});
  std::vector<mpx::Future<int>> fs;
  for (int i = 0; i < 12; ++i)
    fs.push_back(ex.submit(worker_pid, i));
  std::map<int, int> tasks_of;
  for (auto& f : fs)
    ++tasks_of[f.result(30s)];
  EXPECT_GE(tasks_of.size(), 6u);
  for (const auto& [pid, n] : tasks_of)
    EXPECT_LE(n, 2) << "worker " << pid;
  EXPECT_EQ(tasks_of.count(static_cast<int>(::getpid())), 0u);
}

TEST(ProcessPoolExecutorTest, FutureIsRunningOnceAWorkerHasIt) {
  mpx::ProcessPoolExecutor ex(1);
  auto f = ex.submit(sleep_ms, 200);
  for (int i = 0; i < 2000 && !f.running() && !f.done(); ++i)
    std::this_thread::sleep_for(1ms);
  EXPECT_TRUE(f.running() || f.done());
  EXPECT_FALSE(f.cancel());
  EXPECT_EQ(f.result(10s), 200);
}

}  // namespace
