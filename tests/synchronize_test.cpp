// Tests of mpx/synchronize.hpp: CPython's semantics of Lock, RLock, Semaphore,
// BoundedSemaphore, Condition, Event and Barrier, each between threads and between
// processes, plus robustness against a dead owner or participant.
#include "mpx/synchronize.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "mpx/process.hpp"
#include "mpx/sharedctypes.hpp"

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

enum class Mode { kThread, kProcess };

std::string mode_name(const ::testing::TestParamInfo<Mode>& info) {
  return info.param == Mode::kThread ? "Threads" : "Processes";
}

// Fails the worker (thread: rethrown at join; process: exit code 1) when false.
#define WORKER_CHECK(cond)                                                \
  do {                                                                    \
    if (!(cond)) throw std::runtime_error("worker check failed: " #cond); \
  } while (0)

// Runs fn in a thread or in a child process (mpx::Process); join() fails the test when fn
// threw (a child that throws exits with code 1).
class Worker {
 public:
  Worker(Mode mode, std::function<void()> fn) : mode_(mode) {
    if (mode == Mode::kThread) {
      thread_ = std::thread([this, fn = std::move(fn)] {
        try {
          fn();
        } catch (...) {
          error_ = std::current_exception();
        }
      });
    } else {
      process_.emplace(std::move(fn));
      process_->start();
    }
  }
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  ~Worker() { wait(); }

  pid_t pid() const { return process_ ? process_->pid() : 0; }
  void kill() { process_->kill(); }
  // Waits for the worker; returns its exit code (process) or 0 (thread).
  int wait() {
    if (thread_.joinable()) thread_.join();
    if (process_) {
      process_->join();
      return process_->exitcode().value_or(-1);
    }
    return 0;
  }
  void join() {
    int code = wait();
    if (error_) {
      try {
        std::rethrow_exception(error_);
      } catch (const std::exception& e) {
        ADD_FAILURE() << "worker thread threw: " << e.what();
      }
    }
    EXPECT_EQ(code, 0) << "worker process exit code";
  }

 private:
  Mode mode_;
  std::thread thread_;
  std::optional<mpx::Process> process_;
  std::exception_ptr error_;
};

// A child process that takes `lock`, sets `held` and waits to be killed.
template <class LockT>
mpx::Process start_holder(const LockT& lock, const mpx::Event& held, int times = 1) {
  mpx::Process p([lock, held, times] {
    for (int i = 0; i < times; ++i)
      lock.acquire();
    held.set();
    for (;;)
      ::pause();
  });
  p.start();
  return p;
}

void kill_and_join(mpx::Process& p) {
  p.kill();
  p.join();
  EXPECT_EQ(p.exitcode(), -SIGKILL);
}

// Polls `ready` (a condition on shared state, not a timer) for up to 10 s.
template <class Pred>
bool eventually(Pred ready) {
  auto end = Clock::now() + 10s;
  while (Clock::now() < end) {
    if (ready()) return true;
    std::this_thread::sleep_for(1ms);
  }
  return ready();
}

class SyncTest : public ::testing::TestWithParam<Mode> {};
INSTANTIATE_TEST_SUITE_P(Both, SyncTest, ::testing::Values(Mode::kThread, Mode::kProcess),
                         mode_name);

}  // namespace

// ------------------------------------------------------------------------------ Lock

TEST(LockTest, AcquireAndReleaseChangeLocked) {
  mpx::Lock lock;
  EXPECT_FALSE(lock.locked());
  lock.acquire();
  EXPECT_TRUE(lock.locked());
  lock.release();
  EXPECT_FALSE(lock.locked());
  EXPECT_TRUE(lock.try_acquire());
  EXPECT_FALSE(lock.try_acquire());
  lock.release();
}

TEST(LockTest, ReleaseOfAnUnlockedLockThrowsValueError) {
  mpx::Lock lock;
  EXPECT_THROW(lock.release(), mpx::ValueError);
  lock.acquire();
  lock.release();
  EXPECT_THROW(lock.release(), mpx::ValueError);
}

TEST(LockTest, IsNotReentrant) {
  mpx::Lock lock;
  lock.acquire();
  auto start = Clock::now();
  EXPECT_FALSE(lock.acquire(100ms));
  EXPECT_GE(Clock::now() - start, 90ms);
  EXPECT_THROW(lock.acquire(), mpx::UsageError);
  lock.release();
}

