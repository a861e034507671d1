// Pool and ThreadPool: CPython's multiprocessing.Pool behaviours, and mpx's own
// guarantees about crashing, hanging and misbehaving workers.
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
#include "support/start_methods.hpp"

using namespace std::chrono_literals;

namespace {

int square(int x) {
  return x * x;
}
int add(int a, int b) {
  return a + b;
}
int fail_on_three(int x) {
  if (x == 3) throw std::invalid_argument("three");
  return x;
}
struct CustomError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
int throw_custom(int) {
  throw CustomError("custom");
}
int my_pid(int) {
  return static_cast<int>(::getpid());
}
int segfault(int) {
  ::raise(SIGSEGV);
  return 0;
}
int exit_seven(int) {
  ::_exit(7);
}

// Set before a pool is built, so that its workers (forks) see it: the write end of a
// pipe on which a task announces that it started.
int g_started_fd = -1;
int announce_then_hang(int) {
  int pid = ::getpid();
  [[maybe_unused]] auto n = ::write(g_started_fd, &pid, sizeof pid);
  for (;;)
    ::pause();
}
int hang_on_zero(int x) {
  if (x == 0) announce_then_hang(x);
  return -x;
}
int negate(int x) {
  return -x;
}
int sleep_ms(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}

// Set before a pool is built: a pipe on which task 2 of go_between tells task 0 to go.
int g_go_r = -1, g_go_w = -1;
// 0: waits (at most 10 s) for task 2's word; 1 if it came, 0 if not. 2: sends the word.
int go_between(int x) {
  if (x == 0) {
    pollfd p{g_go_r, POLLIN, 0};
    char c = 0;
    return ::poll(&p, 1, 10000) == 1 && ::read(g_go_r, &c, 1) == 1 ? 1 : 0;
  }
  if (x == 2) {
    [[maybe_unused]] auto n = ::write(g_go_w, "g", 1);
  }
  return x;
}

// 0: waits (at most 10 s) for a word from each of tasks 2, 4 and 6; 1 if all came.
// 2, 4, 6: send their word. Others: return x.
int go_after_three(int x) {
  if (x == 0) {
    int got = 0;
    for (int i = 0; i < 3; ++i)
      got += go_between(0);
    return got == 3 ? 1 : 0;
  }
  if (x == 2 || x == 4 || x == 6) go_between(2);
  return x;
}
// Waits (at most 10 s) for a word on the go pipe; returns x, or -1 if none came.
int wait_for_go(int x) {
  return go_between(0) == 1 ? x : -1;
}

// Set before a pool is built: how often each task started, and the pid of the worker
// that started one last, in memory its workers share.
std::atomic<int>* g_starts = nullptr;
std::atomic<int>* g_last_starter = nullptr;
// Counts its start, then sleeps: 20 ms for every seventh task, 2 ms for the others.
int count_start_and_sleep(int i) {
  g_starts[i].fetch_add(1);
  g_last_starter->store(static_cast<int>(::getpid()));
  return sleep_ms(i % 7 == 0 ? 20 : 2) >= 0 ? i : -1;
}

struct Pipe {
  int r = -1, w = -1;
  Pipe() {
    int fds[2];
    EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    r = fds[0];
    w = fds[1];
  }
  ~Pipe() {
    ::close(r);
    ::close(w);
  }
  int read_int() const {
    int v = 0;
    EXPECT_EQ(::read(r, &v, sizeof v), static_cast<ssize_t>(sizeof v));
    return v;
  }
};

// The go pipe of go_between(), set for the pools built while it lives.
struct GoPipe : Pipe {
  GoPipe() {
    g_go_r = r;
    g_go_w = w;
  }
  ~GoPipe() { g_go_r = g_go_w = -1; }
};

std::vector<int> iota_vec(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}
std::vector<int> squares(int n) {
  auto v = iota_vec(n);
  for (auto& x : v)
    x = x * x;
  return v;
}

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

// --- mpx's guarantees ---

// Runs round(pool, victim, started, i) `rounds` times on one Pool(2): victim is a task
// whose worker writes its pid to `started`, then hangs.
template <class Round>
void with_hanging_victims(int rounds, Round round) {
  Pipe started;
  g_started_fd = started.w;
  mpx::Pool pool(2);
  for (int i = 0; i < rounds && !::testing::Test::HasFatalFailure(); ++i)
    round(pool, pool.apply_async(announce_then_hang, 0), started, i);
  g_started_fd = -1;
}

TEST(PoolCrashTest, KilledWorkerFailsExactlyItsTaskHundredTimesInARow) {
  with_hanging_victims(
      100, [](mpx::Pool& pool, mpx::AsyncResult<int> victim, const Pipe& started, int round) {
        std::vector<mpx::AsyncResult<int>> others;
        for (int i = 0; i < 4; ++i)
          others.push_back(pool.apply_async(square, i));
        pid_t pid = started.read_int();
        ASSERT_EQ(::kill(pid, SIGKILL), 0);
        try {
          victim.get(20s);
          FAIL() << "no exception in round " << round;
        } catch (const mpx::WorkerLost& e) {
          ASSERT_EQ(e.pid(), pid);
          ASSERT_EQ(e.signal(), SIGKILL);
        }
        for (int i = 0; i < 4; ++i)
          ASSERT_EQ(others[static_cast<std::size_t>(i)].get(20s), i * i);
      });
}

TEST(PoolCrashTest, WorkerKilledWhileCallersCollectFailsOnlyItsTask) {
  with_hanging_victims(
      20, [](mpx::Pool& pool, mpx::AsyncResult<int> victim, const Pipe& started, int round) {
        std::atomic<int> lost{0}, wrong{0};
        // Two callers wait (one of them reads results for both) while the worker dies.
        std::thread waiter([&] {
          try {
            victim.get(20s);
          } catch (const mpx::WorkerLost&) {
            ++lost;
          }
        });
        std::thread busy([&] {
          for (int i = 0; i < 200; ++i)
            if (pool.apply_async(square, i).get(20s) != i * i) ++wrong;
        });
        pid_t pid = started.read_int();
        EXPECT_EQ(::kill(pid, SIGKILL), 0);
        waiter.join();
        busy.join();
        ASSERT_EQ(lost, 1) << "round " << round;
        ASSERT_EQ(wrong, 0) << "round " << round;
      });
}

TEST(PoolCrashTest, SegfaultingTaskFailsWithWorkerLostAndPoolGoesOn) {
  mpx::Pool pool(2);
  auto r = pool.apply_async(segfault, 0);
  mpx_test::expect_lost_to_segfault(r);
  EXPECT_EQ(pool.map(square, iota_vec(50), 1), squares(50));
}

TEST(PoolCrashTest, ExitingTaskReportsItsExitCode) {
  mpx::Pool pool(1);
  try {
    pool.apply(exit_seven, 0);
    FAIL() << "no exception";
  } catch (const mpx::WorkerLost& e) {
    EXPECT_EQ(e.exitcode(), 7);
    EXPECT_FALSE(e.signal());
  }
  EXPECT_EQ(pool.apply(square, 3), 9);
}

TEST(PoolCrashTest, TaskOverItsTimeoutIsKilledAndItsWorkerReplaced) {
  mpx::PoolOptions options;
  options.timeout = 500ms;
  mpx::Pool pool(1, options);
  auto before = pool.pids();
  auto start = std::chrono::steady_clock::now();
  auto slow = pool.apply_async(sleep_ms, 20000);
  auto next = pool.apply_async(square, 5);
  EXPECT_THROW(slow.get(20s), mpx::TimeoutError);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 490ms);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 15s);
  EXPECT_EQ(next.get(20s), 25);
  EXPECT_NE(pool.pids(), before);
  EXPECT_EQ(pool.apply(sleep_ms, 10), 10);  // quick tasks are unaffected
}

