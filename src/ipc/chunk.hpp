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

// A chunk's header as read. On the ring, a chunk starts with its commit word (see
// ring.hpp), which holds the header: a u32 mark of the chunk's position (commit_mark();
// never 0) and a u32 with the payload length and the flags in its top two bits. Then
// comes the message's total size as a u64, only in the first chunk of a message of
// several chunks (carries_total()); a one-chunk message's total is its length, and a
// continuation's is not used (both read as `length`).
struct ChunkHeader {
  uint64_t total;
  uint32_t length;
  uint32_t flags;
};

inline constexpr uint64_t kCommitBytes = sizeof(uint64_t);
// Bytes before the payload of a chunk that carries no total (every one-chunk message).
inline constexpr uint64_t kHeadBytes = kCommitBytes;
// A chunk's length fits in 30 bits (Ring::init() keeps max_chunk under 1 GiB).
inline constexpr int kFlagShift = 30;

constexpr bool carries_total(uint32_t flags) noexcept {
  return (flags & (kFirst | kLast)) == kFirst;
}
// Bytes before the payload of a chunk with these flags.
constexpr uint64_t head_bytes(uint32_t flags) noexcept {
  return kHeadBytes + (carries_total(flags) ? sizeof(uint64_t) : 0);
}

// The mark of the chunk at `pos` (a multiple of 8): odd, so never a cleared word, and
// different for every position of a 16 GiB stretch.
constexpr uint32_t commit_mark(uint64_t pos) noexcept {
  return static_cast<uint32_t>(pos >> 2) | 1;
}
// The commit word of a complete chunk at `pos`.
constexpr uint64_t commit_value(uint64_t pos, uint32_t length, uint32_t flags) noexcept {
  return commit_mark(pos) | uint64_t{length | flags << kFlagShift} << 32;
}
// Whether `word` commits the chunk at `pos`.
constexpr bool commits(uint64_t word, uint64_t pos) noexcept {
  return static_cast<uint32_t>(word) == commit_mark(pos);
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

// Copies n bytes from position `pos` of the ring at `data`, inline where they do not wrap.
inline void copy_from(const std::byte* data, uint64_t cap, uint64_t pos, std::byte* dst,
                      std::size_t n) noexcept {
  if (const uint64_t at = pos & (cap - 1); at + n <= cap)
    copy_short(dst, data + at, n);
  else
    ring_copy_out(data, static_cast<std::size_t>(cap), pos, dst, n);
}

// The header of the chunk at `pos` whose commit word is `word`; where that is no commit
// (the ring's memory overwritten by a stranger), one whose length no chunk has. Chunks
// start at multiples of 8 and the capacity is one too, so the total never wraps.
inline ChunkHeader load_header(const std::byte* data, uint64_t cap, uint64_t pos,
                               uint64_t word) noexcept {
  ChunkHeader c{0, ~uint32_t{0}, 0};
  if (!commits(word, pos)) return c;
  const auto high = static_cast<uint32_t>(word >> 32);
  c.length = high & ((uint32_t{1} << kFlagShift) - 1);
  c.flags = high >> kFlagShift;
  if (carries_total(c.flags))
    std::memcpy(&c.total, data + ((pos + kHeadBytes) & (cap - 1)), sizeof c.total);
  else
    c.total = c.length;
  return c;
}
// Stores what of the header precedes the payload besides the commit word: the total.
inline void store_total(std::byte* data, uint64_t cap, uint64_t pos,
                        const ChunkHeader& c) noexcept {
  if (carries_total(c.flags))
    std::memcpy(data + ((pos + kHeadBytes) & (cap - 1)), &c.total, sizeof c.total);
}

constexpr uint64_t align8(uint64_t n) noexcept {
  return (n + 7) & ~uint64_t{7};
}
}  // namespace mpx::detail