TEST(LockTest, WorksWithStdLockGuardAndUniqueLock) {
  mpx::Lock lock;
  {
    std::lock_guard guard(lock);
    EXPECT_TRUE(lock.locked());
  }
  EXPECT_FALSE(lock.locked());
  {
    std::unique_lock guard(lock, 50ms);
    EXPECT_TRUE(guard.owns_lock());
  }
  mpx::RLock rlock;
  std::scoped_lock both(lock, rlock);
  EXPECT_TRUE(lock.locked());
  EXPECT_TRUE(rlock.locked());
}

TEST(LockTest, CopiesReferToTheSameLock) {
  mpx::Lock a;
  mpx::Lock b = a;
  a.acquire();
  EXPECT_TRUE(b.locked());
  b.release();
  EXPECT_FALSE(a.locked());
}

TEST_P(SyncTest, LockReleaseByANonOwnerThrowsValueError) {
  mpx::Lock lock;
  lock.acquire();
  Worker w(GetParam(), [&] {
    bool threw = false;
    try {
      lock.release();
    } catch (const mpx::ValueError&) {
      threw = true;
    }
    WORKER_CHECK(threw);
    WORKER_CHECK(lock.locked());
  });
  w.join();
  lock.release();
}

TEST_P(SyncTest, LockAcquireWithTimeoutFailsWhileAnotherHoldsIt) {
  mpx::Lock lock;
  mpx::Event held, done;
  Worker w(GetParam(), [&] {
    lock.acquire();
    held.set();
    done.wait();
    lock.release();
  });
  ASSERT_TRUE(held.wait(10s));
  auto start = Clock::now();
  EXPECT_FALSE(lock.acquire(100ms));
  EXPECT_GE(Clock::now() - start, 90ms);
  EXPECT_FALSE(lock.try_acquire());
  done.set();
  EXPECT_TRUE(lock.acquire(10s));
  lock.release();
  w.join();
}

TEST_P(SyncTest, LockGivesMutualExclusion) {
  mpx::Lock lock;
  mpx::RawValue<long> counter(0);
  constexpr int kIncrements = 20000;
  {
    std::vector<std::unique_ptr<Worker>> workers;
    for (int i = 0; i < 3; ++i) {
      workers.push_back(std::make_unique<Worker>(GetParam(), [&] {
        for (int k = 0; k < kIncrements; ++k) {
          std::lock_guard guard(lock);
          *counter = *counter + 1;
        }
      }));
    }
    for (auto& w : workers)
      w->join();
  }
  EXPECT_EQ(counter.value(), 3 * kIncrements);
}

TEST(LockTest, OwnerKilledWhileHoldingItTheNextAcquirerProceedsAndIsTold100Times) {
  mpx::Lock lock;
  mpx::Event held;
  for (int i = 0; i < 100; ++i) {
    held.clear();
    auto owner = start_holder(lock, held);
    ASSERT_TRUE(held.wait(10s)) << "iteration " << i;
    kill_and_join(owner);
    ASSERT_THROW(lock.acquire(), mpx::OwnerDied) << "iteration " << i;
    EXPECT_TRUE(lock.locked());
    lock.release();  // the lock is usable again
    ASSERT_TRUE(lock.try_acquire());
    lock.release();
  }
}

TEST(LockTest, OwnerKilledWhileAnotherWaitsTheWaiterIsTold) {
  mpx::Lock lock;
  mpx::Event held;
  auto owner = start_holder(lock, held);
  ASSERT_TRUE(held.wait(10s));
  std::atomic<bool> told{false};
  std::thread waiter([&] {
    try {
      lock.acquire();
    } catch (const mpx::OwnerDied&) {
      told = true;
    }
    lock.release();
  });
  std::this_thread::sleep_for(50ms);  // let the waiter block (not needed for correctness)
  kill_and_join(owner);
  waiter.join();
  EXPECT_TRUE(told);
}

TEST(LockTest, RecoverPolicyAcquiresSilentlyAfterTheOwnerDied) {
  mpx::Lock lock(mpx::OwnerDeath::kRecover);
  mpx::Event held;
  auto owner = start_holder(lock, held);
  ASSERT_TRUE(held.wait(10s));
  kill_and_join(owner);
  EXPECT_NO_THROW(lock.acquire());
  lock.release();
}

