// Pool and ThreadPool: CPython's multiprocessing.Pool behaviours (mpx's own guarantees
// about crashing, hanging and misbehaving workers: tests/pool_crash_test.cpp).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <malloc.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <numeric>
#include <ranges>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "mpx/pool.hpp"
#include "support/pool_tasks.hpp"
#include "support/start_methods.hpp"

using namespace std::chrono_literals;

namespace {

using namespace pool_tasks;

// --- CPython behaviours ---

TEST(PoolTest, MapReturnsSequentialResultsInOrderForAnyChunksize) {
  mpx::Pool pool(2);
  EXPECT_EQ(pool.map(square, iota_vec(100)), squares(100));
  for (std::size_t cs : {1u, 3u, 7u, 100u, 1000u})
    EXPECT_EQ(pool.map(square, iota_vec(100), cs), squares(100)) << cs;
}

struct Point {
  int x;
  double y;
  bool operator==(const Point&) const = default;
};
Point to_point(int i) {
  return {i, i / 2.0};
}
Point halved(Point p) {
  return {p.x / 2, p.y / 2};
}
std::string to_text(int i) {
  return std::string(static_cast<std::size_t>(i % 5), 'x') + std::to_string(i);
}

template <class Pool>
void expect_maps_keep_order(Pool& pool) {
  for (std::size_t cs : {0u, 1u, 3u, 7u, 1000u}) {
    auto points = pool.map(to_point, iota_vec(100), cs);  // raw bytes, gathered in place
    auto texts = pool.map(to_text, iota_vec(100), cs);    // encoded element by element
    ASSERT_EQ(points.size(), 100u) << cs;
    ASSERT_EQ(texts.size(), 100u) << cs;
    for (int i = 0; i < 100; ++i) {
      EXPECT_EQ(points[static_cast<std::size_t>(i)], to_point(i)) << cs;
      EXPECT_EQ(texts[static_cast<std::size_t>(i)], to_text(i)) << cs;
    }
    EXPECT_EQ(pool.map_async(to_point, iota_vec(10), cs).get(), pool.map(to_point, iota_vec(10)));
    auto halves = pool.map(halved, points, cs);  // structs in, structs out
    ASSERT_EQ(halves.size(), 100u) << cs;
    for (std::size_t i = 0; i < 100; ++i)
      EXPECT_EQ(halves[i], halved(points[i])) << cs;
  }
}

TEST(PoolTest, MapKeepsOrderForEveryResultType) {
  mpx::Pool pool(2);
  expect_maps_keep_order(pool);
}

TEST(ThreadPoolTest, MapKeepsOrderForEveryResultType) {
  mpx::ThreadPool pool(3);
  expect_maps_keep_order(pool);
}

int fail_on_9000(int x) {
  if (x == 9000) throw std::invalid_argument("9000");
  return x;
}

TEST(PoolTest, MapOverMoreChunksThanItQueuesAtOnce) {
  // map() queues a bounded number of chunks and collects results before cutting more.
  mpx::Pool pool(2);
  EXPECT_EQ(pool.map(square, iota_vec(10000), 1), squares(10000));
  std::vector<std::tuple<int, int>> pairs;
  for (int i = 0; i < 10000; ++i)
    pairs.emplace_back(i, 1);
  auto sums = pool.starmap(add, pairs, 1);
  ASSERT_EQ(sums.size(), 10000u);
  for (int i = 0; i < 10000; ++i)
    EXPECT_EQ(sums[static_cast<std::size_t>(i)], i + 1);
  EXPECT_THROW(pool.map(fail_on_9000, iota_vec(10000), 1), std::invalid_argument);
  EXPECT_EQ(pool.map(square, iota_vec(10), 1), squares(10));  // the pool carries on
}

TEST(PoolTest, TerminateEndsAMapThatWaitsToQueueMore) {
  // Tasks that would take 100 s each: map() queues its first chunks, then waits for
  // results before it cuts more; terminate() from another thread must end it at once.
  mpx::Pool pool(2);
  std::vector<int> hundred_seconds(10000, 100000);
  std::thread terminator([&] {
    std::this_thread::sleep_for(200ms);  // most likely inside map() by then
    pool.terminate();
  });
  auto start = std::chrono::steady_clock::now();
  bool ended_with_error = false;
  try {
    pool.map(sleep_ms, hundred_seconds, 1);
  } catch (const mpx::CancelledError&) {  // its queued chunks were cancelled
    ended_with_error = true;
  } catch (const mpx::InvalidStateError&) {  // it was about to queue more
    ended_with_error = true;
  }
  terminator.join();
  pool.join();
  EXPECT_TRUE(ended_with_error);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
}

TEST(PoolTest, MapOfEmptyInputIsEmpty) {
  mpx::Pool pool(2);
  EXPECT_TRUE(pool.map(square, std::vector<int>{}).empty());
  EXPECT_TRUE(pool.map_async(square, std::vector<int>{}).get().empty());
  int n = 0;
  for ([[maybe_unused]] int x : pool.imap(square, std::vector<int>{}))
    ++n;
  EXPECT_EQ(n, 0);
}

std::string reversed(std::string s) {
  std::reverse(s.begin(), s.end());
  return s;
}

TEST(PoolTest, ArgumentsAndResultsLargerThanAWorkersRingArriveWhole) {
  // Several MiB each way, more than a worker's 1 MiB inbox and outbox hold: the frames
  // stream through while the other side reads.
  mpx::Pool pool(2);
  std::vector<std::string> inputs;
  for (int i = 0; i < 6; ++i) {
    std::string s(static_cast<std::size_t>(3 << 20) + static_cast<std::size_t>(i), 'a');
    for (std::size_t k = 0; k < s.size(); k += 4093)
      s[k] = static_cast<char>('a' + (k / 4093 + static_cast<std::size_t>(i)) % 26);
    inputs.push_back(std::move(s));
  }
  std::vector<mpx::Future<std::string>> results;
  for (const auto& s : inputs)
    results.push_back(pool.apply_async(reversed, s));
  for (std::size_t i = 0; i < inputs.size(); ++i)
    EXPECT_EQ(results[i].get(), reversed(inputs[i])) << i;
  EXPECT_EQ(pool.map(reversed, inputs, 1), [&] {
    std::vector<std::string> r;
    for (const auto& s : inputs)
      r.push_back(reversed(s));
    return r;
  }());
}

TEST(PoolTest, MapOfLargeItemsQueuesABoundedPartAndReturnsAll) {
  // 96 MiB of input in 2 MiB items: map() queues about 64 MiB of it, then collects.
  mpx::Pool pool(2);
  std::vector<std::string> inputs;
  for (int i = 0; i < 48; ++i)
    inputs.push_back(std::string(std::size_t{2} << 20, static_cast<char>('a' + i % 26)) +
                     std::to_string(i));
  auto out = pool.map(reversed, inputs, 1);
  ASSERT_EQ(out.size(), inputs.size());
  for (std::size_t i = 0; i < inputs.size(); ++i)
    EXPECT_EQ(out[i], reversed(inputs[i])) << i;
}

TEST(PoolTest, StarmapUnpacksArgumentTuples) {
  mpx::Pool pool(2);
  std::vector<std::tuple<int, int>> args;
  for (int i = 0; i < 50; ++i)
    args.emplace_back(i, 2 * i);
  auto r = pool.starmap(add, args, 4);
  ASSERT_EQ(r.size(), 50u);
  for (int i = 0; i < 50; ++i)
    EXPECT_EQ(r[static_cast<std::size_t>(i)], 3 * i);
  EXPECT_EQ(pool.starmap_async(add, args).get(), r);
}

TEST(PoolTest, ImapYieldsResultsInOrder) {
  mpx::Pool pool(2);
  for (std::size_t cs : {1u, 5u}) {
    std::vector<int> got;
    for (int r : pool.imap(square, iota_vec(40), cs))
      got.push_back(r);
    EXPECT_EQ(got, squares(40));
  }
}

TEST(PoolTest, ImapUnorderedYieldsEveryResult) {
  mpx::Pool pool(2);
  std::vector<int> got;
  for (int r : pool.imap_unordered(square, iota_vec(40), 3))
    got.push_back(r);
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, squares(40));
}

