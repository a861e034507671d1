// mpx/synchronize.hpp — Lock, RLock, Semaphore, BoundedSemaphore, Condition, Event,
// Barrier: Python's multiprocessing.synchronize, usable between threads and processes.
//
//   mpx::Lock lock;                       // state lives in shared memory
//   mpx::Process p([&] { std::lock_guard g(lock); ... });   // the child shares it
//   { std::lock_guard g(lock); ... }
//
// Handles. Every object here is a cheap handle to state in an anonymous shared mapping
// (MAP_SHARED|MAP_ANONYMOUS). Copies and moves refer to the same lock, exactly like a
// Python object passed to a child: `Lock b = a;` is a second name for `a`, and a child
// forked after construction shares it with its parent. The mapping is unmapped when the
// last handle in a process goes away; other processes keep their own mappings.
// Across fork: inherited (the child shares the state). A spawn or forkserver child gets
// only those made by that Context's factories (ctx.Lock(), ctx.Barrier(n): a memfd page,
// mpx/context.hpp). Not by unrelated processes (use a named SharedMemory for that).
// OS resources: one shared anonymous page per object (a Context's: and its memfd).
// Keep a handle to a Lock/RLock alive while holding it: dropping the last handle in a
// process that holds the lock unmaps a mutex the thread's robust list still names.
//
// Blocking: every blocking call spins briefly, then sleeps on a futex (detail/waiter.hpp);
// timeouts are std::chrono durations on the steady clock. All calls are thread-safe.
//
// Ownership and robustness (differs from Python on purpose):
// - A Lock is owned by the thread that acquired it: only that thread may release it
//   (release() by any other thread or process throws mpx::ValueError). Python allows any
//   thread to release a Lock; mpx cannot, because robustness needs an owner. Use a
//   Semaphore(1) or an Event to signal between threads or processes.
// - When the owner of a Lock or RLock dies holding it (its process is killed, or its
//   thread exits), the next acquire does not hang: it gets the lock, marks it usable
//   again, and throws mpx::OwnerDied *while holding the lock* (OwnerDeath::kThrow, the
//   default), or returns normally (OwnerDeath::kRecover). With std::lock_guard the guard is
//   not constructed when OwnerDied is thrown, so release the lock in the handler:
//
//     try { std::lock_guard g(lock); work(); }
//     catch (const mpx::OwnerDied&) { repair(); lock.release(); }
//
// Semaphore, Event, Condition (its own state) and Barrier hold no owner: a process killed
// in the middle of them cannot hold them. A Barrier notices a participant that died while
// waiting and breaks (see Barrier). A process killed after it set an Event (released a
// unit, notified a waiter) and before its wake-up reached the waiters does not leave them
// asleep: a waiter looks again at least every second.
#pragma once

#include <pthread.h>

#include <chrono>
#include <climits>
#include <concepts>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <variant>

#include "mpx/detail/deadline.hpp"
#include "mpx/detail/handoff_trait.hpp"
#include "mpx/errors.hpp"