TEST(LockTest, AThreadThatExitsHoldingTheLockIsAnOwnerThatDied) {
  mpx::Lock lock;
  std::thread([&] { lock.acquire(); }).join();
  EXPECT_THROW(lock.acquire(), mpx::OwnerDied);
  lock.release();
}

// ------------------------------------------------------------------------------ RLock

TEST(RLockTest, IsReentrantAndFreeOnceReleasedAsOftenAsAcquired) {
  mpx::RLock lock;
  lock.acquire();
  EXPECT_TRUE(lock.acquire(10ms));
  EXPECT_TRUE(lock.try_acquire());
  lock.release();
  lock.release();
  EXPECT_TRUE(lock.locked());
  lock.release();
  EXPECT_FALSE(lock.locked());
  EXPECT_THROW(lock.release(), mpx::ValueError);
}

TEST_P(SyncTest, RLockIsHeldUntilFullyReleasedAndANonOwnerCannotRelease) {
  mpx::RLock lock;
  lock.acquire();
  lock.acquire();
  lock.release();
  Worker w(GetParam(), [&] {
    WORKER_CHECK(!lock.try_acquire());
    bool threw = false;
    try {
      lock.release();
    } catch (const mpx::ValueError&) {
      threw = true;
    }
    WORKER_CHECK(threw);
  });
  w.join();
  lock.release();
  Worker w2(GetParam(), [&] {
    WORKER_CHECK(lock.try_acquire());
    lock.release();
  });
  w2.join();
}

TEST(RLockTest, OwnerKilledWhileHoldingItTheNextAcquirerProceedsAndIsTold100Times) {
  mpx::RLock lock;
  mpx::Event held;
  for (int i = 0; i < 100; ++i) {
    held.clear();
    auto owner = start_holder(lock, held, 2);
    ASSERT_TRUE(held.wait(10s)) << "iteration " << i;
    kill_and_join(owner);
    ASSERT_THROW(lock.acquire(), mpx::OwnerDied) << "iteration " << i;
    lock.release();  // held once: one release frees it
    ASSERT_FALSE(lock.locked());
  }
}

// ------------------------------------------------------------------------------ Semaphore

TEST(SemaphoreTest, CountsDownAndUp) {
  EXPECT_THROW(mpx::Semaphore(-1), mpx::ValueError);
  mpx::Semaphore sem(2);
  EXPECT_EQ(sem.get_value(), 2);
  EXPECT_TRUE(sem.try_acquire());
  EXPECT_TRUE(sem.acquire(10ms));
  EXPECT_FALSE(sem.try_acquire());
  EXPECT_EQ(sem.get_value(), 0);
  sem.release(2);
  EXPECT_EQ(sem.get_value(), 2);
  sem.release();  // an unbounded semaphore may go above its initial value
  EXPECT_EQ(sem.get_value(), 3);
}

TEST(SemaphoreTest, AcquireWithTimeoutReturnsFalseAfterTheTimeout) {
  mpx::Semaphore sem(0);
  auto start = Clock::now();
  EXPECT_FALSE(sem.acquire(150ms));
  EXPECT_GE(Clock::now() - start, 140ms);
}

TEST(BoundedSemaphoreTest, ReleaseAboveTheInitialValueThrowsValueError) {
  mpx::BoundedSemaphore sem(2);
  EXPECT_THROW(sem.release(), mpx::ValueError);
  sem.acquire();
  EXPECT_THROW(sem.release(2), mpx::ValueError);
  EXPECT_EQ(sem.get_value(), 1);
  sem.release();
  EXPECT_EQ(sem.get_value(), 2);
}

TEST_P(SyncTest, SemaphoreReleaseWakesWaitersInAnyThreadOrProcess) {
  mpx::Semaphore sem(0);
  mpx::Semaphore done(0);
  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < 3; ++i) {
    workers.push_back(std::make_unique<Worker>(GetParam(), [&] {
      WORKER_CHECK(sem.acquire(10s));
      done.release();
    }));
  }
  sem.release(2);
  EXPECT_TRUE(done.acquire(10s));
  EXPECT_TRUE(done.acquire(10s));
  EXPECT_FALSE(done.acquire(100ms));
  sem.release();  // released by a thread that never acquired it: semaphores are not owned
  EXPECT_TRUE(done.acquire(10s));
  for (auto& w : workers)
    w->join();
  EXPECT_EQ(sem.get_value(), 0);
}

