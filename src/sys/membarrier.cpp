// The heavy half of an asymmetric fence; see membarrier.hpp.
#include "sys/membarrier.hpp"

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sys/syscall.hpp"

namespace mpx::sys {

namespace detail {
std::atomic<pid_t> heavy_fence_registered{0};
std::atomic<pid_t> heavy_fence_refused{0};

bool register_for_heavy_fence_slow(pid_t pid) noexcept {
  if (call_raw("membarrier(register)", [] {
        return ::syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0);
      }) == 0) {
    heavy_fence_registered.store(pid, std::memory_order_relaxed);
    return true;
  }
  heavy_fence_refused.store(pid, std::memory_order_relaxed);
  return false;
}
}  // namespace detail

bool heavy_fence() noexcept {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return call_raw("membarrier(fence)", [] {
           return ::syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0);
         }) == 0;
}

}  // namespace mpx::sys