TEST(PoolTest, ImapOverEndlessRangeConsumesLazily) {
  mpx::Pool pool(2);
  auto it = pool.imap(square, std::views::iota(0));
  for (int i = 0; i < 1000; ++i)
    ASSERT_EQ(*it.next(), i * i);
  pool.terminate();
}

int last_digit(int x) {
  return x % 10;
}

// The iteration keeps only the chunks its consumer has not taken yet, so an endless imap
// runs in bounded memory. Measured as the bytes malloc has handed out (mallinfo2) before
// and after 100 000 more results, each its own chunk: before the window, every chunk
// kept about 45 bytes for good (4.5 MB here), 8 of them in the completion order.
// (AddressSanitizer's allocator is not malloc's: there the figures are zero and this
// checks nothing.)
TEST(PoolTest, EndlessImapHoldsABoundedWindowOfChunks) {
  mpx::Pool pool(2);
  for (bool ordered : {true, false}) {
    auto it = ordered ? pool.imap(last_digit, std::views::iota(0), 1)
                      : pool.imap_unordered(last_digit, std::views::iota(0), 1);
    long sum = 0;
    auto consume = [&](int n) {
      for (int i = 0; i < n; ++i)
        sum += *it.next();
    };
    consume(10000);
    auto in_use = [] {
      const auto m = ::mallinfo2();
      return m.uordblks + m.hblkhd;  // from the heap, and mapped on their own
    };
    const std::size_t before = in_use();
    consume(100000);
    const std::size_t after = in_use();
    EXPECT_LT(after, before + (std::size_t{256} << 10)) << (ordered ? "imap" : "imap_unordered");
    if (ordered) {
      EXPECT_EQ(sum, 110000 / 10 * 45);
    }
  }
  pool.terminate();
}

