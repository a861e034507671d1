// The forkserver start method: a single-threaded server, spawned by a process's first
// forkserver start, that forks children on request (mpx/process.hpp).
//
// Protocol on the client's socket (the server's fd 3): first the client's module table (a
// frame), which the server acknowledges with one byte; then per child a request, one byte
// with one fd (SCM_RIGHTS): the child's channel. The server forks the child as a child of
// the client (clone with CLONE_PARENT), so the client reaps it, waits on its pidfd and
// learns its exit status from the kernel, as for a fork of its own; the server keeps no
// children. The child's first word on its channel is its pid (the server writes -errno
// there instead when it cannot fork); then it reads its order, which the client sends
// right after the request. The server dies with its client (PR_SET_PDEATHSIG) and exits
// when the client's socket closes; the children die with the client as fork's do, not
// with the server.
#include <fcntl.h>
#include <linux/sched.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <vector>

#include "mpx/detail/function_id.hpp"
#include "mpx/errors.hpp"
#include "process/start_methods.hpp"
#include "sys/atfork.hpp"
#include "sys/pidfd.hpp"
#include "sys/self.hpp"
#include "sys/syscall.hpp"

namespace mpx::detail {

namespace {

constexpr int kClientFd = 3;

// What a child needs to be a thread of its own, as glibc's fork() gives it: the kernel
// writes the child's tid into glibc's thread descriptor (CLONE_CHILD_SETTID, at the
// address glibc registered with set_tid_address), and the child registers its robust
// mutex list again (the kernel clears it in a new process). Locks owned by the child,
// robust ones included, are then recorded under its own tid.
struct ThreadRecord {
  int* tid = nullptr;
  void* robust_head = nullptr;
  std::size_t robust_len = 0;
};

ThreadRecord this_thread_record() {
  ThreadRecord r;
  if (::prctl(PR_GET_TID_ADDRESS, &r.tid) != 0 || r.tid == nullptr ||
      ::syscall(SYS_get_robust_list, 0, &r.robust_head, &r.robust_len) != 0) {
    std::fprintf(stderr, "mpx: the forkserver cannot find this thread's records: %s\n",
                 std::strerror(errno));
    ::_exit(1);
  }
  return r;
}

// fork(), but the child is the client's (CLONE_PARENT), with mpx's fork handlers run
// around it as fork() runs them. The server is single-threaded and holds no lock here,
// so glibc's own fork handlers would have nothing to do; other libraries' do not run.
pid_t fork_for_client(ThreadRecord self) {
  const auto fork_like = [](void* record) -> pid_t {
    const auto& r = *static_cast<const ThreadRecord*>(record);
    clone_args args{};
    args.flags = CLONE_PARENT | CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID;
    args.child_tid = reinterpret_cast<std::uintptr_t>(r.tid);
    const long pid = ::syscall(SYS_clone3, &args, sizeof args);
    if (pid == 0) ::syscall(SYS_set_robust_list, r.robust_head, r.robust_len);
    return static_cast<pid_t>(pid);
  };
  const pid_t pid = sys::fork_with_handlers(fork_like, &self);
  if (pid == 0) sys::refresh_after_fork();  // registered on first use only
  return pid;
}

// The server's side of one request: forks the child, which tells the client its pid.
void serve_request(std::vector<sys::Fd>& fds, const ThreadRecord& self, pid_t client,
                   const char* program) {
  if (fds.size() != 1) return;  // a malformed request: nothing to answer
  const pid_t pid = fork_for_client(self);
  if (pid == 0) {
    // The child: named as the program again, and only its channel stays open (the other
    // fd is the server's).
    ::prctl(PR_SET_NAME, program);
    ::close(kClientFd);
    const int channel = fds[0].release();
    const pid_t me = ::getpid();
    if (::send(channel, &me, sizeof me, MSG_NOSIGNAL) != sizeof me) ::_exit(1);
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != client) ::_exit(1);
    run_order(channel);
  }
  if (pid < 0) {
    const int answer = -errno;
    ssize_t n = ::send(fds[0].get(), &answer, sizeof answer, MSG_NOSIGNAL);
    static_cast<void>(n);  // a client gone does not read it
  }
}

// The client's side: the server of this process, or none.
struct Client {
  std::mutex mu;
  pid_t owner = 0;  // the process that started the server
  pid_t pid = 0;
  sys::Fd sock;
  bool bind_now = true;  // false once a server failed to start so
};
// A fork while another thread talks to the server (holding mu): the child, not the
// owner, starts its own server (restart).
Client& client() {
  return ForkSafeInstance<Client>::get();
}

// Spawns a server for `c`; true once it is ready. The server binds every symbol as it
// loads (LD_BIND_NOW) when `bind_now`: each child it forks would otherwise resolve the
// lazy PLT entries of all the code it runs, a fifth of a child's start. The value marks
// it as ours: the server takes it out of its environment again, so that its children see
// the program's.
bool spawn_server(Client& c, bool bind_now) {
  auto [mine, theirs] = sys::make_socketpair();
  std::vector<char*> env;
  for (char** e = environ; *e; ++e)
    env.push_back(*e);
  static char bind_now_mark[] = "LD_BIND_NOW=mpx-forkserver";
  if (bind_now && !std::getenv("LD_BIND_NOW")) env.push_back(bind_now_mark);
  env.push_back(nullptr);
  c.owner = ::getpid();
  c.pid = spawn_executable(kForkserverArg, theirs.get(), env.data());
  theirs.reset();  // the server's alone now: EOF if it dies
  c.sock = std::move(mine);
  char ready = 0;
  std::vector<sys::Fd> no_fds;
  if (send_frame(c.sock.get(), encode_module_table()) &&
      recv_with_fds(c.sock.get(), &ready, 1, no_fds))
    return true;
  c.sock.reset();
  ::waitpid(c.pid, nullptr, 0);
  c.pid = 0;
  return false;
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
  if (c.bind_now && spawn_server(c, true)) return;
  // A program that loads with symbols left undefined (never called) cannot be bound at
  // load: its server resolves them lazily, as the program does.
  c.bind_now = false;
  if (!spawn_server(c, false)) throw ProcessError("mpx: the forkserver could not start");
}

}  // namespace

