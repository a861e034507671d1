#include "shm/resource_tracker.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <cstring>
#include <mutex>
#include <new>
#include <set>
#include <span>
#include <vector>

#include "mpx/errors.hpp"
#include "sys/atfork.hpp"
#include "sys/fd.hpp"
#include "sys/fd_passing.hpp"
#include "sys/syscall.hpp"

namespace mpx::detail {

namespace {

std::mutex g_mutex;
int g_fd = -1;  // write end of the pipe to this process's tracker

// In a forked child: the parent's tracker is not ours. No locking: the mutex may have been
// copied locked, so it is rebuilt.
void forget_tracker_in_child() noexcept {
  if (g_fd >= 0) ::close(g_fd);
  g_fd = -1;
  new (&g_mutex) std::mutex;
}

// The tracker's answer to a create: the errno (0: created) and, when created, the fd.
void reply(int socket, int err, int fd) noexcept {
  sys::send_with_fds("sendmsg(resource tracker)", socket, &err, sizeof(err),
                     std::span<const int>(&fd, fd >= 0 ? 1 : 0));
}

[[noreturn]] void tracker_main(int read_fd) {
  ::prctl(PR_SET_NAME, "mpx-tracker");
  // Survive the terminal's signals to the process group; end of file ends the tracker.
  ::signal(SIGINT, SIG_IGN);
  ::signal(SIGTERM, SIG_IGN);
  ::signal(SIGHUP, SIG_IGN);
  ::signal(SIGPIPE, SIG_IGN);
  // Hold nothing of the creator's but the read end: no other pipe must be kept open by
  // the tracker, or their readers would never see end of file.
  if (read_fd != 3) {
    ::dup2(read_fd, 3);
    read_fd = 3;
  }
  ::syscall(SYS_close_range, 4U, ~0U, 0U);
  int null = ::open("/dev/null", O_RDWR);
  if (null >= 0) {
    ::dup2(null, 0);
    ::dup2(null, 1);
    ::dup2(null, 2);
    if (null > 3) ::close(null);
  }
  std::set<std::string> names;
  char buffer[512];
  for (;;) {
    ssize_t n = ::recv(read_fd, buffer, sizeof(buffer) - 1, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // end of file: the creator is gone
    if (n < 2) continue;
    std::string name(buffer + 1, static_cast<std::size_t>(n - 1));
    if (buffer[0] == '-') names.erase(name);
    if (buffer[0] == 'c') {
      // Created and registered in one step: the creator may die at any moment.
      int fd = ::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
      int err = fd < 0 ? errno : 0;
      if (fd >= 0) names.insert(name);
      reply(read_fd, err, fd);
      if (fd >= 0) ::close(fd);
    }
  }
  for (const auto& name : names)
    ::shm_unlink(name.c_str());
  ::_exit(0);
}

// Starts this process's tracker; g_mutex is held.
void start_tracker() {
  static const bool atfork_installed = [] {
    sys::atfork(nullptr, nullptr, forget_tracker_in_child);
    return true;
  }();
  (void)atfork_installed;
  // A SOCK_SEQPACKET pair: each message arrives whole, and a send to a dead tracker fails
  // with EPIPE instead of raising SIGPIPE.
  auto [read_end, write_end] = sys::make_socketpair(SOCK_SEQPACKET);
  pid_t pid = sys::call("fork(resource tracker)", [] { return ::fork(); });
  if (pid == 0) {
    // The intermediate child: fork the tracker and leave, so that the tracker is
    // re-parented and never shows up as our child.
    write_end.reset();
    pid_t tracker = ::fork();
    if (tracker == 0) tracker_main(read_end.get());
    ::_exit(tracker < 0 ? 1 : 0);
  }
  read_end.reset();
  int status = 0;
  pid_t reaped =
      sys::call_raw("waitpid(resource tracker)", [&] { return ::waitpid(pid, &status, 0); });
  // ECHILD: someone else reaped it (a SIGCHLD handler); the tracker may still be fine.
  if (reaped == pid && (!WIFEXITED(status) || WEXITSTATUS(status) != 0))
    sys::throw_errno("fork(resource tracker)", EAGAIN);
  g_fd = write_end.release();
}

void send(const std::string& message) noexcept {
  sys::call_raw("send(resource tracker)",
                [&] { return ::send(g_fd, message.data(), message.size(), MSG_NOSIGNAL); });
}

}  // namespace

std::string segment_path(std::string_view name, const char* what) {
  if (!name.empty() && name.front() == '/') name.remove_prefix(1);
  const char* problem = name.empty()                                ? "is empty"
                        : name.find('\0') != std::string_view::npos ? "holds a NUL byte"
                        : name.find('/') != std::string_view::npos  ? "holds a '/'"
                        : name.size() > NAME_MAX                    ? "is too long"
                                                                    : nullptr;
  if (problem) {
    // Built with append(): GCC 12 warns falsely (-Wrestrict) on "literal" + std::string.
    std::string message = what;
    message.append(": the name '").append(name.substr(0, 64)).append("' ").append(problem);
    throw ValueError(message);
  }
  std::string path = "/";
  path.append(name);
  return path;
}

int create_segment(const std::string& path) {
  std::lock_guard guard(g_mutex);
  if (g_fd < 0) start_tracker();
  const std::string message = "c" + path;
  sys::call("send(resource tracker)",
            [&] { return ::send(g_fd, message.data(), message.size(), MSG_NOSIGNAL); });
  int err = 0;
  std::vector<sys::Fd> fds;
  const ssize_t n = sys::recv_with_fds("recvmsg(resource tracker)", g_fd, &err, sizeof(err), fds);
  if (n < 0) sys::throw_errno("recvmsg(resource tracker)");
  if (n != static_cast<ssize_t>(sizeof(err))) sys::throw_errno("recvmsg(resource tracker)", EPIPE);
  if (err == 0 && !fds.empty()) return fds.front().release();
  errno = err != 0 ? err : EPROTO;
  return -1;
}

void unregister_segment(const std::string& name) noexcept {
  std::lock_guard guard(g_mutex);
  if (g_fd >= 0) send("-" + name);
}

}  // namespace mpx::detail