namespace mpx {

// What acquire() does when the previous owner of a Lock/RLock died holding it. Either
// way the caller gets the lock, and the lock is usable again afterwards.
enum class OwnerDeath {
  kThrow,    // throw mpx::OwnerDied after acquiring (the caller holds the lock)
  kRecover,  // acquire silently
};

namespace detail {
struct LockState;
struct RLockState;
struct SemaphoreState;
struct EventState;
struct ConditionState;
struct BarrierState;

// A zero-filled MAP_SHARED|MAP_ANONYMOUS mapping of `size` bytes, unmapped when the last
// shared_ptr in this process goes away. Throws std::system_error. While a KeepBlockFds
// lives on the calling thread, or while the program's start method is spawn or
// forkserver, a memfd's mapping instead, the memfd kept open with it (for a child that
// is not a fork: the factories of a spawn or forkserver Context, and the constructors
// after set_start_method("spawn"), as Python's module-level objects).
std::shared_ptr<void> allocate_shared_block(std::size_t size);
class KeepBlockFds {
 public:
  KeepBlockFds() noexcept;
  ~KeepBlockFds();
  // Whether one lives on the calling thread or the default is set (for the other shared
  // pages: a Pipe's rings).
  static bool active() noexcept;
  // The default for every thread: set_start_method sets it when the method is not fork.
  static void set_default(bool keep) noexcept;
  KeepBlockFds(const KeepBlockFds&) = delete;
  KeepBlockFds& operator=(const KeepBlockFds&) = delete;
};
// The memfd of the block that starts at `block` when it has one, else -1.
int shared_block_fd(const void* block) noexcept;
// For Handoff::save: shared_block_fd(block), or ValueError naming `type` when the block
// has no memfd (made by a constructor, outside a spawn or forkserver Context).
int handoff_block_fd(const void* block, const char* type);
// Maps the block behind `fd` (a memfd received from a parent; taken, kept open).
std::shared_ptr<void> adopt_shared_block(int fd);
struct SyncAccess;  // synchronize.cpp
}  // namespace detail

// A non-recursive, robust, process-shared mutual exclusion lock (multiprocessing.Lock).
// Lockable and TimedLockable: works with std::lock_guard, std::unique_lock, std::scoped_lock.
// Memory: acquire has acquire semantics and release has release semantics, between threads
// and processes alike.
class Lock {
 public:
  // Creates an unlocked lock in a new shared page. Throws std::system_error.
  explicit Lock(OwnerDeath on_owner_death = OwnerDeath::kThrow);

  // Blocks until the lock is acquired.
  // Throws: mpx::OwnerDied (lock held, see above); mpx::UsageError when the calling
  // thread holds it already (it would deadlock for ever; Python would hang).
  void acquire() const {
    // The uncontended path is inlined: a robust pthread mutex is the lock itself.
    if (int rc = ::pthread_mutex_trylock(native_); rc != 0) [[unlikely]]
      acquire_failed_try(rc);
  }
  // As acquire(), giving up after `timeout`: true when acquired. A thread that holds the
  // lock already waits for the timeout and gets false, like Python.
  template <class Rep, class Period>
  bool acquire(std::chrono::duration<Rep, Period> timeout) const {
    return acquire_until(detail::Deadline::after(timeout));
  }
  // Never blocks: true when acquired (Python: acquire(False)). Throws mpx::OwnerDied.
  bool try_acquire() const;
  // Releases the lock. Throws mpx::ValueError when the calling thread does not hold it
  // (unlocked, or held by another thread or process).
  void release() const {
    if (int rc = ::pthread_mutex_unlock(native_); rc != 0) [[unlikely]]
      release_failed(rc);
  }
  // Whether some thread holds the lock now (a snapshot).
  bool locked() const noexcept;

  // std::Lockable / TimedLockable spellings.
  void lock() const { acquire(); }
  void unlock() const { release(); }
  bool try_lock() const { return try_acquire(); }
  template <class Rep, class Period>
  bool try_lock_for(std::chrono::duration<Rep, Period> timeout) const {
    return acquire(timeout);
  }
  template <class Clock, class Duration>
  bool try_lock_until(std::chrono::time_point<Clock, Duration> when) const {
    return acquire(when - Clock::now());
  }

  // Internal (Condition): whether the calling thread holds the lock.
  bool is_owned() const noexcept;
  bool acquire_until(const detail::Deadline& deadline) const;

 private:
  void acquire_failed_try(int rc) const;
  [[noreturn]] void release_failed(int rc) const;

  friend struct detail::SyncAccess;
  explicit Lock(std::shared_ptr<detail::LockState> state) noexcept;

  std::shared_ptr<detail::LockState> state_;
  pthread_mutex_t* native_;  // the mutex inside *state_
};

// A reentrant, robust, process-shared lock (multiprocessing.RLock): the owning thread may
// acquire it again; it is free when released as often as acquired. Owned by (process,
// thread). Same interface and robustness as Lock.
class RLock {
 public:
  explicit RLock(OwnerDeath on_owner_death = OwnerDeath::kThrow);

