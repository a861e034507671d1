// src/ipc/byte_ring.hpp — the bytes of every shared-memory ring of mpx, and the
// single-producer single-consumer byte stream built on them.
//
// A ring is a power-of-two data area addressed by positions that only grow (head: bytes
// published, tail: bytes consumed); a position's byte is at `pos & (capacity - 1)`, and a
// copy crosses the area's end in two pieces (ring_copy_in/ring_copy_out). Two protocols
// sit on this one mechanism, because their jobs differ:
// - the message ring of channels (src/ipc/ring.hpp): any number of writers and readers
//   in any processes, whole messages in chunks, robust locks and commit journals so that
//   a process killed anywhere corrupts nothing, blocking waits with a doorbell or futex;
// - ByteRing below, the pool's per-worker inbox and outbox: exactly one writer (the
//   engine, under its lock) and one reader (the worker, or the collecting thread) per
//   direction, no lock, never blocking: a writer writes what fits and comes back later,
//   and the pool frames its own tasks (src/pool/pool_worker.hpp).
// docs/architecture.md says why the pool does not use the message ring, with the
// measurements.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "mpx/detail/waiter.hpp"

namespace mpx::detail {

// Copies n bytes to position `pos` of a ring of `capacity` bytes (a power of two) at
// `data`, across its end as needed.
inline void ring_copy_in(std::byte* data, std::size_t capacity, uint64_t pos, const std::byte* src,
                         std::size_t n) noexcept {
  if (n == 0) return;
  const std::size_t at = static_cast<std::size_t>(pos & (capacity - 1));
  const std::size_t first = n < capacity - at ? n : capacity - at;
  std::memcpy(data + at, src, first);
  if (n > first) std::memcpy(data, src + first, n - first);
}

// Fetches the cache line at p in a state that lets this CPU write it (a hint).
inline void prefetch_for_write(const std::byte* p) noexcept {
#if defined(__x86_64__) || defined(__i386__)
  // PREFETCHW: a no-op on the x86 processors that lack it.
  asm volatile("prefetchw %0" ::"m"(*p));
#else
  __builtin_prefetch(p, 1);
#endif
}

// Fetches the cache line at p for reading (a hint).
inline void prefetch_for_read(const std::byte* p) noexcept {
  __builtin_prefetch(p, 0);
}

// Copies n bytes from position `pos` of such a ring.
inline void ring_copy_out(const std::byte* data, std::size_t capacity, uint64_t pos, std::byte* dst,
                          std::size_t n) noexcept {
  if (n == 0) return;
  const std::size_t at = static_cast<std::size_t>(pos & (capacity - 1));
  const std::size_t first = n < capacity - at ? n : capacity - at;
  std::memcpy(dst, data + at, first);
  if (n > first) std::memcpy(dst + first, data, n - first);
}

// A byte stream in shared memory: one writer, one reader, no lock, never blocking (the
// side that must wait sleeps on `word`, which the other side notifies).
struct ByteRing {
  static constexpr std::size_t kCapacity = std::size_t{1} << 20;

  alignas(64) std::atomic<uint64_t> head{0};  // bytes written, ever: the writer only stores it
  alignas(64) std::atomic<uint64_t> tail{0};  // bytes read, ever
  // The reader's last look at head, and (in a line of its own) the writer's copy of head
  // and last look at tail: each side reads the other's line (a cache miss, once the
  // other moved) only when what it saw last does not suffice. The writer never loads
  // head: the reader that spins on it has the line (a load there missed on every write).
  uint64_t head_seen = 0;
  alignas(64) uint64_t written = 0;  // head's value, for the writer
  uint64_t tail_seen = 0;
  alignas(64) WaitWord word;  // the side that waits sleeps here
  alignas(64) std::byte data[kCapacity];

  // Only when neither side uses the ring.
  void reset() noexcept {
    head.store(0);
    tail.store(0);
    written = 0;
    tail_seen = 0;
    head_seen = 0;
  }

