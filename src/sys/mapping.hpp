// src/sys/mapping.hpp — memfd and shared mmap regions.
//
// Anonymous shared memory (memfd, or MAP_SHARED|MAP_ANONYMOUS) vanishes with the last
// process that maps it, even after kill -9: nothing to unlink, nothing to leak.
#pragma once

#include <cstddef>
#include <utility>

#include "sys/fd.hpp"

namespace mpx::sys {

class Mapping {
 public:
  Mapping() noexcept = default;
  Mapping(void* addr, std::size_t size) noexcept : addr_(addr), size_(size) {}
  Mapping(Mapping&& other) noexcept
      : addr_(std::exchange(other.addr_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  Mapping& operator=(Mapping&& other) noexcept {
    if (this != &other) {
      reset();
      addr_ = std::exchange(other.addr_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() { reset(); }

  void* data() const noexcept { return addr_; }
  std::byte* bytes() const noexcept { return static_cast<std::byte*>(addr_); }
  std::size_t size() const noexcept { return size_; }
  explicit operator bool() const noexcept { return addr_ != nullptr; }
  void reset() noexcept;

 private:
  void* addr_ = nullptr;
  std::size_t size_ = 0;
};

// memfd_create(name, MFD_CLOEXEC) sized to `size` bytes (zero-filled).
Fd memfd(const char* name, std::size_t size);
// mmap(MAP_SHARED) of `size` bytes of `fd` from offset 0, read-write.
Mapping map_shared(int fd, std::size_t size);
// mmap(MAP_SHARED|MAP_ANONYMOUS): shared with children forked later, no fd at all.
Mapping map_anonymous_shared(std::size_t size);

// mmap(MAP_PRIVATE|MAP_ANONYMOUS) of `size` bytes, faulted in as it is touched. `huge`:
// `size` rounded up to whole 2 MiB pages, aligned to 2 MiB and advised transparent huge
// pages, so that touching it takes one fault per 2 MiB, not one per 4 KiB (ignored by a
// kernel without them).
Mapping map_anonymous_private(std::size_t size, bool huge = false);

// Memory about to be written, faulted in now by one system call instead of one fault
// per page as it is written (a fault costs microseconds in a virtual machine, where
// fresh memory is also fresh to the host): transparent huge pages for the whole 2 MiB
// pages inside [p, p + bytes), then every page of the range populated for writing.
// Only advice, content untouched: a kernel without MADV_POPULATE_WRITE (before 5.14)
// or without transparent huge pages leaves the faults to come as they would.
void prefault(void* p, std::size_t bytes) noexcept;

}  // namespace mpx::sys