TEST(PoolCrashTest, CrashInsideAChunkFailsTheMapNotThePool) {
  mpx::Pool pool(2);
  auto r = pool.map_async(
      +[](int x) {
        if (x == 17) ::raise(SIGKILL);
        return x;
      },
      iota_vec(40), 5);
  EXPECT_THROW(r.get(20s), mpx::WorkerLost);
  EXPECT_EQ(pool.map(square, iota_vec(40)), squares(40));
}

TEST(PoolCrashTest, CrashDuringALongMapFailsItWhileItCollectsBeforeQueueingMore) {
  // 10 000 single-item chunks: map() is collecting results to make room when the
  // worker running item 5000 dies; it must end with WorkerLost, not wait forever.
  mpx::Pool pool(2);
  EXPECT_THROW(pool.map(
                   +[](int x) {
                     if (x == 5000) ::raise(SIGKILL);
                     return x;
                   },
                   iota_vec(10000), 1),
               mpx::WorkerLost);
  EXPECT_EQ(pool.map(square, iota_vec(40)), squares(40));
}

TEST(PoolCrashTest, ChunksQueuedBehindAKilledWorkerRunWithTheirOwnItems) {
  // A large chunk's buffer is reused for the caller's next chunk once a worker started
  // it; the chunks its worker had not started go to the next worker, and must still
  // hold their own items.
  Pipe started;
  g_started_fd = started.w;
  constexpr int kChunk = 100'000;  // 400 KB of ints
  constexpr int kItems = 4 * kChunk;
  std::vector<int> negated(kItems);
  for (int i = 0; i < kItems; ++i)
    negated[static_cast<std::size_t>(i)] = -i;
  {
    mpx::Pool pool(1);
    auto victim = pool.map_async(hang_on_zero, iota_vec(kChunk), kChunk);
    pid_t pid = started.read_int();  // its one chunk started: the next ones wait behind it
    auto behind = pool.map_async(negate, iota_vec(kItems), kChunk);
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    EXPECT_THROW(victim.get(60s), mpx::WorkerLost);
    EXPECT_EQ(behind.get(60s), negated);
    EXPECT_EQ(pool.map(negate, iota_vec(kItems)), negated);
  }
  g_started_fd = -1;
}

