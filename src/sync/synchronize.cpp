// Lock, RLock, Semaphore, Event, Condition and Barrier over shared anonymous pages.
//
// Lock and RLock are robust pthread mutexes (sys::RobustMutex): the kernel hands a dead
// owner's mutex to the next locker, which is what makes them robust. Everything else waits
// with detail::wait_until on a WaitWord, the one waiting mechanism of mpx.
#include "mpx/synchronize.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <new>
#include <string>

#include "mpx/detail/waiter.hpp"
#include "sys/mapping.hpp"
#include "sys/robust_mutex.hpp"
#include "sys/self.hpp"
#include "sys/syscall.hpp"

namespace mpx {

namespace detail {

struct SyncAccess {
  template <class T>
  static const void* block(const T& x) {
    return x.state_.get();
  }
  static const std::variant<Lock, RLock>& lock(const Condition& c) noexcept { return c.lock_; }
  static Condition condition(std::variant<Lock, RLock> lock,
                             std::shared_ptr<ConditionState> state) {
    return Condition(std::move(lock), std::move(state));
  }
  template <class T, class State>
  static T adopt(int fd) {
    std::shared_ptr<void> b = adopt_shared_block(fd);
    return T(std::shared_ptr<State>(b, static_cast<State*>(b.get())));
  }
};

int handoff_fd(const Lock& x) {
  return handoff_block_fd(SyncAccess::block(x), "mpx::Lock");
}
int handoff_fd(const RLock& x) {
  return handoff_block_fd(SyncAccess::block(x), "mpx::RLock");
}
int handoff_fd(const Semaphore& x) {
  return handoff_block_fd(SyncAccess::block(x), "mpx::Semaphore");
}
int handoff_fd(const Event& x) {
  return handoff_block_fd(SyncAccess::block(x), "mpx::Event");
}

namespace {
// Constructs T in a new shared page; the handle keeps the page mapped.
template <class T, class... Args>
std::shared_ptr<T> make_shared_state(Args&&... args) {
  std::shared_ptr<void> block = allocate_shared_block(sizeof(T));
  T* state = new (block.get()) T(std::forward<Args>(args)...);
  // The state is never destroyed: other processes may still use it after this process
  // unmaps its view, and every member is fine to abandon (no process-local resources).
  return std::shared_ptr<T>(block, state);
}
}  // namespace

struct LockState {
  explicit LockState(OwnerDeath policy) : on_owner_death(policy) {}
  sys::RobustMutex mutex;
  const OwnerDeath on_owner_death;
};

struct RLockState {
  explicit RLockState(OwnerDeath policy) : on_owner_death(policy) {}
  sys::RobustMutex mutex;
  unsigned count = 0;  // written only by the owner
  const OwnerDeath on_owner_death;
};

struct SemaphoreState {
  SemaphoreState(int initial, bool is_bounded)
      : value(static_cast<uint32_t>(initial)),
        bound(static_cast<uint32_t>(initial)),
        bounded(is_bounded) {}
  WaitWord word;
  std::atomic<uint32_t> value;
  const uint32_t bound;
  const bool bounded;
};

struct EventState {
  WaitWord word;
  std::atomic<uint32_t> flag{0};
  // Bumped by every set(): a waiter that sees it move was waiting when set() was called
  // and returns true even if clear() came at once (Python's guarantee).
  std::atomic<uint32_t> generation{0};
};

// One waiter of a Condition. Written only under the Condition's lock, except that the
// waiter polls `state` without it.
struct ConditionSlot {
  enum : uint32_t { kFree = 0, kWaiting = 1, kNotified = 2 };
  WaitWord word;
  std::atomic<uint32_t> state{kFree};
  pid_t pid = 0;
  uint32_t order = 0;
};

constexpr unsigned kConditionSlots = 128;

struct ConditionState {
  uint32_t next_order = 0;
  ConditionSlot slots[kConditionSlots];
};

constexpr unsigned kBarrierProcesses = 64;

struct BarrierState {
  explicit BarrierState(unsigned n) : parties(n) {}
  enum : int32_t { kFilling = 0, kDraining = 1, kResetting = -1, kBroken = -2 };
  sys::RobustMutex mutex;
  WaitWord word;
  std::atomic<int32_t> state{kFilling};
  const unsigned parties;
  unsigned count = 0;  // under mutex
  // Processes with waiters in the barrier, so that the death of one can be noticed.
  struct Entry {
    pid_t pid;
    unsigned waiters;
  } processes[kBarrierProcesses] = {};
};

}  // namespace detail

using detail::Deadline;
using Result = sys::RobustMutex::Result;

namespace {

// Returns true when acquired; handles a dead owner's mutex per the policy.
bool finish_acquire(sys::RobustMutex& mutex, Result r, OwnerDeath policy) {
  switch (r) {
    case Result::kAcquired:
      return true;
    case Result::kTimedOut:
      return false;
    case Result::kOwnerDied:
      mutex.mark_consistent();
      if (policy == OwnerDeath::kThrow) throw OwnerDied();
      return true;
  }
  return false;
}

// Waits for `ready` on a word another process may change: a waker killed after its change
// and before its futex wake would leave the waiter asleep though its Event is set (its
// unit released, its slot notified), so the waiter looks again every second; only that
// crash pays the delay. Returns ready()'s last value.
template <class Pred>
bool wait_shared(detail::WaitWord& word, Pred&& ready, const Deadline& deadline) {
  constexpr auto kLookAgain = std::chrono::seconds(1);
  for (;;) {
    if (detail::wait_until(word, ready, deadline.at_most(kLookAgain))) return true;
    if (deadline.expired()) return ready();
  }
}

// Waits out a deadline without holding anything: what a thread trying to take a
// non-recursive lock it holds itself can do.
void sleep_until(const Deadline& deadline) {
  detail::WaitWord word;
  wait_until(
      word, [] { return false; }, deadline);
}

}  // namespace

// ---------------------------------------------------------------------------- Lock

template <>
Lock detail::adopt_handed_off<Lock>(int fd) {
  return detail::SyncAccess::adopt<Lock, detail::LockState>(fd);
}
template <>
RLock detail::adopt_handed_off<RLock>(int fd) {
  return detail::SyncAccess::adopt<RLock, detail::RLockState>(fd);
}
template <>
Semaphore detail::adopt_handed_off<Semaphore>(int fd) {
  return detail::SyncAccess::adopt<Semaphore, detail::SemaphoreState>(fd);
}
template <>
BoundedSemaphore detail::adopt_handed_off<BoundedSemaphore>(int fd) {
  return detail::SyncAccess::adopt<BoundedSemaphore, detail::SemaphoreState>(fd);
}
template <>
Event detail::adopt_handed_off<Event>(int fd) {
  return detail::SyncAccess::adopt<Event, detail::EventState>(fd);
}

const std::variant<Lock, RLock>& detail::condition_lock(const Condition& c) noexcept {
  return detail::SyncAccess::lock(c);
}
int detail::handoff_fd(const Condition& x) {
  return handoff_block_fd(detail::SyncAccess::block(x), "mpx::Condition");
}
Condition detail::adopt_condition(std::variant<Lock, RLock> lock, int fd) {
  std::shared_ptr<void> b = adopt_shared_block(fd);
  return detail::SyncAccess::condition(
      std::move(lock), std::shared_ptr<ConditionState>(b, static_cast<ConditionState*>(b.get())));
}

Lock::Lock(std::shared_ptr<detail::LockState> state) noexcept
    : state_(std::move(state)), native_(state_->mutex.native_handle()) {}

Lock::Lock(OwnerDeath on_owner_death)
    : state_(detail::make_shared_state<detail::LockState>(on_owner_death)),
      native_(state_->mutex.native_handle()) {}

void Lock::acquire_failed_try(int rc) const {
  auto& mutex = state_->mutex;
  Result r = Result::kOwnerDied;
  if (rc == EBUSY) {
    if (mutex.owner_tid() == sys::this_tid())
      throw UsageError("Lock::acquire: the calling thread holds this Lock already (use RLock)");
    r = mutex.lock_contended(Deadline::never());
  } else if (rc != EOWNERDEAD) {
    sys::throw_errno("pthread_mutex_trylock", rc);
  }
  finish_acquire(mutex, r, state_->on_owner_death);
}

void Lock::release_failed(int rc) const {
  if (rc != EPERM) sys::throw_errno("pthread_mutex_unlock", rc);
  throw ValueError(locked() ? "Lock::release: the lock is held by another thread or process"
                            : "Lock::release: release unlocked lock");
}

bool Lock::acquire_until(const Deadline& deadline) const {
  auto& mutex = state_->mutex;
  // Try first: under contention, any read of the lock word before the atomic write would
  // cost a second cache-line transfer.
  Result r = mutex.try_lock();
  if (r == Result::kTimedOut) {
    if (mutex.owner_tid() == sys::this_tid()) {
      if (deadline.is_never())
        throw UsageError("Lock::acquire: the calling thread holds this Lock already (use RLock)");
      sleep_until(deadline);
      return false;
    }
    r = mutex.lock_contended(deadline);
  }
  return finish_acquire(mutex, r, state_->on_owner_death);
}

bool Lock::try_acquire() const {
  return finish_acquire(state_->mutex, state_->mutex.try_lock(), state_->on_owner_death);
}

bool Lock::locked() const noexcept {
  return state_->mutex.owner_tid() != 0;
}

bool Lock::is_owned() const noexcept {
  return state_->mutex.owner_tid() == sys::this_tid();
}

// ---------------------------------------------------------------------------- RLock

RLock::RLock(OwnerDeath on_owner_death)
    : state_(detail::make_shared_state<detail::RLockState>(on_owner_death)) {}

void RLock::acquire() const {
  (void)acquire_until(Deadline::never());
}

bool RLock::acquire_until(const Deadline& deadline) const {
  auto& s = *state_;
  // Try first (one cache-line transfer when free); a failed try may be our own hold.
  Result r = s.mutex.try_lock();
  if (r == Result::kTimedOut) {
    if (s.mutex.owner_tid() == sys::this_tid()) {
      ++s.count;
      return true;
    }
    r = s.mutex.lock_contended(deadline);
  }
  if (r == Result::kTimedOut) return false;
  s.count = 1;
  return finish_acquire(s.mutex, r, s.on_owner_death);
}

bool RLock::try_acquire() const {
  auto& s = *state_;
  if (s.mutex.owner_tid() == sys::this_tid()) {
    ++s.count;
    return true;
  }
  Result r = s.mutex.try_lock();
  if (r == Result::kTimedOut) return false;
  s.count = 1;
  return finish_acquire(s.mutex, r, s.on_owner_death);
}

void RLock::release() const {
  auto& s = *state_;
  if (s.mutex.owner_tid() != sys::this_tid())
    throw ValueError("RLock::release: cannot release un-acquired lock");
  if (--s.count == 0) s.mutex.unlock();
}

bool RLock::locked() const noexcept {
  return state_->mutex.owner_tid() != 0;
}

bool RLock::is_owned() const noexcept {
  return state_->mutex.owner_tid() == sys::this_tid();
}

unsigned RLock::release_save() const {
  auto& s = *state_;
  if (s.mutex.owner_tid() != sys::this_tid())
    throw ValueError("RLock::release: cannot release un-acquired lock");
  unsigned count = s.count;
  s.count = 0;
  s.mutex.unlock();
  return count;
}

void RLock::acquire_restore(unsigned count) const {
  auto& s = *state_;
  Result r = s.mutex.lock(Deadline::never());
  s.count = count;
  finish_acquire(s.mutex, r, s.on_owner_death);
}

// ---------------------------------------------------------------------------- Semaphore

Semaphore::Semaphore(int value) : Semaphore(value, false) {}

Semaphore::Semaphore(int value, bool bounded) {
  if (value < 0) throw ValueError("Semaphore: initial value must be >= 0");
  state_ = detail::make_shared_state<detail::SemaphoreState>(value, bounded);
}

bool Semaphore::try_acquire() const {
  auto& value = state_->value;
  uint32_t v = value.load(std::memory_order_relaxed);
  while (v > 0) {
    if (value.compare_exchange_weak(v, v - 1, std::memory_order_acquire, std::memory_order_relaxed))
      return true;
  }
  return false;
}

void Semaphore::acquire() const {
  (void)acquire_until(Deadline::never());
}

bool Semaphore::acquire_until(const Deadline& deadline) const {
  for (;;) {
    if (try_acquire()) return true;
    // Taking inside the predicate ends the wait with the unit in hand.
    bool got = false;
    wait_shared(
        state_->word,
        [&] {
          got = try_acquire();
          return got;
        },
        deadline);
    if (got) return true;
    if (deadline.expired()) return try_acquire();
  }
}

void Semaphore::release(unsigned n) const {
  auto& s = *state_;
  if (n == 0) return;
  uint32_t v = s.value.load(std::memory_order_relaxed);
  for (;;) {
    if (s.bounded && (n > s.bound || v > s.bound - n))
      throw ValueError("BoundedSemaphore::release: semaphore released too many times");
    if (s.value.compare_exchange_weak(v, v + n, std::memory_order_release,
                                      std::memory_order_relaxed))
      break;
  }
  detail::notify(s.word, n > INT_MAX ? INT_MAX : static_cast<int>(n));
}

int Semaphore::get_value() const noexcept {
  return static_cast<int>(state_->value.load(std::memory_order_relaxed));
}

// ---------------------------------------------------------------------------- Event

Event::Event() : state_(detail::make_shared_state<detail::EventState>()) {}

bool Event::is_set() const noexcept {
  return state_->flag.load(std::memory_order_acquire) != 0;
}

void Event::set() const {
  state_->flag.store(1, std::memory_order_release);
  state_->generation.fetch_add(1, std::memory_order_acq_rel);
  detail::notify(state_->word);
}

void Event::clear() const noexcept {
  state_->flag.store(0, std::memory_order_release);
}

bool Event::wait() const {
  return wait_until(Deadline::never());
}

bool Event::wait_until(const Deadline& deadline) const {
  detail::EventState& st = *state_;
  const uint32_t generation = st.generation.load(std::memory_order_acquire);
  return wait_shared(
      st.word,
      [&] {
        return st.flag.load(std::memory_order_acquire) != 0 ||
               st.generation.load(std::memory_order_acquire) != generation;
      },
      deadline);
}

// ---------------------------------------------------------------------------- Condition

Condition::Condition() : Condition(RLock()) {}

Condition::Condition(Lock lock)
    : lock_(std::move(lock)), state_(detail::make_shared_state<detail::ConditionState>()) {}

Condition::Condition(RLock lock)
    : lock_(std::move(lock)), state_(detail::make_shared_state<detail::ConditionState>()) {}

void Condition::acquire() const {
  std::visit([](const auto& l) { l.acquire(); }, lock_);
}

void Condition::release() const {
  std::visit([](const auto& l) { l.release(); }, lock_);
}

bool Condition::try_lock() const {
  return std::visit([](const auto& l) { return l.try_acquire(); }, lock_);
}

bool Condition::is_owned() const noexcept {
  return std::visit([](const auto& l) { return l.is_owned(); }, lock_);
}

bool Condition::wait_until(const Deadline& deadline) const {
  using Slot = detail::ConditionSlot;
  if (!is_owned()) throw UsageError("Condition::wait: cannot wait on un-acquired lock");
  auto& s = *state_;
  Slot* slot = nullptr;
  for (int attempt = 0; attempt < 2 && !slot; ++attempt) {
    for (auto& candidate : s.slots) {
      uint32_t st = candidate.state.load(std::memory_order_relaxed);
      // Second pass: reclaim the slots of processes that died while waiting.
      if (st == Slot::kFree || (attempt == 1 && candidate.pid != sys::this_pid() &&
                                !sys::process_alive(candidate.pid))) {
        slot = &candidate;
        break;
      }
    }
  }
  if (!slot) throw Error("Condition::wait: too many waiters (at most 128)");
  slot->pid = sys::this_pid();
  slot->order = s.next_order++;
  slot->state.store(Slot::kWaiting, std::memory_order_relaxed);

  // Release the lock completely (an RLock may be held several times), wait, re-acquire.
  unsigned saved = 0;
  if (auto* rlock = std::get_if<RLock>(&lock_)) {
    saved = rlock->release_save();
  } else {
    std::get<Lock>(lock_).release();
  }
  wait_shared(
      slot->word, [slot] { return slot->state.load(std::memory_order_acquire) == Slot::kNotified; },
      deadline);
  auto reacquire = [&] {
    if (auto* rlock = std::get_if<RLock>(&lock_)) {
      rlock->acquire_restore(saved);
    } else {
      std::get<Lock>(lock_).acquire();
    }
  };
  try {
    reacquire();
  } catch (const OwnerDied&) {
    slot->state.store(Slot::kFree, std::memory_order_relaxed);
    throw;
  }
  // Under the lock again: a notify() that chose this slot before we got here counts.
  bool notified = slot->state.load(std::memory_order_relaxed) == Slot::kNotified;
  slot->state.store(Slot::kFree, std::memory_order_relaxed);
  return notified;
}

void Condition::notify(unsigned n) const {
  using Slot = detail::ConditionSlot;
  if (!is_owned()) throw UsageError("Condition::notify: cannot notify on un-acquired lock");
  auto& s = *state_;
  const pid_t self = sys::this_pid();
  for (unsigned woken = 0; woken < n;) {
    // The longest-waiting slot: smallest order, compared modulo 2^32.
    Slot* oldest = nullptr;
    for (auto& candidate : s.slots) {
      if (candidate.state.load(std::memory_order_relaxed) != Slot::kWaiting) continue;
      if (!oldest || static_cast<int32_t>(candidate.order - oldest->order) < 0) oldest = &candidate;
    }
    if (!oldest) break;
    oldest->state.store(Slot::kNotified, std::memory_order_release);
    detail::notify(oldest->word);
    // A waiter whose process is gone absorbs the notification; do not count it.
    if (oldest->pid == self || sys::process_alive(oldest->pid)) ++woken;
  }
}

// ---------------------------------------------------------------------------- Barrier

namespace {

using BState = detail::BarrierState;
constexpr auto kLivenessPeriod = std::chrono::milliseconds(100);

void barrier_notify(BState& s, int32_t new_state) {
  s.state.store(new_state, std::memory_order_release);
  detail::notify(s.word);
}

void add_process(BState& s, pid_t pid) {
  BState::Entry* free_entry = nullptr;
  for (auto& e : s.processes) {
    if (e.waiters != 0 && e.pid == pid) {
      ++e.waiters;
      return;
    }
    if (e.waiters == 0 && !free_entry) free_entry = &e;
  }
  if (free_entry) *free_entry = {pid, 1};  // else: untracked (more than 64 processes)
}

void remove_process(BState& s, pid_t pid) {
  for (auto& e : s.processes) {
    if (e.waiters != 0 && e.pid == pid) {
      --e.waiters;
      return;
    }
  }
}

// Leaving the barrier (Python's _exit): the last one out of a draining or resetting round
// opens the barrier for the next round.
void leave(BState& s) {
  int32_t st = s.state.load(std::memory_order_relaxed);
  if (s.count == 0 && (st == BState::kResetting || st == BState::kDraining))
    barrier_notify(s, BState::kFilling);
}

// Forgets participants whose processes died; if one died while the round was filling,
// the barrier breaks. Called with the mutex held.
void purge_dead(BState& s) {
  const pid_t self = sys::this_pid();
  bool died = false;
  for (auto& e : s.processes) {
    if (e.waiters == 0 || e.pid == self || sys::process_alive(e.pid)) continue;
    s.count -= std::min(s.count, e.waiters);
    e.waiters = 0;
    died = true;
  }
  if (!died) return;
  if (s.state.load(std::memory_order_relaxed) == BState::kFilling) {
    barrier_notify(s, BState::kBroken);
  } else {
    leave(s);
  }
}

// The barrier's own mutex; a participant that died holding it broke the barrier.
class BarrierGuard {
 public:
  explicit BarrierGuard(BState& s) : s_(s) { lock(); }
  ~BarrierGuard() {
    if (held_) s_.mutex.unlock();
  }
  BarrierGuard(const BarrierGuard&) = delete;
  BarrierGuard& operator=(const BarrierGuard&) = delete;
  void lock() {
    if (s_.mutex.lock() == Result::kOwnerDied) {
      s_.mutex.mark_consistent();
      held_ = true;
      // Whoever died holding the mutex was a participant (then purge breaks the round)
      // or was only looking (then nothing is lost).
      purge_dead(s_);
    }
    held_ = true;
  }
  void unlock() {
    held_ = false;
    s_.mutex.unlock();
  }

