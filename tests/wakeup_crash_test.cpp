// Deaths around a wake-up. A waker killed between its change and its futex wake-up must
// not leave a waiter asleep for good: the waiter of an Event, a Semaphore, a Condition or
// a Queue in another process sees the change (it looks again every second). The waker
// dies at its FUTEX_WAKE (support/die_at_futex_wake.hpp), after the change is made. And a
// Barrier's waiter that died is not woken by the last arrival as if it were alive.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <thread>

#include "mpx/errors.hpp"
#include "mpx/process.hpp"
#include "mpx/queues.hpp"
#include "mpx/synchronize.hpp"
#include "support/child.hpp"
#include "support/die_at_futex_wake.hpp"
#include "support/proc_state.hpp"
#include "support/watchdog.hpp"

using namespace std::chrono_literals;

namespace {

// Runs `wait` on a thread, and once it sleeps in the kernel, `wake` in a child that dies
// at its futex wake-up; returns what `wait` returned. Empty where seccomp filters cannot
// be installed (the child exits with kNoSeccomp; `wake` then runs here, to end the wait).
std::optional<bool> wait_through_a_dead_waker(const std::function<bool()>& wait,
                                              const std::function<void()>& wake) {
  std::atomic<pid_t> tid{0};
  std::atomic<bool> result{false};
  std::thread waiter([&] {
    tid = static_cast<pid_t>(::syscall(SYS_gettid));
    result = wait();
  });
  while (tid == 0)
    std::this_thread::yield();
  // Having published its tid, it can only sleep in `wait`.
  EXPECT_TRUE(mpx_test::until_asleep("self/task/" + std::to_string(tid.load())));
  mpx_test::Child waker([&] {
    mpx_test::die_at_futex_wake();
    wake();
  });
  const int code = waker.join();
  if (code == mpx_test::kNoSeccomp) {
    wake();
    waiter.join();
    return std::nullopt;
  }
  EXPECT_EQ(code, -SIGSYS);
  waiter.join();
  return result.load();
}

#define EXPECT_WOKEN(...)                                                     \
  do {                                                                        \
    const std::optional<bool> woken = wait_through_a_dead_waker(__VA_ARGS__); \
    if (!woken) GTEST_SKIP() << "seccomp filters cannot be installed here";   \
    EXPECT_TRUE(*woken);                                                      \
  } while (0)

TEST(WakeupCrash, AnEventSetByAProcessKilledBeforeItsWakeUpIsSeen) {
  mpx_test::Watchdog dog(30s, "Event::wait after its setter died");
  mpx::Event event;
  EXPECT_WOKEN([&] { return event.wait(); }, [&] { event.set(); });
}

TEST(WakeupCrash, ASemaphoreReleasedByAProcessKilledBeforeItsWakeUpIsAcquired) {
  mpx_test::Watchdog dog(30s, "Semaphore::acquire after its releaser died");
  mpx::Semaphore sem(0);
  EXPECT_WOKEN(
      [&] {
        sem.acquire();
        return true;
      },
      [&] { sem.release(); });
  EXPECT_FALSE(sem.acquire(0ms));
}

// The notifier holds the lock when it wakes (Python's rule): the waiter learns both that
// it was notified and that the lock's owner died (OwnerDied, the lock then held by it).
TEST(WakeupCrash, AConditionNotifiedByAProcessKilledBeforeItsWakeUpReturns) {
  mpx_test::Watchdog dog(30s, "Condition::wait after its notifier died");
  mpx::Condition cond;
  EXPECT_WOKEN(
      [&] {
        cond.acquire();
        bool owner_died = false;
        try {
          cond.wait();
        } catch (const mpx::OwnerDied&) {
          owner_died = true;
        }
        cond.release();
        return owner_died;
      },
      [&] {
        cond.acquire();
        cond.notify();  // the waker dies here, holding the lock
        cond.release();
      });
  cond.acquire();  // the lock works again
  cond.release();
}

TEST(WakeupCrash, AnItemPutByAProcessKilledBeforeItsWakeUpIsGot) {
  mpx_test::Watchdog dog(30s, "Queue::get after its producer died");
  mpx::Queue<int> q;
  int got = 0;
  EXPECT_WOKEN(
      [&] {
        got = q.get();
        return true;
      },
      [&] { q.put(7); });
  EXPECT_EQ(got, 7);
}

// A participant killed while it waited breaks the round, also for the party that arrives
// last (it completed the round before, as if the dead one had been released).
TEST(WakeupCrash, TheLastArrivalAtABarrierWithADeadWaiterFindsItBroken) {
  mpx_test::Watchdog dog(30s, "a Barrier whose waiter died");
  mpx::Barrier barrier(2);
  mpx::Process participant([barrier] { barrier.wait(); });
  participant.start();
  while (barrier.n_waiting() != 1)
    std::this_thread::yield();
  participant.kill();
  participant.join();
  EXPECT_THROW(barrier.wait(), mpx::BrokenBarrierError);
  barrier.reset();
  std::thread other([&] { barrier.wait(10s); });
  EXPECT_NO_THROW(barrier.wait(10s));
  other.join();
}

}  // namespace