// Workers killed every few milliseconds while maps of long tasks end (when idle workers
// take back tasks queued behind others, and workers hold back waking the collector):
// each map returns all its results or fails with WorkerLost, none hangs, and no task
// starts twice (a task taken back, or queued behind a killed worker's, runs once).
// The worker killed is the one that started a task last: one still starting up (slow
// under AddressSanitizer on a loaded machine) could die before its start was seen three
// times in a row, which breaks the pool by design (BrokenPool, as for an initializer
// that keeps crashing).
TEST(PoolCrashTest, KillsWhileTasksAreTakenBackLoseAndRepeatNone) {
  constexpr int kMaps = 16, kItems = 6, kTasks = kMaps * kItems;
  constexpr std::size_t kBytes = (kTasks + 1) * sizeof(std::atomic<int>);
  void* shared = ::mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(shared, MAP_FAILED);
  g_starts = new (shared) std::atomic<int>[kTasks + 1]();
  g_last_starter = g_starts + kTasks;
  {
    mpx::Pool pool(3);
    EXPECT_EQ(pool.map(sleep_ms, std::vector<int>(6, 2), 1), std::vector<int>(6, 2));  // long
    struct Killer {
      std::atomic<bool> stop{false};
      std::thread thread;
      ~Killer() {  // also when the test fails by an exception
        stop = true;
        if (thread.joinable()) thread.join();
      }
    } killer;
    killer.thread = std::thread([&] {
      while (!killer.stop.load()) {
        std::this_thread::sleep_for(10ms);
        if (const int pid = g_last_starter->exchange(0); pid > 0) ::kill(pid, SIGKILL);
      }
    });
    for (int m = 0; m < kMaps; ++m) {
      std::vector<int> items(kItems);
      std::iota(items.begin(), items.end(), m * kItems);
      try {
        EXPECT_EQ(pool.map_async(count_start_and_sleep, items, 1).get(60s), items);
        for (int i : items)
          EXPECT_EQ(g_starts[i].load(), 1) << "task " << i;
      } catch (const mpx::WorkerLost&) {  // anything else fails the test
      }
    }
    killer.stop = true;
    killer.thread.join();
    for (int i = 0; i < kTasks; ++i)
      EXPECT_LE(g_starts[i].load(), 1) << "task " << i;
  }
  ::munmap(shared, kBytes);
  g_starts = nullptr;
  g_last_starter = nullptr;
}