// ------------------------------------------------------------------------------ Event

TEST(EventTest, WaitReturnsTheFlagAfterTheTimeout) {
  mpx::Event event;
  EXPECT_FALSE(event.is_set());
  auto start = Clock::now();
  EXPECT_FALSE(event.wait(150ms));
  EXPECT_GE(Clock::now() - start, 140ms);
  event.set();
  EXPECT_TRUE(event.is_set());
  EXPECT_TRUE(event.wait(0ms));
  EXPECT_TRUE(event.wait());
  event.clear();
  EXPECT_FALSE(event.is_set());
  EXPECT_FALSE(event.wait(10ms));
}

TEST_P(SyncTest, EventSetWakesEveryWaiter) {
  mpx::Event event;
  mpx::Semaphore woke(0);
  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < 3; ++i) {
    workers.push_back(std::make_unique<Worker>(GetParam(), [&] {
      WORKER_CHECK(event.wait(10s));
      woke.release();
    }));
  }
  event.set();
  for (int i = 0; i < 3; ++i)
    EXPECT_TRUE(woke.acquire(10s));
  for (auto& w : workers)
    w->join();
}

// ------------------------------------------------------------------------------ Condition

TEST(ConditionTest, WaitAndNotifyWithoutTheLockThrowUsageError) {
  mpx::Condition cond;
  EXPECT_THROW(cond.wait(10ms), mpx::UsageError);
  EXPECT_THROW(cond.notify(), mpx::UsageError);
  EXPECT_THROW(cond.notify_all(), mpx::UsageError);
  mpx::Condition with_lock(mpx::Lock{});
  EXPECT_THROW(with_lock.wait(10ms), mpx::UsageError);
}

TEST(ConditionTest, WaitTimesOutWithTheLockReacquired) {
  for (auto cond : {mpx::Condition(), mpx::Condition(mpx::Lock()), mpx::Condition(mpx::RLock())}) {
    std::unique_lock guard(cond);
    auto start = Clock::now();
    EXPECT_FALSE(cond.wait(100ms));
    EXPECT_GE(Clock::now() - start, 90ms);
    EXPECT_NO_THROW(cond.notify());  // still held
  }
}

TEST(ConditionTest, WaitOnAnRLockHeldTwiceReleasesItCompletely) {
  mpx::RLock lock;
  mpx::Condition cond(lock);
  lock.acquire();
  lock.acquire();
  std::thread other([&] {
    std::lock_guard guard(lock);  // only possible while the waiter waits
    cond.notify();
  });
  EXPECT_TRUE(cond.wait(10s));
  other.join();
  lock.release();
  EXPECT_TRUE(lock.locked());  // the count was restored to 2
  lock.release();
  EXPECT_FALSE(lock.locked());
}

namespace {
// Starts n workers that each wait on `cond` once and then release `woke`; returns when
// all of them are waiting. `waiting` counts the registered waiters (under cond's lock).
std::vector<std::unique_ptr<Worker>> start_waiters(Mode mode, int n, const mpx::Condition& cond,
                                                   const mpx::RawValue<int>& waiting,
                                                   const mpx::Semaphore& woke) {
  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < n; ++i) {
    workers.push_back(std::make_unique<Worker>(mode, [&cond, waiting, woke] {
      std::lock_guard guard(cond);
      *waiting += 1;
      WORKER_CHECK(cond.wait(20s));
      woke.release();
    }));
  }
  // A waiter registers before it releases the lock, so once the count is seen under
  // the lock, every waiter is waiting.
  EXPECT_TRUE(eventually([&] {
    std::lock_guard guard(cond);
    return *waiting == n;
  }));
  return workers;
}
}  // namespace

TEST_P(SyncTest, ConditionNotifyWakesOneThenNThenAll) {
  mpx::Condition cond;
  mpx::RawValue<int> waiting(0);
  mpx::Semaphore woke(0);
  auto workers = start_waiters(GetParam(), 5, cond, waiting, woke);
  {
    std::lock_guard guard(cond);
    cond.notify();
  }
  EXPECT_TRUE(woke.acquire(10s));
  EXPECT_FALSE(woke.acquire(100ms));
  {
    std::lock_guard guard(cond);
    cond.notify(2);
  }
  EXPECT_TRUE(woke.acquire(10s));
  EXPECT_TRUE(woke.acquire(10s));
  EXPECT_FALSE(woke.acquire(100ms));
  {
    std::lock_guard guard(cond);
    cond.notify_all();
  }
  EXPECT_TRUE(woke.acquire(10s));
  EXPECT_TRUE(woke.acquire(10s));
  for (auto& w : workers)
    w->join();
}

