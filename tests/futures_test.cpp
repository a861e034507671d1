// Future<T> (also the AsyncResult), as_completed and wait: CPython's
// concurrent.futures behaviours, on a thread pool whose tasks the tests release.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <ranges>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "mpx/futures.hpp"
#include "mpx/pool.hpp"
#include "mpx/process.hpp"
#include "pool/state_memory.hpp"

using namespace std::chrono_literals;

namespace {

// A gate the tests open to let blocked tasks finish.
struct Gate {
  std::atomic<bool> open{false};
  void wait() const {
    while (!open.load())
      std::this_thread::yield();
  }
};

mpx::Future<int> ready_future(int value) {
  auto state = std::make_shared<mpx::detail::FutureState<int>>();
  state->set_result(value);
  return mpx::Future<int>(state);
}

int length_of(const std::string& s) {
  return static_cast<int>(s.size());
}

mpx::Future<int> pending_future() {
  return mpx::Future<int>(std::make_shared<mpx::detail::FutureState<int>>());
}

TEST(FutureTest, StateTableFollowsPendingRunningFinished) {
  auto f = pending_future();
  EXPECT_FALSE(f.done());
  EXPECT_FALSE(f.running());
  EXPECT_FALSE(f.cancelled());
  EXPECT_TRUE(f.state()->set_running());
  EXPECT_TRUE(f.running());
  EXPECT_FALSE(f.cancel());
  f.state()->set_result(5);
  EXPECT_TRUE(f.done());
  EXPECT_FALSE(f.running());
  EXPECT_FALSE(f.cancelled());
  EXPECT_EQ(f.result(), 5);
  EXPECT_EQ(f.exception(), nullptr);
  EXPECT_TRUE(f.successful());
}

TEST(FutureTest, CancelPendingFutureMakesResultThrowCancelledError) {
  auto f = pending_future();
  EXPECT_TRUE(f.cancel());
  EXPECT_TRUE(f.cancel());  // again: still cancelled
  EXPECT_TRUE(f.cancelled());
  EXPECT_TRUE(f.done());
  EXPECT_FALSE(f.state()->set_running());
  EXPECT_THROW(f.result(), mpx::CancelledError);
  EXPECT_THROW(f.exception(), mpx::CancelledError);
}

TEST(FutureTest, CancelFinishedFutureFails) {
  auto f = ready_future(1);
  EXPECT_FALSE(f.cancel());
  EXPECT_EQ(f.result(), 1);
}

TEST(FutureTest, ResultWithTimeoutThrowsTimeoutErrorWhenNotDone) {
  auto f = pending_future();
  auto start = std::chrono::steady_clock::now();
  EXPECT_THROW(f.result(100ms), mpx::TimeoutError);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 90ms);
  EXPECT_THROW(f.get(0ms), mpx::TimeoutError);
  EXPECT_FALSE(f.wait(10ms));
  EXPECT_FALSE(f.ready());
  EXPECT_THROW((void)f.successful(), mpx::ValueError);
  f.cancel();
}

TEST(FutureTest, ExceptionIsStoredAndRethrownAsItsType) {
  auto f = pending_future();
  f.state()->set_exception(std::make_exception_ptr(std::out_of_range("nope")));
  EXPECT_TRUE(f.done());
  EXPECT_FALSE(f.successful());
  EXPECT_THROW(f.result(), std::out_of_range);
  ASSERT_NE(f.exception(), nullptr);
  EXPECT_THROW(std::rethrow_exception(f.exception()), std::out_of_range);
}

TEST(FutureTest, DoneCallbackAddedBeforeCompletionRunsOnceWhenItCompletes) {
  auto f = pending_future();
  int calls = 0;
  int seen = 0;
  f.add_done_callback([&](const mpx::Future<int>& g) {
    ++calls;
    seen = g.result();
  });
  EXPECT_EQ(calls, 0);
  f.state()->set_result(42);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(seen, 42);
}

TEST(FutureTest, DoneCallbackAddedAfterCompletionRunsAtOnce) {
  auto f = ready_future(3);
  int calls = 0;
  f.add_done_callback([&](const mpx::Future<int>&) { ++calls; });
  EXPECT_EQ(calls, 1);
}

TEST(FutureTest, DoneCallbackRunsOnCancel) {
  auto f = pending_future();
  bool cancelled = false;
  f.add_done_callback([&](const mpx::Future<int>& g) { cancelled = g.cancelled(); });
  f.cancel();
  EXPECT_TRUE(cancelled);
}

TEST(FutureTest, ThrowingDoneCallbackDoesNotStopOthers) {
  auto f = pending_future();
  int calls = 0;
  f.add_done_callback([&](const mpx::Future<int>&) { throw std::runtime_error("boom"); });
  f.add_done_callback([&](const mpx::Future<int>&) { ++calls; });
  f.state()->set_result(1);
  EXPECT_EQ(calls, 1);
}

