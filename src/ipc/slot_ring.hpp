// src/ipc/slot_ring.hpp — the queue of small raw items: fixed slots, no lock (private:
// src/ipc/queues.cpp). A Queue<T> of an item that travels as its bytes
// (mpx::is_trivially_encodable_v) of at most kMaxItem bytes lives here; every other queue
// in the message ring (ring.hpp).
//
// Layout: a SlotRingHeader, then `slots` slots of `stride` bytes (16 or 32): a 64-bit
// state word, then the item. Position p (positions only grow) is slot p % slots in lap
// p / slots. The word holds { lap: 40 bits, state: 2, pid: 22 }:
//   free(L)      a producer at lap L may claim the slot (zeroed memory: free at lap 0)
//   claimed(L)   the producer `pid` is writing the item of lap L
//   full(L)      the item of lap L waits for a consumer
//   taking(L)    the consumer `pid` is copying it out; it then frees the slot for lap L+1
// Every change of state is one atomic operation on the word: a producer claims a free slot
// with a compare-exchange (the only one that can win it), copies the item in and
// publishes it with a store; a consumer claims a full slot likewise, copies the item out
// and frees the slot with a store. No lock word, no count: a line holds two or four
// items, and each side makes one read-modify-write, on the item's own line.
//
// enq and deq are hints, not locks: where the next producer (consumer) starts to look. A
// producer stores enq = p + 1 after it claimed p (plain store; a slow one may move it
// back, by at most the number of producers at work, which costs a short scan). From its
// hint a producer walks forward past slots claimed or already used at its lap, and claims
// the first free one; so claims are contiguous, and a consumer that finds its slot free at
// its lap knows the queue is empty (or the item still being written, when claimed).
// Items of one producer arrive in its order; items of several interleave as claimed.
//
// Crash safety. The state word names the process inside a claim: a slot claimed (or being
// taken) by a process that has died (sys::process_alive: a zombie counts as dead) is freed
// for the next lap by whoever waits on it (a consumer waiting for that item, a producer
// waiting for that slot): the item of a producer killed before it published is never
// delivered; the item a consumer was copying when killed is lost (its get() did not
// finish, as a Queue promises); nothing else is touched. A waiter checks the owner when
// its spin ends and then each time it wakes (at least once a second, ring_wait.hpp). A
// pid is only good inside one pid namespace: processes sharing a slot ring must see each
// other's pids (those that share a named queue through /dev/shm of one machine do, unless
// containers separate their pid namespaces). Should a dead holder's pid be given to a new
// process before a waiter looks (the kernel cycles through all pids first), the slot
// stays held until that process ends.
//
// Waiting: like the message ring's queues (ring_wait.hpp), a consumer that keeps up
// looking lazily too. The wake-up check after a store needs a full fence between the
// store and the look at the sleepers; the sleeper pays for it instead (membarrier(2):
// sys/membarrier.hpp): it announces itself, runs heavy_fence() and only then looks at
// the word. A process that membarrier does not reach publishes and frees with an
// exchange, a full fence, and sleeps in short slices (its own heavy_fence() cannot make
// other processes' stores visible).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "ipc/ring_wait.hpp"
#include "mpx/detail/deadline.hpp"
#include "mpx/detail/waiter.hpp"

namespace mpx::detail {

inline constexpr uint32_t kSlotRingMagic = 0x6d707853;  // "mpxS"

struct alignas(64) SlotRingHeader {
  // Written once by init(). The magic first, as in every ring (ring_magic()).
  std::atomic<uint32_t> magic{0};
  uint64_t slots = 0;
  uint64_t stride = 0;
  uint64_t item_size = 0;
  uint64_t type_tag = 0;
  uint64_t maxsize = 0;  // items; 0 = bounded by the slots only

  alignas(64) std::atomic<uint64_t> enq{0};  // hint: where producers look first
  alignas(64) std::atomic<uint64_t> deq{0};  // hint: where consumers look first
  alignas(64) WaitWord data_word;
  std::atomic<uint32_t> data_woken{0};
  alignas(64) WaitWord space_word;
  std::atomic<uint32_t> space_woken{0};
};

class SlotRing {
 public:
  // The largest item kept in slots, and the most slot bytes a queue is given (a larger
  // maxsize gets the message ring, which needs no slot per item).
  static constexpr std::size_t kMaxItem = 24;
  static constexpr std::size_t kMaxBytes = std::size_t{256} << 20;

  // The slots of a queue of `maxsize` items (0: as many as `capacity` bytes hold), or 0
  // when they would take more than kMaxBytes.
  static std::size_t slots_for(std::size_t item_size, std::size_t maxsize,
                               std::size_t capacity) noexcept;
  static std::size_t region_size(std::size_t item_size, std::size_t slots) noexcept;
  // Constructs a ring in `region` (region_size() bytes, 64-aligned, zeroed).
  static void init(void* region, std::size_t item_size, uint64_t type_tag, std::size_t slots,
                   std::size_t maxsize) noexcept;
  // Whether the `bytes` at `region` hold a whole slot ring.
  static bool holds_one(const void* region, std::size_t bytes) noexcept;

  SlotRing() noexcept = default;
  explicit SlotRing(void* region) noexcept;

  // Copies the item_size() bytes at `item` into the queue. Blocks while every slot is
  // taken (maxsize items queued). false: still full at the deadline.
  bool put(const void* item, const Deadline& deadline);
  // Copies the next item to `item`. false: none came by the deadline.
  bool get(void* item, const Deadline& deadline);

  // Items published and not taken: exact while no put or get runs (it counts them, slot
  // by slot; empty() stops at the first).
  uint64_t qsize() const noexcept;
  bool empty() const noexcept;
  const SlotRingHeader& header() const noexcept { return *h_; }
  std::size_t capacity() const noexcept { return static_cast<std::size_t>(slots_ * stride_); }

 private:
  struct Place {
    uint64_t index;
    uint64_t lap;
  };
  Place place(uint64_t p) const noexcept {
    if (pow2_) return {p & (slots_ - 1), p >> shift_};
    return {p % slots_, p / slots_};
  }
  std::atomic<uint64_t>& word(uint64_t index) const noexcept {
    return *reinterpret_cast<std::atomic<uint64_t>*>(data_ + index * stride_);
  }
  std::byte* item(uint64_t index) const noexcept { return data_ + index * stride_ + 8; }
  // Waits until the word no longer reads `seen` (freeing it first if its owner died),
  // spinning first if `spin`.
  bool wait_change(std::atomic<uint64_t>& w, uint64_t seen, bool for_data, const Deadline& deadline,
                   bool spin);
  // Frees the slot whose word reads `seen` if a dead process holds it. Whether it did, or
  // the word changed meanwhile.
  bool free_if_abandoned(std::atomic<uint64_t>& w, uint64_t seen) noexcept;
  // Calls f(word, lap) for every position that may hold an item until f returns false.
  template <class F>
  bool for_each_live(F&& f) const noexcept;

  SlotRingHeader* h_ = nullptr;
  std::byte* data_ = nullptr;
  uint64_t slots_ = 0;
  uint64_t stride_ = 0;
  bool pow2_ = false;  // slots is a power of two: 1 << shift_
  unsigned shift_ = 0;
  std::size_t item_size_ = 0;
  KeepingUp keeping_up_;
};

}  // namespace mpx::detail
