// src/ipc/chunk.hpp — a chunk of the message ring (ring.hpp): its header, and the copies
// on every message's path. Private to src/ipc/ring.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "ipc/byte_ring.hpp"

namespace mpx::detail {

constexpr uint32_t kFirst = 1;
constexpr uint32_t kLast = 2;

// A chunk's header as read: on the ring it is a u32 length and u32 flags after the commit
// word, then the message's total size as a u64 only in the first chunk of a message of
// several chunks (carries_total()); a one-chunk message's total is its length, and a
// continuation's is not used (both read as `length`).
struct ChunkHeader {
  uint64_t total;
  uint32_t length;
  uint32_t flags;
};

// Bytes before a chunk's header: the chunk's commit word (see ring.hpp).
inline constexpr uint64_t kCommitBytes = sizeof(uint64_t);
// Bytes before the payload of a chunk that carries no total (every one-chunk message).
inline constexpr uint64_t kHeadBytes = kCommitBytes + 2 * sizeof(uint32_t);

constexpr bool carries_total(uint32_t flags) noexcept {
  return (flags & (kFirst | kLast)) == kFirst;
}
// Bytes before the payload of a chunk with these flags.
constexpr uint64_t head_bytes(uint32_t flags) noexcept {
  return kHeadBytes + (carries_total(flags) ? sizeof(uint64_t) : 0);
}

// Copies n bytes, inline from 4 to 64 (two overlapping moves, as memcpy itself does once
// called): a small message's copies are each no dearer than the call would be.
inline void copy_short(std::byte* dst, const std::byte* src, std::size_t n) noexcept {
  if (n >= 32 && n <= 64) {
    std::memcpy(dst, src, 32);
    std::memcpy(dst + n - 32, src + n - 32, 32);
  } else if (n >= 16 && n < 32) {
    std::memcpy(dst, src, 16);
    std::memcpy(dst + n - 16, src + n - 16, 16);
  } else if (n >= 8 && n < 16) {  // a type tag; a queued int with its tag
    std::memcpy(dst, src, 8);
    std::memcpy(dst + n - 8, src + n - 8, 8);
  } else if (n >= 4 && n < 8) {
    std::memcpy(dst, src, 4);
    std::memcpy(dst + n - 4, src + n - 4, 4);
  } else {
    std::memcpy(dst, src, n);
  }
}

// The header of the chunk whose commit word is at `pos`. Chunks start at multiples of 8
// and the capacity is one too, so no 8-byte field crosses the ring's end: fixed-size
// moves (on every message's path, where a call to memcpy costs as much as the copy).
inline ChunkHeader load_header(const std::byte* data, uint64_t cap, uint64_t pos) noexcept {
  ChunkHeader c;
  const std::byte* at = data + ((pos + kCommitBytes) & (cap - 1));
  std::memcpy(&c.length, at, sizeof c.length);
  std::memcpy(&c.flags, at + sizeof c.length, sizeof c.flags);
  if (carries_total(c.flags))
    std::memcpy(&c.total, data + ((pos + kHeadBytes) & (cap - 1)), sizeof c.total);
  else
    c.total = c.length;
  return c;
}
inline void store_header(std::byte* data, uint64_t cap, uint64_t pos,
                         const ChunkHeader& c) noexcept {
  std::byte* at = data + ((pos + kCommitBytes) & (cap - 1));
  std::memcpy(at, &c.length, sizeof c.length);
  std::memcpy(at + sizeof c.length, &c.flags, sizeof c.flags);
  if (carries_total(c.flags))
    std::memcpy(data + ((pos + kHeadBytes) & (cap - 1)), &c.total, sizeof c.total);
}

constexpr uint64_t align8(uint64_t n) noexcept {
  return (n + 7) & ~uint64_t{7};
}
}  // namespace mpx::detail