  // Blocks until acquired; returns at once (counting) when the caller owns it.
  // Throws mpx::OwnerDied (lock held once, count 1).
  void acquire() const;
  template <class Rep, class Period>
  bool acquire(std::chrono::duration<Rep, Period> timeout) const {
    return acquire_until(detail::Deadline::after(timeout));
  }
  bool try_acquire() const;
  // Undoes one acquire(). Throws mpx::ValueError when the caller does not own the lock.
  void release() const;
  // Whether some thread holds the lock now (a snapshot).
  bool locked() const noexcept;

  void lock() const { acquire(); }
  void unlock() const { release(); }
  bool try_lock() const { return try_acquire(); }
  template <class Rep, class Period>
  bool try_lock_for(std::chrono::duration<Rep, Period> timeout) const {
    return acquire(timeout);
  }
  template <class Clock, class Duration>
  bool try_lock_until(std::chrono::time_point<Clock, Duration> when) const {
    return acquire(when - Clock::now());
  }

  // Internal (Condition).
  bool is_owned() const noexcept;
  bool acquire_until(const detail::Deadline& deadline) const;
  // Releases the lock completely and returns how often it was held.
  unsigned release_save() const;
  // Acquires the lock and sets its count (after release_save()).
  void acquire_restore(unsigned count) const;

 private:
  friend struct detail::SyncAccess;
  explicit RLock(std::shared_ptr<detail::RLockState> state) noexcept : state_(std::move(state)) {}
  std::shared_ptr<detail::RLockState> state_;
};

// A counting semaphore (multiprocessing.Semaphore). Not owned: any thread or process may
// release it. Usable with std::lock_guard (lock = acquire, unlock = release).
class Semaphore {
 public:
  // Throws mpx::ValueError when value < 0.
  explicit Semaphore(int value = 1);

  // Blocks until the counter is positive, then decrements it.
  void acquire() const;
  // As acquire(), giving up after `timeout`: true when acquired.
  template <class Rep, class Period>
  bool acquire(std::chrono::duration<Rep, Period> timeout) const {
    return acquire_until(detail::Deadline::after(timeout));
  }
  // Never blocks: true when the counter was positive and was decremented.
  bool try_acquire() const;
  // Adds n to the counter and wakes up to n waiters. Throws mpx::ValueError for a
  // BoundedSemaphore when the counter would exceed its initial value (nothing changes).
  void release(unsigned n = 1) const;
  // The counter now (a snapshot).
  int get_value() const noexcept;

  void lock() const { acquire(); }
  void unlock() const { release(); }
  bool try_lock() const { return try_acquire(); }

  bool acquire_until(const detail::Deadline& deadline) const;

 protected:
  Semaphore(int value, bool bounded);
  explicit Semaphore(std::shared_ptr<detail::SemaphoreState> state) noexcept
      : state_(std::move(state)) {}

 private:
  friend struct detail::SyncAccess;
  std::shared_ptr<detail::SemaphoreState> state_;
};

// A Semaphore whose release() throws mpx::ValueError when it would raise the counter
// above its initial value (multiprocessing.BoundedSemaphore).
class BoundedSemaphore : public Semaphore {
 public:
  explicit BoundedSemaphore(int value = 1) : Semaphore(value, true) {}

 private:
  friend struct detail::SyncAccess;
  explicit BoundedSemaphore(std::shared_ptr<detail::SemaphoreState> state) noexcept
      : Semaphore(std::move(state)) {}
};

// A flag that threads and processes can wait for (multiprocessing.Event).
class Event {
 public:
  Event();
  bool is_set() const noexcept;
  // Sets the flag and wakes every waiter.
  void set() const;
  void clear() const noexcept;
  // Blocks until the flag is set; returns true.
  bool wait() const;
  // Blocks until the flag is set or `timeout` passes; returns the flag.
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout) const {
    return wait_until(detail::Deadline::after(timeout));
  }
  bool wait_until(const detail::Deadline& deadline) const;

 private:
  friend struct detail::SyncAccess;
  explicit Event(std::shared_ptr<detail::EventState> state) noexcept : state_(std::move(state)) {}
  std::shared_ptr<detail::EventState> state_;
};

