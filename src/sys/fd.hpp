// src/sys/fd.hpp — an owned file descriptor. Every fd mpx opens is O_CLOEXEC.
#pragma once

#include <sys/socket.h>

#include <unistd.h>

#include <utility>

namespace mpx::sys {

class Fd {
 public:
  Fd() noexcept = default;
  explicit Fd(int fd) noexcept : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) reset(std::exchange(other.fd_, -1));
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }

  int get() const noexcept { return fd_; }
  bool valid() const noexcept { return fd_ >= 0; }
  explicit operator bool() const noexcept { return valid(); }
  int release() noexcept { return std::exchange(fd_, -1); }
  // Closes the current fd (errors ignored: close(2) must not be retried on Linux).
  void reset(int fd = -1) noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }
  // A new O_CLOEXEC duplicate; throws std::system_error.
  Fd dup() const;

 private:
  int fd_ = -1;
};

// pipe2(O_CLOEXEC) → {read end, write end}.
std::pair<Fd, Fd> make_pipe(int extra_flags = 0);
// socketpair(AF_UNIX, type | SOCK_CLOEXEC) → its two ends.
std::pair<Fd, Fd> make_socketpair(int type = SOCK_STREAM);

}  // namespace mpx::sys
