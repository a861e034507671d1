// The spawn start method, the program's start method and executable, mpx::init, and
// the contexts of mpx/context.hpp.
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <tuple>

#include "mpx/codec.hpp"
#include "mpx/context.hpp"
#include "mpx/detail/function_id.hpp"
#include "mpx/detail/handoff.hpp"
#include "mpx/errors.hpp"
#include "mpx/synchronize.hpp"
#include "process/start_methods.hpp"
#include "sys/fd_passing.hpp"
#include "sys/pidfd.hpp"
#include "sys/syscall.hpp"

extern char** environ;

namespace mpx {

namespace {

constexpr const char* kSpawnMarker = "--mpx-spawn";
constexpr const char* kForkserverMarker = detail::kForkserverArg;
// The fd on which a child that is not a fork finds its channel to the parent.
constexpr int kChannelFd = 3;

struct Settings {
  std::mutex mu;
  std::optional<StartMethod> method;
  std::string executable;  // empty: /proc/self/exe
  std::string argv0;
};
Settings& settings() {
  return detail::ForkSafeInstance<Settings>::get();
}
std::atomic<bool> g_init_called{false};

StartMethod parse_method(std::string_view name) {
  if (name == "fork") return StartMethod::fork;
  if (name == "spawn") return StartMethod::spawn;
  if (name == "forkserver") return StartMethod::forkserver;
  throw ValueError("cannot find context for '" + std::string(name) + "'");
}

}  // namespace

std::string_view start_method_name(StartMethod method) {
  switch (method) {
    case StartMethod::spawn:
      return "spawn";
    case StartMethod::forkserver:
      return "forkserver";
    case StartMethod::fork:
      break;
  }
  return "fork";
}

Context get_context(std::string_view method) {
  if (method.empty()) return Context(parse_method(get_start_method()));
  return Context(parse_method(method));
}

void set_start_method(std::string_view method, bool force) {
  const StartMethod m = parse_method(method);
  Settings& s = settings();
  std::lock_guard lock(s.mu);
  if (s.method && !force) throw InvalidStateError("context has already been set");
  s.method = m;
  // Objects made by their constructors from now on can reach a child that is not a fork.
  detail::KeepBlockFds::set_default(m != StartMethod::fork);
}

std::optional<std::string> get_start_method(bool allow_none) {
  Settings& s = settings();
  std::lock_guard lock(s.mu);
  if (!s.method) {
    if (allow_none) return std::nullopt;
    s.method = StartMethod::fork;
  }
  return std::string(start_method_name(*s.method));
}

std::string get_start_method() {
  return *get_start_method(false);
}

std::vector<std::string> get_all_start_methods() {
  return {"fork", "spawn", "forkserver"};
}

void set_executable(std::string path) {
  Settings& s = settings();
  std::lock_guard lock(s.mu);
  s.executable = std::move(path);
}

std::string get_executable() {
  Settings& s = settings();
  std::lock_guard lock(s.mu);
  return s.executable.empty() ? std::string("/proc/self/exe") : s.executable;
}

void set_forkserver_preload(const std::vector<std::string>&) {}

void init(int argc, char** argv) {
  g_init_called.store(true, std::memory_order_relaxed);
  if (argc >= 1 && argv[0]) {
    Settings& s = settings();
    std::lock_guard lock(s.mu);
    s.argv0 = argv[0];
  }
  if (argc != 3 || !argv[1] || !argv[2]) return;
  const bool spawned = std::strcmp(argv[1], kSpawnMarker) == 0;
  if (!spawned && std::strcmp(argv[1], kForkserverMarker) != 0) return;
  // Die with the parent. It may have died before this line: the parent's pid, on the
  // command line, is then no longer getppid() (reading getppid() here would race).
  const pid_t parent = static_cast<pid_t>(std::atol(argv[2]));
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) ::_exit(1);
  if (spawned) {
    try {
      detail::adopt_module_table(detail::recv_frame(kChannelFd));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "mpx: a spawned child cannot run its target: %s\n", e.what());
      ::_exit(1);
    }
    detail::run_order(kChannelFd);
  }
  detail::forkserver_main();
}