// A condition variable bound to a Lock or an RLock (multiprocessing.Condition). Waiters are
// woken in the order they started waiting; a notification is never taken by a thread that
// started waiting after it. At most 128 threads (of all processes) wait at a time.
//
//   mpx::Condition cond;                               // its own RLock
//   { std::unique_lock g(cond); cond.wait_for([&] { return ready.value(); }); }
//
// The Condition is also a lock: acquire()/release()/lock()/unlock() act on its lock.
// A waiter whose process is killed while waiting may absorb one notify().
class Condition {
 public:
  // With a new RLock (Python's default).
  Condition();
  explicit Condition(Lock lock);
  explicit Condition(RLock lock);

  // Releases the lock, blocks until notified, re-acquires the lock. Returns true.
  // Throws mpx::UsageError when the caller does not hold the lock; mpx::OwnerDied when
  // the lock's owner died meanwhile (the caller holds the lock); mpx::Error when 128
  // threads wait already.
  bool wait() const { return wait_until(detail::Deadline::never()); }
  // As wait(), giving up after `timeout`: false when it timed out (the lock is re-acquired
  // either way).
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout) const {
    return wait_until(detail::Deadline::after(timeout));
  }
  // Waits until predicate() is true (called with the lock held), for at most `timeout`
  // when given. Returns the predicate's last value.
  template <class Predicate>
  auto wait_for(Predicate predicate) const -> decltype(predicate()) {
    auto result = predicate();
    while (!result) {
      wait();
      result = predicate();
    }
    return result;
  }
  template <class Predicate, class Rep, class Period>
  auto wait_for(Predicate predicate, std::chrono::duration<Rep, Period> timeout) const
      -> decltype(predicate()) {
    auto deadline = detail::Deadline::after(timeout);
    auto result = predicate();
    while (!result) {
      if (deadline.expired()) break;
      wait_until(deadline);
      result = predicate();
    }
    return result;
  }
  // Wakes up to n waiters (the longest waiting first). Throws mpx::UsageError when the
  // caller does not hold the lock.
  void notify(unsigned n = 1) const;
  void notify_all() const { notify(UINT_MAX); }

  void acquire() const;
  template <class Rep, class Period>
  bool acquire(std::chrono::duration<Rep, Period> timeout) const {
    return std::visit([&](const auto& l) { return l.acquire(timeout); }, lock_);
  }
  void release() const;
  void lock() const { acquire(); }
  void unlock() const { release(); }
  bool try_lock() const;

  bool wait_until(const detail::Deadline& deadline) const;

 private:
  friend struct detail::SyncAccess;
  Condition(std::variant<Lock, RLock> lock, std::shared_ptr<detail::ConditionState> state) noexcept
      : lock_(std::move(lock)), state_(std::move(state)) {}
  bool is_owned() const noexcept;
  std::variant<Lock, RLock> lock_;
  std::shared_ptr<detail::ConditionState> state_;
};

// A barrier for a fixed number of parties (multiprocessing.Barrier, threading.Barrier).
//
//   mpx::Barrier barrier(3);
//   ... in each of 3 threads or processes: int i = barrier.wait();
//
// wait() returns an index in [0, parties) unique among the parties of one round; the
// last to arrive gets parties() - 1 and runs the action before anyone is released. A
// timeout, abort(), an action that throws, or a participant process that dies while
// waiting breaks the barrier: every current and later wait() throws
// mpx::BrokenBarrierError until reset(). Participants that died are noticed within about
// 100 ms (waiters re-check the processes they wait with; up to 64 processes per barrier).
// The action is a std::function in each process's handle (a forked child has a copy);
// it runs in the process of the last arrival.
class Barrier {
 public:
  // Throws mpx::ValueError when parties == 0.
  explicit Barrier(unsigned parties, std::function<void()> action = {},
                   std::optional<std::chrono::duration<double>> timeout = std::nullopt);