TEST_P(SyncTest, ConditionWithALockWakesItsWaiter) {
  mpx::Condition cond(mpx::Lock{});
  mpx::RawValue<int> waiting(0);
  mpx::Semaphore woke(0);
  auto workers = start_waiters(GetParam(), 1, cond, waiting, woke);
  {
    std::lock_guard guard(cond);
    cond.notify_all();
  }
  EXPECT_TRUE(woke.acquire(10s));
  for (auto& w : workers)
    w->join();
}

TEST_P(SyncTest, ConditionWaitForReturnsThePredicateOnceItHolds) {
  mpx::Condition cond;
  mpx::RawValue<int> state(0);
  {
    std::lock_guard guard(cond);
    auto start = Clock::now();
    EXPECT_FALSE(cond.wait_for([&] { return *state == 1; }, 100ms));
    EXPECT_GE(Clock::now() - start, 90ms);
  }
  Worker w(GetParam(), [&] {
    for (int i = 1; i <= 3; ++i) {
      std::lock_guard guard(cond);
      *state = i;
      cond.notify_all();
    }
  });
  {
    std::lock_guard guard(cond);
    EXPECT_TRUE(cond.wait_for([&] { return *state == 3; }, 10s));
  }
  w.join();
}

TEST(ConditionTest, ANotificationIsNotTakenByALaterWaiter) {
  // Ping-pong: each side notifies, then waits. A notification taken by the notifier's
  // own next wait would leave both sides waiting for ever.
  mpx::Condition cond;
  mpx::RawValue<int> turn(0);
  constexpr int kRounds = 200;
  std::thread other([&] {
    std::unique_lock guard(cond);
    for (int i = 0; i < kRounds; ++i) {
      cond.wait_for([&] { return *turn == 1; });
      *turn = 0;
      cond.notify();
    }
  });
  {
    std::unique_lock guard(cond);
    for (int i = 0; i < kRounds; ++i) {
      *turn = 1;
      cond.notify();
      ASSERT_TRUE(cond.wait_for([&] { return *turn == 0; }, 10s)) << "round " << i;
    }
  }
  other.join();
}

TEST(ConditionTest, AWaiterKilledWhileWaitingDoesNotAbsorbANotification) {
  mpx::Condition cond;
  mpx::RawValue<int> waiting(0);
  mpx::Semaphore woke(0);
  {
    auto dead = start_waiters(Mode::kProcess, 1, cond, waiting, woke);
    dead[0]->kill();
    EXPECT_EQ(dead[0]->wait(), -SIGKILL);
  }
  *waiting = 0;
  auto live = start_waiters(Mode::kThread, 1, cond, waiting, woke);
  {
    std::lock_guard guard(cond);
    cond.notify();  // the dead process waited longer, but the live thread gets it
  }
  EXPECT_TRUE(woke.acquire(10s));
  live[0]->join();
}

// ------------------------------------------------------------------------------ Barrier

TEST(BarrierTest, ZeroPartiesIsAValueError) {
  EXPECT_THROW(mpx::Barrier(0), mpx::ValueError);
}

TEST_P(SyncTest, BarrierIndicesAreUniqueAndTheActionRunsOncePerRound) {
  mpx::RawArray<int> seen(3 * 4);  // per round, how often each index was returned
  mpx::RawValue<int> actions(0);
  mpx::Barrier barrier(3, [actions] { *actions += 1; });
  constexpr int kRounds = 4;
  auto participant = [&] {
    for (int round = 0; round < kRounds; ++round) {
      unsigned index = barrier.wait(10s);
      WORKER_CHECK(index < 3);
      WORKER_CHECK(*actions == 2 * round + 1);  // ran before anyone was released
      __atomic_add_fetch(&seen[static_cast<std::size_t>(round * 3) + index], 1, __ATOMIC_RELAXED);
      barrier.wait(10s);  // keep rounds apart so that `actions` is checked exactly
    }
  };
  Worker a(GetParam(), participant);
  Worker b(GetParam(), participant);
  participant();
  a.join();
  b.join();
  for (int i = 0; i < 3 * kRounds; ++i)
    EXPECT_EQ(seen[static_cast<std::size_t>(i)], 1) << "slot " << i;
  EXPECT_EQ(*actions, 2 * kRounds);
  EXPECT_EQ(barrier.parties(), 3u);
  EXPECT_EQ(barrier.n_waiting(), 0u);
  EXPECT_FALSE(barrier.broken());
}

