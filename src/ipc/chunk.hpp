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

struct ChunkHeader {
  uint64_t total;
  uint32_t length;
  uint32_t flags;
};
static_assert(sizeof(ChunkHeader) == 16);

// Copies n bytes, inline for up to 64 (two overlapping moves, as memcpy itself does once
// called): a small message's copies are each no dearer than the call would be.
inline void copy_short(std::byte* dst, const std::byte* src, std::size_t n) noexcept {
  if (n >= 32 && n <= 64) {
    std::memcpy(dst, src, 32);
    std::memcpy(dst + n - 32, src + n - 32, 32);
  } else if (n >= 16 && n < 32) {
    std::memcpy(dst, src, 16);
    std::memcpy(dst + n - 16, src + n - 16, 16);
  } else {
    std::memcpy(dst, src, n);
  }
}

// A chunk's header at `pos`, copied with fixed-size moves unless it wraps: it is on
// every message's path, where a call to memcpy costs as much as the copy.
inline ChunkHeader load_header(const std::byte* data, uint64_t cap, uint64_t pos) noexcept {
  ChunkHeader c;
  const uint64_t at = pos & (cap - 1);
  if (at + sizeof c <= cap)
    std::memcpy(&c, data + at, sizeof c);
  else
    ring_copy_out(data, cap, pos, reinterpret_cast<std::byte*>(&c), sizeof c);
  return c;
}
inline void store_header(std::byte* data, uint64_t cap, uint64_t pos,
                         const ChunkHeader& c) noexcept {
  const uint64_t at = pos & (cap - 1);
  if (at + sizeof c > cap) {
    ring_copy_in(data, cap, pos, reinterpret_cast<const std::byte*>(&c), sizeof c);
    return;
  }
  // Field by field: one 16-byte load of `c` just stored would wait for its stores.
  std::memcpy(data + at, &c.total, sizeof c.total);
  std::memcpy(data + at + offsetof(ChunkHeader, length), &c.length, sizeof c.length);
  std::memcpy(data + at + offsetof(ChunkHeader, flags), &c.flags, sizeof c.flags);
}

// Bytes before a chunk's header: the chunk's commit word (see ring.hpp).
inline constexpr uint64_t kCommitBytes = sizeof(uint64_t);
inline constexpr uint64_t kHeadBytes = kCommitBytes + sizeof(ChunkHeader);

constexpr uint64_t align8(uint64_t n) noexcept {
  return (n + 7) & ~uint64_t{7};
}
}  // namespace mpx::detail
