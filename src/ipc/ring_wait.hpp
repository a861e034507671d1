// src/ipc/ring_wait.hpp — how the shared-memory rings of queues sleep and wake (private:
// the message ring, ring.hpp, and the slot ring, slot_ring.hpp).
//
// wait_until() of detail/waiter.hpp, plus a `woken` flag next to each WaitWord: a sleeper
// clears it before it registers, the first waker sets it and makes the futex call, so
// wakers make one call per sleep, not one per item (sleepers stays raised until the
// sleepers run again).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "mpx/detail/deadline.hpp"
#include "mpx/detail/waiter.hpp"

namespace mpx::detail {

// A queue's sleeper looks again at least this often. Its waker may be killed after its
// change and before its wake-up, or after it raised `woken` (which tells the other wakers
// that a wake-up is on its way): nobody would wake the sleeper then, though an item (or
// room) waits. Only that crash pays the delay; an idle sleeper wakes once a second.
inline constexpr auto kSleepSlice = std::chrono::seconds(1);

// One sleep: announces a sleeper, runs `fence` (nothing, or the sleeper's half of an
// asymmetric fence: slot_ring.cpp), looks at ready(), and sleeps until woken or `until`.
// Returns ready().
template <class Pred, class Fence>
bool sleep_once(WaitWord& word, std::atomic<uint32_t>& woken, Pred& ready, const Deadline& until,
                Fence&& fence) {
  woken.store(0, std::memory_order_seq_cst);
  const uint32_t seq = word.seq.load(std::memory_order_seq_cst);
  word.sleepers.fetch_add(1, std::memory_order_seq_cst);
  fence();
  if (ready()) {
    word.sleepers.fetch_sub(1, std::memory_order_relaxed);
    return true;
  }
  futex_wait(word.seq, seq, until);
  word.sleepers.fetch_sub(1, std::memory_order_relaxed);
  return ready();
}

// Spins first if `spin`. false: the deadline passed and ready() is still false.
template <class Pred>
bool sleep_until(WaitWord& word, std::atomic<uint32_t>& woken, Pred& ready,
                 const Deadline& deadline, bool spin) {
  if (ready()) return true;
  if (spin && spin_until(ready, spin_limit())) return true;
  for (;;) {
    if (sleep_once(word, woken, ready, deadline.at_most(kSleepSlice), [] {})) return true;
    if (deadline.expired()) return false;
  }
}

// Whether this process's last get from a queue found its item waiting (the producer is
// ahead of it): a hint shared by the process's threads, kept in the process's handle of
// the ring (copyable, hence a plain bool seen through atomic_ref). Its next wait then
// spins lazily (below).
class KeepingUp {
 public:
  bool get() noexcept { return std::atomic_ref<bool>(v_).load(std::memory_order_relaxed); }
  void set(bool v) noexcept {
    std::atomic_ref<bool> r(v_);
    if (r.load(std::memory_order_relaxed) != v) r.store(v, std::memory_order_relaxed);
  }

 private:
  alignas(std::atomic_ref<bool>::required_alignment) bool v_ = false;
};

// Spins as long as spin_until() would, looking at `ready` every kLazyPolls pauses: for a
// consumer whose last get found its item waiting (the producer is ahead of it), so that
// the producer fills the lines the consumer would poll without handing each back and
// forth, and the consumer takes the batch.
// Measured on the 2-vCPU guest (M ints/s, a pause is 36-72 ns there): every pause 5.3,
// 16 pauses 6.8-7.1, 32 6.7-7.3, 64 7.0-7.5; 16 bounds the lazy look's delay to ~1 us.
inline constexpr int kLazyPolls = 16;
template <class Pred>
bool spin_lazily(Pred& ready) {
  for (int spun = 0; spun < spin_limit(); spun += kLazyPolls) {
    for (int i = 0; i < kLazyPolls; ++i)
      cpu_relax();
    if (ready()) return true;
  }
  return false;
}

// Call after a seq_cst fence (or RMW) that follows the state change, or after the
// storer's half of an asymmetric fence (slot_ring.cpp).
inline void wake(WaitWord& word, std::atomic<uint32_t>& woken) noexcept {
  if (word.sleepers.load(std::memory_order_acquire) != 0 &&
      woken.load(std::memory_order_acquire) == 0 &&
      woken.exchange(1, std::memory_order_seq_cst) == 0)
    notify(word);
}

}  // namespace mpx::detail