namespace detail {

void set_init_called(bool called) noexcept {
  g_init_called.store(called, std::memory_order_relaxed);
}

StartMethod default_start_method() {
  Settings& s = settings();
  std::lock_guard lock(s.mu);
  return s.method.value_or(StartMethod::fork);
}

bool send_with_fds(int sock, const void* value, std::size_t size, std::span<const int> fds) {
  if (fds.size() > kMaxFds) throw ValueError("mpx: more than 250 mpx objects handed to a child");
  const ssize_t n = sys::send_with_fds("sendmsg", sock, value, size, fds);
  if (n < 0 && errno != EPIPE && errno != ECONNRESET) sys::throw_errno("sendmsg");
  return n == static_cast<ssize_t>(size);
}

bool recv_with_fds(int sock, void* value, std::size_t size, std::vector<sys::Fd>& fds) {
  const ssize_t n = sys::recv_with_fds("recvmsg", sock, value, size, fds);
  if (n <= 0) return false;
  // A stream may split the bytes: the rest follows without fds.
  for (auto got = static_cast<std::size_t>(n); got < size;) {
    ssize_t m = sys::call_raw(
        "recv", [&] { return ::recv(sock, static_cast<char*>(value) + got, size - got, 0); });
    if (m <= 0) return false;
    got += static_cast<std::size_t>(m);
  }
  return true;
}

bool send_frame(int fd, std::span<const std::byte> bytes, std::span<const int> fds) {
  const std::uint64_t n = bytes.size();
  if (!send_with_fds(fd, &n, sizeof n, fds)) return false;
  const char* c = reinterpret_cast<const char*>(bytes.data());
  for (std::size_t len = bytes.size(); len > 0;) {
    ssize_t w = sys::call_raw("send(frame)", [&] { return ::send(fd, c, len, MSG_NOSIGNAL); });
    if (w < 0) {
      if (errno == EPIPE || errno == ECONNRESET) return false;
      sys::throw_errno("send(frame)");
    }
    c += w;
    len -= static_cast<std::size_t>(w);
  }
  return true;
}

std::vector<std::byte> recv_frame(int fd, std::vector<sys::Fd>* fds) {
  std::uint64_t n = 0;
  std::vector<sys::Fd> received;
  if (!recv_with_fds(fd, &n, sizeof n, received))
    throw EOFError("mpx: the parent closed the channel before the child's order");
  if (fds) *fds = std::move(received);
  if (n > (std::uint64_t{1} << 40)) throw DecodeError("mpx: malformed frame on a child's channel");
  std::vector<std::byte> bytes(static_cast<std::size_t>(n));
  for (std::size_t got = 0; got < bytes.size();) {
    ssize_t r = sys::call("recv(frame)", [&] {
      return ::recv(fd, reinterpret_cast<char*>(bytes.data()) + got, bytes.size() - got, 0);
    });
    if (r == 0) throw EOFError("mpx: the parent closed the channel before the child's order");
    got += static_cast<std::size_t>(r);
  }
  return bytes;
}

namespace {
using OrderTuple = std::tuple<std::string, bool, std::vector<int>, std::string, bool, int,
                              std::uint64_t, std::vector<std::byte>, int>;
}  // namespace

std::vector<std::byte> encode_order(const ChildOrder& o) {
  return mpx::encode(OrderTuple{o.self.name, o.self.daemon, o.self.identity, o.self.parent_name,
                                o.self.parent_daemon, o.parent, o.entry, o.target, o.start_method});
}

void run_order(int channel) {
  ChildOrder o;
  std::vector<sys::Fd> fds;
  try {
    auto t = mpx::decode<OrderTuple>(recv_frame(channel, &fds));
    std::tie(o.self.name, o.self.daemon, o.self.identity, o.self.parent_name, o.self.parent_daemon,
             o.parent, o.entry, o.target, o.start_method) = std::move(t);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mpx: a spawned child could not read its order: %s\n", e.what());
    ::_exit(1);
  }
  ::close(channel);
  for (sys::Fd& fd : fds)
    o.fds.push_back(fd.release());  // each taken by its object; the rest die with us
  if (o.start_method >= 0) {
    Settings& s = settings();
    std::lock_guard lock(s.mu);
    s.method = static_cast<StartMethod>(o.start_method);
    detail::KeepBlockFds::set_default(*s.method != StartMethod::fork);
  }
  become_child(o.self, o.parent);
  run_child_target(o.self.name, [&o] {
    if (o.entry == 0) return;
    auto entry = reinterpret_cast<SpawnEntry>(local_address(o.entry));
    entry(o.target, o.fds);
  });
}

pid_t spawn_executable(const char* marker, int channel, char* const* envp) {
  std::string path, argv0;
  {
    Settings& s = settings();
    std::lock_guard lock(s.mu);
    path = s.executable.empty() ? std::string("/proc/self/exe") : s.executable;
    argv0 = s.argv0.empty() ? path : s.argv0;
  }
  // dup2(fd, fd) would keep FD_CLOEXEC: move the channel off fd 3 first.
  sys::Fd moved;
  if (channel == kChannelFd) {
    moved = sys::Fd(sys::call("fcntl(F_DUPFD_CLOEXEC)",
                              [&] { return ::fcntl(channel, F_DUPFD_CLOEXEC, kChannelFd + 1); }));
    channel = moved.get();
  }
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  ::posix_spawn_file_actions_init(&actions);
  ::posix_spawnattr_init(&attr);
  ::posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  ::posix_spawn_file_actions_adddup2(&actions, channel, kChannelFd);
  ::posix_spawn_file_actions_addclosefrom_np(&actions, kChannelFd + 1);
  sigset_t mask;
  ::pthread_sigmask(SIG_SETMASK, nullptr, &mask);
  ::posix_spawnattr_setsigmask(&attr, &mask);  // the forker blocks every signal
  ::posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  std::string parent = std::to_string(::getpid());
  char* argv[] = {argv0.data(), const_cast<char*>(marker), parent.data(), nullptr};
  const std::function<pid_t()> job = [&] {
    pid_t pid = 0;
    int rc = ::posix_spawn(&pid, path.c_str(), &actions, &attr, argv, envp ? envp : environ);
    if (rc != 0) {
      errno = rc;
      return pid_t{-1};
    }
    return pid;
  };
  struct Cleanup {
    posix_spawn_file_actions_t* a;
    posix_spawnattr_t* t;
    ~Cleanup() {
      ::posix_spawn_file_actions_destroy(a);
      ::posix_spawnattr_destroy(t);
    }
  } cleanup{&actions, &attr};
  return run_forking(job, "posix_spawn");
}

sys::Fd child_pidfd(pid_t pid) {
  try {
    return sys::pidfd_open(pid);
  } catch (...) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    throw;
  }
}

