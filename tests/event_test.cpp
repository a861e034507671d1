// Tests of mpx::Event's wake-up guarantee (mpx/synchronize.hpp): every thread or process
// waiting when set() is called returns true, whatever comes after (CPython's
// test_set_and_clear).
#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "mpx/process.hpp"
#include "mpx/sharedctypes.hpp"
#include "mpx/synchronize.hpp"
#include "support/proc_state.hpp"

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

// Waits until every waiter has published its id (a tid or pid, under /proc) and sleeps in
// the kernel: having published it, the only place it can sleep is inside Event::wait.
void until_all_asleep(const mpx::RawArray<int>& ids, const std::string& prefix) {
  const auto give_up = Clock::now() + 30s;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    while (__atomic_load_n(&ids[i], __ATOMIC_ACQUIRE) == 0) {
      ASSERT_LT(Clock::now(), give_up) << "waiter " << i << " never started";
      std::this_thread::yield();
    }
    ASSERT_TRUE(mpx_test::until_asleep(prefix + std::to_string(ids[i])))
        << "waiter " << i << " never went to sleep";
  }
}

constexpr int kWaiters = 5;

TEST(EventTest, SetThenClearAtOnceWakesEveryThreadThatWasWaiting) {
  for (int round = 0; round < 5; ++round) {
    mpx::Event event;
    mpx::RawArray<int> tids(kWaiters);
    mpx::RawArray<int> results(kWaiters);
    std::vector<std::thread> waiters;
    for (int i = 0; i < kWaiters; ++i) {
      waiters.emplace_back([&, i] {
        __atomic_store_n(&tids[i], static_cast<int>(::gettid()), __ATOMIC_RELEASE);
        results[i] = event.wait(30s) ? 1 : 2;
      });
    }
    until_all_asleep(tids, "self/task/");
    event.set();
    event.clear();
    for (auto& t : waiters)
      t.join();
    for (int i = 0; i < kWaiters; ++i)
      EXPECT_EQ(results[i], 1) << "round " << round << ": waiter " << i << " missed the set()";
    EXPECT_FALSE(event.is_set());
  }
}

TEST(EventTest, SetThenClearAtOnceWakesEveryProcessThatWasWaiting) {
  for (int round = 0; round < 3; ++round) {
    mpx::Event event;
    mpx::RawArray<int> pids(kWaiters);
    std::vector<std::unique_ptr<mpx::Process>> waiters;
    for (int i = 0; i < kWaiters; ++i) {
      waiters.push_back(std::make_unique<mpx::Process>([&, i] {
        __atomic_store_n(&pids[i], static_cast<int>(::getpid()), __ATOMIC_RELEASE);
        mpx::exit(event.wait(30s) ? 0 : 3);
      }));
      waiters.back()->start();
    }
    until_all_asleep(pids, "");
    event.set();
    event.clear();
    for (auto& p : waiters) {
      p->join();
      EXPECT_EQ(p->exitcode(), 0) << "round " << round << ": a waiter missed the set()";
    }
  }
}

TEST(EventTest, AWaiterThatStartsAfterSetAndClearKeepsWaiting) {
  mpx::Event event;
  event.set();
  event.clear();
  EXPECT_FALSE(event.wait(50ms));
  event.set();
  EXPECT_TRUE(event.wait(0ms));
}

}  // namespace
