// mpx/detail/scratch.hpp — per-thread buffers that channels encode into and receive
// into, so that sending and receiving small values allocates nothing after warm-up.
#pragma once

#include <cstddef>
#include <vector>

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

}  // namespace mpx::detail