TEST(FutureTest, VoidFutureCompletes) {
  mpx::ThreadPoolExecutor ex(1);
  int x = 0;
  auto f = ex.submit([&x] { x = 7; });
  f.result();
  EXPECT_EQ(x, 7);
  EXPECT_TRUE(f.successful());
}

// Issue 21 item 17: Python's {ex.submit(f, u): u}. A map keyed by futures did not
// compile (no std::hash<mpx::Future<T>>).
TEST(FutureTest, FutureIsAKeyByTheIdentityOfItsState) {
  mpx::ProcessPoolExecutor ex(2);
  std::unordered_map<mpx::Future<int>, std::string> urls;
  const std::vector<std::string> names{"a", "bb", "ccc", "dddd"};
  for (const auto& name : names)
    urls.emplace(ex.submit(length_of, name), name);
  ASSERT_EQ(urls.size(), names.size());
  std::vector<mpx::Future<int>> fs;
  for (const auto& [f, name] : urls)
    fs.push_back(f);
  std::size_t seen = 0;
  for (const auto& f : mpx::as_completed(fs, 20s)) {
    ASSERT_TRUE(urls.contains(f));  // the future as_completed yields finds its entry
    EXPECT_EQ(f.result(), static_cast<int>(urls.at(f).size()));
    ++seen;
  }
  EXPECT_EQ(seen, names.size());
  // Copies are one key; futures with equal results are different keys.
  auto a = ready_future(1), b = ready_future(1);
  auto a_copy = a;
  EXPECT_EQ(a, a_copy);
  EXPECT_NE(a, b);
  EXPECT_EQ(std::hash<mpx::Future<int>>()(a), std::hash<mpx::Future<int>>()(a_copy));
  std::unordered_set<mpx::Future<int>> set{a, a_copy, b};
  EXPECT_EQ(set.size(), 2u);
}

TEST(AsCompletedTest, YieldsEachFutureOnceInCompletionOrder) {
  mpx::ThreadPoolExecutor ex(3);
  Gate first, second;
  auto slow = ex.submit([&] {
    second.wait();
    return 2;
  });
  auto fast = ex.submit([&] {
    first.wait();
    return 1;
  });
  auto done = ready_future(0);
  std::vector<mpx::Future<int>> fs{slow, fast, done, fast};  // duplicate counted once
  std::vector<int> order;
  auto it = mpx::as_completed(fs);
  auto a = it.next();
  ASSERT_TRUE(a);
  order.push_back(a->result());
  first.open = true;
  auto b = it.next();
  order.push_back(b->result());
  second.open = true;
  auto c = it.next();
  order.push_back(c->result());
  EXPECT_FALSE(it.next());
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2}));
}

// What imap and as_completed return are input ranges: std::ranges algorithms take them.
static_assert(std::ranges::input_range<mpx::AsCompleted<int>>);
static_assert(std::ranges::input_range<mpx::detail::IMapIterator<int>>);

TEST(AsCompletedTest, RangeForVisitsAll) {
  mpx::ThreadPoolExecutor ex(2);
  std::vector<mpx::Future<int>> fs;
  for (int i = 0; i < 20; ++i)
    fs.push_back(ex.submit([](int x) { return x; }, i));
  int sum = 0;
  int count = 0;
  for (const auto& f : mpx::as_completed(fs)) {
    sum += f.result();
    ++count;
  }
  EXPECT_EQ(count, 20);
  EXPECT_EQ(sum, 190);
}

TEST(AsCompletedTest, TimeoutThrowsWhenFuturesStayPending) {
  auto pending = pending_future();
  std::vector<mpx::Future<int>> fs{ready_future(1), pending};
  auto it = mpx::as_completed(fs, 100ms);
  EXPECT_EQ(it.next()->result(), 1);
  EXPECT_THROW(it.next(), mpx::TimeoutError);
  pending.cancel();
}

TEST(WaitTest, AllCompletedWaitsForEveryFuture) {
  mpx::ThreadPoolExecutor ex(2);
  std::vector<mpx::Future<int>> fs;
  for (int i = 0; i < 10; ++i)
    fs.push_back(ex.submit([](int x) { return x * 2; }, i));
  auto r = mpx::wait(fs);
  EXPECT_EQ(r.done.size(), 10u);
  EXPECT_TRUE(r.not_done.empty());
}

TEST(WaitTest, FirstCompletedReturnsWhenOneIsDone) {
  auto pending = pending_future();
  std::vector<mpx::Future<int>> fs{pending, ready_future(1)};
  auto r = mpx::wait(fs, mpx::FIRST_COMPLETED);
  EXPECT_EQ(r.done.size(), 1u);
  EXPECT_EQ(r.not_done.size(), 1u);
  EXPECT_EQ(r.done[0].result(), 1);
  pending.cancel();
}