  std::size_t readable() const noexcept {
    return static_cast<std::size_t>(head.load(std::memory_order_acquire) -
                                    tail.load(std::memory_order_relaxed));
  }
  // The writer's.
  std::size_t writable() const noexcept {
    return kCapacity - static_cast<std::size_t>(written - tail.load(std::memory_order_acquire));
  }
  // Writes up to n bytes; returns how many.
  std::size_t write(const std::byte* src, std::size_t n) noexcept {
    const uint64_t h = written;
    std::size_t room = room_for(h, n);
    if (n > room) n = room;
    if (n == 0) return 0;
    ring_copy_in(data, kCapacity, h, src, n);
    publish(h + n);
    return n;
  }
  // The writer: bytes up to position h are written.
  void publish(uint64_t h) noexcept {
    written = h;
    head.store(h, std::memory_order_release);
  }
  // Writes a + b whole, published at once, if there is room for both; else nothing.
  bool write_frame(const std::byte* a, std::size_t na, const std::byte* b,
                   std::size_t nb) noexcept {
    const uint64_t h = written;
    if (na + nb > room_for(h, na + nb)) return false;
    ring_copy_in(data, kCapacity, h, a, na);
    ring_copy_in(data, kCapacity, h + na, b, nb);
    publish(h + na + nb);
    return true;
  }
  // Room after head h, looking at tail again only if the last look shows less than n.
  std::size_t room_for(uint64_t h, std::size_t n) noexcept {
    std::size_t room = kCapacity - static_cast<std::size_t>(h - tail_seen);
    if (room >= n) return room;
    tail_seen = tail.load(std::memory_order_acquire);
    return kCapacity - static_cast<std::size_t>(h - tail_seen);
  }
  // For a reader that spins for data: asks for the two lines at the tail, so that what
  // is written there crosses to its CPU while it waits, not after it saw head move.
  void prefetch_next() const noexcept {
    const uint64_t t = tail.load(std::memory_order_relaxed);
    prefetch_for_read(data + (t & (kCapacity - 1)));
    prefetch_for_read(data + ((t + 64) & (kCapacity - 1)));
  }
  // Reads up to n bytes; returns how many.
  std::size_t read(std::byte* dst, std::size_t n) noexcept {
    uint64_t t = tail.load(std::memory_order_relaxed);
    std::size_t have = static_cast<std::size_t>(head_seen - t);
    if (have < n) {
      head_seen = head.load(std::memory_order_acquire);
      have = static_cast<std::size_t>(head_seen - t);
    }
    if (n > have) n = have;
    if (n == 0) return 0;
    ring_copy_out(data, kCapacity, t, dst, n);
    tail.store(t + n, std::memory_order_release);
    return n;
  }
  // The reader: the next n bytes where they lie, without consuming them, if they are all
  // written and do not cross the area's end (else empty). consume() drops them after.
  std::span<const std::byte> peek(std::size_t n) noexcept {
    const uint64_t t = tail.load(std::memory_order_relaxed);
    const std::size_t at = static_cast<std::size_t>(t & (kCapacity - 1));
    if (n > kCapacity - at) return {};
    if (head_seen - t < n) head_seen = head.load(std::memory_order_acquire);
    if (head_seen - t < n) return {};
    return {data + at, n};
  }
  // Drops n bytes that are written (peek(), readable()).
  void consume(std::size_t n) noexcept {
    const uint64_t t = tail.load(std::memory_order_relaxed) + n;
    if (head_seen - t > kCapacity) head_seen = t;  // it was behind them
    tail.store(t, std::memory_order_release);
  }
  // The writer, before a frame of n bytes (a header of `head` bytes first) that would
  // cross the area's end: if a header and the frame after it fit before the reader's
  // position, writes `header` (which must say that `skip`, its argument, bytes follow)
  // and skips to the start of the area, so that the reader finds the frame in one piece.
  template <class Header>
  bool pad_before(std::size_t n, Header (*header)(std::size_t skip)) noexcept {
    const uint64_t h = written;
    const std::size_t to_end = kCapacity - static_cast<std::size_t>(h & (kCapacity - 1));
    if (n <= to_end || to_end < sizeof(Header) || to_end + n > room_for(h, to_end + n))
      return false;
    const Header pad = header(to_end - sizeof(Header));
    ring_copy_in(data, kCapacity, h, reinterpret_cast<const std::byte*>(&pad), sizeof pad);
    publish(h + to_end);
    return true;
  }
};

}  // namespace mpx::detail
