// src/sys/membarrier.hpp — the heavy half of an asymmetric fence, with membarrier(2).
//
// A side that runs often (a queue's producer publishing an item) stores without a fence
// and then looks whether anyone sleeps; the side that runs rarely (a consumer about to
// sleep) announces itself and then calls heavy_fence(), which runs a full fence in every
// thread of every registered process. Either the sleeper then sees the store, or the
// storer sees the sleeper: Dekker's handshake, paid for on the sleeping path only.
// The storing process must have registered (MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED)
// before its store; a process the kernel (or a seccomp filter) refuses must fence its
// stores itself.
#pragma once

#include <sys/types.h>

#include <atomic>

namespace mpx::sys {

namespace detail {
extern std::atomic<pid_t> heavy_fence_registered;  // the pid that registered, or 0
extern std::atomic<pid_t> heavy_fence_refused;     // the pid the kernel refused, or 0
bool register_for_heavy_fence_slow(pid_t pid) noexcept;
}  // namespace detail

// Whether process `pid` (this one: sys::this_pid()) is reached by other processes'
// heavy_fence(); registers it the first time (again in a forked child). false: refused,
// and it stays refused for this process.
inline bool reached_by_heavy_fence(pid_t pid) noexcept {
  if (detail::heavy_fence_registered.load(std::memory_order_relaxed) == pid) return true;
  if (detail::heavy_fence_refused.load(std::memory_order_relaxed) == pid) return false;
  return detail::register_for_heavy_fence_slow(pid);
}

// A full fence in every running thread of every registered process, and in this one.
// false: the kernel refused (then nothing is fenced but this thread).
bool heavy_fence() noexcept;

}  // namespace mpx::sys