int first_byte(const std::vector<char>& v) {
  return v.empty() ? -1 : v.front();
}

// imap runs ahead of its consumer by a bounded amount of input: with small items by up
// to 256 chunks per worker, with 1 MiB items by about 64 MiB. The input view counts what
// it has produced; the consumer takes 10 results, then waits until the count stops
// growing.
TEST(PoolTest, ImapRunsAheadOfItsConsumerByABoundedAmount) {
  mpx::Pool pool(2);
  std::atomic<int> produced{0};
  auto items = std::views::iota(0) | std::views::transform([&produced](int i) {
                 ++produced;
                 return std::vector<char>(std::size_t{1} << 20, static_cast<char>(i % 100));
               });
  auto it = pool.imap(first_byte, items, 1);
  for (int i = 0; i < 10; ++i)
    ASSERT_EQ(*it.next(), i);
  int seen = -1;
  for (int quiet = 0; quiet < 3;) {
    std::this_thread::sleep_for(50ms);
    const int now = produced.load();
    quiet = now == seen ? quiet + 1 : 0;
    seen = now;
  }
  EXPECT_GT(seen, 10 + 12) << "at least 4 chunks per worker + 4 ahead";
  EXPECT_LE(seen, 10 + 64 + 4) << "about 64 MiB ahead";
  pool.terminate();
}

TEST(PoolTest, ImapNextWithTimeoutThrowsTimeoutError) {
  mpx::Pool pool(1);
  auto it = pool.imap(sleep_ms, std::vector<int>{2000, 0});
  auto start = std::chrono::steady_clock::now();
  EXPECT_THROW(it.next(100ms), mpx::TimeoutError);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 90ms);
  pool.terminate();
}

