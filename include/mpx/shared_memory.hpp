// mpx/shared_memory.hpp — SharedMemory: a block of memory shared between processes
// (Python's multiprocessing.shared_memory.SharedMemory).
//
//   mpx::SharedMemory shm(1 << 20);                          // anonymous (memfd)
//   auto named = mpx::SharedMemory::create("frames", 4096);  // /dev/shm/frames, mode 0600
//   auto other = mpx::SharedMemory::open("frames");          // in another process
//   auto fresh = mpx::SharedMemory::create(4096);  // a generated name: fresh.name() == "psm_…"
//
// Anonymous segments (the default) have no name: they are shared with children forked
// after construction (or by passing fd()), and vanish with the last process that maps
// them, even after kill -9. Named segments are POSIX shared memory (shm_open), visible to
// unrelated processes of the same user.
//
// Lifetime of a named segment:
// | event                                      | the name in /dev/shm        |
// |--------------------------------------------|-----------------------------|
// | create(name, size)                         | exists                      |
// | close() or destructor (any process)        | stays                       |
// | unlink() (any process)                     | removed                     |
// | an opener exits or is killed               | stays                       |
// | the creator exits or is killed, with the   | removed by the creator's    |
// |   segment not unlinked and track == true   |   tracker (as Python does)  |
// The tracker is a small process (a grandchild, not a child) started at the first
// tracked create() of a process; it holds a pipe from that process and unlinks the names
// that process created and did not unlink when the pipe reaches end of file. Children
// forked later do not inherit it: they start their own when they create segments.
// Only creators register names; opening a segment never makes the tracker unlink it.
//
// Handle semantics: move-only; the object owns one fd and one mapping. Thread safety:
// buf() may be used from any thread; close()/unlink() must not race other calls on the
// same object.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

#include "mpx/detail/handoff_trait.hpp"

namespace mpx {

class SharedMemory {
 public:
  // A new anonymous segment of `size` bytes (zero-filled), backed by a memfd.
  // Throws mpx::ValueError when size == 0; std::system_error.
  // OS resources: one fd (O_CLOEXEC) and one mapping, released by close()/destructor.
  explicit SharedMemory(std::size_t size);

  // Creates the named segment `name` ("/name" or "name"; no other '/') of `size` bytes,
  // mode 0600. With `track` (the default) the segment is unlinked when this process
  // ends without having unlinked it, even by kill -9 and even inside create() (Python's
  // resource tracker; the tracker creates the name, so it never exists untracked).
  // Throws mpx::FileExistsError when it exists; mpx::ValueError for size 0 or a bad
  // name (empty, a NUL byte, a '/' past the first character, over 255 bytes);
  // std::system_error.
  static SharedMemory create(std::string_view name, std::size_t size, bool track = true);
  // Creates a named segment under a fresh unique name, "psm_" and 8 hex digits (Python's
  // SharedMemory(create=True, size=n)); pass name() to the processes that open it.
  static SharedMemory create(std::size_t size, bool track = true);
  // Opens the existing named segment `name`; size() is its size. Never unlinks it.
  // Throws mpx::FileNotFoundError when it does not exist; mpx::ValueError for a bad
  // name; std::system_error.
  static SharedMemory open(std::string_view name);
  // Maps the segment behind `fd` (e.g. one received over a connection); the fd is
  // duplicated, the caller keeps its own. Throws std::system_error.
  static SharedMemory from_fd(int fd);

  SharedMemory(SharedMemory&& other) noexcept;
  SharedMemory& operator=(SharedMemory&& other) noexcept;
  SharedMemory(const SharedMemory&) = delete;
  SharedMemory& operator=(const SharedMemory&) = delete;
  // Closes (never unlinks).
  ~SharedMemory();

  // The name without a leading '/', as given to create()/open(); empty when anonymous.
  const std::string& name() const noexcept { return name_; }
  // Exactly the size asked for at creation.
  std::size_t size() const noexcept { return size_; }
  // The memory. Throws mpx::InvalidStateError after close().
  std::span<std::byte> buf() const;
  // The fd behind the segment, to pass to another process (-1 after close()).
  int fd() const noexcept { return fd_; }
  bool closed() const noexcept { return addr_ == nullptr; }

  // Unmaps the memory and closes the fd; the segment lives on in other processes and,
  // when named, in /dev/shm. Idempotent.
  void close() noexcept;
  // Removes the name from /dev/shm (the memory lives on while mapped). Any process may
  // call it, once; a no-op for anonymous segments. Throws mpx::FileNotFoundError when
  // the name is gone already.
  void unlink();

 private:
  SharedMemory(std::string name, int fd, void* addr, std::size_t size, bool tracked) noexcept;

  std::string name_;
  int fd_ = -1;
  void* addr_ = nullptr;
  std::size_t size_ = 0;
  bool tracked_ = false;
};

// A SharedMemory handed to a spawn or forkserver child (mpx/context.hpp): its fd
// travels, and the child maps the same segment (from_fd; the name is not kept).
namespace detail {
template <>
struct Handoff<SharedMemory> {
  static void save(const SharedMemory& shm, HandoffWriter& w) { w.put_fd(shm.fd()); }
  static SharedMemory load(HandoffReader& r) {
    const int fd = r.take_fd();
    struct Close {
      int fd;
      ~Close() { ::close(fd); }
    } close_it{fd};
    return SharedMemory::from_fd(fd);
  }
};
}  // namespace detail

}  // namespace mpx
