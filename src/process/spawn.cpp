// Starting a program for mpx::subprocess: the PATH search, posix_spawn, and the
// fork+exec path for what posix_spawn cannot do (see mpx/subprocess.hpp).
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <string>
#include <vector>

#include "mpx/errors.hpp"
#include "process/subprocess_internal.hpp"
#include "sys/fd.hpp"
#include "sys/pidfd.hpp"
#include "sys/syscall.hpp"

namespace mpx::detail {

namespace {

// pass_fds that would leave more fds than this to close one by one take the fork path.
constexpr int kMaxSpawnCloses = 1024;

// The search path, as Python's os.get_exec_path(env).
std::string exec_path(const SpawnRequest& r) {
  if (r.env) {
    for (const std::string& entry : *r.env)
      if (entry.rfind("PATH=", 0) == 0) return entry.substr(5);
    return "/bin:/usr/bin";
  }
  const char* path = std::getenv("PATH");
  return path ? path : "/bin:/usr/bin";
}

// What to exec: the program itself if it names a path, else the first executable regular
// file of that name in PATH (relative to `dirfd`, the child's working directory).
// Throws PermissionError when only files that cannot be executed were found,
// FileNotFoundError when none.
std::string find_program(const SpawnRequest& r, int dirfd) {
  if (r.program.find('/') != std::string::npos) return r.program;
  if (r.program.empty()) throw_os_error(ENOENT, r.program);
  const std::string path = exec_path(r);
  bool denied = false;
  std::size_t begin = 0;
  for (;;) {
    const std::size_t end = std::min(path.find(':', begin), path.size());
    std::string dir = path.substr(begin, end - begin);
    std::string candidate = (dir.empty() ? std::string(".") : dir) + "/" + r.program;
    struct stat st {};
    if (sys::call_raw("fstatat(PATH search)",
                      [&] { return ::fstatat(dirfd, candidate.c_str(), &st, 0); }) == 0) {
      if (S_ISREG(st.st_mode) && sys::call_raw("faccessat(PATH search)", [&] {
                                   return ::faccessat(dirfd, candidate.c_str(), X_OK, AT_EACCESS);
                                 }) == 0) {
        return candidate;
      }
      denied = true;
    } else if (errno == EACCES) {
      denied = true;
    }
    if (end == path.size()) break;
    begin = end + 1;
  }
  throw_os_error(denied ? EACCES : ENOENT, r.program);
}

// An argv or envp array over strings that outlive it.
std::vector<char*> c_array(const std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (const std::string& s : strings)
    out.push_back(const_cast<char*>(s.c_str()));
  out.push_back(nullptr);
  return out;
}

// The fds the child keeps besides 0..2, sorted, without duplicates.
std::vector<int> kept_fds(const SpawnRequest& r) {
  const subprocess::RunOptions& o = *r.options;
  std::vector<int> keep;
  for (int fd : o.pass_fds)
    if (fd > 2) keep.push_back(fd);
  std::sort(keep.begin(), keep.end());
  keep.erase(std::unique(keep.begin(), keep.end()), keep.end());
  return keep;
}

void check_spawn(int rc, const char* what) {
  if (rc != 0) sys::throw_errno(what, rc);
}

struct FileActions {
  posix_spawn_file_actions_t actions;
  FileActions() {
    check_spawn(::posix_spawn_file_actions_init(&actions), "posix_spawn_file_actions_init");
  }
  ~FileActions() { ::posix_spawn_file_actions_destroy(&actions); }
};

struct SpawnAttr {
  posix_spawnattr_t attr;
  SpawnAttr() { check_spawn(::posix_spawnattr_init(&attr), "posix_spawnattr_init"); }
  ~SpawnAttr() { ::posix_spawnattr_destroy(&attr); }
};

// The posix_spawn path. Returns the pid, or -errno when the exec (or a file action) failed.
pid_t spawn_posix(const SpawnRequest& r, const std::string& program, const int stdio[3], int dirfd,
                  const std::vector<int>& keep, char* const* argv, char* const* envp) {
  const subprocess::RunOptions& o = *r.options;
  FileActions fa;
  auto* a = &fa.actions;
  const char* what = "posix_spawn_file_actions_add";
  for (int i = 0; i < 3; ++i)
    if (stdio[i] >= 0) check_spawn(::posix_spawn_file_actions_adddup2(a, stdio[i], i), what);
  if (dirfd >= 0) check_spawn(::posix_spawn_file_actions_addfchdir_np(a, dirfd), what);
  int low = 3;
  for (int fd : keep) {
    if (o.close_fds) {
      for (int gap = low; gap < fd; ++gap)
        check_spawn(::posix_spawn_file_actions_addclose(a, gap), what);
    }
    // dup2 onto itself clears FD_CLOEXEC (glibc >= 2.29, POSIX 2024).
    check_spawn(::posix_spawn_file_actions_adddup2(a, fd, fd), what);
    low = fd + 1;
  }
  if (o.close_fds) check_spawn(::posix_spawn_file_actions_addclosefrom_np(a, low), what);

  SpawnAttr sa;
  short flags = POSIX_SPAWN_SETSIGMASK;
  sigset_t none;
  ::sigemptyset(&none);
  check_spawn(::posix_spawnattr_setsigmask(&sa.attr, &none), "posix_spawnattr_setsigmask");
  if (o.restore_signals) {
    sigset_t restore;
    ::sigemptyset(&restore);
    ::sigaddset(&restore, SIGPIPE);
    ::sigaddset(&restore, SIGXFSZ);
    check_spawn(::posix_spawnattr_setsigdefault(&sa.attr, &restore),
                "posix_spawnattr_setsigdefault");
    flags |= POSIX_SPAWN_SETSIGDEF;
  }
  if (o.start_new_session) flags |= POSIX_SPAWN_SETSID;
  if (o.process_group) {
    check_spawn(::posix_spawnattr_setpgroup(&sa.attr, *o.process_group),
                "posix_spawnattr_setpgroup");
    flags |= POSIX_SPAWN_SETPGROUP;
  }
  check_spawn(::posix_spawnattr_setflags(&sa.attr, flags), "posix_spawnattr_setflags");

  pid_t pid = 0;
  int rc = EINTR;
  if (int injected = sys::injected_failure("posix_spawn")) return -injected;
  while (rc == EINTR)
    rc = ::posix_spawn(&pid, program.c_str(), a, &sa.attr, argv, envp);
  return rc == 0 ? pid : -rc;
}

// What the child of the fork path reports through its error pipe before it exits.
struct ChildError {
  int step;  // index into kSteps
  int err;
};
constexpr const char* kSteps[] = {"execve", "fchdir",  "dup2",       "fcntl(F_SETFD)",
                                  "setsid", "setpgid", "close_range"};
enum Step { kExec, kCwd, kDup2, kSetFd, kSetsid, kSetpgid, kCloseRange };

[[noreturn]] void child_fail(int err_fd, Step step) {
  ChildError e{step, errno};
  static_cast<void>(::write(err_fd, &e, sizeof e));
  ::_exit(255);
}

// The child of the fork path: async-signal-safe calls only, no allocation.
[[noreturn]] void child_exec(const SpawnRequest& r, const char* program, const int stdio[3],
                             int dirfd, const std::vector<int>& keep,
                             const std::vector<int>& open_fds, char* const* argv, char* const* envp,
                             int err_fd) {
  const subprocess::RunOptions& o = *r.options;
  // The parent's handlers must not run here: back to the default action before any
  // signal is unblocked (execve would reset them, but too late).
  for (int sig = 1; sig < NSIG; ++sig) {
    struct sigaction sa {};
    if (::sigaction(sig, nullptr, &sa) != 0 || sa.sa_handler == SIG_DFL || sa.sa_handler == SIG_IGN)
      continue;
    sa = {};
    sa.sa_handler = SIG_DFL;
    ::sigaction(sig, &sa, nullptr);
  }
  if (o.restore_signals) {
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    ::sigaction(SIGPIPE, &dfl, nullptr);
    ::sigaction(SIGXFSZ, &dfl, nullptr);
  }
  for (int i = 0; i < 3; ++i) {
    if (stdio[i] < 0) continue;
    if (stdio[i] == i) {
      if (::fcntl(i, F_SETFD, 0) != 0) child_fail(err_fd, kSetFd);
    } else if (::dup2(stdio[i], i) < 0) {
      child_fail(err_fd, kDup2);
    }
  }
  for (int fd : keep)
    if (::fcntl(fd, F_SETFD, 0) != 0) child_fail(err_fd, kSetFd);
  if (dirfd >= 0 && ::fchdir(dirfd) != 0) child_fail(err_fd, kCwd);
  if (o.umask) ::umask(*o.umask);
  if (o.start_new_session && ::setsid() < 0) child_fail(err_fd, kSetsid);
  if (o.process_group && ::setpgid(0, *o.process_group) != 0) child_fail(err_fd, kSetpgid);
  if (o.close_fds) {
    // Everything from 3 up but `open_fds` (the kept fds and the error pipe, which is
    // close-on-exec itself).
    unsigned low = 3;
    for (int fd : open_fds) {
      const auto u = static_cast<unsigned>(fd);
      if (u > low && ::close_range(low, u - 1, 0) != 0) child_fail(err_fd, kCloseRange);
      low = std::max(low, u + 1);
    }
    if (::close_range(low, ~0U, 0) != 0) child_fail(err_fd, kCloseRange);
  }
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::execve(program, argv, envp);
  child_fail(err_fd, kExec);
}

void reap_now(pid_t pid) noexcept {
  sys::call_raw("waitpid(spawn)", [&] { return ::waitpid(pid, nullptr, 0); });
}

// The fork path. Returns the pid; throws what the child reported.
pid_t spawn_fork(const SpawnRequest& r, const std::string& program, const int stdio[3], int dirfd,
                 const std::vector<int>& keep, char* const* argv, char* const* envp) {
  const subprocess::RunOptions& o = *r.options;
  auto [err_read, err_write] = sys::make_pipe();
  std::vector<int> open_fds = keep;
  open_fds.insert(std::upper_bound(open_fds.begin(), open_fds.end(), err_write.get()),
                  err_write.get());
  sigset_t all, old;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  const pid_t pid = sys::call_raw("fork", [] { return ::fork(); });
  if (pid == 0)
    child_exec(r, program.c_str(), stdio, dirfd, keep, open_fds, argv, envp, err_write.get());
  const int fork_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) sys::throw_errno("fork", fork_errno);
  err_write.reset();
  ChildError e{};
  const int err_fd = err_read.get();  // clang 14 cannot capture a structured binding
  const ssize_t n =
      sys::call_raw("read(exec error pipe)", [&] { return ::read(err_fd, &e, sizeof e); });
  if (n != static_cast<ssize_t>(sizeof e)) return pid;  // EOF: the exec succeeded
  reap_now(pid);
  if (e.step == kExec) throw_os_error(e.err, r.program);
  if (e.step == kCwd) throw_os_error(e.err, o.cwd->string());
  sys::throw_errno((std::string("subprocess child: ") + kSteps[e.step]).c_str(), e.err);
}

}  // namespace