TEST(PoolCrashTest, NothingIsLeftAfterTheParentIsKilled) {
  Pipe report;
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    mpx::Pool pool(2);
    pool.map(square, iota_vec(10));
    auto pids = pool.pids();
    while (pids.size() < 2) {  // the second worker may not have reported in yet
      std::this_thread::sleep_for(1ms);
      pids = pool.pids();
    }
    [[maybe_unused]] auto n = ::write(report.w, pids.data(), sizeof(pid_t) * 2);
    for (;;)
      ::pause();
  }
  pid_t workers[2];
  ASSERT_EQ(::read(report.r, workers, sizeof workers), static_cast<ssize_t>(sizeof workers));
  ::kill(child, SIGKILL);
  int status;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  for (pid_t w : workers) {
    bool gone = false;
    for (int i = 0; i < 1000 && !gone; ++i) {
      gone = ::kill(w, 0) != 0 && errno == ESRCH;
      if (!gone) std::this_thread::sleep_for(10ms);
    }
    EXPECT_TRUE(gone) << "worker " << w << " outlived its pool's process";
  }
}

// --- ThreadPool: the same front end on threads ---

TEST(ThreadPoolTest, RunsAnyCallableWithTheSameApi) {
  mpx::ThreadPool pool(3);
  int offset = 10;
  auto plus = [offset](int x) { return x + offset; };
  EXPECT_EQ(pool.map(plus, iota_vec(5)), (std::vector<int>{10, 11, 12, 13, 14}));
  EXPECT_EQ(pool.apply(plus, 1), 11);
  std::vector<int> got;
  for (int r : pool.imap(plus, std::vector<int>{1, 2, 3}))
    got.push_back(r);
  EXPECT_EQ(got, (std::vector<int>{11, 12, 13}));
  EXPECT_THROW(pool.apply(fail_on_three, 3), std::invalid_argument);
  try {
    pool.apply(throw_custom, 0);
  } catch (const CustomError&) {  // threads keep the exact type
    SUCCEED();
  }
}

TEST(ThreadPoolTest, FailingInitializerBreaksThePool) {
  mpx::PoolOptions options;
  options.initializer([] { throw std::runtime_error("init"); });
  mpx::ThreadPool pool(2, options);
  // The pool may be broken already when apply_async is called: then it throws.
  EXPECT_THROW(pool.apply_async(square, 2).get(10s), mpx::BrokenPool);
}

TEST(ThreadPoolTest, TerminateCancelsPendingTasks) {
  mpx::ThreadPool pool(1);
  std::vector<mpx::AsyncResult<int>> rs;
  for (int i = 0; i < 1000; ++i)
    rs.push_back(pool.apply_async(sleep_ms, 10));
  pool.terminate();
  pool.join();
  int cancelled = 0;
  for (auto& r : rs) {
    ASSERT_TRUE(r.ready());
    cancelled += r.successful() ? 0 : 1;
  }
  EXPECT_GE(cancelled, 900);
}

}  // namespace

namespace {

TEST(ForkMapTest, TakesCapturingLambdasAndSeesTheCallersMemory) {
  std::vector<int> table{5, 6, 7, 8};
  int offset = 100;
  auto r = mpx::fork_map([&](int i) { return table[static_cast<std::size_t>(i)] + offset; },
                         std::vector<int>{3, 2, 1, 0}, 2);
  EXPECT_EQ(r, (std::vector<int>{108, 107, 106, 105}));
}

TEST(ForkMapTest, ForkImapIsLazyAndOrdered) {
  int factor = 3;
  auto it = mpx::fork_imap([factor](int x) { return x * factor; }, std::views::iota(0), 2);
  for (int i = 0; i < 100; ++i)
    ASSERT_EQ(*it.next(), 3 * i);
}

TEST(ForkMapTest, CrashingCallFailsTheMapWithWorkerLost) {
  int poison = 4;
  EXPECT_THROW(mpx::fork_map(
                   [&](int x) {
                     if (x == poison) ::raise(SIGKILL);
                     return x;
                   },
                   iota_vec(10), 2),
               mpx::WorkerLost);
}

TEST(ProgressTest, PassesElementsThroughAndCountsThem) {
  mpx::Pool pool(2);
  std::vector<int> got;
  auto bar = mpx::progress(pool.imap(square, iota_vec(20)), 20);
  for (int r : bar)
    got.push_back(r);
  EXPECT_EQ(got, squares(20));
  EXPECT_EQ(bar.count(), 20u);
  std::vector<mpx::Future<int>> fs;
  for (int i = 0; i < 5; ++i)
    fs.push_back(pool.apply_async(square, i));
  int n = 0;
  for (const auto& f : mpx::progress(mpx::as_completed(fs)))
    n += f.done();
  EXPECT_EQ(n, 5);
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