TEST(PoolTest, ImapRaisesAFailedCallAtItsPositionAndGoesOn) {
  mpx::Pool pool(2);
  auto it = pool.imap(fail_on_three, iota_vec(6));
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(*it.next(), i);
  EXPECT_THROW(it.next(), std::invalid_argument);
  EXPECT_EQ(*it.next(), 4);
  EXPECT_EQ(*it.next(), 5);
  EXPECT_FALSE(it.next());
}

TEST(PoolTest, ApplyAndApplyAsyncReturnTheResult) {
  mpx::Pool pool(2);
  EXPECT_EQ(pool.apply(add, 2, 3), 5);
  auto r = pool.apply_async(square, 12);
  EXPECT_EQ(r.get(10s), 144);
  EXPECT_TRUE(r.ready());
  EXPECT_TRUE(r.successful());
}

TEST(PoolTest, AsyncResultGetWithTimeoutThrowsTimeoutError) {
  mpx::Pool pool(1);
  auto r = pool.apply_async(sleep_ms, 2000);
  EXPECT_THROW(r.get(50ms), mpx::TimeoutError);
  EXPECT_FALSE(r.ready());
  EXPECT_THROW((void)r.successful(), mpx::ValueError);
  pool.terminate();
}

TEST(PoolTest, ExactlyOneOfCallbackAndErrorCallbackRuns) {
  mpx::Pool pool(2);
  std::atomic<int> ok{0}, bad{0};
  auto r1 = pool.apply_async(
      fail_on_three, std::tuple{1}, [&](int v) { ok += v == 1; },
      [&](std::exception_ptr) { ++bad; });
  auto r2 = pool.apply_async(
      fail_on_three, std::tuple{3}, [&](int) { ++ok; }, [&](std::exception_ptr) { ++bad; });
  r1.wait();
  r2.wait();
  EXPECT_EQ(ok, 1);
  EXPECT_EQ(bad, 1);
  std::atomic<int> mapped{0};
  auto m = pool.map_async(square, iota_vec(10), 0,
                          [&](const std::vector<int>& v) { mapped = static_cast<int>(v.size()); });
  m.wait();
  EXPECT_EQ(mapped, 10);
}

TEST(PoolTest, ApplyAsyncTakesAnErrorCallbackWithoutACallback) {
  mpx::Pool pool(2);
  std::atomic<int> bad{0};
  auto ok =
      pool.apply_async(fail_on_three, std::tuple{1}, nullptr, [&](std::exception_ptr) { ++bad; });
  auto failed =
      pool.apply_async(fail_on_three, std::tuple{3}, nullptr, [&](std::exception_ptr) { ++bad; });
  EXPECT_EQ(ok.get(20s), 1);
  EXPECT_THROW(failed.get(20s), std::invalid_argument);
  EXPECT_EQ(bad, 1);
}

TEST(PoolTest, CallbacksRunOnThePoolsThreadWhileTheCallerCollectsResults) {
  mpx::Pool pool(2);
  const auto caller = std::this_thread::get_id();
  std::atomic<int> on_caller{0}, calls{0};
  for (int i = 0; i < 300; ++i) {
    auto r = pool.apply_async(square, std::tuple{i}, [&](int) {
      ++calls;
      if (std::this_thread::get_id() == caller) ++on_caller;
    });
    // A plain task waited for alongside: its result is read by this thread.
    EXPECT_EQ(pool.apply_async(square, i).get(20s), i * i);
    EXPECT_EQ(r.get(20s), i * i);
  }
  std::atomic<bool> map_on_caller{false};
  auto m = pool.map_async(square, iota_vec(1000), 1, [&](const std::vector<int>&) {
    map_on_caller = std::this_thread::get_id() == caller;
  });
  EXPECT_EQ(m.get(20s), squares(1000));
  EXPECT_EQ(calls, 300);
  EXPECT_EQ(on_caller, 0);
  EXPECT_FALSE(map_on_caller);
}

