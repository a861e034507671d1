// The shared pages under Lock, RLock, Semaphore, Event, Condition, Barrier, Value and
// Array (allocate_shared_block of mpx/synchronize.hpp), and the memfds of those made for
// a child that is not a fork.
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "mpx/errors.hpp"
#include "mpx/synchronize.hpp"
#include "sys/fd.hpp"
#include "sys/mapping.hpp"
#include "sys/syscall.hpp"

namespace mpx::detail {

namespace {
thread_local int t_keep_fds = 0;
// Set while the program's start method is spawn or forkserver (set_start_method).
std::atomic<bool> g_keep_fds{false};
// The memfds of the blocks that have one, by address.
struct BlockFds {
  std::mutex mu;
  std::unordered_map<const void*, int> fds;
};
BlockFds& block_fds() {
  static BlockFds* b = new BlockFds;  // never destroyed: blocks outlive static objects
  return *b;
}
// A block over a memfd's mapping, the fd registered until the block goes.
std::shared_ptr<void> memfd_block(sys::Fd fd, std::size_t size) {
  auto* mapping = new sys::Mapping(sys::map_shared(fd.get(), size));
  void* const addr = mapping->data();
  {
    BlockFds& b = block_fds();
    std::lock_guard lock(b.mu);
    b.fds[addr] = fd.get();
  }
  const int raw = fd.release();
  return std::shared_ptr<void>(addr, [mapping, raw](void* p) {
    {
      BlockFds& b = block_fds();
      std::lock_guard lock(b.mu);
      b.fds.erase(p);
    }
    ::close(raw);
    delete mapping;
  });
}
}  // namespace

KeepBlockFds::KeepBlockFds() noexcept {
  ++t_keep_fds;
}
KeepBlockFds::~KeepBlockFds() {
  --t_keep_fds;
}
bool KeepBlockFds::active() noexcept {
  return t_keep_fds > 0 || g_keep_fds.load(std::memory_order_relaxed);
}
void KeepBlockFds::set_default(bool keep) noexcept {
  g_keep_fds.store(keep, std::memory_order_relaxed);
}

std::shared_ptr<void> allocate_shared_block(std::size_t size) {
  if (KeepBlockFds::active()) return memfd_block(sys::memfd("mpx-sync", size), size);
  auto* mapping = new sys::Mapping(sys::map_anonymous_shared(size));
  return std::shared_ptr<void>(mapping->data(), [mapping](void*) { delete mapping; });
}

int shared_block_fd(const void* block) noexcept {
  BlockFds& b = block_fds();
  std::lock_guard lock(b.mu);
  auto it = b.fds.find(block);
  return it == b.fds.end() ? -1 : it->second;
}

int handoff_block_fd(const void* block, const char* type) {
  const int fd = shared_block_fd(block);
  if (fd < 0) {
    throw ValueError(std::string("mpx: this ") + type +
                     " lives in an anonymous mapping that only fork passes on, so it cannot "
                     "reach a spawn or forkserver child: make it with that context's factory "
                     "(mpx::get_context(\"spawn\")." +
                     std::string(std::string_view(type).substr(5)) + "(...))");
  }
  return fd;
}

std::shared_ptr<void> adopt_shared_block(int raw) {
  sys::Fd fd(raw);
  struct stat st {};
  sys::call("fstat", [&] { return ::fstat(fd.get(), &st); });
  return memfd_block(std::move(fd), static_cast<std::size_t>(st.st_size));
}

}  // namespace mpx::detail