  // Waits for all parties (for the barrier's default timeout, if any).
  // Throws mpx::BrokenBarrierError; rethrows what the action threw (in the process that
  // ran it, the others get BrokenBarrierError).
  unsigned wait() const { return wait_until(detail::Deadline::after(timeout_)); }
  template <class Rep, class Period>
  unsigned wait(std::chrono::duration<Rep, Period> timeout) const {
    return wait_until(detail::Deadline::after(timeout));
  }
  // Returns the barrier to its initial state; current waiters get BrokenBarrierError.
  void reset() const;
  // Breaks the barrier: current and later waiters get BrokenBarrierError until reset().
  void abort() const;
  unsigned parties() const noexcept;
  // Parties waiting in the current round.
  unsigned n_waiting() const;
  bool broken() const;

  unsigned wait_until(const detail::Deadline& deadline) const;

 private:
  friend struct detail::Handoff<Barrier>;
  Barrier(std::shared_ptr<detail::BarrierState> state,
          std::optional<std::chrono::duration<double>> timeout) noexcept
      : state_(std::move(state)), timeout_(timeout) {}
  std::shared_ptr<detail::BarrierState> state_;
  std::function<void()> action_;
  std::optional<std::chrono::duration<double>> timeout_;
};

// Locks, semaphores and events handed to a spawn or forkserver child (mpx/context.hpp):
// the memfd of their shared page travels. Only those made by a spawn or forkserver
// Context's factories have one; others are shared through fork only (ValueError).
namespace detail {
int handoff_fd(const Lock& x);
int handoff_fd(const RLock& x);
int handoff_fd(const Semaphore& x);
int handoff_fd(const Event& x);
template <class T>
T adopt_handed_off(int fd);
// A Condition's parts: its lock, and the fd of its state's page (ValueError without one).
const std::variant<Lock, RLock>& condition_lock(const Condition& c) noexcept;
int handoff_fd(const Condition& x);
Condition adopt_condition(std::variant<Lock, RLock> lock, int fd);
template <class T>
requires(std::same_as<T, Lock> || std::same_as<T, RLock> || std::same_as<T, Semaphore> ||
         std::same_as<T, BoundedSemaphore> || std::same_as<T, Event>) struct Handoff<T> {
  static void save(const T& x, HandoffWriter& w) { w.put_fd(handoff_fd(x)); }
  static T load(HandoffReader& r) { return adopt_handed_off<T>(r.take_fd()); }
};
template <>
struct Handoff<Condition> {
  static void save(const Condition& c, HandoffWriter& w) {
    w.put_fd(handoff_fd(c));
    const auto& lock = condition_lock(c);
    const unsigned char index = static_cast<unsigned char>(lock.index());
    w.put(&index, 1);
    std::visit([&w](const auto& l) { Handoff<std::decay_t<decltype(l)>>::save(l, w); }, lock);
  }
  static Condition load(HandoffReader& r) {
    const int fd = r.take_fd();
    unsigned char index = 0;
    r.get(&index, 1);
    if (index == 0) return adopt_condition(Handoff<Lock>::load(r), fd);
    return adopt_condition(Handoff<RLock>::load(r), fd);
  }
};
// A Barrier: its page's memfd and its default timeout. Its action is a function of this
// process, which cannot travel: a Barrier with one is refused (ValueError).
template <>
struct Handoff<Barrier> {
  static void save(const Barrier& b, HandoffWriter& w) {
    if (b.action_) {
      throw ValueError(
          "mpx: a Barrier with an action cannot reach a spawn or forkserver child: the action "
          "is a function of this process. Make the Barrier without one (the last to arrive "
          "can tell from wait()'s index, parties() - 1) or use the fork start method");
    }
    w.put_fd(handoff_block_fd(b.state_.get(), "mpx::Barrier"));
    const double timeout = b.timeout_ ? b.timeout_->count() : -1.0;
    w.put(&timeout, sizeof timeout);
  }
  static Barrier load(HandoffReader& r) {
    std::shared_ptr<void> block = adopt_shared_block(r.take_fd());
    double timeout = -1.0;
    r.get(&timeout, sizeof timeout);
    std::optional<std::chrono::duration<double>> t;
    if (timeout >= 0) t.emplace(timeout);
    return Barrier(std::shared_ptr<BarrierState>(block, static_cast<BarrierState*>(block.get())),
                   t);
  }
};
}  // namespace detail

}  // namespace mpx