void forkserver_main() {
  char program[16] = {};
  ::prctl(PR_GET_NAME, program);
  ::prctl(PR_SET_NAME, "mpx-forkserver");
  if (const char* v = std::getenv("LD_BIND_NOW"); v && std::strcmp(v, "mpx-forkserver") == 0)
    ::unsetenv("LD_BIND_NOW");
  try {
    adopt_module_table(recv_frame(kClientFd));
    if (::send(kClientFd, "R", 1, MSG_NOSIGNAL) != 1) ::_exit(0);  // ready
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mpx: the forkserver cannot serve its client: %s\n", e.what());
    ::_exit(1);
  }
  const ThreadRecord self = this_thread_record();
  const pid_t client = ::getppid();
  for (;;) {
    char request = 0;
    std::vector<sys::Fd> fds;
    if (!recv_with_fds(kClientFd, &request, 1, fds)) ::_exit(0);  // the client is gone
    serve_request(fds, self, client, program);
  }
}

int forkserver_client_fd() {
  Client& c = client();
  std::lock_guard lock(c.mu);
  return c.owner == ::getpid() ? c.sock.get() : -1;
}

StartedChild forkserver_start(std::span<const std::byte> order, std::span<const int> fds,
                              sys::Fd& channel) {
  Client& c = client();
  std::lock_guard lock(c.mu);
  for (int attempt = 0;; ++attempt) {
    if (c.owner != ::getpid() || !c.sock) restart(c);
    auto [mine, theirs] = sys::make_socketpair();
    const char request = 'F';
    const int sent = theirs.get();
    int answer = 0;
    std::vector<sys::Fd> no_fds;
    bool served = send_with_fds(c.sock.get(), &request, 1, std::span<const int>(&sent, 1));
    if (served) {
      // The request holds the child's end of the channel now: EOF before a pid means that
      // no child was made (the server died). The order follows the request at once, to
      // be on the channel when the child looks; sending it fails only when no child
      // will read it, which the pid (or its absence) tells.
      theirs.reset();
      send_frame(mine.get(), order, fds);
      served = recv_with_fds(mine.get(), &answer, sizeof answer, no_fds);
    }
    if (!served) {
      // The server died: start another, once.
      c.sock.reset();
      if (attempt == 0) continue;
      throw ProcessError("mpx: the forkserver died while starting a child");
    }
    if (answer <= 0) sys::throw_errno("fork (forkserver)", -answer);
    StartedChild started;
    started.pid = answer;
    started.pidfd = child_pidfd(started.pid);
    channel = std::move(mine);
    return started;
  }
}

}  // namespace mpx::detail