TEST(PoolTest, ManyThreadsSubmitAndWaitConcurrently) {
  mpx::Pool pool(2);
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 300; ++i) {
        if (t % 2 == 0) {
          if (pool.apply_async(square, i).get(60s) != i * i) ++wrong;
        } else {
          std::vector<mpx::AsyncResult<int>> batch;
          for (int k = 0; k < 5; ++k)
            batch.push_back(pool.apply_async(add, i, k));
          for (int k = 0; k < 5; ++k)
            if (batch[static_cast<std::size_t>(k)].get(60s) != i + k) ++wrong;
        }
      }
      if (pool.map(square, iota_vec(500), 3) != squares(500)) ++wrong;
    });
  }
  for (auto& th : threads)
    th.join();
  EXPECT_EQ(wrong, 0);
}

TEST(PoolTest, MapFailsWithTheFirstException) {
  mpx::Pool pool(2);
  EXPECT_THROW(pool.map(fail_on_three, iota_vec(10)), std::invalid_argument);
  auto r = pool.map_async(fail_on_three, iota_vec(10), 1);
  r.wait();
  EXPECT_FALSE(r.successful());
}

TEST(PoolTest, StandardExceptionsComeBackAsTheirTypeOthersAsRemoteError) {
  mpx::Pool pool(1);
  EXPECT_THROW(pool.apply(fail_on_three, 3), std::invalid_argument);
  try {
    pool.apply(throw_custom, 0);
    FAIL() << "no exception";
  } catch (const mpx::RemoteError& e) {
    EXPECT_NE(e.type_name().find("CustomError"), std::string::npos) << e.type_name();
    EXPECT_EQ(e.remote_message(), "custom");
    EXPECT_EQ(e.pid(), pool.pids().at(0));
  }
}

TEST(PoolTest, InitializerRunsInEveryWorker) {
  static int g_value = 0;
  mpx::PoolOptions options;
  options.initializer(
      +[](int v) { g_value = v; }, 41);
  mpx::Pool pool(2, options);
  auto r = pool.map(
      +[](int x) { return g_value + x; }, std::vector<int>{1, 1, 1, 1}, 1);
  EXPECT_EQ(r, (std::vector<int>{42, 42, 42, 42}));
}

TEST(PoolTest, FailingInitializerBreaksThePoolInsteadOfRestartingForever) {
  mpx::PoolOptions options;
  options.initializer(+[] { throw std::runtime_error("no database"); });
  mpx::Pool pool(2, options);
  try {
    pool.apply_async(square, 2).get(20s);
    FAIL() << "no exception";
  } catch (const mpx::BrokenPool& e) {
    EXPECT_NE(std::string(e.what()).find("no database"), std::string::npos) << e.what();
  }
  EXPECT_THROW(pool.apply_async(square, 2), mpx::BrokenPool);
}

TEST(PoolTest, MaxtasksperchildReplacesWorkersAndLosesNoTask) {
  mpx::PoolOptions options;
  options.maxtasksperchild = 2;
  mpx::Pool pool(2, options);
  auto pids = pool.map(my_pid, iota_vec(20), 1);
  ASSERT_EQ(pids.size(), 20u);
  std::set<int> distinct(pids.begin(), pids.end());
  EXPECT_GE(distinct.size(), 10u);
  for (int p : distinct)
    EXPECT_LE(std::count(pids.begin(), pids.end(), p), 2);
}