StartedChild start_not_forked(const ChildIdentity& self, StartMethod method,
                              const BoundCall* target) {
  const char* name = method == StartMethod::spawn ? "spawn" : "forkserver";
  if (!g_init_called.load(std::memory_order_relaxed)) {
    throw InvalidStateError(
        std::string("mpx: the ") + name +
        " start method needs mpx::init(argc, argv) as the first line of main (Python's `if "
        "__name__ == \"__main__\":` guard): the child is a new run of this program, and "
        "mpx::init is where it runs its target instead of main");
  }
  ChildOrder order;
  order.self = self;
  order.parent = ::getpid();
  {
    Settings& s = settings();
    std::lock_guard lock(s.mu);
    if (s.method) order.start_method = static_cast<int>(*s.method);
  }
  if (target && !target->encode_for_spawn(order.entry, order.target, order.fds)) {
    throw ValueError(std::string("mpx: the target of a ") + name +
                     " Process cannot reach its child: it must be a portable callable (a "
                     "function pointer, a captureless lambda, an empty function object or one "
                     "with serialize()) whose arguments have a codec or are mpx objects that "
                     "can travel (queues, SharedMemory, a Context's locks, semaphores, events, "
                     "conditions, barriers, values, arrays, Pipe ends). A capturing lambda can "
                     "only reach a child by fork; pass captured values as arguments");
  }
  const std::vector<std::byte> bytes = encode_order(order);
  StartedChild started;
  sys::Fd channel;
  if (method == StartMethod::forkserver) return forkserver_start(bytes, order.fds, channel);
  auto [mine, theirs] = sys::make_socketpair();
  channel = std::move(mine);
  started.pid = spawn_executable(kSpawnMarker, theirs.get());
  started.pidfd = child_pidfd(started.pid);
  // A child that died before reading it has its exit code already: nothing to report.
  if (send_frame(channel.get(), encode_module_table())) send_frame(channel.get(), bytes, order.fds);
  return started;
}

}  // namespace detail

}  // namespace mpx
