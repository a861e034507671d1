// Tests of mpx/sharedctypes.hpp: Value, Array, RawValue, RawArray shared between processes.
#include "mpx/sharedctypes.hpp"

#include "mpx/process.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <mutex>
#include <numeric>
#include <thread>
#include <vector>

#include "support/child.hpp"

using namespace std::chrono_literals;

namespace {

using mpx_test::join_child;
using mpx_test::start_child;

struct Point {
  double x;
  double y;
};

}  // namespace

TEST(ValueTest, HoldsItsInitialValueAndSetChangesIt) {
  mpx::Value<int> v(42);
  EXPECT_EQ(v.value(), 42);
  v.set(7);
  EXPECT_EQ(v.value(), 7);
  mpx::Value<Point> p(Point{1.5, 2.5});
  EXPECT_EQ(p.value().y, 2.5);
  mpx::Value<long> zero;
  EXPECT_EQ(zero.value(), 0);
}

TEST(ValueTest, HasAnRLockSoValueWorksWhileHoldingGetLock) {
  mpx::Value v(1);
  std::lock_guard guard(v.get_lock());
  v.set(v.value() + 1);
  EXPECT_EQ(v.value(), 2);
  EXPECT_TRUE(v.get_lock().locked());
}

TEST(ValueTest, WithLockPassesTheValueAndReturnsTheResult) {
  mpx::Value v(10);
  int old = v.with_lock([](int& x) { return x++; });
  EXPECT_EQ(old, 10);
  EXPECT_EQ(v.value(), 11);
  EXPECT_TRUE(v.with_lock([&] { return v.get_lock().locked(); }));
  EXPECT_FALSE(v.get_lock().locked());
}

TEST(ValueTest, WithoutALockGetLockThrows) {
  mpx::Value v(3, false);
  EXPECT_THROW(v.get_lock(), mpx::InvalidStateError);
  v.set(4);
  EXPECT_EQ(v.value(), 4);
  EXPECT_EQ(v.with_lock([](int& x) { return x; }), 4);
}

TEST(ValueTest, CanShareAnExistingLock) {
  mpx::Lock lock;
  mpx::Value a(1, lock);
  mpx::Value b(2.0, lock);
  lock.acquire();
  EXPECT_TRUE(a.get_lock().locked());
  EXPECT_TRUE(b.get_lock().locked());
  lock.release();
  EXPECT_EQ(a.value() + b.value(), 3.0);
}

TEST(ValueTest, CopiesAndChildrenShareTheValue) {
  mpx::Value v(0);
  auto copy = v;
  copy.set(5);
  EXPECT_EQ(v.value(), 5);
  auto child = start_child([v] { v.set(99); });
  EXPECT_EQ(join_child(child), 0);
  EXPECT_EQ(v.value(), 99);
}

TEST(ValueTest, CounterIncrementedByFourProcessesUnderGetLockEndsExact) {
  mpx::Value<long> counter(0);
  constexpr long kIncrements = 100'000;
  std::vector<mpx::Process> children;
  for (int i = 0; i < 4; ++i) {
    children.push_back(start_child([counter] {
      for (long k = 0; k < kIncrements; ++k) {
        std::lock_guard guard(counter.get_lock());
        counter.get_obj() += 1;
      }
    }));
  }
  for (auto& child : children)
    EXPECT_EQ(join_child(child), 0);
  EXPECT_EQ(counter.value(), 4 * kIncrements);
}

TEST(ValueTest, ALockOwnerKilledMakesTheNextAccessThrowOwnerDiedOnce) {
  mpx::Value<int> v(1);
  mpx::Event held;
  auto child = start_child([&] {
    v.get_lock().acquire();
    held.set();
    for (;;)
      ::pause();
  });
  ASSERT_TRUE(held.wait(10s));
  child.kill();
  EXPECT_EQ(join_child(child), -SIGKILL);
  EXPECT_THROW(v.value(), mpx::OwnerDied);
  EXPECT_FALSE(v.get_lock().locked());
  EXPECT_EQ(v.value(), 1);
}

TEST(RawValueTest, IsSharedWithAChildWithoutALock) {
  mpx::RawValue<Point> p(Point{1, 2});
  EXPECT_EQ(p->x, 1);
  auto child = start_child([p] { p->x = 10; });
  EXPECT_EQ(join_child(child), 0);
  EXPECT_EQ(p.value().x, 10);
  p.set(Point{3, 4});
  EXPECT_EQ((*p).y, 4);
}

TEST(ArrayTest, StartsZeroedOrFromARange) {
  mpx::Array<int> zeros(5);
  EXPECT_EQ(zeros.size(), 5u);
  for (int x : zeros)
    EXPECT_EQ(x, 0);
  std::vector<double> init{1, 2, 3};
  mpx::Array<double> a(init);
  EXPECT_EQ(a.size(), 3u);
  EXPECT_EQ(a[2], 3.0);
  mpx::Array<int> b{4, 5, 6};
  EXPECT_EQ(std::accumulate(b.begin(), b.end(), 0), 15);
  EXPECT_EQ(b.span().size(), 3u);
}

TEST(ArrayTest, WithLockSeesTheWholeArrayAndChildrenShareIt) {
  mpx::Array<int> a(100);
  auto child = start_child([a] {
    a.with_lock([](std::span<int> s) {
      for (std::size_t i = 0; i < s.size(); ++i)
        s[i] = static_cast<int>(i);
    });
  });
  EXPECT_EQ(join_child(child), 0);
  EXPECT_EQ(a.with_lock([](std::span<int> s) { return std::accumulate(s.begin(), s.end(), 0); }),
            4950);
  std::lock_guard guard(a.get_lock());
  EXPECT_EQ(a[99], 99);
}

TEST(ArrayTest, AtChecksItsIndexAndCountsNegativeOnesFromTheEnd) {
  mpx::Array<int> a{10, 20, 30};
  EXPECT_EQ(a.at(0), 10);
  EXPECT_EQ(a.at(2), 30);
  EXPECT_EQ(a.at(-1), 30);
  EXPECT_EQ(a.at(-3), 10);
  a.at(-2) = 21;
  EXPECT_EQ(a[1], 21);
  EXPECT_THROW(a.at(3), mpx::IndexError);
  EXPECT_THROW(a.at(-4), mpx::IndexError);
  mpx::RawArray<int> raw(2);
  EXPECT_EQ(raw.at(-1), 0);
  EXPECT_THROW(raw.at(2), mpx::IndexError);
  mpx::Array<int> none(0);
  EXPECT_THROW(none.at(0), mpx::IndexError);
  EXPECT_THROW(none.at(-1), mpx::IndexError);
}

TEST(ArrayTest, WithoutALockGetLockThrows) {
  mpx::Array<char> a(4, false);
  EXPECT_THROW(a.get_lock(), mpx::InvalidStateError);
}

TEST(RawArrayTest, IsSharedWithAChild) {
  mpx::RawArray<long> a(8);
  auto child = start_child([a] {
    for (auto& x : a)
      x = 7;
  });
  EXPECT_EQ(join_child(child), 0);
  for (long x : a.span())
    EXPECT_EQ(x, 7);
  mpx::RawArray<int> b{1, 2, 3};
  EXPECT_EQ(b.size(), 3u);
  EXPECT_EQ(b.data()[1], 2);
}