// Task 2 lands behind task 0 in one worker's queue (tasks go to the least loaded worker,
// ties to the same one); task 0 waits for task 2. Python's workers pull from one queue, so
// an idle worker runs task 2; so must ours, not leave it behind a long task.
TEST(PoolTest, IdleWorkerTakesATaskQueuedBehindALongOne) {
  GoPipe go;
  for (std::size_t maxtasks : {std::size_t{0}, std::size_t{2}}) {
    SCOPED_TRACE(maxtasks);
    mpx::PoolOptions options;
    options.maxtasksperchild = maxtasks;
    mpx::Pool pool(2, options);
    EXPECT_EQ(pool.map(square, iota_vec(100), 1), squares(100));  // deep queues from now on
    EXPECT_EQ(pool.map(go_between, iota_vec(4), 1), (std::vector<int>{1, 1, 2, 3}));
    // Every task ran once; a worker still ends after maxtasksperchild tasks.
    auto pids = pool.map(my_pid, iota_vec(20), 1);
    for (int p : std::set<int>(pids.begin(), pids.end()))
      EXPECT_LE(std::count(pids.begin(), pids.end(), p), maxtasks == 0 ? 20 : 2);
  }
}

// Long tasks of a map queue four deep per worker: tasks 2, 4 and 6 land behind task 0,
// which waits for all three; the idle worker takes them back one after another.
TEST(PoolTest, IdleWorkerTakesEveryTaskQueuedBehindALongOne) {
  GoPipe go;
  mpx::Pool pool(2);
  EXPECT_EQ(pool.map(sleep_ms, std::vector<int>(4, 2), 1), std::vector<int>(4, 2));  // long
  // The worker that skipped the tasks taken back from it wakes the collector for the
  // result it held back (task 0's); else the collector reads it only at its deadline.
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(pool.map_async(go_after_three, iota_vec(8), 1).get(30s),
            (std::vector<int>{1, 1, 2, 3, 4, 5, 6, 7}));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 20s);
}

// A worker holds back the wake-up for a map's result while it runs the next task of
// that map, never while it runs another's: here the next task blocks until the first
// map is seen complete.
TEST(PoolTest, MapCompletesWhileItsWorkerRunsAnotherMapsTask) {
  GoPipe go;
  mpx::Pool pool(1);
  EXPECT_EQ(pool.map(sleep_ms, std::vector<int>(4, 2), 1), std::vector<int>(4, 2));  // long
  auto first = pool.map_async(sleep_ms, std::vector<int>{2, 2}, 1);
  auto second = pool.map_async(wait_for_go, std::vector<int>{7, 8}, 1);
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(first.get(8s), (std::vector<int>{2, 2}));
  // Read at the deadline otherwise (a collector reads what it finds before it gives up).
  EXPECT_LT(std::chrono::steady_clock::now() - start, 6s);
  ASSERT_EQ(::write(go.w, "gg", 2), 2);
  EXPECT_EQ(second.get(), (std::vector<int>{7, 8}));
}

// To wake two sleeping workers on different CPUs, a pool narrows a worker's affinity for
// the wake-up; it puts the mask back: a worker the user pinned stays pinned, the others
// keep every CPU.
TEST(PoolTest, WorkersKeepTheirCpuAffinity) {
  cpu_set_t all;
  ASSERT_EQ(::sched_getaffinity(0, sizeof all, &all), 0);
  if (CPU_COUNT(&all) < 2) GTEST_SKIP() << "needs two CPUs";
  int first = 0;
  while (!CPU_ISSET(first, &all))
    ++first;
  for (bool pinned : {false, true}) {
    SCOPED_TRACE(pinned);
    mpx::PoolOptions options;
    if (pinned) {
      options.initializer(
          +[](int cpu) {
            cpu_set_t one;
            CPU_ZERO(&one);
            CPU_SET(cpu, &one);
            if (::sched_setaffinity(0, sizeof one, &one) != 0) throw std::runtime_error("pin");
          },
          first);
    }
    mpx::Pool pool(2, options);
    for (int round = 0; round < 20; ++round) {
      EXPECT_EQ(pool.map(square, iota_vec(4), 1), squares(4));
      std::this_thread::sleep_for(2ms);  // both workers fall asleep; the next map wakes both
    }
    cpu_set_t expected = all;
    if (pinned) {
      CPU_ZERO(&expected);
      CPU_SET(first, &expected);
    }
    auto pids = pool.pids();
    ASSERT_EQ(pids.size(), 2u);
    for (pid_t pid : pids) {
      cpu_set_t mask;
      ASSERT_EQ(::sched_getaffinity(pid, sizeof mask, &mask), 0);
      EXPECT_TRUE(CPU_EQUAL(&mask, &expected))
          << "worker " << pid << ": " << CPU_COUNT(&mask) << " CPUs";
    }
  }
}

