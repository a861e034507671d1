// tests/support/subprocess.hpp — helpers for the tests of mpx::subprocess: reading a
// pipe to its end, children and inheritable fds of this process.
#pragma once

#include <fcntl.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <set>
#include <string>

#include "support/leak_check.hpp"

namespace mpx_test {

// Everything readable from fd until EOF.
inline std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return out;
    out.append(buf, static_cast<std::size_t>(n));
  }
}

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Whether pid is a child of this process (running or a zombie).
inline bool is_child(pid_t pid) {
  const std::string name = std::to_string(pid) + " ";
  for (const auto& c : mpx_test::child_processes())
    if (c.rfind(name, 0) == 0) return true;
  return false;
}

// This process's fds from 3 up without O_CLOEXEC (left by whoever started the test), as
// "N target": a child started with close_fds false inherits them.
inline std::set<std::string> inheritable_fds() {
  std::set<std::string> fds;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    const int fd = std::stoi(entry.path().filename().string());
    std::error_code ec;
    auto target = std::filesystem::read_symlink(entry.path(), ec);
    if (fd > 2 && !ec && (::fcntl(fd, F_GETFD) & FD_CLOEXEC) == 0)
      fds.insert(std::to_string(fd) + " " + target.string());
  }
  return fds;
}

}  // namespace mpx_test
