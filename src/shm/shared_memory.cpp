#include "mpx/shared_memory.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <utility>

#include "mpx/errors.hpp"
#include "shm/resource_tracker.hpp"
#include "sys/fd.hpp"
#include "sys/mapping.hpp"
#include "sys/syscall.hpp"

namespace mpx {

namespace {

void* map(int fd, std::size_t size) {
  return sys::call("mmap(SharedMemory)", [&] {
    return ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  });
}

std::size_t size_of(int fd) {
  struct stat st {};
  sys::call("fstat(SharedMemory)", [&] { return ::fstat(fd, &st); });
  return static_cast<std::size_t>(st.st_size);
}

}  // namespace

SharedMemory::SharedMemory(std::string name, int fd, void* addr, std::size_t size,
                           bool tracked) noexcept
    : name_(std::move(name)), fd_(fd), addr_(addr), size_(size), tracked_(tracked) {}

SharedMemory::SharedMemory(std::size_t size) {
  if (size == 0) throw ValueError("SharedMemory: size must be > 0");
  sys::Fd fd = sys::memfd("mpx-shm", size);
  addr_ = map(fd.get(), size);
  fd_ = fd.release();
  size_ = size;
}

SharedMemory SharedMemory::create(std::string_view name, std::size_t size, bool track) {
  if (size == 0) throw ValueError("SharedMemory: size must be > 0");
  std::string path = detail::segment_path(name, "SharedMemory");
  // Tracked: the tracker creates it, so that a kill at any moment leaves no name behind.
  int raw = track ? detail::create_segment(path) : sys::call_raw("shm_open", [&] {
    return ::shm_open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  });
  if (raw < 0) {
    if (errno == EEXIST) throw FileExistsError("SharedMemory: '" + path + "' exists already");
    sys::throw_errno(("shm_open(" + path + ")").c_str());
  }
  sys::Fd fd(raw);
  try {
    sys::call("ftruncate(SharedMemory)",
              [&] { return ::ftruncate(fd.get(), static_cast<off_t>(size)); });
    void* addr = map(fd.get(), size);
    return SharedMemory(path.substr(1), fd.release(), addr, size, track);
  } catch (...) {
    ::shm_unlink(path.c_str());
    if (track) detail::unregister_segment(path);
    throw;
  }
}

SharedMemory SharedMemory::create(std::size_t size, bool track) {
  // Python's _make_filename: "psm_" and 8 random hex digits, drawn again on a collision.
  for (int attempt = 0;; ++attempt) {
    std::uint32_t r = 0;
    sys::call("getrandom", [&] { return ::getrandom(&r, sizeof(r), 0); });
    char name[16];
    std::snprintf(name, sizeof(name), "psm_%08x", static_cast<unsigned>(r));
    try {
      return create(name, size, track);
    } catch (const FileExistsError&) {
      if (attempt == 100) throw;
    }
  }
}

SharedMemory SharedMemory::open(std::string_view name) {
  std::string path = detail::segment_path(name, "SharedMemory");
  int raw =
      sys::call_raw("shm_open", [&] { return ::shm_open(path.c_str(), O_RDWR | O_CLOEXEC, 0600); });
  if (raw < 0) {
    if (errno == ENOENT) throw FileNotFoundError("SharedMemory: no segment '" + path + "'");
    sys::throw_errno(("shm_open(" + path + ")").c_str());
  }
  sys::Fd fd(raw);
  std::size_t size = size_of(fd.get());
  if (size == 0) throw ValueError("SharedMemory: '" + path + "' is empty");
  void* addr = map(fd.get(), size);
  return SharedMemory(path.substr(1), fd.release(), addr, size, false);
}

SharedMemory SharedMemory::from_fd(int fd) {
  sys::Fd copy(
      sys::call("fcntl(F_DUPFD_CLOEXEC)", [&] { return ::fcntl(fd, F_DUPFD_CLOEXEC, 0); }));
  std::size_t size = size_of(copy.get());
  if (size == 0) throw ValueError("SharedMemory: the segment is empty");
  void* addr = map(copy.get(), size);
  return SharedMemory(std::string(), copy.release(), addr, size, false);
}

SharedMemory::SharedMemory(SharedMemory&& other) noexcept
    : name_(std::move(other.name_)),
      fd_(std::exchange(other.fd_, -1)),
      addr_(std::exchange(other.addr_, nullptr)),
      size_(other.size_),
      tracked_(std::exchange(other.tracked_, false)) {}

SharedMemory& SharedMemory::operator=(SharedMemory&& other) noexcept {
  if (this != &other) {
    close();
    name_ = std::move(other.name_);
    fd_ = std::exchange(other.fd_, -1);
    addr_ = std::exchange(other.addr_, nullptr);
    size_ = other.size_;
    tracked_ = std::exchange(other.tracked_, false);
  }
  return *this;
}

SharedMemory::~SharedMemory() {
  close();
}

std::span<std::byte> SharedMemory::buf() const {
  if (!addr_) throw InvalidStateError("SharedMemory::buf: the segment is closed");
  return {static_cast<std::byte*>(addr_), size_};
}

void SharedMemory::close() noexcept {
  if (addr_) ::munmap(addr_, size_);
  addr_ = nullptr;
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void SharedMemory::unlink() {
  if (name_.empty()) return;
  std::string path = "/" + name_;
  if (tracked_) {
    detail::unregister_segment(path);
    tracked_ = false;
  }
  int rc = sys::call_raw("shm_unlink", [&] { return ::shm_unlink(path.c_str()); });
  if (rc < 0) {
    if (errno == ENOENT) throw FileNotFoundError("SharedMemory: no segment '" + path + "'");
    sys::throw_errno(("shm_unlink(" + path + ")").c_str());
  }
}

}  // namespace mpx