TEST(PoolTest, JoinBeforeCloseThrowsAndUseAfterCloseThrows) {
  mpx::Pool pool(1);
  EXPECT_THROW(pool.join(), mpx::InvalidStateError);
  pool.close();
  EXPECT_THROW(pool.apply_async(square, 1), mpx::InvalidStateError);
  EXPECT_THROW(pool.map(square, iota_vec(3)), mpx::InvalidStateError);
  pool.join();
}

TEST(PoolTest, CloseThenJoinFinishesQueuedWork) {
  mpx::Pool pool(2);
  auto r = pool.map_async(square, iota_vec(1000), 1);
  pool.close();
  pool.join();
  EXPECT_TRUE(r.ready());
  EXPECT_EQ(r.get(), squares(1000));
}

TEST(PoolTest, TerminateWithTenThousandPendingTasksReturnsPromptly) {
  mpx::Pool pool(2);
  std::vector<mpx::AsyncResult<int>> rs;
  for (int i = 0; i < 10000; ++i)
    rs.push_back(pool.apply_async(sleep_ms, 100000));
  auto start = std::chrono::steady_clock::now();
  pool.terminate();
  pool.join();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  int cancelled = 0;
  for (auto& r : rs) {
    ASSERT_TRUE(r.ready());
    try {
      r.get();
    } catch (const mpx::CancelledError&) {
      ++cancelled;
    }
  }
  EXPECT_EQ(cancelled, 10000);  // running ones included: their workers were killed
}

TEST(PoolTest, DestructorFinishesSubmittedWork) {
  mpx::AsyncResult<int> r;
  {
    mpx::Pool pool(1);
    r = pool.apply_async(sleep_ms, 50);
  }
  EXPECT_EQ(r.get(0s), 50);
}

}  // namespace

namespace {

struct Unencodable {
  std::string text;  // not trivially copyable: the codec uses serialize()
  template <class Archive>
  void serialize(Archive&) {
    throw std::runtime_error("cannot encode this result");
  }
};
Unencodable make_unencodable(int) {
  return {};
}

TEST(PoolTest, ResultThatFailsToEncodeFailsOnlyItsTask) {
  mpx::Pool pool(1);
  EXPECT_THROW(pool.apply(make_unencodable, 0), std::runtime_error);
  EXPECT_EQ(pool.apply(square, 4), 16);
}

TEST(PoolTest, OnlyPortableCallablesReachProcessWorkers) {
  int captured = 1;
  auto capturing = [captured](int x) { return x + captured; };
  auto captureless = [](int x) { return x; };
  static_assert(!mpx::detail::PortableCallable<decltype(capturing)>);
  static_assert(mpx::detail::PortableCallable<decltype(captureless)>);
  static_assert(mpx::detail::PortableCallable<int (*)(int)>);
  static_assert(mpx::detail::PortableCallable<mpx::detail::ForkCall<decltype(capturing)>>);
  EXPECT_EQ(capturing(1), 2);
}

}  // namespace

namespace {

TEST(PoolTest, PoolsLiveSideBySideAndStopInAnyOrder) {
  auto first = std::make_unique<mpx::Pool>(1);
  auto second = std::make_unique<mpx::Pool>(1);  // its zygote inherits first's socket
  EXPECT_EQ(first->apply(square, 2), 4);
  EXPECT_EQ(second->apply(square, 3), 9);
  first.reset();
  EXPECT_EQ(second->apply(square, 4), 16);
  second.reset();
}

}  // namespace
