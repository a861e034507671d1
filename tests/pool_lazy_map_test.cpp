// Lazy maps (Pool::imap, imap_unordered, Executor::map) left before their end: by break,
// an exception, close(), destruction or the map's own timeout. The rule the headers
// state: the input must outlive the map object; once that object is closed or gone, its
// feeder never touches the input again, its items not yet handed to a worker are
// cancelled, the ones already running finish, and no item runs twice.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <numeric>
#include <ranges>
#include <stdexcept>
#include <thread>
#include <vector>

#include "mpx/futures.hpp"
#include "mpx/pool.hpp"
#include "support/shared_counts.hpp"

using namespace std::chrono_literals;

namespace {

constexpr int kItems = 2000;

// How often each item ran (in memory the pools' workers share).
mpx_test::SharedCounts<kItems>* runs() {
  return &mpx_test::counts<kItems>();
}
void reset_runs() {
  runs()->reset();
}
// Counts its run, then takes a millisecond.
int count_run(int x) {
  runs()->add(static_cast<std::size_t>(x));
  std::this_thread::sleep_for(1ms);
  return x;
}
int sleep_ms(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}
int square(int x) {
  return x * x;
}

std::vector<int> iota_vec(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

// The four front ends' lazy map: imap for the pools, map for the executors.
template <class P>
constexpr bool kExecutor =
    std::is_same_v<P, mpx::ThreadPoolExecutor> || std::is_same_v<P, mpx::ProcessPoolExecutor>;
template <class P, class F, class Range>
auto lazy_map(P& p, F f, Range&& range) {
  if constexpr (kExecutor<P>) {
    return p.map(f, std::forward<Range>(range));
  } else {
    return p.imap(f, std::forward<Range>(range));
  }
}
// Lets the pool finish what it holds and stop (Pool: close + join; executor: shutdown).
template <class P>
void finish(P& p) {
  if constexpr (kExecutor<P>) {
    p.shutdown(true);
  } else {
    p.close();
    p.join();
  }
}

template <class P>
class LazyMapTest : public ::testing::Test {
 protected:
  void SetUp() override { reset_runs(); }
};
using FrontEnds =
    ::testing::Types<mpx::Pool, mpx::ThreadPool, mpx::ProcessPoolExecutor, mpx::ThreadPoolExecutor>;
class Names {
 public:
  template <class T>
  static std::string GetName(int) {
    if (std::is_same_v<T, mpx::Pool>) return "Pool";
    if (std::is_same_v<T, mpx::ThreadPool>) return "ThreadPool";
    if (std::is_same_v<T, mpx::ProcessPoolExecutor>) return "ProcessPoolExecutor";
    return "ThreadPoolExecutor";
  }
};
TYPED_TEST_SUITE(LazyMapTest, FrontEnds, Names);

// Issue 26 item 1: `for (int r : ex.map(slow, xs)) if (r == 5) break;`, then xs goes
// away. The feeder went on reading xs (a heap-use-after-free under AddressSanitizer;
// without it, the count of items read kept growing once the pool was closed) and every
// item ran.
TYPED_TEST(LazyMapTest, BreakingOutStopsReadingTheInputAndCancelsItemsNotStarted) {
  TypeParam pool(2);
  std::atomic<int> read{0};
  int read_when_left = 0;
  {
    auto xs = std::make_unique<std::vector<int>>(iota_vec(kItems));
    auto counted = *xs | std::views::transform([&read](int x) {
      read.fetch_add(1);
      return x;
    });
    for (int r : lazy_map(pool, count_run, counted))
      if (r == 5) break;
    read_when_left = read.load();
  }  // xs is freed here: the map must not read it again
  finish(pool);
  EXPECT_EQ(read.load(), read_when_left) << "the input was read after the map was left";
  EXPECT_LE(runs()->total.load(), read_when_left);
  EXPECT_LT(runs()->total.load(), kItems / 2) << "items not started still ran";
  for (int i = 0; i < kItems; ++i)
    ASSERT_LE(runs()->of[i].load(), 1) << "item " << i << " ran twice";
}

TYPED_TEST(LazyMapTest, AnExceptionInTheLoopStopsTheMap) {
  TypeParam pool(2);
  std::atomic<int> read{0};
  int read_when_left = 0;
  {
    auto xs = std::make_unique<std::vector<int>>(iota_vec(kItems));
    auto counted = *xs | std::views::transform([&read](int x) {
      read.fetch_add(1);
      return x;
    });
    try {
      for (int r : lazy_map(pool, count_run, counted))
        if (r == 3) throw std::runtime_error("stop");
    } catch (const std::runtime_error&) {
    }
    read_when_left = read.load();
  }
  finish(pool);
  EXPECT_EQ(read.load(), read_when_left);
  EXPECT_LT(runs()->total.load(), kItems / 2);
}

// Python's generator close(): the map ends there; next() then returns nullopt.
TYPED_TEST(LazyMapTest, CloseEndsTheIterationAndCancelsItemsNotStarted) {
  TypeParam pool(2);
  std::vector<int> xs = iota_vec(kItems);
  auto it = lazy_map(pool, count_run, xs);
  EXPECT_EQ(*it.next(), 0);
  it.close();
  EXPECT_FALSE(it.next());
  it.close();  // twice is harmless
  finish(pool);
  EXPECT_LT(runs()->total.load(), kItems / 2);
}

TYPED_TEST(LazyMapTest, AnRvalueInputIsMovedIntoTheMap) {
  TypeParam pool(2);
  auto it = lazy_map(pool, square, iota_vec(100));  // the vector lives in the map
  std::vector<int> got;
  for (int r : it)
    got.push_back(r);
  ASSERT_EQ(got.size(), 100u);
  for (int i = 0; i < 100; ++i)
    EXPECT_EQ(got[static_cast<std::size_t>(i)], i * i);
}

TYPED_TEST(LazyMapTest, AMapReadToItsEndRunsEveryItemOnce) {
  TypeParam pool(2);
  std::vector<int> xs = iota_vec(200);
  int n = 0;
  for (int r : lazy_map(pool, count_run, xs))
    EXPECT_EQ(r, n++);
  EXPECT_EQ(n, 200);
  finish(pool);
  EXPECT_EQ(runs()->total.load(), 200);
}

TEST(LazyMapTest, ImapUnorderedLeftEarlyStopsReadingTheInput) {
  reset_runs();
  mpx::Pool pool(2);
  std::atomic<int> read{0};
  int read_when_left = 0;
  {
    auto xs = std::make_unique<std::vector<int>>(iota_vec(kItems));
    auto counted = *xs | std::views::transform([&read](int x) {
      read.fetch_add(1);
      return x;
    });
    int seen = 0;
    for (int r : pool.imap_unordered(count_run, counted, 3)) {
      (void)r;
      if (++seen == 10) break;
    }
    read_when_left = read.load();
  }
  pool.close();
  pool.join();
  EXPECT_EQ(read.load(), read_when_left);
  EXPECT_LT(runs()->total.load(), kItems / 2);
}

// Issue 21 item 4: a ThreadPoolExecutor(1) busy on one task; ex.map(f, xs, timeout 0):
// the first next() throws TimeoutError; the items still ran. Python cancels the items a
// map has not yielded when it times out. A process worker holds one task queued behind
// its running one (as Python's call queue does): that one counts as running.
template <class E>
class ExecutorMapTimeoutTest : public LazyMapTest<E> {};
using Executors = ::testing::Types<mpx::ProcessPoolExecutor, mpx::ThreadPoolExecutor>;
TYPED_TEST_SUITE(ExecutorMapTimeoutTest, Executors, Names);

TYPED_TEST(ExecutorMapTimeoutTest, MapThatTimedOutCancelsItsItemsNotStarted) {
  TypeParam ex(1);
  auto busy = ex.submit(sleep_ms, 300);
  auto it = ex.map(count_run, iota_vec(10), mpx::MapOptions{0s, 1});
  EXPECT_THROW(it.next(), mpx::TimeoutError);
  EXPECT_THROW(it.next(), mpx::TimeoutError);  // the map stays timed out
  EXPECT_EQ(busy.result(10s), 300);
  ex.shutdown(true);  // `it` still exists: its items must not run meanwhile
  const int allowed = std::is_same_v<TypeParam, mpx::ThreadPoolExecutor> ? 0 : 1;
  EXPECT_LE(runs()->total.load(), allowed);
}

TYPED_TEST(ExecutorMapTimeoutTest, MapDestroyedBeforeItsItemsStartedCancelsThem) {
  TypeParam ex(1);
  auto busy = ex.submit(sleep_ms, 300);
  { auto it = ex.map(count_run, iota_vec(10)); }
  EXPECT_EQ(busy.result(10s), 300);
  ex.shutdown(true);
  const int allowed = std::is_same_v<TypeParam, mpx::ThreadPoolExecutor> ? 0 : 1;
  EXPECT_LE(runs()->total.load(), allowed);
}

}  // namespace
