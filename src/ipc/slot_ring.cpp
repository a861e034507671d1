// The queue of small raw items; see slot_ring.hpp for the protocol.
#include "ipc/slot_ring.hpp"

#include <bit>
#include <chrono>
#include <cstring>
#include <new>

#include "ipc/ring.hpp"
#include "ipc/ring_wait.hpp"
#include "sys/membarrier.hpp"
#include "sys/self.hpp"

namespace mpx::detail {

namespace {

constexpr std::size_t kHeaderBytes = (sizeof(SlotRingHeader) + 63) & ~std::size_t{63};

// The state word: { lap: 40 bits, state: 2, pid: 22 } (pids are below 2^22, Linux's
// PID_MAX_LIMIT). Laps compare modulo 2^40.
enum State : uint64_t { kFree = 0, kClaimed = 1, kFull = 2, kTaking = 3 };
constexpr unsigned kLapShift = 24;
constexpr uint64_t kLapMask = (uint64_t{1} << 40) - 1;
constexpr uint64_t kPidMask = (uint64_t{1} << 22) - 1;

constexpr uint64_t make_word(uint64_t lap, State state, uint64_t pid) noexcept {
  return (lap << kLapShift) | (static_cast<uint64_t>(state) << 22) | pid;
}
constexpr State state_of(uint64_t w) noexcept {
  return static_cast<State>((w >> 22) & 3);
}
constexpr pid_t pid_of(uint64_t w) noexcept {
  return static_cast<pid_t>(w & kPidMask);
}
constexpr uint64_t lap_of(uint64_t w) noexcept {
  return w >> kLapShift;
}
// Where the word's lap stands against `lap`: 0 the same, > 0 ahead (the position is
// used up), < 0 behind (the slot still holds an earlier lap).
constexpr int64_t lap_diff(uint64_t w, uint64_t lap) noexcept {
  const uint64_t d = (lap_of(w) - lap) & kLapMask;
  return d < (kLapMask >> 1) ? static_cast<int64_t>(d) : static_cast<int64_t>(d) - (1ll << 40);
}

std::size_t stride_for(std::size_t item_size) noexcept {
  return item_size <= 8 ? 16 : 32;
}

// Hands a slot on: stores its word, then wakes the other side's sleepers, if any. In a
// process reached by heavy_fence() the store needs no fence: a sleeper announces itself
// and then runs heavy_fence() before it looks at the word (membarrier.hpp); other
// processes exchange, a full fence.
void hand_on(std::atomic<uint64_t>& w, uint64_t value, bool light, WaitWord& word,
             std::atomic<uint32_t>& woken) noexcept {
  if (!light) {
    w.exchange(value, std::memory_order_seq_cst);
    wake(word, woken);
    return;
  }
  w.store(value, std::memory_order_release);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  wake(word, woken);
}

// A sleeper in a process that membarrier refuses (its registration failed) may not make
// a light storer's store visible before it sleeps: it sleeps this long at most, and
// looks again.
constexpr auto kUnfencedSleep = std::chrono::milliseconds(10);

// Where to look next after position p: past it, or where the hint already is.
uint64_t next_after(uint64_t p, const std::atomic<uint64_t>& hint) noexcept {
  const uint64_t h = hint.load(std::memory_order_relaxed);
  return h > p + 1 ? h : p + 1;
}

}  // namespace

std::size_t SlotRing::slots_for(std::size_t item_size, std::size_t maxsize,
                                std::size_t capacity) noexcept {
  const std::size_t stride = stride_for(item_size);
  const std::size_t slots = maxsize != 0 ? maxsize : Ring::round_capacity(capacity) / stride;
  return slots > kMaxBytes / stride ? 0 : slots;
}

std::size_t SlotRing::region_size(std::size_t item_size, std::size_t slots) noexcept {
  return kHeaderBytes + slots * stride_for(item_size);
}

void SlotRing::init(void* region, std::size_t item_size, uint64_t type_tag, std::size_t slots,
                    std::size_t maxsize) noexcept {
  auto* h = new (region) SlotRingHeader();
  h->slots = slots;
  h->stride = stride_for(item_size);
  h->item_size = item_size;
  h->type_tag = type_tag;
  h->maxsize = maxsize;
  h->magic.store(kSlotRingMagic, std::memory_order_release);
}

bool SlotRing::holds_one(const void* region, std::size_t bytes) noexcept {
  if (bytes < kHeaderBytes) return false;
  const auto* h = static_cast<const SlotRingHeader*>(region);
  if (h->magic.load(std::memory_order_acquire) != kSlotRingMagic) return false;
  return h->item_size != 0 && h->item_size <= kMaxItem && h->stride == stride_for(h->item_size) &&
         h->slots != 0 && h->slots <= kMaxBytes / h->stride &&
         region_size(h->item_size, h->slots) <= bytes;
}

SlotRing::SlotRing(void* region) noexcept
    : h_(static_cast<SlotRingHeader*>(region)),
      data_(static_cast<std::byte*>(region) + kHeaderBytes),
      slots_(h_->slots),
      stride_(h_->stride),
      pow2_(std::has_single_bit(h_->slots)),
      shift_(static_cast<unsigned>(std::countr_zero(h_->slots))),
      item_size_(h_->item_size) {}

bool SlotRing::put(const void* src, const Deadline& deadline) {
  const pid_t pid = sys::this_pid();
  const auto me = static_cast<uint64_t>(pid);
  uint64_t p = h_->enq.load(std::memory_order_relaxed);
  for (;;) {
    const Place at = place(p);
    std::atomic<uint64_t>& w = word(at.index);
    uint64_t seen = w.load(std::memory_order_acquire);
    const int64_t d = lap_diff(seen, at.lap);
    if (d > 0 || (d == 0 && state_of(seen) != kFree)) {
      p = next_after(p, h_->enq);  // used up, or claimed by another producer
      continue;
    }
    if (d < 0) {  // the slot still holds the previous lap: full
      if (!wait_change(w, seen, false, deadline, true)) return false;
      continue;
    }
    if (!w.compare_exchange_strong(seen, make_word(at.lap, kClaimed, me), std::memory_order_acquire,
                                   std::memory_order_relaxed))
      continue;
    h_->enq.store(p + 1, std::memory_order_relaxed);
    run_commit_hook(CommitStep::kClaimed);
    std::memcpy(item(at.index), src, item_size_);
    hand_on(w, make_word(at.lap, kFull, 0), sys::reached_by_heavy_fence(pid), h_->data_word,
            h_->data_woken);
    run_commit_hook(CommitStep::kCommitted);
    return true;
  }
}

bool SlotRing::get(void* dst, const Deadline& deadline) {
  const pid_t pid = sys::this_pid();
  const auto me = static_cast<uint64_t>(pid);
  uint64_t p = h_->deq.load(std::memory_order_relaxed);
  bool waited = false;
  for (;;) {
    const Place at = place(p);
    std::atomic<uint64_t>& w = word(at.index);
    uint64_t seen = w.load(std::memory_order_acquire);
    const int64_t d = lap_diff(seen, at.lap);
    if (d > 0 || (d == 0 && state_of(seen) == kTaking)) {
      p = next_after(p, h_->deq);  // taken, or being taken by another consumer
      continue;
    }
    if (d < 0 || state_of(seen) != kFull) {  // not yet published: empty here
      waited = true;
      auto changed = [&] { return w.load(std::memory_order_acquire) != seen; };
      const bool lazily = keeping_up_.get() && !deadline.expired();
      keeping_up_.set(false);
      if (!(lazily && spin_lazily(changed)) && !wait_change(w, seen, true, deadline, !lazily))
        return false;
      continue;
    }
    if (!w.compare_exchange_strong(seen, make_word(at.lap, kTaking, me), std::memory_order_acquire,
                                   std::memory_order_relaxed))
      continue;
    h_->deq.store(p + 1, std::memory_order_relaxed);
    if (!waited) keeping_up_.set(true);  // the item was waiting: the producer is ahead
    run_commit_hook(CommitStep::kTaking);
    std::memcpy(dst, item(at.index), item_size_);
    hand_on(w, make_word(at.lap + 1, kFree, 0), sys::reached_by_heavy_fence(pid), h_->space_word,
            h_->space_woken);
    return true;
  }
}

bool SlotRing::wait_change(std::atomic<uint64_t>& w, uint64_t seen, bool for_data,
                           const Deadline& deadline, bool spin) {
  auto changed = [&] { return w.load(std::memory_order_acquire) != seen; };
  if (deadline.expired()) return changed() || free_if_abandoned(w, seen);
  if (spin && spin_until(changed, spin_limit())) return true;
  WaitWord& ww = for_data ? h_->data_word : h_->space_word;
  std::atomic<uint32_t>& woken = for_data ? h_->data_woken : h_->space_woken;
  // Announcing, then heavy_fence() (see hand_on()). Back here at every wake-up (another
  // item, another free slot: the slot's owner may have died meanwhile) and at least once
  // a slice.
  const auto slice = sys::reached_by_heavy_fence(sys::this_pid()) ? kSleepSlice : kUnfencedSleep;
  for (;;) {
    if (free_if_abandoned(w, seen)) return true;
    if (sleep_once(ww, woken, changed, deadline.at_most(slice), [] { sys::heavy_fence(); }))
      return true;
    if (deadline.expired()) return false;
  }
}

bool SlotRing::free_if_abandoned(std::atomic<uint64_t>& w, uint64_t seen) noexcept {
  const State s = state_of(seen);
  if (s != kClaimed && s != kTaking) return false;
  if (sys::process_alive(pid_of(seen))) return false;
  w.compare_exchange_strong(seen, make_word(lap_of(seen) + 1, kFree, 0), std::memory_order_seq_cst);
  // Producers may wait for this slot, consumers for the item after it.
  wake(h_->space_word, h_->space_woken);
  wake(h_->data_word, h_->data_woken);
  return true;
}

// Calls f(word, lap) for each position that may hold an item. The hints may lag their
// side by a position per producer (consumer) at work, so the walk starts at most a lap
// before the producers' hint, at the consumers' hint if later, and goes past the
// producers' hint as long as slots are claimed at their lap (claims are contiguous). A
// slot's word counts only at its own lap, so no item counts twice.
template <class F>
bool SlotRing::for_each_live(F&& f) const noexcept {
  const uint64_t e = h_->enq.load(std::memory_order_acquire);
  uint64_t p = h_->deq.load(std::memory_order_acquire);
  if (e > slots_ && p < e - slots_) p = e - slots_;
  for (const uint64_t end = p + 2 * slots_; p < end; ++p) {
    const Place at = place(p);
    const uint64_t w = word(at.index).load(std::memory_order_acquire);
    if (p >= e && (lap_diff(w, at.lap) != 0 || state_of(w) == kFree)) break;
    if (!f(w, at.lap)) return false;
  }
  return true;
}

uint64_t SlotRing::qsize() const noexcept {
  uint64_t n = 0;
  for_each_live([&](uint64_t w, uint64_t lap) {
    n += lap_diff(w, lap) == 0 && state_of(w) == kFull;
    return true;
  });
  return n;
}

bool SlotRing::empty() const noexcept {
  return for_each_live(
      [](uint64_t w, uint64_t lap) { return !(lap_diff(w, lap) == 0 && state_of(w) == kFull); });
}

}  // namespace mpx::detail