  // Releases the mutex and waits until the state satisfies `done` (true) or the deadline
  // passes (false), re-checking the other participants' processes every 100 ms.
  template <class Done>
  bool wait(Done done, const Deadline& deadline) {
    for (;;) {
      if (done(s_.state.load(std::memory_order_relaxed))) return true;
      if (deadline.expired()) return false;
      unlock();
      detail::wait_until(
          s_.word, [&] { return done(s_.state.load(std::memory_order_acquire)); },
          deadline.at_most(kLivenessPeriod));
      lock();
      purge_dead(s_);
    }
  }

 private:
  BState& s_;
  bool held_ = false;
};

}  // namespace

Barrier::Barrier(unsigned parties, std::function<void()> action,
                 std::optional<std::chrono::duration<double>> timeout)
    : action_(std::move(action)), timeout_(timeout) {
  if (parties == 0) throw ValueError("Barrier: parties must be > 0");
  state_ = detail::make_shared_state<BState>(parties);
}

unsigned Barrier::wait_until(const Deadline& deadline) const {
  auto& s = *state_;
  BarrierGuard guard(s);
  // Python's _enter: wait for the previous round to drain or reset.
  guard.wait([](int32_t st) { return st != BState::kDraining && st != BState::kResetting; },
             Deadline::never());
  // The last to arrive first looks for waiters that died: their death breaks the round
  // (the waiters themselves notice it within kLivenessPeriod, the last arrival at once).
  if (s.count + 1 == s.parties) purge_dead(s);
  if (s.state.load(std::memory_order_relaxed) == BState::kBroken) throw BrokenBarrierError();
  const pid_t self = sys::this_pid();
  unsigned index = s.count++;
  add_process(s, self);
  auto leave_round = [&] {
    --s.count;
    remove_process(s, self);
    leave(s);
  };
  if (index + 1 == s.parties) {
    try {
      if (action_) action_();
    } catch (...) {
      barrier_notify(s, BState::kBroken);
      leave_round();
      throw;
    }
    barrier_notify(s, BState::kDraining);
    leave_round();
    return index;
  }
  bool released = guard.wait([](int32_t st) { return st != BState::kFilling; }, deadline);
  if (!released) barrier_notify(s, BState::kBroken);
  int32_t st = s.state.load(std::memory_order_relaxed);
  leave_round();
  if (st < 0) throw BrokenBarrierError();
  return index;
}

void Barrier::reset() const {
  auto& s = *state_;
  BarrierGuard guard(s);
  if (s.count > 0) {
    int32_t st = s.state.load(std::memory_order_relaxed);
    if (st == BState::kFilling || st == BState::kBroken) barrier_notify(s, BState::kResetting);
  } else {
    barrier_notify(s, BState::kFilling);
  }
}

void Barrier::abort() const {
  auto& s = *state_;
  BarrierGuard guard(s);
  barrier_notify(s, BState::kBroken);
}

unsigned Barrier::parties() const noexcept {
  return state_->parties;
}

unsigned Barrier::n_waiting() const {
  auto& s = *state_;
  BarrierGuard guard(s);
  return s.state.load(std::memory_order_relaxed) == BState::kFilling ? s.count : 0;
}

bool Barrier::broken() const {
  return state_->state.load(std::memory_order_acquire) == BState::kBroken;
}

}  // namespace mpx
