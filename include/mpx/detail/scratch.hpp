// mpx/detail/scratch.hpp — how channels (Connection, Queue) turn values into message
// parts and back, allocating nothing for small values after warm-up.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "mpx/codec.hpp"

namespace mpx::detail {

inline std::vector<std::byte>& send_scratch() {
  thread_local std::vector<std::byte> buffer;
  return buffer;
}

inline std::vector<std::byte>& recv_scratch() {
  thread_local std::vector<std::byte> buffer;
  return buffer;
}

// Gives a large buffer's memory back once a big message has passed (buffers up to 2 MiB
// are kept: reusing them saves page faults that cost more than the copy).
inline void trim_scratch(std::vector<std::byte>& buffer) noexcept {
  if (buffer.capacity() > (std::size_t{2} << 20)) std::vector<std::byte>().swap(buffer);
}

struct ScratchTrim {
  std::vector<std::byte>& buffer;
  ~ScratchTrim() { trim_scratch(buffer); }
};

using Parts = std::span<const std::span<const std::byte>>;

// Calls write(Parts) with the message for `value` (the codec's wire format: tag, then
// payload). Trivially encodable values go as two parts pointing at the tag and at the
// object itself, so they are copied once, straight into the ring.
template <class T, class Write>
decltype(auto) with_message(const T& value, Write&& write) {
  if constexpr (is_trivially_encodable_v<T>) {
    const std::uint64_t tag = type_tag<T>();
    const std::span<const std::byte> parts[2] = {
        std::as_bytes(std::span<const std::uint64_t>(&tag, 1)),
        std::as_bytes(std::span<const T>(&value, 1))};
    return write(Parts(parts));
  } else {
    std::vector<std::byte>& buffer = send_scratch();
    ScratchTrim trim{buffer};
    buffer.clear();
    encode_append(value, buffer);
    const std::span<const std::byte> part(buffer);
    return write(Parts(&part, 1));
  }
}

}  // namespace mpx::detail