TEST(WaitTest, FirstExceptionReturnsAtTheFirstFailure) {
  auto pending = pending_future();
  auto failed = pending_future();
  std::vector<mpx::Future<int>> fs{pending, ready_future(1), failed};
  std::thread t(
      [&] { failed.state()->set_exception(std::make_exception_ptr(std::runtime_error("x"))); });
  auto r = mpx::wait(fs, 10s, mpx::FIRST_EXCEPTION);
  t.join();
  EXPECT_EQ(r.done.size(), 2u);
  EXPECT_EQ(r.not_done.size(), 1u);
  pending.cancel();
}

TEST(WaitTest, FirstExceptionWithoutFailuresWaitsForAll) {
  std::vector<mpx::Future<int>> fs{ready_future(1), ready_future(2)};
  auto r = mpx::wait(fs, mpx::FIRST_EXCEPTION);
  EXPECT_EQ(r.done.size(), 2u);
}

TEST(WaitTest, TimeoutReturnsPendingOnesInNotDone) {
  auto pending = pending_future();
  std::vector<mpx::Future<int>> fs{pending, ready_future(1)};
  auto start = std::chrono::steady_clock::now();
  auto r = mpx::wait(fs, 100ms);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 90ms);
  EXPECT_EQ(r.done.size(), 1u);
  EXPECT_EQ(r.not_done.size(), 1u);
  pending.cancel();
}

// The memory a pool's future states come from (src/pool/state_memory.hpp).
using mpx::detail::StateMemory;

TEST(StateMemoryTest, BurstAfterBurstTakesNoMoreMemory) {
  StateMemory* memory = StateMemory::create();
  std::vector<void*> blocks(5000);
  std::size_t reserved = 0;
  for (int burst = 0; burst < 10; ++burst) {
    std::set<void*> distinct;
    for (std::size_t i = 0; i < blocks.size(); ++i) {
      blocks[i] = memory->allocate(192, alignof(std::max_align_t));
      std::memset(blocks[i], burst, 192);
      distinct.insert(blocks[i]);
    }
    EXPECT_EQ(distinct.size(), blocks.size());
    EXPECT_EQ(memory->live(), blocks.size());
    if (burst == 0) reserved = memory->reserved();
    EXPECT_EQ(memory->reserved(), reserved) << "burst " << burst;
    for (void* p : blocks)
      memory->deallocate(p, 192, alignof(std::max_align_t));
    EXPECT_EQ(memory->live(), 0u);
  }
  EXPECT_GE(reserved, blocks.size() * 192);
  memory->release_owner();
}

TEST(StateMemoryTest, LargeBlocksAndLargeAlignmentsAreServed) {
  StateMemory* memory = StateMemory::create();
  void* large = memory->allocate(1 << 20, 64);
  void* aligned = memory->allocate(256, 256);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(large) % 64, 0u);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(aligned) % 256, 0u);
  std::memset(large, 1, 1 << 20);
  std::memset(aligned, 2, 256);
  EXPECT_EQ(memory->live(), 2u);
  memory->deallocate(large, 1 << 20, 64);
  memory->deallocate(aligned, 256, 256);
  memory->release_owner();
}

TEST(StateMemoryTest, OutlivesItsOwnerUntilTheLastBlockIsFreed) {
  StateMemory* memory = StateMemory::create();
  auto* block = static_cast<int*>(memory->allocate(sizeof(int), alignof(int)));
  memory->release_owner();
  *block = 42;  // still the block's memory (ASan would see a use after free)
  EXPECT_EQ(*block, 42);
  memory->deallocate(block, sizeof(int), alignof(int));  // and now it is gone
}

TEST(StateMemoryTest, ChildForkedWhileAnotherThreadAllocatesCanAllocate) {
  // Without the fork handlers, a fork while the other thread holds the memory's lock
  // leaves it locked in the child, which then hangs on its first allocation.
  StateMemory* memory = StateMemory::create();
  std::atomic<bool> stop{false};
  std::thread churn([&] {
    while (!stop.load()) {
      void* p = memory->allocate(128, 16);
      memory->deallocate(p, 128, 16);
    }
  });
  for (int i = 0; i < 30; ++i) {
    mpx::Process child([memory] {
      void* p = memory->allocate(128, 16);
      memory->deallocate(p, 128, 16);
    });
    child.start();
    child.join(10s);
    if (child.is_alive()) child.kill();
    child.join();
    EXPECT_EQ(child.exitcode(), 0) << "child " << i;
    if (child.exitcode() != 0) break;
  }
  stop = true;
  churn.join();
  memory->release_owner();
}

}  // namespace
