// The pool API a newcomer writes first: maps of a function that returns nothing, and
// apply_async's callbacks as keyword-like last arguments (mpx::callback,
// mpx::error_callback). Misuses that must not compile are in tests/compile_fail/.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <exception>
#include <numeric>
#include <stdexcept>
#include <thread>
#include <tuple>
#include <type_traits>
#include <variant>
#include <vector>

#include "mpx/futures.hpp"
#include "mpx/pool.hpp"
#include "support/shared_counts.hpp"

using namespace std::chrono_literals;

namespace {

constexpr int kItems = 64;

mpx_test::SharedCounts<kItems>& seen() {
  return mpx_test::counts<kItems>();
}
// The tutorials' first Pool example: a worker function that returns nothing.
void record(int i) {
  seen().add(static_cast<std::size_t>(i));
}
void record_pair(int i, int j) {
  seen().add(static_cast<std::size_t>(i + j));
}
void fail_on_five(int i) {
  if (i == 5) throw std::invalid_argument("five");
  record(i);
}
int add(int a, int b) {
  return a + b;
}
int fail(int) {
  throw std::out_of_range("no");
}

std::vector<int> iota_vec(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

// Each item was recorded exactly once.
void expect_each_once(int n) {
  EXPECT_EQ(seen().total.load(), n);
  for (int i = 0; i < n; ++i)
    EXPECT_EQ(seen().of[i].load(), 1) << "item " << i;
}

template <class P>
class VoidMapTest : public ::testing::Test {
 protected:
  void SetUp() override { seen().reset(); }
};
using Pools = ::testing::Types<mpx::Pool, mpx::ThreadPool>;
class Names {
 public:
  template <class T>
  static std::string GetName(int) {
    return std::is_same_v<T, mpx::Pool> ? "Pool" : "ThreadPool";
  }
};
TYPED_TEST_SUITE(VoidMapTest, Pools, Names);

// Issue 21 item 13: `pool.map(worker_function, xs)` with a void worker_function did not
// compile (279 lines of errors). Python returns a list of None; mpx's map returns
// nothing, map_async a Future<void>, imap an iterator of std::monostate (None).
TYPED_TEST(VoidMapTest, MapOfAFunctionReturningNothingRunsEachItemAndReturnsNothing) {
  TypeParam pool(2);
  static_assert(std::is_void_v<decltype(pool.map(record, iota_vec(1)))>);
  for (std::size_t chunksize : {0u, 1u, 7u}) {
    seen().reset();
    pool.map(record, iota_vec(kItems), chunksize);
    expect_each_once(kItems);
  }
  seen().reset();
  pool.map(record, std::vector<int>{});
  EXPECT_EQ(seen().total.load(), 0);
}

TYPED_TEST(VoidMapTest, MapAsyncOfAFunctionReturningNothingIsAFutureOfVoid) {
  TypeParam pool(2);
  mpx::Future<void> f = pool.map_async(record, iota_vec(kItems), 4);
  f.get();
  EXPECT_TRUE(f.successful());
  expect_each_once(kItems);
  auto bad = pool.map_async(fail_on_five, iota_vec(10), 2);
  EXPECT_THROW(bad.get(), std::invalid_argument);
  EXPECT_THROW(pool.map(fail_on_five, iota_vec(10)), std::invalid_argument);
}

TYPED_TEST(VoidMapTest, StarmapOfAFunctionReturningNothingRunsEachTuple) {
  TypeParam pool(2);
  std::vector<std::tuple<int, int>> pairs;
  for (int i = 0; i < kItems; i += 2)
    pairs.emplace_back(i, 1);  // i + 1: the odd items
  pool.starmap(record_pair, pairs);
  pool.starmap_async(record_pair, std::vector<std::tuple<int, int>>{{0, 0}}).get();
  EXPECT_EQ(seen().total.load(), kItems / 2 + 1);
  for (int i = 0; i < kItems; ++i)
    EXPECT_EQ(seen().of[i].load(), i % 2 == 1 || i == 0 ? 1 : 0) << "item " << i;
}

TYPED_TEST(VoidMapTest, ImapOfAFunctionReturningNothingYieldsOneNonePerItem) {
  TypeParam pool(2);
  int n = 0;
  for (std::monostate none : pool.imap(record, iota_vec(kItems), 3)) {
    (void)none;
    ++n;
  }
  EXPECT_EQ(n, kItems);
  for (auto none : pool.imap_unordered(record, iota_vec(kItems)))
    n += std::is_same_v<decltype(none), std::monostate> ? 1 : 0;
  EXPECT_EQ(n, 2 * kItems);
  EXPECT_EQ(seen().total.load(), 2 * kItems);
}

TYPED_TEST(VoidMapTest, MapAsyncCallbackOfAFunctionReturningNothingTakesNoArgument) {
  TypeParam pool(2);
  std::atomic<int> called{0};
  auto f = pool.map_async(record, iota_vec(8), 2, [&called] { called.fetch_add(1); });
  f.get();
  EXPECT_EQ(called.load(), 1);
}

TEST(VoidMapTest, ExecutorMapOfAFunctionReturningNothingYieldsOneNonePerItem) {
  seen().reset();
  {
    mpx::ProcessPoolExecutor ex(2);
    int n = 0;
    for (std::monostate none : ex.map(record, iota_vec(kItems))) {
      (void)none;
      ++n;
    }
    EXPECT_EQ(n, kItems);
  }
  expect_each_once(kItems);
  mpx::ThreadPoolExecutor threads(2);
  int n = 0;
  for (auto none : threads.map(record_pair, iota_vec(4), iota_vec(4))) {
    (void)none;
    ++n;
  }
  EXPECT_EQ(n, 4);
}

TEST(VoidMapTest, ForkMapOfAFunctionReturningNothing) {
  seen().reset();
  int offset = 1;
  mpx::fork_map([&](int i) { record(i + offset); }, iota_vec(10), 2);
  EXPECT_EQ(seen().total.load(), 10);
  EXPECT_EQ(seen().of[10].load(), 1);
}

// Issue 21 item 16: apply_async(f, 1, callback) needed std::tuple{1}. The arguments now
// come directly, the callbacks last, named as Python's keyword arguments.
template <class P>
class CallbackTest : public ::testing::Test {};
TYPED_TEST_SUITE(CallbackTest, Pools, Names);

TYPED_TEST(CallbackTest, ApplyAsyncTakesItsArgumentsDirectlyAndNamedCallbacks) {
  TypeParam pool(2);
  std::atomic<int> got{0};
  auto f = pool.apply_async(add, 20, 22, mpx::callback([&got](int r) { got.store(r); }));
  EXPECT_EQ(f.get(10s), 42);
  EXPECT_EQ(got.load(), 42) << "the callback runs before get() returns";
}

TYPED_TEST(CallbackTest, ExactlyOneOfTheNamedCallbacksRuns) {
  TypeParam pool(2);
  std::atomic<int> values{0}, errors{0};
  auto on_value = mpx::callback([&values](int) { values.fetch_add(1); });
  auto on_error = mpx::error_callback([&errors](std::exception_ptr e) {
    try {
      std::rethrow_exception(e);
    } catch (const std::out_of_range&) {
      errors.fetch_add(1);
    }
  });
  auto good = pool.apply_async(add, 1, 2, on_value, on_error);
  auto bad = pool.apply_async(fail, 1, on_error, on_value);  // either order
  EXPECT_EQ(good.get(10s), 3);
  EXPECT_THROW(bad.get(10s), std::out_of_range);
  EXPECT_EQ(values.load(), 1);
  EXPECT_EQ(errors.load(), 1);
  auto only_error = pool.apply_async(fail, 2, on_error);
  EXPECT_THROW(only_error.get(10s), std::out_of_range);
  EXPECT_EQ(errors.load(), 2);
}

TYPED_TEST(CallbackTest, TheTupleFormStillWorks) {
  TypeParam pool(1);
  std::atomic<int> got{0};
  auto f = pool.apply_async(add, std::tuple{2, 3}, [&got](int r) { got.store(r); });
  EXPECT_EQ(f.get(10s), 5);
  EXPECT_EQ(got.load(), 5);
}

TEST(CallbackTest, CallbackOfAFunctionReturningNothingTakesNoArgument) {
  seen().reset();
  mpx::Pool pool(1);
  std::atomic<int> called{0};
  auto f = pool.apply_async(record, 3, mpx::callback([&called] { called.fetch_add(1); }));
  f.get(10s);
  EXPECT_EQ(called.load(), 1);
  EXPECT_EQ(seen().of[3].load(), 1);
}

}  // namespace
