// The forkserver start method: a single-threaded server, spawned by a process's first
// forkserver start, that forks children on request (mpx/process.hpp).
//
// Protocol on the client's socket (the server's fd 3): first the client's module table
// (a frame); then per child a request, one byte with two fds (SCM_RIGHTS): the child's
// channel, on which the child reads its order, and the write end of a pipe on which the
// server writes the child's exit code once it has reaped it. The server answers each
// request with the child's pid (an int, negative: -errno) and its pidfd. The server's
// children die with it (PR_SET_PDEATHSIG), and it dies with its client; it exits when
// the client's socket closes.
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <mutex>
#include <new>
#include <vector>

#include "mpx/detail/function_id.hpp"
#include "mpx/errors.hpp"
#include "process/start_methods.hpp"
#include "sys/pidfd.hpp"
#include "sys/syscall.hpp"

namespace mpx::detail {

namespace {

constexpr int kClientFd = 3;

struct Child {
  sys::Fd pidfd;
  sys::Fd status;  // the client's pipe
};

// The server's side of one request: forks the child, answers with its pid and pidfd.
void serve_request(std::vector<sys::Fd>& fds, std::vector<Child>& children) {
  if (fds.size() != 2) return;  // a malformed request: nothing to answer
  const pid_t server = ::getpid();
  int answer = 0;
  sys::Fd pidfd;
  const pid_t pid = ::fork();
  if (pid == 0) {
    // The child: only its channel stays open (the others are the server's).
    ::close(kClientFd);
    for (Child& c : children) {
      ::close(c.pidfd.release());
      ::close(c.status.release());
    }
    ::close(fds[1].release());
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != server) ::_exit(1);
    run_order(fds[0].release());
  }
  if (pid < 0) {
    answer = -errno;
  } else {
    try {
      pidfd = sys::pidfd_open(pid);
      answer = pid;
    } catch (const std::system_error& e) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      answer = -e.code().value();
    }
  }
  int fd = pidfd.get();
  send_with_fds(kClientFd, &answer, sizeof answer, std::span<const int>(&fd, pidfd ? 1 : 0));
  if (pidfd) children.push_back({std::move(pidfd), std::move(fds[1])});
}

// Reaps an exited child and writes its exit code to its client's pipe.
void report_exit(Child& c) {
  siginfo_t info{};
  if (::waitid(P_PIDFD, static_cast<id_t>(c.pidfd.get()), &info, WEXITED) != 0) return;
  int code = info.si_code == CLD_EXITED ? info.si_status : -info.si_status;
  ssize_t n = ::write(c.status.get(), &code, sizeof code);
  static_cast<void>(n);  // a client gone does not read it
  c.pidfd.reset();
  c.status.reset();
}

// The client's side: the server of this process, or none.
struct Client {
  std::mutex mu;
  pid_t owner = 0;  // the process that started the server
  pid_t pid = 0;
  sys::Fd sock;
};
// A fork while another thread talks to the server (holding mu): the child, not the
// owner, starts its own server (restart).
Client& client() {
  return ForkSafeInstance<Client>::get();
}

// Starts a server for this process, after the previous one (dead, or a fork parent's).
void restart(Client& c) {
  if (c.owner == ::getpid() && c.pid > 0) {
    c.sock.reset();
    ::waitpid(c.pid, nullptr, 0);  // it exits at EOF, if it is not dead already
  } else if (c.owner != ::getpid()) {
    c.sock.reset();  // our copy of a fork parent's socket
  }
  c.pid = 0;
  int sv[2];
  sys::call("socketpair", [&] { return ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv); });
  sys::Fd mine(sv[0]), theirs(sv[1]);
  const pid_t pid = spawn_executable(kForkserverArg, theirs.get());
  c.owner = ::getpid();
  c.pid = pid;
  c.sock = std::move(mine);
  send_frame(c.sock.get(), encode_module_table());
}

}  // namespace

void forkserver_main() {
  ::prctl(PR_SET_NAME, "mpx-forkserver");
  try {
    adopt_module_table(recv_frame(kClientFd));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mpx: the forkserver cannot serve its client: %s\n", e.what());
    ::_exit(1);
  }
  std::vector<Child> children;
  std::vector<pollfd> polled;
  for (;;) {
    polled.assign(1, pollfd{kClientFd, POLLIN, 0});
    for (const Child& c : children)
      polled.push_back({c.pidfd.get(), POLLIN, 0});
    if (::poll(polled.data(), polled.size(), -1) < 0) {
      if (errno == EINTR) continue;
      ::_exit(1);
    }
    for (std::size_t i = 1; i < polled.size(); ++i)
      if (polled[i].revents != 0) report_exit(children[i - 1]);
    std::erase_if(children, [](const Child& c) { return !c.pidfd; });
    if (polled[0].revents != 0) {
      char request = 0;
      std::vector<sys::Fd> fds;
      if (!recv_with_fds(kClientFd, &request, 1, fds)) ::_exit(0);  // the client is gone
      serve_request(fds, children);
    }
  }
}

int forkserver_client_fd() {
  Client& c = client();
  std::lock_guard lock(c.mu);
  return c.owner == ::getpid() ? c.sock.get() : -1;
}

StartedChild forkserver_start(sys::Fd& channel) {
  Client& c = client();
  std::lock_guard lock(c.mu);
  for (int attempt = 0;; ++attempt) {
    if (c.owner != ::getpid() || !c.sock) restart(c);
    int sv[2];
    sys::call("socketpair",
              [&] { return ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv); });
    sys::Fd mine(sv[0]), theirs(sv[1]);
    auto [status_r, status_w] = sys::make_pipe(O_NONBLOCK);
    const int fds[2] = {theirs.get(), status_w.get()};
    const char request = 'F';
    int answer = 0;
    std::vector<sys::Fd> pidfd;
    if (!send_with_fds(c.sock.get(), &request, 1, fds) ||
        !recv_with_fds(c.sock.get(), &answer, sizeof answer, pidfd)) {
      // The server died: start another, once.
      c.sock.reset();
      if (attempt == 0) continue;
      throw ProcessError("mpx: the forkserver died while starting a child");
    }
    if (answer <= 0 || pidfd.size() != 1) sys::throw_errno("fork (forkserver)", -answer);
    StartedChild started;
    started.pid = answer;
    started.pidfd = std::move(pidfd[0]);
    started.status = std::move(status_r);
    channel = std::move(mine);
    return started;
  }
}

}  // namespace mpx::detail
