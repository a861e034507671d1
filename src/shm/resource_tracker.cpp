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

#include <mutex>
#include <new>
#include <set>

#include "sys/fd.hpp"
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
    ssize_t n = ::recv(read_fd, buffer, sizeof(buffer), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // end of file: the creator is gone
    if (n < 2) continue;
    std::string name(buffer + 1, static_cast<std::size_t>(n - 1));
    if (buffer[0] == '+') names.insert(name);
    if (buffer[0] == '-') names.erase(name);
  }
  for (const auto& name : names)
    ::shm_unlink(name.c_str());
  ::_exit(0);
}

// Starts this process's tracker; g_mutex is held.
void start_tracker() {
  static const bool atfork_installed = [] {
    ::pthread_atfork(nullptr, nullptr, forget_tracker_in_child);
    return true;
  }();
  (void)atfork_installed;
  // A SOCK_SEQPACKET pair: each message arrives whole, and a send to a dead tracker fails
  // with EPIPE instead of raising SIGPIPE.
  int pair[2];
  sys::call("socketpair(resource tracker)",
            [&] { return ::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair); });
  sys::Fd read_end(pair[0]);
  sys::Fd write_end(pair[1]);
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

void register_segment(const std::string& name) {
  std::lock_guard guard(g_mutex);
  if (g_fd < 0) start_tracker();
  send("+" + name);
}

void unregister_segment(const std::string& name) noexcept {
  std::lock_guard guard(g_mutex);
  if (g_fd >= 0) send("-" + name);
}

}  // namespace mpx::detail