TEST(BarrierTest, ATimeoutBreaksTheBarrierUntilReset) {
  mpx::Barrier barrier(2);
  auto start = Clock::now();
  EXPECT_THROW(barrier.wait(100ms), mpx::BrokenBarrierError);
  EXPECT_GE(Clock::now() - start, 90ms);
  EXPECT_TRUE(barrier.broken());
  EXPECT_THROW(barrier.wait(10s), mpx::BrokenBarrierError);
  barrier.reset();
  EXPECT_FALSE(barrier.broken());
  std::thread other([&] { barrier.wait(10s); });
  EXPECT_NO_THROW(barrier.wait(10s));
  other.join();
}

TEST(BarrierTest, TheDefaultTimeoutAppliesToWait) {
  mpx::Barrier barrier(2, {}, 100ms);
  EXPECT_THROW(barrier.wait(), mpx::BrokenBarrierError);
}

TEST_P(SyncTest, BarrierAbortBreaksCurrentWaiters) {
  mpx::Barrier barrier(3);
  Worker w(GetParam(), [&] {
    bool broken = false;
    try {
      barrier.wait(20s);
    } catch (const mpx::BrokenBarrierError&) {
      broken = true;
    }
    WORKER_CHECK(broken);
  });
  ASSERT_TRUE(eventually([&] { return barrier.n_waiting() == 1; }));
  barrier.abort();
  w.join();
  EXPECT_TRUE(barrier.broken());
  EXPECT_EQ(barrier.n_waiting(), 0u);
}

TEST_P(SyncTest, BarrierResetBreaksCurrentWaitersAndThenWorksAgain) {
  mpx::Barrier barrier(2);
  Worker w(GetParam(), [&] {
    bool broken = false;
    try {
      barrier.wait(20s);
    } catch (const mpx::BrokenBarrierError&) {
      broken = true;
    }
    WORKER_CHECK(broken);
    barrier.wait(20s);  // the next round works
  });
  ASSERT_TRUE(eventually([&] { return barrier.n_waiting() == 1; }));
  barrier.reset();
  EXPECT_NO_THROW(barrier.wait(20s));
  w.join();
  EXPECT_FALSE(barrier.broken());
}

TEST_P(SyncTest, BarrierActionThatThrowsBreaksTheBarrier) {
  mpx::Barrier barrier(2, [] { throw std::runtime_error("action failed"); });
  Worker w(GetParam(), [&] {
    bool broken = false;
    try {
      barrier.wait(20s);
    } catch (const mpx::BrokenBarrierError&) {
      broken = true;
    } catch (const std::runtime_error&) {
      broken = true;  // this side ran the action
    }
    WORKER_CHECK(broken);
  });
  bool failed = false;
  try {
    barrier.wait(20s);
  } catch (const std::exception&) {
    failed = true;
  }
  EXPECT_TRUE(failed);
  w.join();
  EXPECT_TRUE(barrier.broken());
}

TEST(BarrierTest, AParticipantKilledWhileWaitingBreaksTheBarrier) {
  mpx::Barrier barrier(3);
  mpx::Process participant([barrier] { barrier.wait(); });
  participant.start();
  ASSERT_TRUE(eventually([&] { return barrier.n_waiting() == 1; }));
  participant.kill();
  auto start = Clock::now();
  // No timeout: only the death of the participant can end this wait.
  EXPECT_THROW(barrier.wait(), mpx::BrokenBarrierError);
  EXPECT_LT(Clock::now() - start, 10s);
  participant.join();
  barrier.reset();
  std::thread a([&] { barrier.wait(10s); });
  std::thread b([&] { barrier.wait(10s); });
  EXPECT_NO_THROW(barrier.wait(10s));
  a.join();
  b.join();
}
