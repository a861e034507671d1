// mpx/detail/waiter.hpp — the one waiting mechanism of mpx (cf. Abseil's internal waiter).
//
// Every blocking wait in mpx (locks, semaphores, events, queues, futures) goes through
// wait_until(): spin briefly, then sleep on a process-shared futex. The spin matters on
// virtual machines where waking a halted vCPU costs 50-85 µs while a spinning round trip
// costs under 1 µs (../shared/anchors/RESULTS.md). The spin is skipped when this process
// may run on one CPU only.
//
// A WaitWord lives next to the state it guards (in shared memory for cross-process
// objects). Protocol: the waker first changes the state, then calls notify(); the
// waiter passes a predicate that reads the state. Lost wake-ups are impossible: the
// waiter registers as a sleeper and re-checks the predicate before it sleeps, and the
// futex sleep fails at once if the sequence number moved meanwhile.
// A sleeper killed with SIGKILL leaves the sleeper count high, which only costs its
// wakers a spare futex_wake call.
#pragma once

#include <atomic>
#include <climits>
#include <cstdint>

#include "mpx/detail/deadline.hpp"

namespace mpx::detail {

struct WaitWord {
  std::atomic<uint32_t> seq{0};
  std::atomic<uint32_t> sleepers{0};
};
static_assert(std::atomic<uint32_t>::is_always_lock_free);
static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t));

// FUTEX_WAIT on a process-shared word until `deadline`. Returns false only on timeout;
// true when woken, when *word != expected, or spuriously. Retries EINTR internally.
bool futex_wait(std::atomic<uint32_t>& word, uint32_t expected, const Deadline& deadline);
// FUTEX_WAKE up to `count` sleepers on the word.
void futex_wake(std::atomic<uint32_t>& word, int count) noexcept;

// Number of pause iterations to spin before sleeping: MPX_SPIN from the environment if
// set, 0 when the CPU affinity mask has one CPU, otherwise a default tuned by bench/.
int spin_limit() noexcept;

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// Spins up to `spins` times on `ready`; true as soon as it returns true.
template <class Pred>
bool spin_until(Pred&& ready, int spins) {
  for (int i = 0; i < spins; ++i) {
    if (ready()) return true;
    cpu_relax();
  }
  return false;
}

// Blocks until ready() returns true (then returns true) or the deadline passes (then
// returns ready()'s last value). ready() is called without any lock held, possibly
// many times; it must be cheap and must read the guarded state with acquire ordering.
template <class Pred>
bool sleep_until(WaitWord& word, Pred&& ready, const Deadline& deadline);

template <class Pred>
bool wait_until(WaitWord& word, Pred&& ready, const Deadline& deadline) {
  if (ready()) return true;
  if (spin_until(ready, spin_limit())) return true;
  return sleep_until(word, ready, deadline);
}

// The sleeping half of wait_until(), for callers that did their own spinning.
template <class Pred>
bool sleep_until(WaitWord& word, Pred&& ready, const Deadline& deadline) {
  for (;;) {
    uint32_t seq = word.seq.load(std::memory_order_seq_cst);
    word.sleepers.fetch_add(1, std::memory_order_seq_cst);
    if (ready()) {
      word.sleepers.fetch_sub(1, std::memory_order_relaxed);
      return true;
    }
    bool in_time = futex_wait(word.seq, seq, deadline);
    word.sleepers.fetch_sub(1, std::memory_order_relaxed);
    if (ready()) return true;
    if (!in_time || deadline.expired()) return false;
  }
}

// Wakes up to `count` waiters of `word`. Call after changing the guarded state.
// Wake everyone (the default) when waiters of one word wait for different conditions.
inline void notify(WaitWord& word, int count = INT_MAX) noexcept {
  word.seq.fetch_add(1, std::memory_order_seq_cst);
  if (word.sleepers.load(std::memory_order_seq_cst) != 0) futex_wake(word.seq, count);
}

}  // namespace mpx::detail