int returncode_of(int code, int status) noexcept {
  return code == CLD_EXITED ? status : -status;
}

Spawned spawn(const SpawnRequest& r) {
  const subprocess::RunOptions& o = *r.options;
  sys::Fd dir;
  if (o.cwd) {
    const std::string cwd = o.cwd->string();
    int fd = sys::call_raw("open(cwd)",
                           [&] { return ::open(cwd.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC); });
    if (fd < 0) throw_os_error(errno, cwd);
    dir.reset(fd);
  }
  const int dirfd = dir ? dir.get() : AT_FDCWD;
  const std::string program = find_program(r, dirfd);

  // A source among 0..2 that is not its own target could be overwritten by an earlier
  // dup2 (stdout=2 with stderr=1): the child gets a copy above 2 instead.
  int stdio[3];
  sys::Fd high[3];
  for (int i = 0; i < 3; ++i) {
    stdio[i] = r.stdio[i];
    if (stdio[i] >= 0 && stdio[i] < 3 && stdio[i] != i) {
      high[i].reset(sys::call("fcntl(F_DUPFD_CLOEXEC)",
                              [&] { return ::fcntl(r.stdio[i], F_DUPFD_CLOEXEC, 3); }));
      stdio[i] = high[i].get();
    }
  }
  const std::vector<int> keep = kept_fds(r);
  std::vector<char*> argv = c_array(r.argv);
  std::vector<char*> envp;
  if (r.env) envp = c_array(*r.env);
  char* const* env = r.env ? envp.data() : ::environ;

  const bool posix =
      !o.umask && (!o.close_fds || keep.empty() ||
                   keep.back() - 3 - static_cast<int>(keep.size()) < kMaxSpawnCloses);
  pid_t pid;
  if (posix) {
    pid = spawn_posix(r, program, stdio, dir ? dir.get() : -1, keep, argv.data(), env);
    if (pid < 0) {
      const int err = -pid;
      // glibc reports a failed fchdir and a failed exec alike; tell them apart.
      if (dir && (err == EACCES || err == ENOENT || err == ENOTDIR) &&
          sys::call_raw("faccessat(cwd)", [&] { return ::faccessat(dir.get(), ".", X_OK, 0); }) !=
              0)
        throw_os_error(err, o.cwd->string());
      throw_os_error(err, r.program);
    }
  } else {
    pid = spawn_fork(r, program, stdio, dir ? dir.get() : -1, keep, argv.data(), env);
  }
  Spawned out;
  out.pid = pid;
  try {
    out.pidfd = sys::pidfd_open(pid);
  } catch (...) {
    sys::call_raw("kill", [&] { return ::kill(pid, SIGKILL); });
    reap_now(pid);
    throw;
  }
  return out;
}

}  // namespace mpx::detail
